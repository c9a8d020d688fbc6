//! Folders shared across accounts: the grants, and what they decide when a device of
//! another account says hello for `OWNER/FOLDER`.
//!
//! A grant gives one account (the member) access to one folder of another account (the
//! owner), read-write or read-only. Grants live in the account store's file
//! (`DATA_DIR/.filesync/accounts.db`, table `shares`), through a connection of their
//! own, so the account code does not change. The server copy of a shared folder stays
//! at `DATA_DIR/OWNER/FOLDER` with its one sequencer: members sync the owner's folder,
//! never a copy. A member never creates a folder: its hello is refused unless the folder
//! exists and a grant names its account.
//!
//! Taking a grant back (or changing it) cancels one token per (owner, folder, member)
//! that every live connection of that member to that folder follows, so they close at
//! once. A session takes its token before it reads the grant, and a withdrawal deletes
//! the grant before it cancels the token: whichever comes first, no connection outlives
//! the grant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use filesync_proto::control::{ControlErrorKind, Request, Response, ShareInfo};
use filesync_proto::wire::{ShareGrant, ShareRequest};
use filesync_proto::{AccountName, FolderName};
use rusqlite::{Connection, OptionalExtension, params};
use tokio_util::sync::CancellationToken;

use super::Server;
use super::lock::lock;
use crate::events::unix_secs;

/// (owner, folder, member).
pub type Key = (AccountName, FolderName, AccountName);

/// The grants as a store keeps them: the embedded backend's [`SqliteShares`], or the
/// cluster's in PostgreSQL (`server::cluster::shares`). The calls wait on a lock or the
/// database, so they run on the blocking pool ([`Server::off_runtime`]).
pub trait ShareTable: Send + Sync {
    /// Records the grant (or changes its mode): `None` when the member account does
    /// not exist, else whether an existing grant changed.
    fn grant(&self, key: &Key, read_only: bool) -> Result<Option<bool>>;

    /// Deletes the grant; false when there was none.
    fn revoke(&self, key: &Key) -> Result<bool>;

    /// The member's access: `Some(read_only)`, or `None` without a grant.
    fn access(&self, key: &Key) -> Result<Option<bool>>;

    /// The grants of `owner` (every owner for `None`), of one folder or all, by owner,
    /// folder and member.
    fn list(
        &self,
        owner: Option<&AccountName>,
        folder: Option<&FolderName>,
    ) -> Result<Vec<ShareGrant>>;

    /// Whether `owner` has a folder `folder` (a device of the owner synced it): only an
    /// existing folder is shared, and a member never creates one.
    fn has_folder(&self, owner: &AccountName, folder: &FolderName) -> Result<bool>;
}

/// The grants, and the live connections that follow them.
pub struct Shares {
    table: Box<dyn ShareTable>,
    /// Followed by the live connections of a member to a shared folder; cancelled and
    /// dropped when the grant is taken back or changed.
    live: Mutex<HashMap<Key, CancellationToken>>,
}

/// What a hello for a folder name gets the device: the owner's folder it reaches, and how.
pub struct Access {
    pub owner: AccountName,
    pub folder: FolderName,
    /// Why this device may not change the folder, when it is a read-only member.
    pub read_only: Option<String>,
    /// Cancelled when the grant is taken back; `None` for the account's own folder.
    pub withdrawn: Option<CancellationToken>,
}

/// A grant as listed, from its row's names.
pub fn grant_of(
    owner: String,
    folder: String,
    member: String,
    read_only: bool,
    granted_at: i64,
) -> Result<ShareGrant> {
    Ok(ShareGrant {
        owner: AccountName::new(owner)?,
        folder: FolderName::new(folder)?,
        member: AccountName::new(member)?,
        read_only,
        granted_at,
    })
}

/// The embedded backend's grants: table `shares` of the account store's file; its
/// folders are the directories `DATA_DIR/OWNER/FOLDER`.
pub struct SqliteShares {
    db: Mutex<Connection>,
    data_dir: PathBuf,
}

impl SqliteShares {
    /// Opens the grants in the account store `file`, which [`crate::server::accounts::Accounts`]
    /// already created with its own tables, of the folders under `data_dir`.
    pub fn open(file: &Path, data_dir: &Path) -> Result<SqliteShares> {
        Ok(SqliteShares {
            db: Mutex::new(SqliteShares::migrate(file)?),
            data_dir: data_dir.to_owned(),
        })
    }

    /// Adds the table to the account store `file` where it lacks it.
    pub fn migrate(file: &Path) -> Result<Connection> {
        let db = Connection::open(file)
            .with_context(|| format!("cannot open the account store {}", file.display()))?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS shares (
                 owner TEXT NOT NULL, folder TEXT NOT NULL, member TEXT NOT NULL,
                 read_only INTEGER NOT NULL, granted INTEGER NOT NULL,
                 PRIMARY KEY (owner, folder, member));",
        )
        .with_context(|| format!("cannot set up the shares in {}", file.display()))?;
        Ok(db)
    }
}

