//! What a device knows of its servers: the pinned certificate fingerprint and, once
//! enrolled, its account, device id and credential there. Kept per server address (as
//! the folders' `server` key writes it) in `STATE_DIR/servers.db`, 0600. The credential
//! never leaves this file except towards the server it belongs to.
//!
//! [`TrustStore::login`] is the one way a device gets into a server: with an invite
//! token (pinning the token's fingerprint), with its stored credential, or by open
//! registration (trusting the certificate on first use when nothing is pinned yet).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::auth::{AuthRequest, Fingerprint, InviteToken, Secret};
use filesync_proto::control::ServerTrust;
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesync_proto::{AccountName, DeviceId};
use futures::{SinkExt, StreamExt};
use rusqlite::{Connection, OptionalExtension, params};

use super::connect::{Authenticated, connect};
use crate::conn::{self, Counters};
use crate::private;

/// One server as this device knows it.
struct Known {
    fingerprint: Fingerprint,
    credential: Option<(DeviceId, Secret)>,
}

pub struct TrustStore {
    file: PathBuf,
    /// Opened on first use and kept: every login reads and writes it several times.
    db: std::sync::Mutex<Option<Connection>>,
    /// Held while enrolling without a token, so that two folders of one server starting
    /// together enrol the device once.
    enrolling: tokio::sync::Mutex<()>,
}

fn fingerprint(bytes: Vec<u8>) -> Result<Fingerprint> {
    Ok(Fingerprint(
        bytes
            .try_into()
            .map_err(|_| anyhow!("a pinned fingerprint is damaged"))?,
    ))
}

impl TrustStore {
    pub fn new(state_dir: &std::path::Path) -> TrustStore {
        TrustStore {
            file: state_dir.join("servers.db"),
            db: std::sync::Mutex::new(None),
            enrolling: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `f` on the store, opening it (and creating it, 0600) the first time.
    fn with_db<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            *db = Some(self.open()?);
        }
        f(db.as_ref().expect("opened above"))
    }

