//! The server's accounts, devices and invite tokens, and the decision whether a device
//! gets in, behind one boundary ([`AccountStore`]) with two stores: the embedded
//! backend's [`Accounts`], `DATA_DIR/.filesync/accounts.db` (SQLite, 0600), and the
//! cluster's in PostgreSQL (`server::cluster::accounts`). What they decide is written
//! once, here and in [`invites`] and [`lockout`]; the stores only read and write rows.
//!
//! Only SHA-256 hashes of device secrets and token secrets are stored, so a copy of the
//! database lets nobody in. Redeeming a token is one transaction: of two devices
//! presenting the same token at once, exactly one is enrolled. Failed guesses (unknown,
//! used or expired tokens, unknown credentials) are counted per source ([`lockout`]).
//!
//! Every token records who made it ([`Maker`]): revoking a device cancels the pending
//! tokens it made, and a device makes at most [`MAX_DEVICE_INVITES`] an hour; making,
//! listing and cancelling tokens is [`invites`].
//!
//! The calls are synchronous and wait on a lock, on fsync or on the database: callers
//! on the async runtime go through `spawn_blocking` ([`crate::server::Server::off_runtime`]).
//! The SQLite store has a write-ahead log (one fsync per commit) behind a std mutex.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use filesync_proto::auth::{AuthRequest, Refusal, Secret};
use filesync_proto::control::{AccountInfo, DeviceInfo, InviteInfo};
use filesync_proto::{AccountName, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::events::unix_secs;
use crate::fs::chunk::sha256;
use crate::fs::private;
use crate::server::lock::lock;

pub mod invites;
mod lockout;

pub use invites::{Cancelled, DEFAULT_INVITE_TTL, MAX_DEVICE_INVITES, Maker};
pub use lockout::{Lockout, source_key};

/// The account that open registration enrols tokenless devices into.
pub const OPEN_ACCOUNT: &str = "open";
/// `last_seen` is rewritten only when older than this, so that a device reconnecting in
/// a loop does not turn every login into a write and an fsync.
const LAST_SEEN_RESOLUTION: i64 = 60;

/// A device that got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub account: AccountName,
    pub device: DeviceId,
    /// Set when the device was just enrolled: its new credential.
    pub credential: Option<Secret>,
}

/// What the server and its sessions ask of an account store. An `Err` is a failure of
/// the store itself (its file, its database), never a refusal.
pub trait AccountStore: Send + Sync {
    /// Decides whether the device behind `request`, from `peer`, gets in.
    fn authenticate(
        &self,
        request: &AuthRequest,
        open_registration: bool,
        peer: IpAddr,
    ) -> Result<Result<Admitted, Refusal>>;

    /// A new one-time token secret for `account` (created if new), made by `maker`.
    /// Refused for a revoked device, and for a device that made
    /// [`MAX_DEVICE_INVITES`] within the last hour (the error says when it may again).
    fn invite(&self, account: &AccountName, ttl: Duration, maker: &Maker) -> Result<Secret>;

    /// The tokens that can still enrol a device, oldest first.
    fn invites(&self) -> Result<Vec<InviteInfo>>;

    /// Cancels the pending token whose public id ([`invites::invite_id`]) is `id`.
    fn cancel_invite(&self, id: &str) -> Result<Cancelled>;

    /// Every account by name, each with its devices in the order they enrolled.
    fn accounts(&self) -> Result<Vec<AccountInfo>>;

    /// Marks `device` revoked and cancels the pending tokens it made, in one
    /// transaction (so no token it makes meanwhile survives): how many were cancelled,
    /// or `None` when there is no such device.
    fn revoke(&self, device: &DeviceId) -> Result<Option<usize>>;

    /// Sets `account`'s quota (`None`: back to the default). False when there is no
    /// such account.
    fn set_quota(&self, account: &AccountName, quota: Option<QuotaSetting>) -> Result<bool>;

