//! Serving devices from the cluster: a node ([`Node`]) keeps a pool of PostgreSQL
//! connections, the bucket, and the folders devices opened through it
//! ([`ClusterFolder`]), whose watch channels follow every node's commits
//! ([`notify`]). Nothing a device relies on lives only on a node: a node may die at
//! any point, and a device goes on through another one where it was.

mod commit;
mod folder;
mod notify;
mod refs;
mod rows;
mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::{AccountName, DeviceId, FolderName};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use folder::ClusterFolder;

use super::accounts::PgAccounts;
use super::admin::AdminEvent;
use super::chunks::Chunks;
use super::pool::Db;
use super::store::{Store, postgres_config};
use crate::config::{ClusterSection, ServerSection};
use crate::conn::tls::ServerIdentity;
use crate::events::unix_secs;
use crate::server::accounts::AccountStore;
use crate::server::history::{self, Lineage};
use crate::server::lock::lock;
use crate::server::quota::Quotas;

/// How often a node removes versions older than `keep_versions`.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

/// This node's handles on the cluster.
pub struct Node {
    db: Db,
    pg_config: tokio_postgres::Config,
    /// TLS for the listener's connection, as for the pool's.
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    pub chunks: Chunks,
    /// `DATA_DIR/.filesync/staging`: pushed files are assembled and checked here, then
    /// stored in the bucket.
    pub staging: PathBuf,
    pub keep_versions: Duration,
    /// The server's device id, the same on every node.
    pub server_device: DeviceId,
    pub quotas: Arc<Quotas>,
    /// The folders open on this node, by id, for the listener to move on.
    open: Mutex<HashMap<i64, Weak<ClusterFolder>>>,
    /// What other nodes changed that this one must act on, for the server.
    admin: mpsc::UnboundedSender<AdminEvent>,
}

/// What a node needs from the cluster to start serving.
pub struct Started {
    pub node: Arc<Node>,
    pub identity: ServerIdentity,
    pub accounts: Arc<dyn AccountStore>,
    /// Revocations, quotas and shares changed on any node (this one too).
    pub admin: mpsc::UnboundedReceiver<AdminEvent>,
}

