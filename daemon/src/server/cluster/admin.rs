//! What an admin or a device changes on one node that the other nodes must act on at
//! once, not only at a device's next connection: a revoked device's live connections
//! close, a withdrawn or changed share closes the member's, a quota applies. The store
//! that records the change sends it with `pg_notify` in the same transaction (so it is
//! delivered only if the change committed); every node's listener
//! ([`super::serve`]) hands it to the server, which acts as it does for a change made
//! through itself.

use anyhow::{Context, Result};
use filesync_proto::{AccountName, DeviceId, FolderName};
use serde::{Deserialize, Serialize};

/// The channel admin notifications travel on.
pub const CHANNEL: &str = "filesync_admin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminEvent {
    /// The device was revoked: close its connections.
    Revoked { device: DeviceId },
    /// The account's quota was set: read it again.
    Quota { account: AccountName },
    /// A share was taken back or its mode changed: close the member's connections to it.
    Share {
        owner: AccountName,
        folder: FolderName,
        member: AccountName,
    },
}

impl AdminEvent {
    pub fn parse(payload: &str) -> Option<AdminEvent> {
        serde_json::from_str(payload).ok()
    }

    /// Sends the event with the transaction of `db` (delivered when it commits).
    pub async fn send(&self, db: &impl tokio_postgres::GenericClient) -> Result<()> {
        let payload = serde_json::to_string(self).context("cannot encode a notification")?;
        db.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .context("cannot notify the other nodes")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_and_garbage_does_not() {
        let events = [
            AdminEvent::Revoked {
                device: DeviceId::new("ABCDEF0123456789").unwrap(),
            },
            AdminEvent::Quota {
                account: AccountName::new("alice").unwrap(),
            },
            AdminEvent::Share {
                owner: AccountName::new("alice").unwrap(),
                folder: FolderName::new("docs").unwrap(),
                member: AccountName::new("bob").unwrap(),
            },
        ];
        for e in events {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(AdminEvent::parse(&text), Some(e));
        }
        for bad in ["", "{}", "{\"Revoked\":{\"device\":\"a/b\"}}", "[1]"] {
            assert_eq!(AdminEvent::parse(bad), None, "{bad:?}");
        }
    }
}
