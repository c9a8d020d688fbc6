//! The cluster's account store: accounts, devices, invite tokens and quotas in the
//! PostgreSQL tables of [`super::schema`], deciding exactly as the embedded store does
//! (the rules are `server::accounts`', applied to these rows), so that any node
//! enrols, admits, invites, revokes and sets quotas, and every node sees what another
//! did.
//!
//! What must hold across nodes is held by the database, not by a lock of one node:
//! redeeming a token is one `UPDATE … WHERE used_by IS NULL … RETURNING` in the
//! transaction that inserts the device, so of two nodes redeeming one token at once the
//! second finds it used; making a token locks the maker's device row, which revoking
//! it also writes, so no token made by a device survives its revocation. The count of
//! failed guesses ([`Lockout`]) is kept per node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use deadpool_postgres::Transaction;
use filesync_proto::auth::{AuthRequest, Refusal, Secret};
use filesync_proto::control::{AccountInfo, DeviceInfo, InviteInfo};
use filesync_proto::{AccountName, DeviceId};

use super::admin::AdminEvent;
use super::pool::Db;
use crate::events::unix_secs;
use crate::server::accounts::invites::{
    self, INVITE_ID_BYTES, MAX_DEVICE_INVITES, not_pending, parse_invite_id,
};
use crate::server::accounts::{
    AccountStore, Admitted, Cancelled, Lockout, Maker, OPEN_ACCOUNT, QuotaSetting, TokenRow,
    account_info, enrolled, hash, last_seen_stale, login_refusal, new_device_id, new_secret,
    stored_name, token_refusal, with_devices,
};

/// Ids tried for a new device before giving up: its own, then random ones.
const ID_TRIES: usize = 8;

pub struct PgAccounts {
    db: Db,
    lockout: Lockout,
}

impl PgAccounts {
    pub fn new(db: Db) -> PgAccounts {
        PgAccounts {
            db,
            lockout: Lockout::default(),
        }
    }

    async fn login(&self, device: &DeviceId, secret: &Secret) -> Result<Result<Admitted, Refusal>> {
        let db = self.db.client().await?;
        let row = db
            .query_opt(
                "SELECT a.name, d.secret_hash, d.revoked, d.last_seen
                 FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = $1",
                &[&device.as_str()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(Refusal::CredentialUnknown));
        };
        let stored: Vec<u8> = row.get(1);
        if let Some(refusal) = login_refusal(&stored, row.get(2), secret) {
            return Ok(Err(refusal));
        }
        let now = unix_secs();
        if last_seen_stale(row.get(3), now) {
            db.execute(
                "UPDATE devices SET last_seen = $1 WHERE id = $2",
                &[&now, &device.as_str()],
            )
            .await?;
        }
        Ok(Ok(Admitted {
            account: AccountName::new(row.get::<_, String>(0))?,
            device: device.clone(),
            credential: None,
        }))
    }

