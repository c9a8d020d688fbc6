//! `filesyncd migrate-to-cluster`: an embedded server's data moved into a cluster's
//! database and bucket, so that its devices can go on against the cluster without
//! re-uploading anything or seeing a new history.
//!
//! What moves: the server's TLS identity and device id (devices keep their pinned
//! fingerprint), accounts, quotas, devices with their credentials, invite tokens,
//! shares, and every folder with its epoch, skipped numbers, rename records and every
//! entry at its own sequence number, the live files' content and the kept versions.
//!
//! Content goes first: every block is read from the server's copy, checked against the
//! index's block list, and stored in the bucket. Then every row is written in one
//! database transaction, so an import that fails or is stopped leaves no rows (only
//! blocks, which the garbage collector removes after its grace) and can be run again.
//! The embedded server must be stopped: a change it made meanwhile would be missed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use filesync_proto::wire::{BlockInfo, EntryKind};
use filesync_proto::{DeviceId, Hash, RelPath};
use tokio_postgres::Transaction;

use super::Store;
use super::embedded::{Accounts, Folder, read_accounts, read_folders};
use super::schema::{LIVE, SCHEMA_VERSION, try_gc_lock};
use crate::config::{ClusterSection, ServerSection};
use crate::fs::beneath::Root;
use crate::fs::durable::CrashPoint;
use crate::index::kind_code;

/// What an import moved, for the admin.
#[derive(Debug, Default)]
pub struct Imported {
    pub accounts: usize,
    pub devices: usize,
    pub folders: usize,
    pub entries: usize,
    pub versions: usize,
    /// Distinct blocks stored in the bucket, and their bytes.
    pub blocks: usize,
    pub bytes: u64,
}

/// Moves the embedded server at `server.data_dir` into the cluster `cluster`, whose
/// database must not hold a cluster yet. `server_device` is the server's own device id.
pub async fn import(
    server: &ServerSection,
    cluster: &ClusterSection,
    server_device: &DeviceId,
) -> Result<Imported> {
    let meta = server.data_dir.join(".filesync");
    let accounts_db = meta.join("accounts.db");
    if !accounts_db.is_file() {
        bail!(
            "{} holds no embedded server's data (no {}); server.data_dir must be the \
             directory the embedded server used",
            server.data_dir.display(),
            accounts_db.display()
        );
    }
    let tls = meta.join("tls");
    let read = |name: &str| {
        let file = tls.join(name);
        std::fs::read(&file).with_context(|| {
            format!(
                "cannot read the server's TLS identity {} (devices pin it, so the cluster \
                 must present the same one)",
                file.display()
            )
        })
    };
    let (cert, key) = (read("cert.der")?, read("key.der")?);
    let data_dir = server.data_dir.clone();
    let (accounts, folders) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((read_accounts(&accounts_db)?, read_folders(&data_dir)?))
    })
    .await
    .context("the import's reading thread failed")??;

    let mut store = Store::connect(cluster).await?;
    let taken: Option<String> = store
        .db
        .query_opt("SELECT server_device FROM cluster WHERE id = 1", &[])
        .await
        .context("cannot read the cluster's table")?
        .map(|row| row.get(0));
    if let Some(device) = taken {
        bail!(
            "the database of server.cluster.postgres already holds a cluster (server \
             device {device}); migrate-to-cluster moves a server into an empty database"
        );
    }
    if !try_gc_lock(&store.db).await? {
        bail!(
            "a garbage collection (`filesyncd gc`) is running on this cluster; run the move after it"
        );
    }
    let mut done = Imported::default();
    // Account ids are not known before the transaction: blocks are stored under the
    // ids the accounts get there, in this order.
    let order = account_order(&accounts, &folders);
    let contents = upload(&store, &order, &folders, &mut done).await?;
    CrashPoint::ImportAfterUpload.reached(done.blocks);
    let tx = store
        .db
        .transaction()
        .await
        .context("cannot start the import transaction")?;
    tx.execute(
        "INSERT INTO cluster (id, schema, server_device, cert_der, key_der) \
         VALUES (1, $1, $2, $3, $4)",
        &[&SCHEMA_VERSION, &server_device.as_str(), &cert, &key],
    )
    .await
    .context("cannot record the cluster's identity")?;
    write_accounts(&tx, &accounts, &order, &mut done).await?;
    write_contents(&tx, &order, &contents).await?;
    for folder in &folders {
        write_folder(&tx, order[&folder.account], folder, &mut done).await?;
    }
    CrashPoint::ImportBeforeCommit.reached(done.entries);
    tx.commit()
        .await
        .context("cannot commit the import; nothing was recorded, run it again")?;
    Ok(done)
}