impl ShareTable for SqliteShares {
    fn grant(&self, key: &Key, read_only: bool) -> Result<Option<bool>> {
        let (owner, folder, member) = key;
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM accounts WHERE name = ?1",
                [member.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let before: Option<bool> = tx
            .query_row(
                "SELECT read_only FROM shares WHERE owner = ?1 AND folder = ?2 AND member = ?3",
                params![owner.as_str(), folder.as_str(), member.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if before != Some(read_only) {
            tx.execute(
                "INSERT OR REPLACE INTO shares (owner, folder, member, read_only, granted)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    owner.as_str(),
                    folder.as_str(),
                    member.as_str(),
                    read_only,
                    unix_secs()
                ],
            )?;
        }
        tx.commit()?;
        Ok(Some(before.is_some_and(|b| b != read_only)))
    }

    fn revoke(&self, (owner, folder, member): &Key) -> Result<bool> {
        let n = lock(&self.db).execute(
            "DELETE FROM shares WHERE owner = ?1 AND folder = ?2 AND member = ?3",
            params![owner.as_str(), folder.as_str(), member.as_str()],
        )?;
        Ok(n == 1)
    }

    fn access(&self, (owner, folder, member): &Key) -> Result<Option<bool>> {
        Ok(lock(&self.db)
            .query_row(
                "SELECT read_only FROM shares WHERE owner = ?1 AND folder = ?2 AND member = ?3",
                params![owner.as_str(), folder.as_str(), member.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn list(
        &self,
        owner: Option<&AccountName>,
        folder: Option<&FolderName>,
    ) -> Result<Vec<ShareGrant>> {
        let db = lock(&self.db);
        let mut stmt = db.prepare(
            "SELECT owner, folder, member, read_only, granted FROM shares
             WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR folder = ?2)
             ORDER BY owner, folder, member",
        )?;
        let rows = stmt
            .query_map(
                params![owner.map(|o| o.as_str()), folder.map(|f| f.as_str())],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(owner, folder, member, read_only, granted)| {
                grant_of(owner, folder, member, read_only, granted)
            })
            .collect()
    }

    fn has_folder(&self, owner: &AccountName, folder: &FolderName) -> Result<bool> {
        Ok(self
            .data_dir
            .join(owner.as_str())
            .join(folder.as_str())
            .is_dir())
    }
}

impl Shares {
    /// The grants in `table`, with no live connection yet.
    pub fn new(table: Box<dyn ShareTable>) -> Shares {
        Shares {
            table,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The embedded backend's grants, in the account store `file`, of the folders
    /// under `data_dir` ([`SqliteShares`]).
    pub fn open(file: &Path, data_dir: &Path) -> Result<Shares> {
        Ok(Shares::new(Box::new(SqliteShares::open(file, data_dir)?)))
    }

    /// The token a member's connection follows.
    fn token(&self, key: &Key) -> CancellationToken {
        lock(&self.live).entry(key.clone()).or_default().clone()
    }

    /// Closes the member's live connections to the folder.
    pub(super) fn withdraw(&self, key: &Key) {
        if let Some(token) = lock(&self.live).remove(key) {
            token.cancel();
        }
    }
}

/// `folder` without its owner's part, for a name the account's own folder goes by.
fn plain(folder: &FolderName) -> FolderName {
    folder.shared().map_or_else(|| folder.clone(), |(_, f)| f)
}

/// `account` may share `folder` only if it is a folder of its own.
fn own_folder(owner: &AccountName, folder: &FolderName) -> Result<(), String> {
    match folder.owner() {
        Some(other) => Err(format!(
            "folder {folder} belongs to account {other}, which shared it with account \
             {owner}; only {other} can share it (a shared-in folder cannot be shared on)"
        )),
        None => Ok(()),
    }
}

impl Server {
    /// Shares `owner`'s `folder` with `member`, or changes the grant's mode (which
    /// closes the member's live connections, so they come back under the new mode).
    /// Answers the folder's grants, or why not, in words for the user.
    pub fn share(
        &self,
        owner: &AccountName,
        folder: &FolderName,
        member: &AccountName,
        read_only: bool,
    ) -> Result<Vec<ShareGrant>, String> {
        own_folder(owner, folder)?;
        if member == owner {
            return Err(format!(
                "folder {folder} already belongs to account {owner}; share it with another account"
            ));
        }
        if !self.has_folder(owner, folder)? {
            return Err(format!(
                "account {owner} has no folder {folder} on this server; a folder exists once \
                 a device of {owner} has synced it"
            ));
        }
        let key = (owner.clone(), folder.clone(), member.clone());
        match self.shares.table.grant(&key, read_only) {
            Err(e) => return Err(format!("cannot record the share: {e:#}")),
            Ok(None) => {
                return Err(format!(
                    "there is no account {member} on this server; its admin creates it with \
                     `filesyncctl server invite {member}`"
                ));
            }
            Ok(Some(changed)) => {
                if changed {
                    self.shares.withdraw(&key);
                }
            }
        }
        tracing::info!(%owner, %folder, %member, read_only, "folder shared");
        self.grants(Some(owner), Some(folder))
    }

    /// Takes `member`'s access to `owner`'s `folder` back and closes its connections to it.
    pub fn unshare(
        &self,
        owner: &AccountName,
        folder: &FolderName,
        member: &AccountName,
    ) -> Result<Vec<ShareGrant>, String> {
        own_folder(owner, folder)?;
        let key = (owner.clone(), folder.clone(), member.clone());
        match self.shares.table.revoke(&key) {
            Err(e) => return Err(format!("cannot record the change: {e:#}")),
            Ok(false) => {
                return Err(format!(
                    "folder {owner}/{folder} is not shared with account {member}; \
                     `filesyncctl shares` lists its shares"
                ));
            }
            Ok(true) => self.shares.withdraw(&key),
        }
        tracing::warn!(%owner, %folder, %member, "share taken back; the member's connections to the folder are closed");
        self.grants(Some(owner), Some(folder))
    }

    /// The grants of `owner` (every account for `None`), of one folder or all.
    pub fn grants(
        &self,
        owner: Option<&AccountName>,
        folder: Option<&FolderName>,
    ) -> Result<Vec<ShareGrant>, String> {
        self.shares
            .table
            .list(owner, folder)
            .map_err(|e| format!("cannot read the shares: {e:#}"))
    }

    /// A device of `account` asking about its own account's shares.
    pub fn sharing(
        &self,
        account: &AccountName,
        request: ShareRequest,
    ) -> Result<Vec<ShareGrant>, String> {
        match request {
            ShareRequest::Share {
                folder,
                with,
                read_only,
            } => self.share(account, &folder, &with, read_only),
            ShareRequest::Unshare { folder, with } => self.unshare(account, &folder, &with),
            // What the account shares, and what is shared with it (only its own grant
            // of another account's folder: a member does not see the other members).
            ShareRequest::List { folder: None } => Ok(self
                .grants(None, None)?
                .into_iter()
                .filter(|g| g.owner == *account || g.member == *account)
                .collect()),
            ShareRequest::List {
                folder: Some(folder),
            } => match folder.shared().filter(|(owner, _)| owner != account) {
                None => self.grants(Some(account), Some(&plain(&folder))),
                Some((owner, folder)) => Ok(self
                    .grants(Some(&owner), Some(&folder))?
                    .into_iter()
                    .filter(|g| g.member == *account)
                    .collect()),
            },
        }
    }

    /// Whether `owner` has `folder`, or why that cannot be read, in words for the user.
    fn has_folder(&self, owner: &AccountName, folder: &FolderName) -> Result<bool, String> {
        self.shares
            .table
            .has_folder(owner, folder)
            .map_err(|e| format!("cannot read the folders of account {owner}: {e:#}"))
    }

    /// Which folder a hello for `name` from a device of `account` reaches: its own
    /// account's folder, or `OWNER/FOLDER` if the owner shared it with `account`.
    pub fn resolve(&self, account: &AccountName, name: &FolderName) -> Result<Access, String> {
        let Some((owner, folder)) = name.shared().filter(|(owner, _)| owner != account) else {
            return Ok(Access {
                owner: account.clone(),
                folder: plain(name),
                read_only: None,
                withdrawn: None,
            });
        };
        let key = (owner.clone(), folder.clone(), account.clone());
        // Taken before the grant is read; see the module doc.
        let withdrawn = self.shares.token(&key);
        let not_shared = || {
            format!(
                "folder {name} is not shared with account {account} (never shared, or access \
                 was withdrawn by its owner): ask {owner} to run \
                 `filesyncctl share {folder} --with {account}`"
            )
        };
        let read_only = match self.shares.table.access(&key) {
            Err(e) => return Err(format!("cannot read the shares: {e:#}")),
            Ok(None) => return Err(not_shared()),
            Ok(Some(read_only)) => read_only,
        };
        if !self.has_folder(&owner, &folder)? {
            return Err(not_shared());
        }
        Ok(Access {
            read_only: read_only.then(|| {
                format!(
                    "folder {name} is shared read-only with account {account}: its changes \
                     stay on the device; ask {owner} to run \
                     `filesyncctl share {folder} --with {account}` for write access"
                )
            }),
            owner,
            folder,
            withdrawn: Some(withdrawn),
        })
    }
}

/// Answers the server role's `ServerShare`, `ServerUnshare` and `ServerShares`.
pub fn control(server: &Server, request: Request) -> Response {
    let bad = |message: String| Response::Error {
        kind: ControlErrorKind::BadRequest,
        message,
    };
    let names = |owner: &str, folder: &str| -> Result<(AccountName, FolderName), String> {
        let owner = AccountName::new(owner).map_err(|e| e.to_string())?;
        let folder = FolderName::new(folder).map_err(|e| e.to_string())?;
        own_folder(&owner, &folder)?;
        Ok((owner, folder))
    };
    let member = |with: &str| AccountName::new(with).map_err(|e| format!("--with: {e}"));
    let answer = match request {
        Request::ServerShare {
            owner,
            folder,
            with,
            read_only,
        } => names(&owner, &folder)
            .and_then(|(owner, folder)| server.share(&owner, &folder, &member(&with)?, read_only)),
        Request::ServerUnshare {
            owner,
            folder,
            with,
        } => names(&owner, &folder)
            .and_then(|(owner, folder)| server.unshare(&owner, &folder, &member(&with)?)),
        Request::ServerShares { folder: None } => server.grants(None, None),
        Request::ServerShares {
            folder: Some(which),
        } => match FolderName::new(which.as_str()).map(|f| f.shared()) {
            Ok(Some((owner, folder))) => server.grants(Some(&owner), Some(&folder)),
            _ => Err(format!(
                "{which:?} is not ACCOUNT/FOLDER, the owner's account and the folder's name"
            )),
        },
        other => Err(format!("{other:?} is not a server sharing request")),
    };
    match answer {
        Ok(grants) => Response::Shares(infos(grants)),
        Err(message) => bad(message),
    }
}

/// The grants as the control socket shows them.
pub fn infos(grants: Vec<ShareGrant>) -> Vec<ShareInfo> {
    grants
        .into_iter()
        .map(|g| ShareInfo {
            owner: g.owner.to_string(),
            folder: g.folder.to_string(),
            member: g.member.to_string(),
            read_only: g.read_only,
            granted_at: g.granted_at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::new(s).unwrap()
    }

    fn store() -> (tempfile::TempDir, Shares) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.db");
        let accounts = crate::server::accounts::Accounts::open(&file).unwrap();
        crate::server::accounts::AccountStore::invite(
            &accounts,
            &name("bob"),
            crate::server::accounts::DEFAULT_INVITE_TTL,
            &crate::server::accounts::Maker::Admin,
        )
        .unwrap();
        let shares = Shares::open(&file, dir.path()).unwrap();
        (dir, shares)
    }

    #[test]
    fn grants_are_kept_changed_and_taken_back() {
        let (dir, shares) = store();
        let docs = FolderName::new("docs").unwrap();
        assert!(!shares.table.has_folder(&name("alice"), &docs).unwrap());
        std::fs::create_dir_all(dir.path().join("alice/docs")).unwrap();
        assert!(shares.table.has_folder(&name("alice"), &docs).unwrap());
        let key = (name("alice"), docs.clone(), name("bob"));
        assert_eq!(shares.table.access(&key).unwrap(), None);
        assert_eq!(shares.table.grant(&key, false).unwrap(), Some(false));
        assert_eq!(shares.table.access(&key).unwrap(), Some(false));
        assert_eq!(
            shares.table.grant(&key, false).unwrap(),
            Some(false),
            "same again"
        );
        assert_eq!(
            shares.table.grant(&key, true).unwrap(),
            Some(true),
            "changed"
        );
        assert_eq!(shares.table.access(&key).unwrap(), Some(true));
        let nobody = (name("alice"), docs.clone(), name("carol"));
        assert_eq!(
            shares.table.grant(&nobody, false).unwrap(),
            None,
            "no such account"
        );
        let listed = shares.table.list(Some(&name("alice")), None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].member, name("bob"));
        assert!(listed[0].read_only);
        assert!(
            shares
                .table
                .list(Some(&name("bob")), None)
                .unwrap()
                .is_empty()
        );

        let live = shares.token(&key);
        assert!(shares.table.revoke(&key).unwrap());
        shares.withdraw(&key);
        assert!(live.is_cancelled());
        assert!(
            !shares.token(&key).is_cancelled(),
            "a new grant starts afresh"
        );
        assert!(!shares.table.revoke(&key).unwrap());
        assert_eq!(shares.table.access(&key).unwrap(), None);
    }

    #[test]
    fn shared_in_folders_cannot_be_shared_on() {
        let bob = name("bob");
        assert!(own_folder(&bob, &FolderName::new("docs").unwrap()).is_ok());
        let err = own_folder(&bob, &FolderName::new("alice/docs").unwrap()).unwrap_err();
        assert!(err.contains("only alice can share it"), "{err}");
    }
}