    /// Every quota the admin set, by account.
    fn quotas(&self) -> Result<HashMap<AccountName, QuotaSetting>>;
}

/// The SQLite account store of the embedded backend.
pub struct Accounts {
    db: Mutex<Connection>,
    lockout: Lockout,
}

/// How a secret is stored and looked up.
pub fn hash(secret: &Secret) -> Vec<u8> {
    sha256(&secret.0).0.to_vec()
}

pub fn new_secret() -> Secret {
    Secret(rand::random())
}

/// An id for a device whose wanted one is taken.
pub fn new_device_id() -> DeviceId {
    DeviceId::new(format!("{:016X}", rand::random::<u64>())).expect("hex is a valid id")
}

/// The refusal for a login with `secret` of a device whose stored hash and revocation
/// are these; `None`: it gets in. A wrong secret reads as an unknown device.
pub fn login_refusal(stored: &[u8], revoked: bool, secret: &Secret) -> Option<Refusal> {
    if stored != hash(secret) {
        Some(Refusal::CredentialUnknown)
    } else if revoked {
        Some(Refusal::DeviceRevoked)
    } else {
        None
    }
}

/// Whether a login now should rewrite a `last_seen` of this age.
pub fn last_seen_stale(last_seen: Option<i64>, now: i64) -> bool {
    last_seen.is_none_or(|seen| now - seen >= LAST_SEEN_RESOLUTION)
}

/// An invite token's row, as far as redeeming it goes.
#[derive(Debug, Clone, Copy)]
pub struct TokenRow {
    pub expires: i64,
    pub used: bool,
    pub cancelled: bool,
}

/// Why the token with this row (`None`: no such token) cannot enrol a device at `now`;
/// `None` when it can.
pub fn token_refusal(row: Option<TokenRow>, now: i64) -> Option<Refusal> {
    match row {
        None => Some(Refusal::TokenUnknown),
        Some(t) if t.used => Some(Refusal::TokenUsed),
        // A cancelled token reads as expired: the device's advice is the same (ask for
        // a new one), and the wire has no other word for it.
        Some(t) if t.cancelled || t.expires <= now => Some(Refusal::TokenExpired),
        Some(_) => None,
    }
}

/// A device name as stored: its first 64 characters.
pub fn stored_name(device_name: &str) -> String {
    device_name.chars().take(64).collect()
}

/// The answer to an enrolment that was recorded, logged.
pub fn enrolled(account: &AccountName, device: DeviceId, name: &str, secret: Secret) -> Admitted {
    tracing::info!(account = %account, device = %device, name, "device enrolled");
    Admitted {
        account: account.clone(),
        device,
        credential: Some(secret),
    }
}

/// `accounts` (by name, without devices) with `devices` (in enrolment order) placed
/// under their accounts.
pub fn with_devices(
    mut accounts: Vec<AccountInfo>,
    devices: impl IntoIterator<Item = DeviceInfo>,
) -> Vec<AccountInfo> {
    for device in devices {
        if let Some(a) = accounts.iter_mut().find(|a| a.account == device.account) {
            a.devices.push(device);
        }
    }
    accounts
}

/// An account as listed, before its devices and usage are added.
pub fn account_info(account: String, created: i64) -> AccountInfo {
    AccountInfo {
        account,
        created,
        devices: Vec::new(),
        used: 0,
        quota: None,
    }
}