/// Where the bytes of one content are read from.
enum Source {
    Tree(PathBuf, RelPath),
    Version(PathBuf),
}

/// One content of an account: its size and blocks, where to read them, and how many
/// entries and versions refer to it.
struct Content {
    size: u64,
    blocks: Vec<BlockInfo>,
    source: Source,
    refs: i64,
}

/// Stores every block of every live file and version in the bucket, each once per
/// account; returns each account's contents by hash.
async fn upload(
    store: &Store,
    order: &HashMap<String, i64>,
    folders: &[Folder],
    done: &mut Imported,
) -> Result<BTreeMap<String, HashMap<Hash, Content>>> {
    let mut contents: BTreeMap<String, HashMap<Hash, Content>> = BTreeMap::new();
    for folder in folders {
        let of = contents.entry(folder.account.clone()).or_default();
        let live = folder
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File && !e.deleted);
        for e in live {
            of.entry(e.hash)
                .or_insert_with(|| Content {
                    size: e.size,
                    blocks: e.blocks.clone(),
                    source: Source::Tree(folder.root.clone(), e.path.clone()),
                    refs: 0,
                })
                .refs += 1;
        }
        for (version, hashed) in &folder.versions {
            of.entry(hashed.hash)
                .or_insert_with(|| Content {
                    size: hashed.size,
                    blocks: hashed.blocks.clone(),
                    source: Source::Version(version.file.clone()),
                    refs: 0,
                })
                .refs += 1;
        }
    }
    for (account, of) in &contents {
        let id = order[account];
        let mut stored: HashSet<Hash> = HashSet::new();
        for content in of.values() {
            let mut offset = 0u64;
            let mut reader = None;
            for block in &content.blocks {
                if stored.insert(block.hash) && block.size > 0 {
                    if reader.is_none() {
                        reader = Some(open(&content.source)?);
                    }
                    let file = reader.as_ref().expect("opened above");
                    let data = read_block(&content.source, file, offset, block.size)?;
                    store
                        .chunks
                        .put(id, &block.hash, Bytes::from(data))
                        .await
                        .with_context(|| describe(&content.source, account))?;
                    done.blocks += 1;
                    done.bytes += u64::from(block.size);
                }
                offset += u64::from(block.size);
            }
        }
    }
    Ok(contents)
}

fn describe(source: &Source, account: &str) -> String {
    match source {
        Source::Tree(root, path) => format!(
            "{path} in {} (account {account}) differs from the server's index, or cannot \
             be read; start the embedded server once so that it scans its copy, stop it, \
             and run migrate-to-cluster again",
            root.display()
        ),
        Source::Version(file) => format!("version {} (account {account})", file.display()),
    }
}

/// Opens where a content's bytes are, once for all its blocks: a file of the tree
/// beneath its folder's root (never through a symlink), or a kept version.
fn open(source: &Source) -> Result<File> {
    match source {
        Source::Tree(root, path) => {
            let root =
                Root::open(root).with_context(|| format!("cannot open {}", root.display()))?;
            let opened = root
                .parent(path)
                .and_then(|(dir, name)| dir.open_regular(name));
            opened.with_context(|| format!("cannot open {path} in {}", root.path().display()))
        }
        Source::Version(file) => {
            File::open(file).with_context(|| format!("cannot open version {}", file.display()))
        }
    }
}