impl Node {
    /// Connects (errors name the key at fault), lays out the tables, takes the
    /// cluster's TLS identity and server id (making them if this is the cluster's first
    /// node), and starts following commits and expiring versions.
    pub async fn start(
        server: &ServerSection,
        cluster: &ClusterSection,
        device: &DeviceId,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Started> {
        let store = Store::connect(cluster).await?;
        let (server_device, identity) = identity(&store, device).await?;
        let pg_config = postgres_config(cluster)?;
        let tls = super::pgtls::connector(cluster.postgres_ca_file.as_deref())?;
        // The tables were laid out by `Store::connect` just now.
        let db = Db::new(pg_config.clone(), tls.clone())?;
        let accounts = Arc::new(PgAccounts::new(db.clone()));
        let quotas = Arc::new(Quotas::new(server, accounts.quotas_set().await?));
        let staging = server.data_dir.join(".filesync").join("staging");
        // No push is under way at start: whatever is here is a crash's leftover.
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot clear {}", staging.display()))?;
        }
        crate::fs::private::create_dir(&staging)?;
        let (admin, admin_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            tls,
            admin,
            db,
            pg_config,
            chunks: store.chunks,
            staging,
            keep_versions: Duration::from_secs(u64::from(server.keep_versions) * 86_400),
            server_device,
            quotas,
            open: Mutex::default(),
        });
        tracker.spawn(notify::listen(node.clone(), cancel.clone()));
        tracker.spawn(node.clone().expire_versions(cancel));
        tracing::info!(node = %cluster.node_name, "serving from the cluster");
        Ok(Started {
            node,
            identity,
            accounts,
            admin: admin_rx,
        })
    }

    /// The pool, for the stores that share it.
    pub fn pool(&self) -> Db {
        self.db.clone()
    }

    /// A connection from the pool; an error names PostgreSQL and the key.
    pub async fn db(&self) -> Result<deadpool_postgres::Object> {
        (self.db.client().await).with_context(|| self.db.failed("give a connection"))
    }

    /// The folder `name` of `account`, created if new (unless the account has
    /// `max_folders` already).
    pub async fn open(
        self: &Arc<Self>,
        account: &AccountName,
        name: &FolderName,
        max_folders: usize,
    ) -> Result<Arc<ClusterFolder>> {
        let db = self.db().await?;
        let found = db
            .query_opt(
                "SELECT id FROM accounts WHERE name = $1",
                &[&account.as_str()],
            )
            .await
            .context("cannot read the cluster's accounts")?;
        let Some(found) = found else {
            bail!("the cluster has no account {account}");
        };
        let account_id: i64 = found.get(0);
        // What the account stores in every folder, for its quota on this node.
        for r in db
            .query(
                "SELECT name, bytes FROM folders WHERE account_id = $1",
                &[&account_id],
            )
            .await?
        {
            if let Ok(folder) = FolderName::new(r.get::<_, String>(0)) {
                self.quotas
                    .set_files(account, &folder, r.get::<_, i64>(1).max(0) as u64);
            }
        }
        let select = "SELECT id, last_seq, epoch, files, bytes FROM folders \
                      WHERE account_id = $1 AND name = $2";
        let mut row = db.query_opt(select, &[&account_id, &name.as_str()]).await?;
        if row.is_none() {
            let have: i64 = db
                .query_one(
                    "SELECT count(*) FROM folders WHERE account_id = $1",
                    &[&account_id],
                )
                .await?
                .get(0);
            if have as usize >= max_folders {
                bail!(
                    "account {account} already has {have} folders on this server, the most \
                     its config key server.max_folders_per_account allows, so folder {name} \
                     is not created; remove a folder of the account on the server, or ask \
                     the server's admin to raise the limit"
                );
            }
            let first = history::first_seq(0, history::now_us()) as i64;
            let epoch = crate::index::fresh_epoch(0) as i64;
            let made = db
                .execute(
                    "WITH f AS (INSERT INTO folders (account_id, name, epoch, next_seq, last_seq) \
                     VALUES ($1, $2, $3, $4, 0) ON CONFLICT (account_id, name) DO NOTHING \
                     RETURNING id) INSERT INTO gaps (folder_id, after, start) \
                     SELECT id, 0, $4 FROM f",
                    &[&account_id, &name.as_str(), &epoch, &first],
                )
                .await
                .with_context(|| format!("cannot create folder {account}/{name}"))?;
            if made > 0 {
                tracing::info!(account = %account, folder = %name, "folder created in the cluster");
            }
            row = db.query_opt(select, &[&account_id, &name.as_str()]).await?;
        }
        let row = row.with_context(|| format!("folder {account}/{name} vanished"))?;
        let id: i64 = row.get(0);
        if let Some(open) = lock(&self.open).get(&id).and_then(Weak::upgrade) {
            return Ok(open);
        }
        let (last, epoch, files, bytes): (i64, i64, i64, i64) =
            (row.get(1), row.get(2), row.get(3), row.get(4));
        let gaps = read_gaps(&db, id).await?;
        let status = ServerFolderStatus {
            account: account.to_string(),
            name: name.to_string(),
            seq: last as u64,
            files: files as u64,
            bytes: bytes as u64,
            index_bytes: 0,
        };
        let folder = Arc::new(ClusterFolder {
            node: self.clone(),
            id,
            account_id,
            account: account.clone(),
            name: name.clone(),
            commits: tokio::sync::Mutex::new(()),
            seq_tx: watch::Sender::new(last as u64),
            lineage_tx: watch::Sender::new(Lineage {
                epoch: epoch as u64,
                gaps: gaps.into(),
            }),
            status_tx: watch::Sender::new(status),
        });
        self.quotas.set_files(account, name, bytes as u64);
        let mut open = lock(&self.open);
        let folder = match open.get(&id).and_then(Weak::upgrade) {
            Some(other) => other,
            None => {
                open.insert(id, Arc::downgrade(&folder));
                folder
            }
        };
        Ok(folder)
    }

    /// `filesyncctl server export`: writes `folder` (`ACCOUNT/FOLDER`) into `dir` on
    /// this node.
    pub async fn export(&self, folder: &str, dir: &std::path::Path) -> Result<String> {
        let db = self.db().await?;
        super::export::export_into(&db, &self.chunks, folder, dir).await
    }

    /// A commit notification: moves the folder on if it is open here.
    fn notified(&self, folder: i64, last: i64, epoch: i64, files: i64, bytes: i64) {
        let Some(f) = lock(&self.open).get(&folder).and_then(Weak::upgrade) else {
            return;
        };
        if epoch as u64 != f.lineage_tx.borrow().epoch {
            let f = f.clone();
            tokio::spawn(async move {
                if let Err(e) = f.reload_lineage().await {
                    tracing::warn!(folder = %f.label(), "cannot read the folder's new epoch: {e:#}");
                }
            });
        }
        f.advance(last as u64, files, bytes);
    }

    /// Re-reads every open folder's row: what a lost listener may have missed.
    async fn refresh_all(&self, db: &tokio_postgres::Client) -> Result<()> {
        let ids: Vec<i64> = lock(&self.open).keys().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = db
            .query(
                "SELECT id, last_seq, epoch, files, bytes FROM folders WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .context("cannot re-read the open folders")?;
        for r in rows {
            self.notified(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        }
        Ok(())
    }

    /// Removes the versions kept longer than `keep_versions`, at start and every hour,
    /// letting go of their content.
    async fn expire_versions(self: Arc<Self>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.expire_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "old versions removed from the cluster"),
                Err(e) => tracing::warn!("cannot expire old versions in the cluster: {e:#}"),
            }
        }
    }

    async fn expire_once(&self) -> Result<usize> {
        let now = unix_secs();
        let cutoff = now - self.keep_versions.as_secs() as i64;
        let mut db = self.db().await?;
        let tx = db.transaction().await?;
        let gone = tx
            .query(
                "DELETE FROM versions v USING folders f WHERE v.folder_id = f.id \
                 AND v.kept_at < $1 RETURNING f.account_id, v.hash",
                &[&cutoff],
            )
            .await?;
        for row in &gone {
            let hash = filesync_proto::Hash::from_slice(row.get::<_, &[u8]>(1)).unwrap_or_default();
            refs::release(&tx, row.get(0), &hash, now).await?;
        }
        tx.commit().await?;
        Ok(gone.len())
    }
}

