//! A folder's entries as PostgreSQL rows and back: the columns of `entries`, with the
//! file's block list from its `contents` row.

use anyhow::{Context, Result};
use filesync_proto::wire::{BlockInfo, Entry};
use filesync_proto::{DeviceId, Hash, RelPath};
use tokio_postgres::Row;

use crate::index::{kind_code, kind_from};

/// The columns [`entry`] reads, from `entries e` joined with `contents c`.
pub const ENTRY_COLS: &str = "e.path, e.seq, e.kind, e.deleted, e.size, e.mtime_ns, e.mode, \
     e.hash, e.target, e.origin, e.conflict, c.blocks";

/// `FROM` clause for [`ENTRY_COLS`]: `$1` is the folder, `$2` its account.
pub const ENTRY_FROM: &str = "entries e LEFT JOIN contents c \
     ON c.account_id = $2 AND c.hash = e.hash AND NOT e.deleted AND e.kind = 0";

/// The entry of a row selected with [`ENTRY_COLS`].
pub fn entry(row: &Row) -> Result<Entry> {
    let path: String = row.get(0);
    let hash: Vec<u8> = row.get(7);
    let origin: String = row.get(9);
    let conflict: Option<Vec<u8>> = row.get(10);
    let blocks: Option<Vec<u8>> = row.get(11);
    Ok(Entry {
        path: RelPath::new(path.clone())
            .with_context(|| format!("the cluster holds a path that is not one: {path:?}"))?,
        seq: row.get::<_, i64>(1) as u64,
        kind: kind_from(i64::from(row.get::<_, i16>(2))),
        deleted: row.get(3),
        size: row.get::<_, i64>(4) as u64,
        mtime_ns: row.get(5),
        mode: row.get::<_, i32>(6) as u32,
        hash: Hash::from_slice(&hash).unwrap_or_default(),
        blocks: match blocks {
            Some(b) => decode_blocks(&b)?,
            None => Vec::new(),
        },
        target: row.get(8),
        origin: DeviceId::new(origin.clone()).with_context(|| {
            format!("the cluster holds a device id that is not one: {origin:?}")
        })?,
        conflict: conflict
            .map(|c| postcard::from_bytes(&c))
            .transpose()
            .context("the cluster holds a conflict note it cannot read")?,
        renamed_from: None,
    })
}

/// The row at `path` of folder `folder` of account `account`, through `db` (a
/// connection, or a commit's transaction).
pub async fn entry_at(
    db: &impl Cached,
    folder: i64,
    account: i64,
    path: &RelPath,
) -> Result<Option<Entry>> {
    let sql =
        format!("SELECT {ENTRY_COLS} FROM {ENTRY_FROM} WHERE e.folder_id = $1 AND e.path = $3");
    let row = db
        .query_opt_c(&sql, &[&folder, &account, &path.as_str()])
        .await
        .with_context(|| format!("cannot read {path} from the cluster's database"))?;
    row.as_ref().map(entry).transpose()
}

pub fn encode_blocks(blocks: &[BlockInfo]) -> Result<Vec<u8>> {
    postcard::to_stdvec(blocks).context("cannot encode a block list")
}

pub fn decode_blocks(blob: &[u8]) -> Result<Vec<BlockInfo>> {
    postcard::from_bytes(blob).context("the cluster holds a block list it cannot read")
}

/// The values of an `entries` row for `entry` of folder `folder`, in the order of
/// [`PUT_ENTRY`]'s parameters after `$1`.
pub struct EntryRow {
    path: String,
    seq: i64,
    kind: i16,
    size: i64,
    mode: i32,
    conflict: Option<Vec<u8>>,
}

/// Inserts or replaces the row at a path: `$1` folder, then the entry's columns.
pub const PUT_ENTRY: &str = "INSERT INTO entries (folder_id, path, seq, kind, deleted, size, \
     mtime_ns, mode, hash, target, origin, conflict) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (folder_id, path) DO UPDATE SET seq = $3, kind = $4, deleted = $5, \
     size = $6, mtime_ns = $7, mode = $8, hash = $9, target = $10, origin = $11, \
     conflict = $12";

impl EntryRow {
    pub fn of(entry: &Entry) -> Result<EntryRow> {
        Ok(EntryRow {
            path: entry.path.as_str().to_owned(),
            seq: entry.seq as i64,
            kind: kind_code(entry.kind) as i16,
            size: entry.size as i64,
            mode: entry.mode as i32,
            conflict: entry
                .conflict
                .as_ref()
                .map(postcard::to_stdvec)
                .transpose()
                .context("cannot encode a conflict note")?,
        })
    }

    /// Writes the row with [`PUT_ENTRY`].
    pub async fn put(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        folder: i64,
        entry: &Entry,
    ) -> Result<()> {
        tx.execute_c(
            PUT_ENTRY,
            &[
                &folder,
                &self.path,
                &self.seq,
                &self.kind,
                &entry.deleted,
                &self.size,
                &entry.mtime_ns,
                &self.mode,
                &entry.hash.0.as_slice(),
                &entry.target,
                &entry.origin.as_str(),
                &self.conflict,
            ],
        )
        .await
        .with_context(|| format!("cannot record {} in the cluster's database", entry.path))?;
        Ok(())
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// The queries of serving, each prepared once per connection (deadpool's statement
/// cache) rather than parsed and planned again at every call: a push of many small
/// files runs a few of them per file.
pub trait Cached {
    async fn prepared(&self, sql: &str)
    -> Result<tokio_postgres::Statement, tokio_postgres::Error>;

    async fn query_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error>;

    async fn query_opt_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error>;

    async fn query_one_c(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, tokio_postgres::Error>;

    async fn execute_c(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error>;
}

macro_rules! cached {
    ($t:ty) => {
        impl Cached for $t {
            async fn prepared(
                &self,
                sql: &str,
            ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
                self.prepare_cached(sql).await
            }

            async fn query_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Vec<Row>, tokio_postgres::Error> {
                self.query(&self.prepared(sql).await?, params).await
            }

            async fn query_opt_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Option<Row>, tokio_postgres::Error> {
                self.query_opt(&self.prepared(sql).await?, params).await
            }

            async fn query_one_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<Row, tokio_postgres::Error> {
                self.query_one(&self.prepared(sql).await?, params).await
            }

            async fn execute_c(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> Result<u64, tokio_postgres::Error> {
                self.execute(&self.prepared(sql).await?, params).await
            }
        }
    };
}

cached!(deadpool_postgres::Object);
cached!(deadpool_postgres::Transaction<'_>);