fn read_block(source: &Source, file: &File, offset: u64, size: u32) -> Result<Vec<u8>> {
    let mut data = vec![0; size as usize];
    file.read_exact_at(&mut data, offset)
        .with_context(|| match source {
            Source::Tree(root, path) => format!("cannot read {path} in {}", root.display()),
            Source::Version(file) => format!("cannot read version {}", file.display()),
        })?;
    Ok(data)
}

/// The id each account will get: accounts are inserted into an empty table in this
/// order, so `bigserial` numbers them 1, 2, 3, …
fn account_order(accounts: &Accounts, folders: &[Folder]) -> HashMap<String, i64> {
    let mut names: Vec<&str> = accounts.accounts.iter().map(|(n, _)| n.as_str()).collect();
    names.extend(folders.iter().map(|f| f.account.as_str()));
    let mut order = HashMap::new();
    for name in names {
        let next = order.len() as i64 + 1;
        order.entry(name.to_owned()).or_insert(next);
    }
    order
}

async fn write_accounts(
    tx: &Transaction<'_>,
    accounts: &Accounts,
    order: &HashMap<String, i64>,
    done: &mut Imported,
) -> Result<()> {
    let mut by_id: Vec<(&String, &i64)> = order.iter().collect();
    by_id.sort_by_key(|(_, id)| **id);
    let created: HashMap<&str, i64> = accounts
        .accounts
        .iter()
        .map(|(n, c)| (n.as_str(), *c))
        .collect();
    let now = crate::events::unix_secs();
    for (name, id) in by_id {
        let when = created.get(name.as_str()).copied().unwrap_or(now);
        tx.execute(
            "INSERT INTO accounts (id, name, created) VALUES ($1, $2, $3)",
            &[id, name, &when],
        )
        .await
        .with_context(|| format!("cannot import account {name}"))?;
        done.accounts += 1;
    }
    tx.execute(
        "SELECT setval('accounts_id_seq', (SELECT MAX(id) FROM accounts))",
        &[],
    )
    .await
    .context("cannot set the accounts' numbering")?;
    let id = |name: &str| -> Result<i64> {
        order
            .get(name)
            .copied()
            .with_context(|| format!("the account store refers to unknown account {name:?}"))
    };
    for (account, bytes) in &accounts.quotas {
        tx.execute(
            "INSERT INTO quotas (account_id, bytes) VALUES ($1, $2)",
            &[&id(account)?, bytes],
        )
        .await
        .with_context(|| format!("cannot import the quota of {account}"))?;
    }
    for d in &accounts.devices {
        tx.execute(
            "INSERT INTO devices (id, account_id, name, secret_hash, enrolled, last_seen, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &d.id,
                &id(&d.account)?,
                &d.name,
                &d.secret_hash,
                &d.enrolled,
                &d.last_seen,
                &d.revoked,
            ],
        )
        .await
        .with_context(|| format!("cannot import device {}", d.id))?;
        done.devices += 1;
    }
    for i in &accounts.invites {
        tx.execute(
            "INSERT INTO invites (hash, account_id, created, expires, used_by, used_at, \
             made_by, cancelled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &i.hash,
                &id(&i.account)?,
                &i.created,
                &i.expires,
                &i.used_by,
                &i.used_at,
                &i.made_by,
                &i.cancelled,
            ],
        )
        .await
        .context("cannot import an invite token")?;
    }
    for (owner, folder, member, read_only, granted) in &accounts.shares {
        tx.execute(
            "INSERT INTO shares (owner_id, folder, member_id, read_only, granted) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&id(owner)?, folder, &id(member)?, read_only, granted],
        )
        .await
        .with_context(|| format!("cannot import the share of {owner}/{folder} with {member}"))?;
    }
    Ok(())
}