impl Accounts {
    pub fn open(file: &Path) -> Result<Accounts> {
        private::touch(file)?;
        let db = Connection::open(file)
            .with_context(|| format!("cannot open the account store {}", file.display()))?;
        db.busy_timeout(Duration::from_secs(10))?;
        // One fsync per commit (of the log) instead of the rollback journal's two or
        // three; `synchronous` FULL so that an enrolment survives a power cut (the device
        // keeps the credential it was given).
        db.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| db.pragma_update(None, "synchronous", "FULL"))
            .with_context(|| format!("cannot set up the account store {}", file.display()))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts (
                 name TEXT PRIMARY KEY, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS devices (
                 id TEXT PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL,
                 secret_hash BLOB NOT NULL, enrolled INTEGER NOT NULL,
                 last_seen INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS invites (
                 hash BLOB PRIMARY KEY, account TEXT NOT NULL, created INTEGER NOT NULL,
                 expires INTEGER NOT NULL, used_by TEXT, used_at INTEGER);
             CREATE TABLE IF NOT EXISTS quotas (
                 account TEXT PRIMARY KEY, bytes INTEGER);",
        )
        .with_context(|| format!("cannot set up the account store {}", file.display()))?;
        // Stores made before tokens recorded their maker and cancellation get the
        // columns in place; their old tokens show as made by an unknown maker.
        for (column, decl) in [("made_by", "TEXT"), ("cancelled", "INTEGER")] {
            add_column(&db, "invites", column, decl)
                .with_context(|| format!("cannot upgrade the account store {}", file.display()))?;
        }
        Ok(Accounts {
            db: Mutex::new(db),
            lockout: Lockout::default(),
        })
    }