    fn open(&self) -> Result<Connection> {
        private::touch(&self.file)?;
        let db = Connection::open(&self.file)
            .with_context(|| format!("cannot open {}", self.file.display()))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS servers (
                 server TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, pinned_by TEXT NOT NULL,
                 account TEXT, device TEXT, secret BLOB)",
        )?;
        Ok(db)
    }

    fn get(&self, server: &str) -> Result<Option<Known>> {
        /// Fingerprint, device id, secret.
        type Row = (Vec<u8>, Option<String>, Option<Vec<u8>>);
        let row: Option<Row> = self.with_db(|db| {
            Ok(db
                .query_row(
                    "SELECT fingerprint, device, secret FROM servers WHERE server = ?1",
                    [server],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?)
        })?;
        let Some((fp, device, secret)) = row else {
            return Ok(None);
        };
        let credential = match (device, secret) {
            (Some(d), Some(s)) => Some((
                DeviceId::new(d)?,
                Secret(
                    s.try_into()
                        .map_err(|_| anyhow!("a stored credential is damaged"))?,
                ),
            )),
            _ => None,
        };
        Ok(Some(Known {
            fingerprint: fingerprint(fp)?,
            credential,
        }))
    }

    /// Pins `server`'s certificate; `how` is `token`, `first-use` or `manual`.
    pub fn pin(&self, server: &str, fp: Fingerprint, how: &str) -> Result<()> {
        self.with_db(|db| {
            db.execute(
                "INSERT INTO servers (server, fingerprint, pinned_by) VALUES (?1, ?2, ?3)
                 ON CONFLICT(server) DO UPDATE SET fingerprint = excluded.fingerprint,
                                                   pinned_by = excluded.pinned_by",
                params![server, fp.0.to_vec(), how],
            )?;
            Ok(())
        })
    }

    fn enrolled(
        &self,
        server: &str,
        account: &AccountName,
        device: &DeviceId,
        secret: &Secret,
    ) -> Result<()> {
        self.with_db(|db| {
            db.execute(
                "UPDATE servers SET account = ?2, device = ?3, secret = ?4 WHERE server = ?1",
                params![server, account.as_str(), device.as_str(), secret.0.to_vec()],
            )?;
            Ok(())
        })
    }

    /// Every known server, for `status`; never the credential.
    pub fn list(&self) -> Result<Vec<ServerTrust>> {
        self.with_db(|db| {
            let mut stmt = db.prepare(
                "SELECT server, fingerprint, pinned_by, account, device FROM servers \
                 ORDER BY server",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })?;
            rows.map(|row| {
                let (server, fp, pinned_by, account, device) = row?;
                Ok(ServerTrust {
                    server,
                    fingerprint: fingerprint(fp)?.to_hex(),
                    pinned_by,
                    account,
                    device,
                })
            })
            .collect()
        })
    }

    /// Gets this device into `server`: redeeming `token` when given, else with the
    /// stored credential, else by open registration. Pins the certificate (from the
    /// token, or on first use) and keeps a new credential.
    pub async fn login(
        &self,
        server: &str,
        token: Option<&InviteToken>,
        me: (&DeviceId, &str),
        counters: Arc<Counters>,
    ) -> Result<Authenticated> {
        let (device, device_name) = (me.0.clone(), me.1.to_string());
        let mut known = self.get(server)?;
        let _enrolling = match (token, &known) {
            (
                None,
                None
                | Some(Known {
                    credential: None, ..
                }),
            ) => {
                let guard = self.enrolling.lock().await;
                known = self.get(server)?;
                Some(guard)
            }
            _ => None,
        };
        let pinned = known.as_ref().map(|k| k.fingerprint);
        let (pin, request) = match (token, known) {
            (Some(t), _) => (
                Some(t.fingerprint),
                AuthRequest::Redeem {
                    secret: t.secret.clone(),
                    device,
                    device_name,
                },
            ),
            (
                None,
                Some(Known {
                    fingerprint,
                    credential: Some((device, secret)),
                }),
            ) => (
                Some(fingerprint),
                AuthRequest::Credential { device, secret },
            ),
            (None, _) => (
                pinned,
                AuthRequest::Register {
                    device,
                    device_name,
                },
            ),
        };
        let auth = connect(server, pin, request, counters).await?;
        if token.is_some() {
            self.pin(server, auth.fingerprint, "token")?;
        } else if pin.is_none() {
            tracing::info!(
                server,
                fingerprint = %auth.fingerprint,
                "trusting the server's certificate on first use; `filesyncctl status` shows the pin"
            );
            self.pin(server, auth.fingerprint, "first-use")?;
        }
        if let Some(secret) = &auth.credential {
            self.enrolled(server, &auth.account, &auth.device, secret)?;
            tracing::info!(server, account = %auth.account, device = %auth.device, "enrolled with the server");
        }
        Ok(auth)
    }

    /// Asks `server` for an invite token into this device's account there.
    pub async fn device_invite(&self, server: &str, me: (&DeviceId, &str)) -> Result<String> {
        match self.get(server)? {
            Some(Known {
                credential: Some(_),
                ..
            }) => {}
            _ => bail!(
                "this device is not enrolled with {server}: add a folder with that server \
                 first (`filesyncctl add PATH --server {server} --token TOKEN`)"
            ),
        }
        let mut auth = self
            .login(server, None, me, Arc::new(Counters::default()))
            .await?;
        auth.framed.send(ClientMsg::CreateInvite).await?;
        match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, auth.framed.next()).await {
            Ok(Some(Ok(ServerMsg::Invite(Ok(token))))) => Ok(token),
            Ok(Some(Ok(ServerMsg::Invite(Err(why))))) => {
                bail!("server {server} made no token: {why}")
            }
            Ok(Some(Ok(other))) => bail!("protocol error: expected Invite, got {other:?}"),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(None) => bail!("server {server} closed the connection"),
            Err(_) => bail!("server {server} did not answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pin_keeps_the_credential_and_the_list_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        let server = "files.example.invalid:7101";
        assert!(store.get(server).unwrap().is_none());
        store
            .pin(server, Fingerprint([1; 32]), "first-use")
            .unwrap();
        let (account, device) = (
            AccountName::new("alice").unwrap(),
            DeviceId::new("D1").unwrap(),
        );
        store
            .enrolled(server, &account, &device, &Secret([7; 32]))
            .unwrap();
        store.pin(server, Fingerprint([2; 32]), "manual").unwrap();

        let known = store.get(server).unwrap().unwrap();
        assert_eq!(known.fingerprint, Fingerprint([2; 32]));
        assert_eq!(known.credential, Some((device, Secret([7; 32]))));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].pinned_by, "manual");
        assert_eq!(listed[0].account.as_deref(), Some("alice"));
        let shown = format!("{listed:?}");
        assert!(
            !shown.contains(&"07".repeat(32)) && !shown.contains("7, 7"),
            "{shown}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("servers.db"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
