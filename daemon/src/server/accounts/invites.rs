//! Invite tokens: who may make one (the admin, or a device of the account, at most
//! [`MAX_DEVICE_INVITES`] an hour), how they are listed by a public id, and cancelled.
//! Redeeming one is part of a device's admission, in the parent module. The rules are
//! the free functions here, which both account stores apply to their rows.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use filesync_proto::auth::Secret;
use filesync_proto::control::InviteInfo;
use filesync_proto::{AccountName, DeviceId};
use rusqlite::{OptionalExtension, params};

use super::{Accounts, hash, new_secret};
use crate::events::unix_secs;
use crate::server::lock::lock;

/// How long an invite token is valid unless the admin says otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Invite tokens one device may make within [`DEVICE_INVITE_WINDOW`]: enough to enrol a
/// household's devices, too few for a stolen device to hand out access in bulk.
pub const MAX_DEVICE_INVITES: usize = 10;
const DEVICE_INVITE_WINDOW: i64 = 3600;

/// Who made an invite token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maker {
    /// The server's admin, through the control socket (`filesyncctl server invite`).
    Admin,
    /// A device of the token's account (`filesyncctl device invite`).
    Device(DeviceId),
}

impl Maker {
    /// As stored in `invites.made_by`; a device id cannot contain `:`, so no device
    /// reads as the admin.
    pub fn column(&self) -> String {
        match self {
            Maker::Admin => "admin".into(),
            Maker::Device(d) => format!("device:{d}"),
        }
    }
}

/// What `server invites cancel` did with an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The token of this account can no longer enrol anyone.
    Done(AccountName),
    /// No token has this id.
    Unknown,
    /// The token already enrolled this device: revoking the device is what helps.
    Used(String),
    /// It expired or was cancelled already.
    NotPending,
}

/// When a token made at `now` for `ttl` expires, in Unix seconds; an error past the end
/// of time.
pub fn expiry(ttl: Duration, now: i64) -> Result<i64> {
    i64::try_from(ttl.as_secs())
        .ok()
        .and_then(|secs| now.checked_add(secs))
        .with_context(|| {
            format!(
                "a token valid for {} seconds would expire past the end of time; \
                 choose a shorter --expires",
                ttl.as_secs()
            )
        })
}

/// Whether `device` may make a token for `account` at `now`, given whether it is
/// revoked (`None`: no such device) and when it made its tenth-latest token.
pub fn may_make(
    device: &DeviceId,
    account: &AccountName,
    revoked: Option<bool>,
    tenth_latest: Option<i64>,
    now: i64,
) -> Result<()> {
    if revoked != Some(false) {
        bail!("device {device} is revoked and may not make invite tokens");
    }
    if let Some(wait) = invite_wait(tenth_latest, now) {
        bail!(
            "device {device} made {MAX_DEVICE_INVITES} invite tokens within the last \
             hour, the most a device may; it can make the next one in {} \
             (or the server's admin can: `filesyncctl server invite {account}`)",
            minutes(wait)
        );
    }
    Ok(())
}

/// A pending token as `server invites` lists it, from its row.
pub fn info(
    hash: &[u8],
    account: String,
    made_by: Option<&str>,
    created: i64,
    expires: i64,
) -> InviteInfo {
    let (made_by, device) = match made_by {
        Some("admin") => ("admin", None),
        Some(m) => match m.strip_prefix("device:") {
            Some(d) => ("device", Some(d.to_owned())),
            None => ("unknown", None),
        },
        None => ("unknown", None),
    };
    InviteInfo {
        id: invite_id(hash),
        account,
        made_by: made_by.into(),
        device,
        created,
        expires,
    }
}

/// What cancelling a token with this row answers at `now`, unless it is pending
/// (`None`: cancel it).
pub fn not_pending(
    expires: i64,
    used_by: Option<String>,
    cancelled: bool,
    now: i64,
) -> Option<Cancelled> {
    match used_by {
        Some(device) => Some(Cancelled::Used(device)),
        None if cancelled || expires <= now => Some(Cancelled::NotPending),
        None => None,
    }
}

