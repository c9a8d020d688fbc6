//! What an embedded server holds, read whole for `migrate-to-cluster`: its account
//! store (`DATA_DIR/.filesync/accounts.db`) and each folder's index and kept
//! versions (`DATA_DIR/.filesync/index/…`, `…/versions/…`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use filesync_proto::RelPath;
use filesync_proto::wire::Entry;
use rusqlite::{OpenFlags, Row};

use crate::fs::chunk;
use crate::index::{Index, Meta};
use crate::server::accounts::Accounts as EmbeddedAccounts;
use crate::server::shares::SqliteShares;
use crate::server::versions::{VersionInfo, Versions};

/// One folder of the embedded server, read whole.
pub(super) struct Folder {
    pub(super) account: String,
    pub(super) name: String,
    pub(super) root: PathBuf,
    pub(super) epoch: i64,
    pub(super) next_floor: i64,
    pub(super) last_seq: u64,
    pub(super) entries: Vec<Entry>,
    pub(super) renames: Vec<(u64, RelPath, RelPath)>,
    pub(super) gaps: Vec<(u64, u64)>,
    pub(super) versions: Vec<(VersionInfo, chunk::Hashed)>,
}

/// The account store's rows, as `accounts.db` holds them.
pub(super) struct Accounts {
    pub(super) accounts: Vec<(String, i64)>,
    pub(super) quotas: Vec<(String, Option<i64>)>,
    pub(super) devices: Vec<Device>,
    pub(super) invites: Vec<Invite>,
    pub(super) shares: Vec<(String, String, String, bool, i64)>,
}

pub(super) struct Device {
    pub(super) id: String,
    pub(super) account: String,
    pub(super) name: String,
    pub(super) secret_hash: Vec<u8>,
    pub(super) enrolled: i64,
    pub(super) last_seen: Option<i64>,
    pub(super) revoked: bool,
}

pub(super) struct Invite {
    pub(super) hash: Vec<u8>,
    pub(super) account: String,
    pub(super) created: i64,
    pub(super) expires: i64,
    pub(super) used_by: Option<String>,
    pub(super) used_at: Option<i64>,
    pub(super) made_by: Option<String>,
    pub(super) cancelled: Option<i64>,
}

/// The account store's rows. The store is opened as the server opens it first, which
/// brings an older layout up to date, so one set of queries reads any of them.
pub(super) fn read_accounts(file: &Path) -> Result<Accounts> {
    drop(EmbeddedAccounts::open(file)?);
    drop(SqliteShares::migrate(file)?);
    let db = rusqlite::Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open the account store {}", file.display()))?;
    let read = || -> rusqlite::Result<Accounts> {
        Ok(Accounts {
            accounts: all(&db, "SELECT name, created FROM accounts", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            quotas: all(&db, "SELECT account, bytes FROM quotas", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            devices: all(
                &db,
                "SELECT id, account, name, secret_hash, enrolled, last_seen, revoked FROM devices",
                |r| {
                    Ok(Device {
                        id: r.get(0)?,
                        account: r.get(1)?,
                        name: r.get(2)?,
                        secret_hash: r.get(3)?,
                        enrolled: r.get(4)?,
                        last_seen: r.get(5)?,
                        revoked: r.get(6)?,
                    })
                },
            )?,
            invites: all(
                &db,
                "SELECT hash, account, created, expires, used_by, used_at, made_by, cancelled \
             FROM invites",
                |r| {
                    Ok(Invite {
                        hash: r.get(0)?,
                        account: r.get(1)?,
                        created: r.get(2)?,
                        expires: r.get(3)?,
                        used_by: r.get(4)?,
                        used_at: r.get(5)?,
                        made_by: r.get(6)?,
                        cancelled: r.get(7)?,
                    })
                },
            )?,
            shares: all(
                &db,
                "SELECT owner, folder, member, read_only, granted FROM shares",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?,
        })
    };
    read().with_context(|| format!("cannot read the account store {}", file.display()))
}

/// Every row `sql` selects, each made by `row`.
fn all<T>(
    db: &rusqlite::Connection,
    sql: &str,
    row: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    db.prepare(sql)?.query_map([], row)?.collect()
}

/// Every folder that has an index: `DATA_DIR/.filesync/index/ACCOUNT/FOLDER.db`.
pub(super) fn read_folders(data_dir: &Path) -> Result<Vec<Folder>> {
    let meta = data_dir.join(".filesync");
    let index_dir = meta.join("index");
    let mut found = Vec::new();
    let accounts = match std::fs::read_dir(&index_dir) {
        Ok(accounts) => accounts,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", index_dir.display())),
    };
    for account in accounts {
        let account = account.with_context(|| format!("cannot read {}", index_dir.display()))?;
        let Some(account_name) = account.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let files = std::fs::read_dir(account.path())
            .with_context(|| format!("cannot read {}", account.path().display()))?;
        for file in files {
            let file = file.with_context(|| format!("cannot read {}", account.path().display()))?;
            let file_name = file.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".db")) else {
                continue;
            };
            let root = data_dir.join(&account_name).join(name);
            let versions = meta.join("versions").join(&account_name).join(name);
            let folder = read_folder(&file.path(), &account_name, name, root, versions)
                .with_context(|| format!("folder {account_name}/{name}"))?;
            found.push(folder);
        }
    }
    found.sort_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
    Ok(found)
}

fn read_folder(
    index_file: &Path,
    account: &str,
    name: &str,
    root: PathBuf,
    versions_dir: PathBuf,
) -> Result<Folder> {
    let index = Index::open(index_file)?;
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let batch = index.entries_since(since, 4096)?;
        let Some(last) = batch.last() else { break };
        since = last.seq;
        entries.extend(batch);
    }
    let last_seq = index.max_seq()?;
    let mut versions = Vec::new();
    if versions_dir.is_dir() {
        for version in Versions::open(versions_dir)?.all()? {
            let file = File::open(&version.file)
                .with_context(|| format!("cannot open version {}", version.file.display()))?;
            let hashed = chunk::hash_open(&file)
                .with_context(|| format!("cannot read version {}", version.file.display()))?;
            versions.push((version, hashed));
        }
    }
    Ok(Folder {
        account: account.to_owned(),
        name: name.to_owned(),
        root,
        epoch: index.epoch()? as i64,
        next_floor: index.meta(Meta::NextFloor)?.unwrap_or(0),
        last_seq,
        renames: index.renames(0, last_seq)?,
        gaps: index.gaps()?,
        entries,
        versions,
    })
}