    fn login(&self, device: &DeviceId, secret: &Secret) -> Result<Result<Admitted, Refusal>> {
        let db = lock(&self.db);
        let row: Option<(String, Vec<u8>, bool, Option<i64>)> = db
            .query_row(
                "SELECT account, secret_hash, revoked, last_seen FROM devices WHERE id = ?1",
                [device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((account, stored, revoked, last_seen)) = row else {
            return Ok(Err(Refusal::CredentialUnknown));
        };
        if let Some(refusal) = login_refusal(&stored, revoked, secret) {
            return Ok(Err(refusal));
        }
        let now = unix_secs();
        if last_seen_stale(last_seen, now) {
            db.execute(
                "UPDATE devices SET last_seen = ?1 WHERE id = ?2",
                params![now, device.as_str()],
            )?;
        }
        Ok(Ok(Admitted {
            account: AccountName::new(account)?,
            device: device.clone(),
            credential: None,
        }))
    }

    fn redeem(
        &self,
        secret: &Secret,
        device: &DeviceId,
        device_name: &str,
    ) -> Result<Result<Admitted, Refusal>> {
        let key = hash(secret);
        let now = unix_secs();
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let row: Option<(String, TokenRow)> = tx
            .query_row(
                "SELECT account, expires, used_by IS NOT NULL, cancelled IS NOT NULL
                 FROM invites WHERE hash = ?1",
                [&key],
                |r| {
                    let token = TokenRow {
                        expires: r.get(1)?,
                        used: r.get(2)?,
                        cancelled: r.get(3)?,
                    };
                    Ok((r.get(0)?, token))
                },
            )
            .optional()?;
        let account = match (token_refusal(row.as_ref().map(|(_, t)| *t), now), row) {
            (None, Some((account, _))) => AccountName::new(account)?,
            (refusal, _) => return Ok(Err(refusal.unwrap_or(Refusal::TokenUnknown))),
        };
        let admitted = self.enrol(&tx, &account, device, device_name)?;
        let used = tx.execute(
            "UPDATE invites SET used_by = ?1, used_at = ?2
             WHERE hash = ?3 AND used_by IS NULL AND cancelled IS NULL",
            params![admitted.device.as_str(), now, key],
        )?;
        if used != 1 {
            return Ok(Err(Refusal::TokenUsed));
        }
        tx.commit()?;
        Ok(Ok(admitted))
    }

    /// Records a new device of `account`, with the id it asked for unless that is taken.
    fn enrol(
        &self,
        db: &Connection,
        account: &AccountName,
        wanted: &DeviceId,
        device_name: &str,
    ) -> Result<Admitted> {
        let now = unix_secs();
        db.execute(
            "INSERT OR IGNORE INTO accounts (name, created) VALUES (?1, ?2)",
            params![account.as_str(), now],
        )?;
        let taken = |id: &DeviceId| -> Result<bool> {
            Ok(db
                .query_row("SELECT 1 FROM devices WHERE id = ?1", [id.as_str()], |_| {
                    Ok(())
                })
                .optional()?
                .is_some())
        };
        let mut device = wanted.clone();
        while taken(&device)? {
            device = new_device_id();
        }
        let secret = new_secret();
        let name = stored_name(device_name);
        db.execute(
            "INSERT INTO devices (id, account, name, secret_hash, enrolled, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![device.as_str(), account.as_str(), name, hash(&secret), now],
        )?;
        Ok(enrolled(account, device, &name, secret))
    }
}

impl AccountStore for Accounts {
    fn authenticate(
        &self,
        request: &AuthRequest,
        open_registration: bool,
        peer: IpAddr,
    ) -> Result<Result<Admitted, Refusal>> {
        self.lockout.judge(request, peer, || match request {
            AuthRequest::Credential { device, secret } => self.login(device, secret),
            AuthRequest::Redeem {
                secret,
                device,
                device_name,
            } => self.redeem(secret, device, device_name),
            AuthRequest::Register {
                device,
                device_name,
            } if open_registration => {
                let account = AccountName::new(OPEN_ACCOUNT).expect("a valid name");
                Ok(Ok(self.enrol(
                    &lock(&self.db),
                    &account,
                    device,
                    device_name,
                )?))
            }
            AuthRequest::Register { .. } => Ok(Err(Refusal::RegistrationClosed)),
        })
    }

    fn invite(&self, account: &AccountName, ttl: Duration, maker: &Maker) -> Result<Secret> {
        self.make_invite(account, ttl, maker)
    }

    fn invites(&self) -> Result<Vec<InviteInfo>> {
        self.pending_invites()
    }

    fn cancel_invite(&self, id: &str) -> Result<Cancelled> {
        self.cancel_by_id(id)
    }

    fn accounts(&self) -> Result<Vec<AccountInfo>> {
        let db = lock(&self.db);
        let mut stmt = db.prepare("SELECT name, created FROM accounts ORDER BY name")?;
        let accounts = stmt
            .query_map([], |r| Ok(account_info(r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = db.prepare(
            "SELECT account, id, name, enrolled, last_seen, revoked FROM devices
             ORDER BY enrolled, id",
        )?;
        let devices = stmt
            .query_map([], |r| {
                Ok(DeviceInfo {
                    account: r.get(0)?,
                    device: r.get(1)?,
                    name: r.get(2)?,
                    enrolled: r.get(3)?,
                    last_seen: r.get(4)?,
                    revoked: r.get(5)?,
                    connections: 0,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(with_devices(accounts, devices))
    }

    fn revoke(&self, device: &DeviceId) -> Result<Option<usize>> {
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let n = tx.execute(
            "UPDATE devices SET revoked = 1 WHERE id = ?1",
            [device.as_str()],
        )?;
        if n != 1 {
            return Ok(None);
        }
        let cancelled = tx.execute(
            "UPDATE invites SET cancelled = ?1
             WHERE made_by = ?2 AND used_by IS NULL AND cancelled IS NULL",
            params![unix_secs(), Maker::Device(device.clone()).column()],
        )?;
        tx.commit()?;
        Ok(Some(cancelled))
    }

    // Quotas are kept apart from the tables above in a `quotas` table of their own: one
    // row per account the admin set a quota for; an account without a row has
    // `server.default_quota`. `open` makes the table where an older store lacks it.
    fn set_quota(&self, account: &AccountName, quota: Option<QuotaSetting>) -> Result<bool> {
        let db = lock(&self.db);
        let known: bool = db.query_row(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
            [account.as_str()],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(false);
        }
        match quota {
            None => db.execute("DELETE FROM quotas WHERE account = ?1", [account.as_str()])?,
            Some(q) => db.execute(
                "INSERT OR REPLACE INTO quotas (account, bytes) VALUES (?1, ?2)",
                params![account.as_str(), q.column()],
            )?,
        };
        Ok(true)
    }

    fn quotas(&self) -> Result<HashMap<AccountName, QuotaSetting>> {
        let db = lock(&self.db);
        let mut stmt = db.prepare("SELECT account, bytes FROM quotas")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(QuotaSetting::by_account(rows))
    }
}

/// Adds `column` to `table` unless it is there: the in-place upgrade of an older store.
fn add_column(db: &Connection, table: &str, column: &str, decl: &str) -> Result<()> {
    let present: bool = db.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    if !present {
        db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// An account's quota as the admin set it with `filesyncctl server quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSetting {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit, whatever `server.default_quota` says.
    Unlimited,
}

impl QuotaSetting {
    /// As stored in `quotas.bytes`: `NULL` is no limit.
    pub fn column(self) -> Option<i64> {
        match self {
            QuotaSetting::Bytes(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
            QuotaSetting::Unlimited => None,
        }
    }

    /// The `quotas` rows (account name, `bytes`) by account; a row whose name is no
    /// valid account name is skipped.
    pub fn by_account(
        rows: impl IntoIterator<Item = (String, Option<i64>)>,
    ) -> HashMap<AccountName, QuotaSetting> {
        let mut quotas = HashMap::new();
        for (account, bytes) in rows {
            let Ok(account) = AccountName::new(&account) else {
                continue;
            };
            let setting = match bytes {
                Some(n) => QuotaSetting::Bytes(u64::try_from(n).unwrap_or(0)),
                None => QuotaSetting::Unlimited,
            };
            quotas.insert(account, setting);
        }
        quotas
    }
}

#[cfg(test)]
mod tests {
    use super::invites::{invite_id, invite_wait, minutes};
    use super::lockout::MAX_FAILURES;
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn store() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(&dir.path().join("accounts.db")).unwrap();
        (dir, accounts)
    }

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn redeem(secret: &Secret, device: &str) -> AuthRequest {
        AuthRequest::Redeem {
            secret: secret.clone(),
            device: id(device),
            device_name: "laptop".into(),
        }
    }

    #[test]
    fn a_token_enrols_one_device_and_its_credential_logs_in() {
        let (_dir, accounts) = store();
        let alice = AccountName::new("alice").unwrap();
        let secret = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        let admitted = accounts
            .authenticate(&redeem(&secret, "D1"), false, PEER)
            .unwrap()
            .unwrap();
        assert_eq!(
            (admitted.account.as_str(), admitted.device.as_str()),
            ("alice", "D1")
        );
        let credential = admitted.credential.unwrap();
        assert_eq!(
            accounts
                .authenticate(&redeem(&secret, "D2"), false, PEER)
                .unwrap(),
            Err(Refusal::TokenUsed)
        );
        let login = AuthRequest::Credential {
            device: id("D1"),
            secret: credential.clone(),
        };
        assert_eq!(
            accounts
                .authenticate(&login, false, PEER)
                .unwrap()
                .unwrap()
                .account,
            alice
        );
        let wrong = AuthRequest::Credential {
            device: id("D1"),
            secret: Secret([0; 32]),
        };
        assert_eq!(
            accounts.authenticate(&wrong, false, PEER).unwrap(),
            Err(Refusal::CredentialUnknown)
        );
        assert_eq!(accounts.revoke(&id("D1")).unwrap(), Some(0));
        assert_eq!(accounts.revoke(&id("nobody")).unwrap(), None);
        assert_eq!(
            accounts.authenticate(&login, false, PEER).unwrap(),
            Err(Refusal::DeviceRevoked)
        );
        let listed = accounts.accounts().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].account, "alice");
        assert!(listed[0].devices[0].revoked);
    }

    #[test]
    fn expired_unknown_and_closed_registration_are_refused() {
        let (_dir, accounts) = store();
        let bob = AccountName::new("bob").unwrap();
        let expired = accounts
            .invite(&bob, Duration::ZERO, &Maker::Admin)
            .unwrap();
        let refused = |req: &AuthRequest, open| accounts.authenticate(req, open, PEER).unwrap();
        assert_eq!(
            refused(&redeem(&expired, "D1"), false),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            refused(&redeem(&Secret([3; 32]), "D1"), false),
            Err(Refusal::TokenUnknown)
        );
        let register = AuthRequest::Register {
            device: id("D1"),
            device_name: "pc".into(),
        };
        assert_eq!(refused(&register, false), Err(Refusal::RegistrationClosed));
        let open = refused(&register, true).unwrap();
        assert_eq!(open.account.as_str(), OPEN_ACCOUNT);
        // The same id again gets a new one: ids are never shared.
        assert_ne!(refused(&register, true).unwrap().device, open.device);
    }

    #[test]
    fn concurrent_redemptions_enrol_exactly_one_device() {
        let (_dir, accounts) = store();
        let secret = accounts
            .invite(
                &AccountName::new("carol").unwrap(),
                DEFAULT_INVITE_TTL,
                &Maker::Admin,
            )
            .unwrap();
        let wins = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (accounts, secret) = (&accounts, &secret);
                    let peer = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
                    s.spawn(move || {
                        accounts
                            .authenticate(&redeem(secret, &format!("D{i}")), false, peer)
                            .unwrap()
                            .is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count()
        });
        assert_eq!(wins, 1);
        assert_eq!(accounts.accounts().unwrap()[0].devices.len(), 1);
    }

    #[test]
    fn too_many_failures_block_the_address() {
        let (_dir, accounts) = store();
        let bad = redeem(&Secret([5; 32]), "D1");
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                accounts.authenticate(&bad, false, PEER).unwrap(),
                Err(Refusal::TokenUnknown)
            );
        }
        assert_eq!(
            accounts.authenticate(&bad, false, PEER).unwrap(),
            Err(Refusal::TooManyAttempts)
        );
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(
            accounts.authenticate(&bad, false, other).unwrap(),
            Err(Refusal::TokenUnknown)
        );
    }

    fn enrolled(accounts: &Accounts, account: &str, device: &str) -> Secret {
        let token = accounts
            .invite(
                &AccountName::new(account).unwrap(),
                DEFAULT_INVITE_TTL,
                &Maker::Admin,
            )
            .unwrap();
        accounts
            .authenticate(&redeem(&token, device), false, PEER)
            .unwrap()
            .unwrap()
            .credential
            .unwrap()
    }

    #[test]
    fn a_good_credential_gets_in_from_a_locked_out_source() {
        let (_dir, accounts) = store();
        let credential = enrolled(&accounts, "alice", "D1");
        // A neighbour behind the same NAT (another port, the same address) guesses.
        let bad = redeem(&Secret([5; 32]), "D9");
        for _ in 0..=MAX_FAILURES {
            accounts
                .authenticate(&bad, false, PEER)
                .unwrap()
                .unwrap_err();
        }
        assert_eq!(
            accounts.authenticate(&bad, false, PEER).unwrap(),
            Err(Refusal::TooManyAttempts)
        );
        let login = AuthRequest::Credential {
            device: id("D1"),
            secret: credential,
        };
        assert!(accounts.authenticate(&login, false, PEER).unwrap().is_ok());
        let wrong = AuthRequest::Credential {
            device: id("D1"),
            secret: Secret([0; 32]),
        };
        assert_eq!(
            accounts.authenticate(&wrong, false, PEER).unwrap(),
            Err(Refusal::TooManyAttempts)
        );
        // The whole /64 of an IPv6 guesser is locked out, not another /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..MAX_FAILURES {
            let from = v6(&format!("2001:db8::{:x}", i + 1));
            accounts
                .authenticate(&bad, false, from)
                .unwrap()
                .unwrap_err();
        }
        assert_eq!(
            accounts
                .authenticate(&bad, false, v6("2001:db8::ffff"))
                .unwrap(),
            Err(Refusal::TooManyAttempts)
        );
        assert_eq!(
            accounts
                .authenticate(&bad, false, v6("2001:db8:0:1::1"))
                .unwrap(),
            Err(Refusal::TokenUnknown)
        );
    }

    #[test]
    fn a_device_makes_at_most_ten_tokens_an_hour() {
        let (_dir, accounts) = store();
        enrolled(&accounts, "alice", "D1");
        let alice = AccountName::new("alice").unwrap();
        let device = Maker::Device(id("D1"));
        for _ in 0..MAX_DEVICE_INVITES {
            accounts
                .invite(&alice, DEFAULT_INVITE_TTL, &device)
                .unwrap();
        }
        let refused = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &device)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("made 10 invite tokens within the last hour"),
            "{refused}"
        );
        assert!(refused.contains("in 60 minutes"), "{refused}");
        // The admin is not limited.
        accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        assert_eq!(invite_wait(None, 1_000), None);
        assert_eq!(invite_wait(Some(1_000), 1_000 + 3_599), Some(1));
        assert_eq!(invite_wait(Some(1_000), 1_000 + 3_600), None);
        assert_eq!(minutes(1), "1 minute");
        assert_eq!(minutes(61), "2 minutes");
    }

    #[test]
    fn revoking_a_device_cancels_the_tokens_it_made() {
        let (_dir, accounts) = store();
        enrolled(&accounts, "alice", "D1");
        let alice = AccountName::new("alice").unwrap();
        let device = Maker::Device(id("D1"));
        let made = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &device)
            .unwrap();
        let used = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &device)
            .unwrap();
        let by_admin = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        accounts
            .authenticate(&redeem(&used, "D2"), false, PEER)
            .unwrap()
            .unwrap();
        let listed = accounts.invites().unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(
            listed
                .iter()
                .any(|i| i.made_by == "device" && i.device.as_deref() == Some("D1"))
        );
        assert!(
            listed
                .iter()
                .any(|i| i.made_by == "admin" && i.device.is_none())
        );

        assert_eq!(accounts.revoke(&id("D1")).unwrap(), Some(1));
        assert_eq!(
            accounts
                .authenticate(&redeem(&made, "D3"), false, PEER)
                .unwrap(),
            Err(Refusal::TokenExpired)
        );
        let listed = accounts.invites().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].made_by, "admin");
        // A revoked device makes no more, whatever connection it still has.
        let refused = accounts
            .invite(&alice, DEFAULT_INVITE_TTL, &device)
            .unwrap_err();
        assert!(refused.to_string().contains("revoked"), "{refused}");
        assert!(
            accounts
                .authenticate(&redeem(&by_admin, "D4"), false, PEER)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn a_token_is_cancelled_by_its_id() {
        let (_dir, accounts) = store();
        let bob = AccountName::new("bob").unwrap();
        let token = accounts
            .invite(&bob, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        let listed = accounts.invites().unwrap();
        let id_of = listed[0].id.clone();
        assert_eq!(id_of.len(), 16);
        assert_eq!(id_of, invite_id(&hash(&token)));
        for unknown in ["", "nonsense", "+123456789abcdef", "0000000000000000"] {
            assert_eq!(accounts.cancel_invite(unknown).unwrap(), Cancelled::Unknown);
        }
        assert_eq!(
            accounts.cancel_invite(&id_of.to_uppercase()).unwrap(),
            Cancelled::Done(bob.clone())
        );
        assert_eq!(
            accounts.cancel_invite(&id_of).unwrap(),
            Cancelled::NotPending
        );
        assert!(accounts.invites().unwrap().is_empty());
        assert_eq!(
            accounts
                .authenticate(&redeem(&token, "D1"), false, PEER)
                .unwrap(),
            Err(Refusal::TokenExpired)
        );
        let used = accounts
            .invite(&bob, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        accounts
            .authenticate(&redeem(&used, "D2"), false, PEER)
            .unwrap()
            .unwrap();
        assert_eq!(
            accounts.cancel_invite(&invite_id(&hash(&used))).unwrap(),
            Cancelled::Used("D2".into())
        );
    }

    #[test]
    fn a_token_past_the_end_of_time_is_refused() {
        let (_dir, accounts) = store();
        let bob = AccountName::new("bob").unwrap();
        for ttl in [
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
        ] {
            let e = accounts.invite(&bob, ttl, &Maker::Admin).unwrap_err();
            assert!(e.to_string().contains("choose a shorter --expires"), "{e}");
        }
        assert!(accounts.invites().unwrap().is_empty());
    }

    #[test]
    fn an_older_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.db");
        {
            let db = Connection::open(&file).unwrap();
            db.execute_batch(
                "CREATE TABLE invites (
                     hash BLOB PRIMARY KEY, account TEXT NOT NULL, created INTEGER NOT NULL,
                     expires INTEGER NOT NULL, used_by TEXT, used_at INTEGER);",
            )
            .unwrap();
            db.execute(
                "INSERT INTO invites (hash, account, created, expires) VALUES (?1, 'old', 1, ?2)",
                params![hash(&Secret([7; 32])), i64::MAX],
            )
            .unwrap();
        }
        let accounts = Accounts::open(&file).unwrap();
        let listed = accounts.invites().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].account.as_str(), listed[0].made_by.as_str()),
            ("old", "unknown")
        );
        assert!(
            accounts
                .authenticate(&redeem(&Secret([7; 32]), "D1"), false, PEER)
                .unwrap()
                .is_ok()
        );
        drop(accounts);
        // Opening it again finds the columns already there.
        Accounts::open(&file).unwrap();
    }

    #[test]
    fn the_store_uses_a_log_and_last_seen_moves_once_a_minute() {
        let (_dir, accounts) = store();
        let credential = enrolled(&accounts, "alice", "D1");
        let mode: String = lock(&accounts.db)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let login = AuthRequest::Credential {
            device: id("D1"),
            secret: credential,
        };
        let seen_after_login = |set: i64| -> i64 {
            let db = lock(&accounts.db);
            db.execute("UPDATE devices SET last_seen = ?1", [set])
                .unwrap();
            drop(db);
            accounts.authenticate(&login, false, PEER).unwrap().unwrap();
            lock(&accounts.db)
                .query_row("SELECT last_seen FROM devices", [], |r| r.get(0))
                .unwrap()
        };
        let recent = unix_secs() - 30;
        assert_eq!(
            seen_after_login(recent),
            recent,
            "rewritten within the minute"
        );
        let old = unix_secs() - 120;
        assert!(
            seen_after_login(old) >= unix_secs() - 1,
            "not rewritten after a minute"
        );
    }

    #[test]
    fn quotas_are_kept_per_known_account() {
        let (_dir, store) = store();
        let home = AccountName::new("home").unwrap();
        let q = QuotaSetting::Bytes(1 << 20);
        assert!(
            !store.set_quota(&home, Some(q)).unwrap(),
            "no such account yet"
        );
        store
            .invite(&home, DEFAULT_INVITE_TTL, &Maker::Admin)
            .unwrap();
        assert!(store.set_quota(&home, Some(q)).unwrap());
        assert_eq!(store.quotas().unwrap().get(&home), Some(&q));
        let none = QuotaSetting::Unlimited;
        assert!(store.set_quota(&home, Some(none)).unwrap());
        assert_eq!(store.quotas().unwrap().get(&home), Some(&none));
        assert!(store.set_quota(&home, None).unwrap());
        assert!(store.quotas().unwrap().is_empty());
    }
}