    async fn redeem(
        &self,
        secret: &Secret,
        device: &DeviceId,
        device_name: &str,
    ) -> Result<Result<Admitted, Refusal>> {
        let key = hash(secret);
        let now = unix_secs();
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        // The one statement that decides which redemption wins: a second one waits for
        // this row's lock, then finds `used_by` set.
        let used = tx
            .query_opt(
                "UPDATE invites SET used_by = $1, used_at = $2
                 WHERE hash = $3 AND used_by IS NULL AND cancelled IS NULL AND expires > $2
                 RETURNING account_id, (SELECT name FROM accounts WHERE id = account_id)",
                &[&device.as_str(), &now, &key],
            )
            .await?;
        let Some(used) = used else {
            let row = tx
                .query_opt(
                    "SELECT expires, used_by IS NOT NULL, cancelled IS NOT NULL
                     FROM invites WHERE hash = $1",
                    &[&key],
                )
                .await?
                .map(|r| TokenRow {
                    expires: r.get(0),
                    used: r.get(1),
                    cancelled: r.get(2),
                });
            return Ok(Err(token_refusal(row, now).unwrap_or(Refusal::TokenUsed)));
        };
        let account = AccountName::new(used.get::<_, String>(1))?;
        let admitted = enrol(&tx, used.get(0), &account, device, device_name).await?;
        if admitted.device != *device {
            tx.execute(
                "UPDATE invites SET used_by = $1 WHERE hash = $2",
                &[&admitted.device.as_str(), &key],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(admitted))
    }

    /// Enrols a tokenless device into [`OPEN_ACCOUNT`].
    async fn register(&self, device: &DeviceId, device_name: &str) -> Result<Admitted> {
        let account = AccountName::new(OPEN_ACCOUNT)?;
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        let id = account_id(&tx, &account).await?;
        let admitted = enrol(&tx, id, &account, device, device_name).await?;
        tx.commit().await?;
        Ok(admitted)
    }

    /// The token, or (inner) why `maker` may not make one.
    async fn make(
        &self,
        account: &AccountName,
        expires: i64,
        maker: &Maker,
    ) -> Result<Result<Secret>> {
        let now = unix_secs();
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        if let Maker::Device(device) = maker {
            // Locked until the token is in: a revocation (which writes this row) waits
            // for it and then cancels it, or comes first and is seen here.
            let revoked: Option<bool> = tx
                .query_opt(
                    "SELECT revoked FROM devices WHERE id = $1 FOR UPDATE",
                    &[&device.as_str()],
                )
                .await?
                .map(|r| r.get(0));
            let tenth_latest: Option<i64> = tx
                .query_opt(
                    "SELECT created FROM invites WHERE made_by = $1
                     ORDER BY created DESC LIMIT 1 OFFSET $2",
                    &[&maker.column(), &(MAX_DEVICE_INVITES as i64 - 1)],
                )
                .await?
                .map(|r| r.get(0));
            if let Err(refused) = invites::may_make(device, account, revoked, tenth_latest, now) {
                return Ok(Err(refused));
            }
        }
        let id = account_id(&tx, account).await?;
        let secret = new_secret();
        tx.execute(
            "INSERT INTO invites (hash, account_id, created, expires, made_by)
             VALUES ($1, $2, $3, $4, $5)",
            &[&hash(&secret), &id, &now, &expires, &maker.column()],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(secret))
    }

    async fn pending(&self) -> Result<Vec<InviteInfo>> {
        let db = self.db.client().await?;
        let rows = db
            .query(
                "SELECT i.hash, a.name, i.made_by, i.created, i.expires
                 FROM invites i JOIN accounts a ON a.id = i.account_id
                 WHERE i.used_by IS NULL AND i.cancelled IS NULL AND i.expires > $1
                 ORDER BY i.created, i.hash",
                &[&unix_secs()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let made_by: Option<&str> = r.get(2);
                invites::info(r.get(0), r.get(1), made_by, r.get(3), r.get(4))
            })
            .collect())
    }

    async fn cancel(&self, prefix: &[u8]) -> Result<Cancelled> {
        let now = unix_secs();
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT i.hash, a.name, i.expires, i.used_by, i.cancelled IS NOT NULL
                 FROM invites i JOIN accounts a ON a.id = i.account_id
                 WHERE substring(i.hash FROM 1 FOR $1) = $2 LIMIT 1 FOR UPDATE OF i",
                &[&(INVITE_ID_BYTES as i32), &prefix],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Cancelled::Unknown);
        };
        if let Some(answer) = not_pending(row.get(2), row.get(3), row.get(4), now) {
            return Ok(answer);
        }
        let hash: Vec<u8> = row.get(0);
        tx.execute(
            "UPDATE invites SET cancelled = $1 WHERE hash = $2",
            &[&now, &hash],
        )
        .await?;
        tx.commit().await?;
        Ok(Cancelled::Done(AccountName::new(row.get::<_, String>(1))?))
    }

    async fn listed(&self) -> Result<Vec<AccountInfo>> {
        let db = self.db.client().await?;
        let accounts = db
            .query(
                "SELECT name, created FROM accounts ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| account_info(r.get(0), r.get(1)))
            .collect();
        let devices = db
            .query(
                "SELECT a.name, d.id, d.name, d.enrolled, d.last_seen, d.revoked
                 FROM devices d JOIN accounts a ON a.id = d.account_id
                 ORDER BY d.enrolled, d.id COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| DeviceInfo {
                account: r.get(0),
                device: r.get(1),
                name: r.get(2),
                enrolled: r.get(3),
                last_seen: r.get(4),
                revoked: r.get(5),
                connections: 0,
            })
            .collect::<Vec<_>>();
        Ok(with_devices(accounts, devices))
    }

    async fn revoked(&self, device: &DeviceId) -> Result<Option<usize>> {
        let mut db = self.db.client().await?;
        let tx = db.transaction().await?;
        let n = tx
            .execute(
                "UPDATE devices SET revoked = true WHERE id = $1",
                &[&device.as_str()],
            )
            .await?;
        if n != 1 {
            return Ok(None);
        }
        let cancelled = tx
            .execute(
                "UPDATE invites SET cancelled = $1
                 WHERE made_by = $2 AND used_by IS NULL AND cancelled IS NULL",
                &[&unix_secs(), &Maker::Device(device.clone()).column()],
            )
            .await?;
        let revoked = AdminEvent::Revoked {
            device: device.clone(),
        };
        revoked.send(&*tx).await?;
        tx.commit().await?;
        Ok(Some(cancelled as usize))
    }

    async fn quota_set(&self, account: &AccountName, quota: Option<QuotaSetting>) -> Result<bool> {
        let db = self.db.client().await?;
        let id: Option<i64> = db
            .query_opt(
                "SELECT id FROM accounts WHERE name = $1",
                &[&account.as_str()],
            )
            .await?
            .map(|r| r.get(0));
        let Some(id) = id else {
            return Ok(false);
        };
        match quota {
            None => {
                db.execute("DELETE FROM quotas WHERE account_id = $1", &[&id])
                    .await?
            }
            Some(q) => {
                db.execute(
                    "INSERT INTO quotas (account_id, bytes) VALUES ($1, $2)
                     ON CONFLICT (account_id) DO UPDATE SET bytes = EXCLUDED.bytes",
                    &[&id, &q.column()],
                )
                .await?
            }
        };
        let changed = AdminEvent::Quota {
            account: account.clone(),
        };
        changed.send(&**db).await?;
        Ok(true)
    }

    pub async fn quotas_set(&self) -> Result<HashMap<AccountName, QuotaSetting>> {
        let db = self.db.client().await?;
        let rows = db
            .query(
                "SELECT a.name, q.bytes FROM quotas q JOIN accounts a ON a.id = q.account_id",
                &[],
            )
            .await?;
        Ok(QuotaSetting::by_account(
            rows.iter().map(|r| (r.get(0), r.get(1))),
        ))
    }
}

