//! The server's accounts, devices and invite tokens, and the decision whether a device
//! gets in: `DATA_DIR/.filesync/accounts.db` (SQLite, 0600).
//!
//! Only SHA-256 hashes of device secrets and token secrets are stored, so a copy of the
//! database lets nobody in. Redeeming a token is one transaction under one lock: of two
//! devices presenting the same token at once, exactly one is enrolled. Failed guesses
//! (unknown, used or expired tokens, unknown credentials) are counted per source
//! address, and an address with too many is refused for a minute without looking at
//! what it sent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use filesync_proto::auth::{AuthRequest, Refusal, Secret};
use filesync_proto::control::{AccountInfo, DeviceInfo};
use filesync_proto::{AccountName, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::chunk::sha256;
use crate::private;

/// The account that open registration enrols tokenless devices into.
pub const OPEN_ACCOUNT: &str = "open";
/// How long an invite token is valid unless the admin says otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Failed attempts an address may make within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A device that got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub account: AccountName,
    pub device: DeviceId,
    /// Set when the device was just enrolled: its new credential.
    pub credential: Option<Secret>,
}

pub struct Accounts {
    db: Mutex<Connection>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hash(secret: &Secret) -> Vec<u8> {
    sha256(&secret.0).0.to_vec()
}

fn new_secret() -> Secret {
    Secret(rand::random())
}

fn new_device_id() -> DeviceId {
    DeviceId::new(format!("{:016X}", rand::random::<u64>())).expect("hex is a valid id")
}

impl Accounts {
    pub fn open(file: &Path) -> Result<Accounts> {
        private::touch(file)?;
        let db = Connection::open(file)
            .with_context(|| format!("cannot open the account store {}", file.display()))?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts (
                 name TEXT PRIMARY KEY, created INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS devices (
                 id TEXT PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL,
                 secret_hash BLOB NOT NULL, enrolled INTEGER NOT NULL,
                 last_seen INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS invites (
                 hash BLOB PRIMARY KEY, account TEXT NOT NULL, created INTEGER NOT NULL,
                 expires INTEGER NOT NULL, used_by TEXT, used_at INTEGER);",
        )
        .with_context(|| format!("cannot set up the account store {}", file.display()))?;
        Ok(Accounts {
            db: Mutex::new(db),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// A new one-time token secret for `account`, which is created if new.
    pub fn invite(&self, account: &AccountName, ttl: Duration) -> Result<Secret> {
        let secret = new_secret();
        let db = lock(&self.db);
        let now = now();
        db.execute(
            "INSERT OR IGNORE INTO accounts (name, created) VALUES (?1, ?2)",
            params![account.as_str(), now],
        )?;
        db.execute(
            "INSERT INTO invites (hash, account, created, expires) VALUES (?1, ?2, ?3, ?4)",
            params![
                hash(&secret),
                account.as_str(),
                now,
                now + ttl.as_secs() as i64
            ],
        )?;
        Ok(secret)
    }

    /// Decides whether the device behind `request`, from `peer`, gets in; an `Err` is a
    /// failure of the store itself.
    pub fn authenticate(
        &self,
        request: &AuthRequest,
        open_registration: bool,
        peer: IpAddr,
    ) -> Result<Result<Admitted, Refusal>> {
        if self.blocked(peer) {
            return Ok(Err(Refusal::TooManyAttempts));
        }
        let decided = match request {
            AuthRequest::Credential { device, secret } => self.login(device, secret)?,
            AuthRequest::Redeem {
                secret,
                device,
                device_name,
            } => self.redeem(secret, device, device_name)?,
            AuthRequest::Register {
                device,
                device_name,
            } if open_registration => {
                let account = AccountName::new(OPEN_ACCOUNT).expect("a valid name");
                Ok(self.enrol(&lock(&self.db), &account, device, device_name)?)
            }
            AuthRequest::Register { .. } => Err(Refusal::RegistrationClosed),
        };
        // Guesses count; a revoked device or one without a token retrying is no guess.
        if let Err(
            Refusal::TokenUnknown
            | Refusal::TokenUsed
            | Refusal::TokenExpired
            | Refusal::CredentialUnknown,
        ) = decided
        {
            self.failed(peer);
        }
        Ok(decided)
    }

    fn blocked(&self, peer: IpAddr) -> bool {
        let failures = lock(&self.failures);
        failures
            .get(&peer)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, peer: IpAddr) {
        let mut failures = lock(&self.failures);
        failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        failures.entry(peer).or_insert((0, Instant::now())).0 += 1;
    }

    fn login(&self, device: &DeviceId, secret: &Secret) -> Result<Result<Admitted, Refusal>> {
        let db = lock(&self.db);
        let row: Option<(String, Vec<u8>, bool)> = db
            .query_row(
                "SELECT account, secret_hash, revoked FROM devices WHERE id = ?1",
                [device.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((account, stored, revoked)) = row else {
            return Ok(Err(Refusal::CredentialUnknown));
        };
        if stored != hash(secret) {
            return Ok(Err(Refusal::CredentialUnknown));
        }
        if revoked {
            return Ok(Err(Refusal::DeviceRevoked));
        }
        db.execute(
            "UPDATE devices SET last_seen = ?1 WHERE id = ?2",
            params![now(), device.as_str()],
        )?;
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
        let now = now();
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let row: Option<(String, i64, Option<String>)> = tx
            .query_row(
                "SELECT account, expires, used_by FROM invites WHERE hash = ?1",
                [&key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let account = match row {
            None => return Ok(Err(Refusal::TokenUnknown)),
            Some((_, _, Some(_))) => return Ok(Err(Refusal::TokenUsed)),
            Some((_, expires, None)) if expires <= now => {
                return Ok(Err(Refusal::TokenExpired));
            }
            Some((account, _, None)) => AccountName::new(account)?,
        };
        let admitted = self.enrol(&tx, &account, device, device_name)?;
        let used = tx.execute(
            "UPDATE invites SET used_by = ?1, used_at = ?2 WHERE hash = ?3 AND used_by IS NULL",
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
        let now = now();
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
        let name: String = device_name.chars().take(64).collect();
        db.execute(
            "INSERT INTO devices (id, account, name, secret_hash, enrolled, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![device.as_str(), account.as_str(), name, hash(&secret), now],
        )?;
        tracing::info!(account = %account, device = %device, name, "device enrolled");
        Ok(Admitted {
            account: account.clone(),
            device,
            credential: Some(secret),
        })
    }

    /// Every account by name, each with its devices in the order they enrolled.
    pub fn accounts(&self) -> Result<Vec<AccountInfo>> {
        let db = lock(&self.db);
        let mut stmt = db.prepare("SELECT name, created FROM accounts ORDER BY name")?;
        let mut accounts = stmt
            .query_map([], |r| {
                Ok(AccountInfo {
                    account: r.get(0)?,
                    created: r.get(1)?,
                    devices: Vec::new(),
                    used: 0,
                    quota: None,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = db.prepare(
            "SELECT account, id, name, enrolled, last_seen, revoked FROM devices
             ORDER BY enrolled, id",
        )?;
        let devices = stmt.query_map([], |r| {
            Ok(DeviceInfo {
                account: r.get(0)?,
                device: r.get(1)?,
                name: r.get(2)?,
                enrolled: r.get(3)?,
                last_seen: r.get(4)?,
                revoked: r.get(5)?,
                connections: 0,
            })
        })?;
        for device in devices {
            let device = device?;
            if let Some(a) = accounts.iter_mut().find(|a| a.account == device.account) {
                a.devices.push(device);
            }
        }
        Ok(accounts)
    }

    /// Marks `device` revoked; false when there is no such device.
    pub fn revoke(&self, device: &DeviceId) -> Result<bool> {
        let db = lock(&self.db);
        let n = db.execute(
            "UPDATE devices SET revoked = 1 WHERE id = ?1",
            [device.as_str()],
        )?;
        Ok(n == 1)
    }
}

/// An account's quota as the admin set it with `filesyncctl server quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSetting {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit, whatever `server.default_quota` says.
    Unlimited,
}

/// Quotas, kept apart from the tables above in a `quotas` table of their own: one row
/// per account the admin set a quota for; an account without a row has
/// `server.default_quota`. The table is made on first use, so older stores need no step.
impl Accounts {
    const QUOTA_TABLE: &str = "CREATE TABLE IF NOT EXISTS quotas (
         account TEXT PRIMARY KEY, bytes INTEGER)";

    /// Sets `account`'s quota (`None`: back to the default). False when there is no
    /// such account.
    pub fn set_quota(&self, account: &AccountName, quota: Option<QuotaSetting>) -> Result<bool> {
        let db = lock(&self.db);
        db.execute_batch(Self::QUOTA_TABLE)?;
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
                params![
                    account.as_str(),
                    match q {
                        QuotaSetting::Bytes(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                        QuotaSetting::Unlimited => None,
                    }
                ],
            )?,
        };
        Ok(true)
    }

    /// Every quota the admin set, by account.
    pub fn quotas(&self) -> Result<HashMap<AccountName, QuotaSetting>> {
        let db = lock(&self.db);
        db.execute_batch(Self::QUOTA_TABLE)?;
        let mut stmt = db.prepare("SELECT account, bytes FROM quotas")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        let mut quotas = HashMap::new();
        for row in rows {
            let (account, bytes) = row?;
            let Ok(account) = AccountName::new(&account) else {
                continue;
            };
            let setting = match bytes {
                Some(n) => QuotaSetting::Bytes(u64::try_from(n).unwrap_or(0)),
                None => QuotaSetting::Unlimited,
            };
            quotas.insert(account, setting);
        }
        Ok(quotas)
    }
}

#[cfg(test)]
mod tests {
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
        let secret = accounts.invite(&alice, DEFAULT_INVITE_TTL).unwrap();
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
        assert!(accounts.revoke(&id("D1")).unwrap());
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
        let expired = accounts.invite(&bob, Duration::ZERO).unwrap();
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
            .invite(&AccountName::new("carol").unwrap(), DEFAULT_INVITE_TTL)
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

    #[test]
    fn quotas_are_kept_per_known_account() {
        let (_dir, store) = store();
        let home = AccountName::new("home").unwrap();
        let q = QuotaSetting::Bytes(1 << 20);
        assert!(
            !store.set_quota(&home, Some(q)).unwrap(),
            "no such account yet"
        );
        store.invite(&home, DEFAULT_INVITE_TTL).unwrap();
        assert!(store.set_quota(&home, Some(q)).unwrap());
        assert_eq!(store.quotas().unwrap().get(&home), Some(&q));
        let none = QuotaSetting::Unlimited;
        assert!(store.set_quota(&home, Some(none)).unwrap());
        assert_eq!(store.quotas().unwrap().get(&home), Some(&none));
        assert!(store.set_quota(&home, None).unwrap());
        assert!(store.quotas().unwrap().is_empty());
    }
}