async fn write_contents(
    tx: &Transaction<'_>,
    ids: &HashMap<String, i64>,
    contents: &BTreeMap<String, HashMap<Hash, Content>>,
) -> Result<()> {
    let now = crate::events::unix_secs();
    for (account, of) in contents {
        let id = ids[account];
        let mut block_refs: HashMap<Hash, (u32, i64)> = HashMap::new();
        for (hash, content) in of {
            let blocks = postcard::to_stdvec(&content.blocks).context("cannot encode blocks")?;
            tx.execute(
                "INSERT INTO contents (account_id, hash, size, blocks, refs) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &id,
                    &hash.0.as_slice(),
                    &(content.size as i64),
                    &blocks,
                    &content.refs,
                ],
            )
            .await
            .with_context(|| format!("cannot import content {hash} of {account}"))?;
            let mut seen = HashSet::new();
            for block in content.blocks.iter().filter(|b| seen.insert(b.hash)) {
                block_refs.entry(block.hash).or_insert((block.size, 0)).1 += 1;
            }
        }
        for (hash, (size, refs)) in block_refs {
            tx.execute(
                "INSERT INTO blocks (account_id, hash, size, refs, state, touched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &hash.0.as_slice(), &(size as i32), &refs, &LIVE, &now],
            )
            .await
            .with_context(|| format!("cannot import block {hash} of {account}"))?;
        }
    }
    Ok(())
}

async fn write_folder(
    tx: &Transaction<'_>,
    account_id: i64,
    folder: &Folder,
    done: &mut Imported,
) -> Result<()> {
    let live = folder
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && !e.deleted);
    let (files, bytes) = live.fold((0i64, 0i64), |(n, b), e| (n + 1, b + e.size as i64));
    let last = folder.last_seq as i64;
    let next = (last + 1).max(folder.next_floor);
    let row = tx
        .query_one(
            "INSERT INTO folders (account_id, name, epoch, next_seq, last_seq, next_floor, \
             files, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &account_id,
                &folder.name,
                &folder.epoch,
                &next,
                &last,
                &folder.next_floor,
                &files,
                &bytes,
            ],
        )
        .await
        .with_context(|| format!("cannot import folder {}/{}", folder.account, folder.name))?;
    let id: i64 = row.get(0);
    let insert = tx
        .prepare(
            "INSERT INTO entries (folder_id, path, seq, kind, deleted, size, mtime_ns, mode, \
             hash, target, origin, conflict) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12)",
        )
        .await?;
    for e in &folder.entries {
        let conflict = e.conflict.as_ref().map(postcard::to_stdvec).transpose()?;
        tx.execute(
            &insert,
            &[
                &id,
                &e.path.as_str(),
                &(e.seq as i64),
                &(kind_code(e.kind) as i16),
                &e.deleted,
                &(e.size as i64),
                &e.mtime_ns,
                &(e.mode as i32),
                &e.hash.0.as_slice(),
                &e.target,
                &e.origin.as_str(),
                &conflict,
            ],
        )
        .await
        .with_context(|| {
            format!(
                "cannot import {} of {}/{}",
                e.path, folder.account, folder.name
            )
        })?;
        done.entries += 1;
    }
    for (seq, src, dst) in &folder.renames {
        tx.execute(
            "INSERT INTO renames (folder_id, seq, src, dst) VALUES ($1, $2, $3, $4)",
            &[&id, &(*seq as i64), &src.as_str(), &dst.as_str()],
        )
        .await?;
    }
    for (after, start) in &folder.gaps {
        tx.execute(
            "INSERT INTO gaps (folder_id, after, start) VALUES ($1, $2, $3)",
            &[&id, &(*after as i64), &(*start as i64)],
        )
        .await?;
    }
    for (v, hashed) in &folder.versions {
        // The mode the embedded server kept with the version's file.
        let mode = std::fs::symlink_metadata(&v.file)
            .map(|m| crate::fs::stat::mode_of(&m) as i32)
            .with_context(|| format!("cannot read version {}", v.file.display()))?;
        tx.execute(
            "INSERT INTO versions (folder_id, path, seq, kept_at, hash, size, mtime_ns, mode) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id,
                &v.path.as_str(),
                &(v.version as i64),
                &v.kept_at,
                &hashed.hash.0.as_slice(),
                &(hashed.size as i64),
                &v.mtime_ns,
                &mode,
            ],
        )
        .await?;
        done.versions += 1;
    }
    done.folders += 1;
    Ok(())
}