impl ClusterFolder {
    /// The folder's row as a commit or a notification left it: sessions are told of
    /// the new number, status and quota of the totals.
    fn advance(&self, last: u64, files: i64, bytes: i64) {
        self.seq_tx.send_if_modified(|seq| {
            let later = last > *seq;
            *seq = (*seq).max(last);
            later
        });
        let (files, bytes) = (files.max(0) as u64, bytes.max(0) as u64);
        self.node.quotas.set_files(&self.account, &self.name, bytes);
        self.status_tx.send_if_modified(|s| {
            let changed = (s.seq, s.files, s.bytes) != (last.max(s.seq), files, bytes);
            (s.seq, s.files, s.bytes) = (last.max(s.seq), files, bytes);
            changed
        });
    }

    /// Reads the folder's epoch and gaps again (after it changed).
    async fn reload_lineage(&self) -> Result<()> {
        let db = self.node.db().await?;
        let epoch: i64 = db
            .query_one("SELECT epoch FROM folders WHERE id = $1", &[&self.id])
            .await?
            .get(0);
        let gaps = read_gaps(&db, self.id).await?;
        self.lineage_tx.send_replace(Lineage {
            epoch: epoch as u64,
            gaps: gaps.into(),
        });
        Ok(())
    }
}

async fn read_gaps(db: &tokio_postgres::Client, folder: i64) -> Result<Vec<(u64, u64)>> {
    Ok(db
        .query(
            "SELECT after, start FROM gaps WHERE folder_id = $1 ORDER BY after",
            &[&folder],
        )
        .await
        .context("cannot read the folder's skipped numbers")?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
        .collect())
}

/// The cluster's server id and TLS identity, the same for every node: read from the
/// database, or made by the first node to start on an empty one (the import makes them
/// from the embedded server's).
async fn identity(store: &Store, device: &DeviceId) -> Result<(DeviceId, ServerIdentity)> {
    let read = || async {
        store
            .db
            .query_opt(
                "SELECT server_device, cert_der, key_der FROM cluster WHERE id = 1",
                &[],
            )
            .await
            .context("cannot read the cluster's identity")
    };
    let row = match read().await? {
        Some(row) => row,
        None => {
            let (cert, key) = ServerIdentity::generate()?;
            store
                .db
                .execute(
                    "INSERT INTO cluster (id, schema, server_device, cert_der, key_der) \
                     VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                    &[
                        &super::schema::SCHEMA_VERSION,
                        &device.as_str(),
                        &cert,
                        &key,
                    ],
                )
                .await
                .context("cannot record the cluster's identity")?;
            read().await?.context("the cluster's identity vanished")?
        }
    };
    let id: String = row.get(0);
    let server_device = DeviceId::new(id.clone())
        .with_context(|| format!("the cluster's server id {id:?} is not a device id"))?;
    let identity = ServerIdentity::from_der(row.get(1), row.get(2))
        .context("the cluster's TLS identity in the database")?;
    Ok((server_device, identity))
}