impl Accounts {
    pub(super) fn make_invite(
        &self,
        account: &AccountName,
        ttl: Duration,
        maker: &Maker,
    ) -> Result<Secret> {
        let now = unix_secs();
        let expires = expiry(ttl, now)?;
        let secret = new_secret();
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        if let Maker::Device(device) = maker {
            let revoked: Option<bool> = tx
                .query_row(
                    "SELECT revoked FROM devices WHERE id = ?1",
                    [device.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let tenth_latest: Option<i64> = tx
                .query_row(
                    "SELECT created FROM invites WHERE made_by = ?1
                     ORDER BY created DESC LIMIT 1 OFFSET ?2",
                    params![maker.column(), MAX_DEVICE_INVITES as i64 - 1],
                    |r| r.get(0),
                )
                .optional()?;
            may_make(device, account, revoked, tenth_latest, now)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO accounts (name, created) VALUES (?1, ?2)",
            params![account.as_str(), now],
        )?;
        tx.execute(
            "INSERT INTO invites (hash, account, created, expires, made_by)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                hash(&secret),
                account.as_str(),
                now,
                expires,
                maker.column()
            ],
        )?;
        tx.commit()?;
        Ok(secret)
    }

    pub(super) fn pending_invites(&self) -> Result<Vec<InviteInfo>> {
        let db = lock(&self.db);
        let mut stmt = db.prepare(
            "SELECT hash, account, made_by, created, expires FROM invites
             WHERE used_by IS NULL AND cancelled IS NULL AND expires > ?1
             ORDER BY created, hash",
        )?;
        let rows = stmt.query_map([unix_secs()], |r| {
            let hash: Vec<u8> = r.get(0)?;
            let made_by: Option<String> = r.get(2)?;
            Ok(info(
                &hash,
                r.get(1)?,
                made_by.as_deref(),
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub(super) fn cancel_by_id(&self, id: &str) -> Result<Cancelled> {
        let Some(prefix) = parse_invite_id(id) else {
            return Ok(Cancelled::Unknown);
        };
        let now = unix_secs();
        let db = lock(&self.db);
        // The token's hash and account if it is pending, what to answer otherwise.
        let found = db
            .query_row(
                "SELECT hash, account, expires, used_by, cancelled IS NOT NULL FROM invites
                 WHERE substr(hash, 1, ?1) = ?2",
                params![INVITE_ID_BYTES as i64, prefix],
                |r| {
                    Ok(match not_pending(r.get(2)?, r.get(3)?, r.get(4)?, now) {
                        Some(answer) => Err(answer),
                        None => Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
                    })
                },
            )
            .optional()?;
        match found {
            None => Ok(Cancelled::Unknown),
            Some(Err(answer)) => Ok(answer),
            Some(Ok((hash, account))) => {
                db.execute(
                    "UPDATE invites SET cancelled = ?1 WHERE hash = ?2",
                    params![now, hash],
                )?;
                Ok(Cancelled::Done(AccountName::new(account)?))
            }
        }
    }
}

/// How long a device whose tenth-latest token was made at `tenth_latest` must wait for
/// its next one (`None`: it may make one now), all in Unix seconds.
pub(super) fn invite_wait(tenth_latest: Option<i64>, now: i64) -> Option<i64> {
    let free_at = tenth_latest?.saturating_add(DEVICE_INVITE_WINDOW);
    (free_at > now).then(|| free_at - now)
}

/// Seconds as whole minutes for a person, rounded up: "1 minute", "37 minutes".
pub(super) fn minutes(secs: i64) -> String {
    let m = (secs + 59) / 60;
    format!("{m} minute{}", if m == 1 { "" } else { "s" })
}

/// Bytes of a token's hash that make its public id: enough to tell tokens apart, and a
/// prefix of a SHA-256 of a 256-bit secret tells nothing about the secret.
pub const INVITE_ID_BYTES: usize = 8;

/// The id `server invites` shows for the token whose secret hashes to `hash`: 16 hex
/// digits.
pub fn invite_id(hash: &[u8]) -> String {
    hex::encode(&hash[..INVITE_ID_BYTES.min(hash.len())])
}

/// The hash prefix a public id stands for; `None` for what is no id.
pub fn parse_invite_id(id: &str) -> Option<Vec<u8>> {
    let id = id.trim();
    if id.len() != INVITE_ID_BYTES * 2 {
        return None;
    }
    hex::decode(id).ok()
}
