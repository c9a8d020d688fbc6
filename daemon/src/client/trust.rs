//! What a device knows of its servers: per server address (as the folders' `server` key
//! writes it), the pinned certificate fingerprint; per (server address, account), the
//! device id and credential this device holds in that account. Kept in
//! `STATE_DIR/servers.db`, 0600. A credential never leaves this file except towards the
//! server it belongs to.
//!
//! [`TrustStore::login`] is the one way a device gets into a server: with an invite
//! token (enrolling one more credential, under the token's account), with the stored
//! credential of the account asked for, or by open registration (trusting the
//! certificate on first use when nothing is pinned yet). It never uses a credential of
//! another account than the one asked for (see [`super::account`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::auth::{AuthRequest, Fingerprint, InviteToken, Secret};
use filesync_proto::control::ServerTrust;
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesync_proto::{AccountName, DeviceId};
use futures::{SinkExt, StreamExt};
use rusqlite::{Connection, OptionalExtension, params};

use super::account::{NoCredential, OtherAccount, TokenForAnotherKey, WhichAccount};
use super::connect::{Authenticated, connect};
use crate::conn::{self, Counters};
use crate::fs::private;

/// This device's credential in one account of a server.
#[derive(Debug, Clone, PartialEq)]
struct Credential {
    account: AccountName,
    device: DeviceId,
    secret: Secret,
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

/// The schema. `servers` holds the pins; its `account`, `device` and `secret` columns
/// are the one credential per address of the first schema, moved into `credentials`
/// (and emptied) when the file is opened, so an old `servers.db` keeps working.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS servers (
        server TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, pinned_by TEXT NOT NULL,
        account TEXT, device TEXT, secret BLOB);
    CREATE TABLE IF NOT EXISTS credentials (
        server TEXT NOT NULL, account TEXT NOT NULL, device TEXT NOT NULL,
        secret BLOB NOT NULL, PRIMARY KEY (server, account));
    BEGIN IMMEDIATE;
    INSERT OR IGNORE INTO credentials (server, account, device, secret)
        SELECT server, account, device, secret FROM servers
        WHERE account IS NOT NULL AND device IS NOT NULL AND secret IS NOT NULL;
    UPDATE servers SET account = NULL, device = NULL, secret = NULL
        WHERE account IS NOT NULL OR device IS NOT NULL OR secret IS NOT NULL;
    COMMIT;";

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
        db.execute_batch(SCHEMA)
            .with_context(|| format!("cannot set up {}", self.file.display()))?;
        Ok(db)
    }

    /// The certificate pinned for `server`.
    fn pinned(&self, server: &str) -> Result<Option<Fingerprint>> {
        let fp: Option<Vec<u8>> = self.with_db(|db| {
            Ok(db
                .query_row(
                    "SELECT fingerprint FROM servers WHERE server = ?1",
                    [server],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        fp.map(fingerprint).transpose()
    }

    /// This device's credentials for `server`, by account name.
    fn credentials(&self, server: &str) -> Result<Vec<Credential>> {
        let rows: Vec<(String, String, Vec<u8>)> = self.with_db(|db| {
            let mut stmt = db.prepare(
                "SELECT account, device, secret FROM credentials WHERE server = ?1 \
                 ORDER BY account",
            )?;
            let rows = stmt.query_map([server], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        rows.into_iter()
            .map(|(account, device, secret)| {
                Ok(Credential {
                    account: AccountName::new(account)?,
                    device: DeviceId::new(device)?,
                    secret: Secret(
                        secret
                            .try_into()
                            .map_err(|_| anyhow!("a stored credential is damaged"))?,
                    ),
                })
            })
            .collect()
    }

    /// The accounts this device holds a credential for on `server`, by name.
    pub fn accounts(&self, server: &str) -> Result<Vec<AccountName>> {
        Ok(self
            .credentials(server)?
            .into_iter()
            .map(|c| c.account)
            .collect())
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

    /// Keeps a new credential for `account` on `server`, replacing only that account's.
    fn enrolled(
        &self,
        server: &str,
        account: &AccountName,
        device: &DeviceId,
        secret: &Secret,
    ) -> Result<()> {
        self.with_db(|db| {
            db.execute(
                "INSERT INTO credentials (server, account, device, secret) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(server, account) DO UPDATE SET device = excluded.device,
                                                            secret = excluded.secret",
                params![server, account.as_str(), device.as_str(), secret.0.to_vec()],
            )?;
            Ok(())
        })
    }

    /// Every known server, once per account this device holds there (once with no
    /// account when it holds none), for `status`; never the credential.
    pub fn list(&self) -> Result<Vec<ServerTrust>> {
        self.with_db(|db| {
            let mut stmt = db.prepare(
                "SELECT s.server, s.fingerprint, s.pinned_by, c.account, c.device \
                 FROM servers s LEFT JOIN credentials c ON c.server = s.server \
                 ORDER BY s.server, c.account",
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

    /// The credential to log in to `server` as `account`; with no account, the one
    /// credential held there. `None`: none is held and none was asked for.
    fn choose(&self, server: &str, account: Option<&AccountName>) -> Result<Option<Credential>> {
        let held = self.credentials(server)?;
        match account {
            Some(account) => match held.iter().find(|c| &c.account == account) {
                Some(c) => Ok(Some(c.clone())),
                None => Err(NoCredential {
                    server: server.to_owned(),
                    account: account.clone(),
                    held: held.into_iter().map(|c| c.account).collect(),
                }
                .into()),
            },
            None if held.len() > 1 => Err(WhichAccount {
                server: server.to_owned(),
                held: held.into_iter().map(|c| c.account).collect(),
            }
            .into()),
            None => Ok(held.into_iter().next()),
        }
    }

    /// Gets this device into `server`: redeeming `token` when given (which enrols a
    /// credential of the token's account), else with the stored credential of `account`
    /// (of the only account held there, for `None`), else, when none is held and no
    /// account was asked for, by open registration. Pins the certificate (from the
    /// token, or on first use) and keeps a new credential. A token that names another
    /// certificate than the pinned one is refused before anything is sent, and a login
    /// that lands in another account than `account` is an error.
    pub async fn login(
        &self,
        server: &str,
        token: Option<&InviteToken>,
        account: Option<&AccountName>,
        me: (&DeviceId, &str),
        counters: Arc<Counters>,
    ) -> Result<Authenticated> {
        let (device, device_name) = (me.0.clone(), me.1.to_string());
        let pinned = self.pinned(server)?;
        let mut _enrolling = None;
        let (pin, request) = match token {
            Some(t) => {
                if let Some(pinned) = pinned.filter(|p| *p != t.fingerprint) {
                    return Err(TokenForAnotherKey {
                        server: server.to_owned(),
                        pinned,
                        token: t.fingerprint,
                    }
                    .into());
                }
                let request = AuthRequest::Redeem {
                    secret: t.secret.clone(),
                    device,
                    device_name,
                };
                (Some(t.fingerprint), request)
            }
            None => {
                let mut chosen = self.choose(server, account)?;
                if chosen.is_none() {
                    _enrolling = Some(self.enrolling.lock().await);
                    chosen = self.choose(server, account)?;
                }
                let request = match chosen {
                    Some(c) => AuthRequest::Credential {
                        device: c.device,
                        secret: c.secret,
                    },
                    None => AuthRequest::Register {
                        device,
                        device_name,
                    },
                };
                (self.pinned(server)?, request)
            }
        };
        let auth = connect(server, pin, request, counters).await?;
        if token.is_some() && pinned.is_none() {
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
        if let Some(expected) = account.filter(|a| **a != auth.account) {
            return Err(OtherAccount {
                server: server.to_owned(),
                expected: expected.clone(),
                accepted: auth.account,
            }
            .into());
        }
        Ok(auth)
    }

    /// Asks `server` for an invite token into this device's account there.
    pub async fn device_invite(
        &self,
        server: &str,
        account: Option<&AccountName>,
        me: (&DeviceId, &str),
    ) -> Result<String> {
        if self.credentials(server)?.is_empty() {
            bail!(
                "this device is not enrolled with {server}: add a folder with that server \
                 first (`filesyncctl add PATH --server {server} --token TOKEN`)"
            );
        }
        let answer = self
            .one_request(server, account, me, ClientMsg::CreateInvite)
            .await?;
        match answer {
            Some(ServerMsg::Invite(Ok(token))) => Ok(token),
            Some(ServerMsg::Invite(Err(why))) => bail!("server {server} made no token: {why}"),
            Some(other) => bail!("protocol error: expected Invite, got {other:?}"),
            None => bail!("server {server} closed the connection"),
        }
    }

    /// Logs in to `server` as `account` on a connection of its own, sends `request` in
    /// place of a Hello, and returns the server's one answer (`None`: it closed the
    /// connection instead).
    pub async fn one_request(
        &self,
        server: &str,
        account: Option<&AccountName>,
        me: (&DeviceId, &str),
        request: ClientMsg,
    ) -> Result<Option<ServerMsg>> {
        let mut auth = self
            .login(server, None, account, me, Arc::new(Counters::default()))
            .await?;
        auth.framed.send(request).await?;
        match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, auth.framed.next()).await {
            Ok(answer) => Ok(answer.transpose()?),
            Err(_) => bail!("server {server} did not answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "files.example.invalid:7101";

    fn account(name: &str) -> AccountName {
        AccountName::new(name).unwrap()
    }

    fn enrol(store: &TrustStore, name: &str, device: &str, secret: u8) -> Credential {
        let c = Credential {
            account: account(name),
            device: DeviceId::new(device).unwrap(),
            secret: Secret([secret; 32]),
        };
        store
            .enrolled(SERVER, &c.account, &c.device, &c.secret)
            .unwrap();
        c
    }

    #[test]
    fn a_new_pin_keeps_the_credential_and_the_list_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        assert!(store.pinned(SERVER).unwrap().is_none());
        store
            .pin(SERVER, Fingerprint([1; 32]), "first-use")
            .unwrap();
        let alice = enrol(&store, "alice", "D1", 7);
        store.pin(SERVER, Fingerprint([2; 32]), "manual").unwrap();

        assert_eq!(store.pinned(SERVER).unwrap(), Some(Fingerprint([2; 32])));
        assert_eq!(store.choose(SERVER, None).unwrap(), Some(alice));
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

    #[test]
    fn each_account_keeps_its_own_credential_and_none_stands_in_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        store.pin(SERVER, Fingerprint([1; 32]), "token").unwrap();
        let home = enrol(&store, "home", "D1", 1);
        enrol(&store, "work", "D2", 2);
        let work = enrol(&store, "work", "D3", 3);

        assert_eq!(
            store.choose(SERVER, Some(&home.account)).unwrap(),
            Some(home)
        );
        assert_eq!(
            store.choose(SERVER, Some(&work.account)).unwrap(),
            Some(work)
        );
        let which = store.choose(SERVER, None).unwrap_err();
        let which = which.downcast_ref::<WhichAccount>().unwrap();
        assert_eq!(which.held, [account("home"), account("work")]);
        let missing = store.choose(SERVER, Some(&account("play"))).unwrap_err();
        let missing = missing.downcast_ref::<NoCredential>().unwrap();
        assert_eq!(missing.held, [account("home"), account("work")]);
        assert_eq!(store.choose("other:7101", None).unwrap(), None);
        let listed: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|t| (t.account.unwrap(), t.device.unwrap()))
            .collect();
        assert_eq!(
            listed,
            [("home".into(), "D1".into()), ("work".into(), "D3".into())]
        );
    }

    #[test]
    fn a_servers_db_of_the_first_schema_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("servers.db");
        {
            let old = Connection::open(&file).unwrap();
            old.execute_batch(
                "CREATE TABLE servers (
                     server TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, pinned_by TEXT NOT NULL,
                     account TEXT, device TEXT, secret BLOB)",
            )
            .unwrap();
            old.execute(
                "INSERT INTO servers VALUES (?1, ?2, 'token', 'home', 'D1', ?3)",
                params![SERVER, vec![5u8; 32], vec![9u8; 32]],
            )
            .unwrap();
            old.execute(
                "INSERT INTO servers (server, fingerprint, pinned_by) VALUES ('pinned:1', ?1, 'manual')",
                [vec![6u8; 32]],
            )
            .unwrap();
        }
        let store = TrustStore::new(dir.path());
        let home = Credential {
            account: account("home"),
            device: DeviceId::new("D1").unwrap(),
            secret: Secret([9; 32]),
        };
        assert_eq!(store.choose(SERVER, None).unwrap(), Some(home.clone()));
        assert_eq!(store.pinned(SERVER).unwrap(), Some(Fingerprint([5; 32])));
        assert_eq!(
            store.pinned("pinned:1").unwrap(),
            Some(Fingerprint([6; 32]))
        );
        assert_eq!(store.choose("pinned:1", None).unwrap(), None);
        // The old columns are emptied, and opening again changes nothing.
        let left: Option<Vec<u8>> = store
            .with_db(|db| {
                Ok(db.query_row(
                    "SELECT secret FROM servers WHERE server = ?1",
                    [SERVER],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(left, None);
        drop(store);
        let again = TrustStore::new(dir.path());
        assert_eq!(
            again.choose(SERVER, Some(&home.account.clone())).unwrap(),
            Some(home)
        );
    }

    #[tokio::test]
    async fn a_token_for_another_certificate_than_the_pin_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        // Nothing listens there: an attempt to connect would fail with another error.
        let server = "127.0.0.1:9";
        store.pin(server, Fingerprint([1; 32]), "token").unwrap();
        let token = InviteToken {
            server: server.into(),
            fingerprint: Fingerprint([2; 32]),
            secret: Secret([3; 32]),
        };
        let me = DeviceId::new("D1").unwrap();
        let err = store
            .login(server, Some(&token), None, (&me, "laptop"), Arc::default())
            .await
            .err()
            .unwrap();
        let refused = err.downcast_ref::<TokenForAnotherKey>().unwrap();
        assert_eq!(
            (refused.pinned, refused.token),
            (Fingerprint([1; 32]), Fingerprint([2; 32]))
        );
        let text = err.to_string();
        assert!(
            text.contains(&"01".repeat(32)) && text.contains(&"02".repeat(32)),
            "{text}"
        );
        assert!(text.contains("filesyncctl trust 127.0.0.1:9"), "{text}");
        assert_eq!(store.pinned(server).unwrap(), Some(Fingerprint([1; 32])));
    }
}