/// The id of account `name`, made now if it is new. `DO UPDATE` rather than `DO
/// NOTHING`: it returns the row another transaction inserted meanwhile, too.
async fn account_id(tx: &Transaction<'_>, name: &AccountName) -> Result<i64> {
    let row = tx
        .query_one(
            "INSERT INTO accounts (name, created) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[&name.as_str(), &unix_secs()],
        )
        .await?;
    Ok(row.get(0))
}

/// Records a new device of account `account_id`, with the id it asked for unless that
/// is taken.
async fn enrol(
    tx: &Transaction<'_>,
    account_id: i64,
    account: &AccountName,
    wanted: &DeviceId,
    device_name: &str,
) -> Result<Admitted> {
    let now = unix_secs();
    let secret = new_secret();
    let name = stored_name(device_name);
    let mut device = wanted.clone();
    for _ in 0..ID_TRIES {
        let n = tx
            .execute(
                "INSERT INTO devices (id, account_id, name, secret_hash, enrolled, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
                &[&device.as_str(), &account_id, &name, &hash(&secret), &now],
            )
            .await?;
        if n == 1 {
            return Ok(enrolled(account, device, &name, secret));
        }
        device = new_device_id();
    }
    bail!("no free device id for a device of account {account} after {ID_TRIES} tries")
}

impl AccountStore for PgAccounts {
    fn authenticate(
        &self,
        request: &AuthRequest,
        open_registration: bool,
        peer: IpAddr,
    ) -> Result<Result<Admitted, Refusal>> {
        self.lockout.judge(request, peer, || {
            self.db.wait("decide on a device's credentials", async {
                match request {
                    AuthRequest::Credential { device, secret } => self.login(device, secret).await,
                    AuthRequest::Redeem {
                        secret,
                        device,
                        device_name,
                    } => self.redeem(secret, device, device_name).await,
                    AuthRequest::Register {
                        device,
                        device_name,
                    } if open_registration => Ok(Ok(self.register(device, device_name).await?)),
                    AuthRequest::Register { .. } => Ok(Err(Refusal::RegistrationClosed)),
                }
            })
        })
    }

    fn invite(&self, account: &AccountName, ttl: Duration, maker: &Maker) -> Result<Secret> {
        let expires = invites::expiry(ttl, unix_secs())?;
        self.db.wait(
            &format!("record an invite token for account {account}"),
            self.make(account, expires, maker),
        )?
    }

    fn invites(&self) -> Result<Vec<InviteInfo>> {
        self.db.wait("list the invite tokens", self.pending())
    }

    fn cancel_invite(&self, id: &str) -> Result<Cancelled> {
        let Some(prefix) = parse_invite_id(id) else {
            return Ok(Cancelled::Unknown);
        };
        self.db
            .wait(&format!("cancel invite token {id}"), self.cancel(&prefix))
    }

    fn accounts(&self) -> Result<Vec<AccountInfo>> {
        self.db.wait("list the accounts", self.listed())
    }

    fn revoke(&self, device: &DeviceId) -> Result<Option<usize>> {
        self.db
            .wait(&format!("revoke device {device}"), self.revoked(device))
    }

    fn set_quota(&self, account: &AccountName, quota: Option<QuotaSetting>) -> Result<bool> {
        self.db.wait(
            &format!("set the quota of account {account}"),
            self.quota_set(account, quota),
        )
    }

    fn quotas(&self) -> Result<HashMap<AccountName, QuotaSetting>> {
        self.db.wait("read the quotas", self.quotas_set())
    }
}
