//! The cluster's tables in PostgreSQL, and bringing a database up to them.
//!
//! They hold what the embedded backend keeps in `DATA_DIR/.filesync` (accounts,
//! devices, invites, quotas, shares: `accounts.db`; each folder's index and versions)
//! plus what the folders' trees hold, as references to content: a file's content is a
//! row of `contents` (its size and block list) whose blocks are objects in the bucket
//! (`chunks`). Paths sort bytewise (`COLLATE "C"`), so a subtree is one key range.
//!
//! `blocks` has no foreign key to `accounts`: an upload that never committed leaves
//! blocks of an account the database may not hold, which garbage collection must still
//! be able to record as doomed.
//!
//! A small file's content (at most [`SMALL_MAX`] bytes, what travels inline on the wire)
//! is kept in its `contents` row (`data`), written in the transaction that commits it:
//! no object, no upload before the commit, one read with its row. Larger content is
//! blocks in the bucket; an imported small file's too (`data` is then null).
//!
//! Times are Unix seconds, as in the embedded store. A folder's `next_seq` is a column
//! of its row, not a PostgreSQL sequence: a commit takes its numbers while holding the
//! row's lock, so numbers are handed out in commit order and a reader never sees a
//! number before a smaller one that is still to commit.

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;

/// Content up to this size is kept in its `contents` row rather than in the bucket.
pub const SMALL_MAX: u64 = filesync_proto::wire::INLINE_MAX;

/// The layout this build writes; a database at a newer one is refused.
pub const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cluster (
    id int PRIMARY KEY CHECK (id = 1), schema int NOT NULL,
    server_device text NOT NULL, cert_der bytea NOT NULL, key_der bytea NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, created bigint NOT NULL);
CREATE TABLE IF NOT EXISTS quotas (
    account_id bigint PRIMARY KEY REFERENCES accounts, bytes bigint);
CREATE TABLE IF NOT EXISTS devices (
    id text PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, name text NOT NULL,
    secret_hash bytea NOT NULL, enrolled bigint NOT NULL, last_seen bigint,
    revoked bool NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS invites (
    hash bytea PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts,
    created bigint NOT NULL, expires bigint NOT NULL, used_by text, used_at bigint,
    made_by text, cancelled bigint);
CREATE TABLE IF NOT EXISTS shares (
    owner_id bigint NOT NULL REFERENCES accounts, folder text NOT NULL,
    member_id bigint NOT NULL REFERENCES accounts, read_only bool NOT NULL,
    granted bigint NOT NULL, PRIMARY KEY (owner_id, folder, member_id));
CREATE TABLE IF NOT EXISTS folders (
    id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts,
    name text NOT NULL, epoch bigint NOT NULL, next_seq bigint NOT NULL,
    last_seq bigint NOT NULL, next_floor bigint NOT NULL DEFAULT 0,
    files bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0,
    UNIQUE (account_id, name));
CREATE TABLE IF NOT EXISTS gaps (
    folder_id bigint NOT NULL REFERENCES folders, after bigint NOT NULL, start bigint NOT NULL,
    PRIMARY KEY (folder_id, after));
CREATE TABLE IF NOT EXISTS contents (
    account_id bigint NOT NULL REFERENCES accounts, hash bytea NOT NULL, size bigint NOT NULL,
    blocks bytea NOT NULL, refs bigint NOT NULL DEFAULT 0, PRIMARY KEY (account_id, hash));
ALTER TABLE contents ADD COLUMN IF NOT EXISTS data bytea;
CREATE TABLE IF NOT EXISTS entries (
    folder_id bigint NOT NULL REFERENCES folders, path text COLLATE "C" NOT NULL,
    seq bigint NOT NULL, kind smallint NOT NULL, deleted bool NOT NULL, size bigint NOT NULL,
    mtime_ns bigint NOT NULL, mode int NOT NULL, hash bytea NOT NULL, target text NOT NULL,
    origin text NOT NULL, conflict bytea, PRIMARY KEY (folder_id, path));
CREATE UNIQUE INDEX IF NOT EXISTS entries_seq ON entries (folder_id, seq);
CREATE TABLE IF NOT EXISTS renames (
    folder_id bigint NOT NULL REFERENCES folders, seq bigint NOT NULL,
    src text COLLATE "C" NOT NULL, dst text COLLATE "C" NOT NULL, PRIMARY KEY (folder_id, seq));
CREATE TABLE IF NOT EXISTS blocks (
    account_id bigint NOT NULL, hash bytea NOT NULL, size int NOT NULL,
    refs bigint NOT NULL DEFAULT 0, state smallint NOT NULL, touched_at bigint NOT NULL,
    PRIMARY KEY (account_id, hash));
CREATE INDEX IF NOT EXISTS blocks_unreferenced ON blocks (touched_at) WHERE refs = 0;
CREATE TABLE IF NOT EXISTS versions (
    id bigserial PRIMARY KEY, folder_id bigint NOT NULL REFERENCES folders,
    path text COLLATE "C" NOT NULL, seq bigint NOT NULL, kept_at bigint NOT NULL,
    hash bytea NOT NULL, size bigint NOT NULL, mtime_ns bigint NOT NULL);
ALTER TABLE versions ADD COLUMN IF NOT EXISTS mode int;
CREATE INDEX IF NOT EXISTS versions_path ON versions (folder_id, path);
CREATE INDEX IF NOT EXISTS versions_age ON versions (kept_at);
"#;

/// A block's state in `blocks.state`: whole in the bucket (`LIVE`, set only after the
/// upload succeeded), or being deleted (`DOOMED`: no commit may refer to it again). 0 is
/// kept for an upload in progress, which the serving code will record before its upload.
pub const LIVE: i16 = 1;
pub const DOOMED: i16 = 2;

/// The advisory lock that a garbage collection holds, and that `migrate-to-cluster`
/// holds while it writes blocks: a collection never runs beside a move.
pub const GC_LOCK: i64 = 7102;

/// Takes [`GC_LOCK`] for this connection's session, if nobody holds it.
pub async fn try_gc_lock(db: &Client) -> Result<bool> {
    Ok(db
        .query_one("SELECT pg_try_advisory_lock($1)", &[&GC_LOCK])
        .await
        .context("cannot take the collection lock")?
        .get(0))
}

/// Creates the tables that are missing, in one transaction, and refuses a database
/// that a newer filesync laid out. Several nodes may start at once: the transaction
/// takes an advisory lock first, so only one creates.
pub async fn migrate(db: &mut Client) -> Result<()> {
    let tx = db
        .transaction()
        .await
        .context("cannot start the schema transaction")?;
    // "already exists, skipping" for every table at every start says nothing.
    tx.batch_execute("SET LOCAL client_min_messages = warning; SELECT pg_advisory_xact_lock(7101)")
        .await
        .context("cannot take the schema lock")?;
    tx.batch_execute(SCHEMA)
        .await
        .context("cannot create the cluster's tables")?;
    let found: Option<i32> = tx
        .query_opt("SELECT schema FROM cluster WHERE id = 1", &[])
        .await
        .context("cannot read the cluster's schema version")?
        .map(|row| row.get(0));
    if let Some(found) = found
        && found > SCHEMA_VERSION
    {
        bail!(
            "the database holds a cluster of layout {found}, newer than this filesyncd \
             ({SCHEMA_VERSION}); upgrade filesyncd on this node"
        );
    }
    tx.commit()
        .await
        .context("cannot commit the cluster's tables")
}
