//! What the server keeps beside its browsable copy of a folder, read straight from its
//! data dir once the cluster is quiet: the versions it kept of replaced and deleted files,
//! and its index.
//!
//! This is the one white-box corner of the fixture, for oracle items of
//! shared/test-matrix.md that no `filesyncctl` command shows: "nothing lost" counts what
//! the server kept in its versions, and the server's index must pass an integrity check
//! with distinct sequence numbers. The layouts are those of `daemon/src/server/mod.rs`
//! and `daemon/src/server/versions.rs`:
//!
//! ```text
//! DATA_DIR/.filesync/index/ACCOUNT/FOLDER.db      SQLite, table `local` (one row per path)
//! DATA_DIR/.filesync/versions/ACCOUNT/FOLDER/     XX/HASH/{path, SEQ.KEPT_AT[.N]}, .tmp/
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::tree::{Kind, Manifest, sha256_file};

/// The server's versions store of `folder` in `account`.
pub fn versions_dir(data_dir: &Path, account: &str, folder: &str) -> PathBuf {
    data_dir
        .join(".filesync")
        .join("versions")
        .join(account)
        .join(folder)
}

/// The server's index of `folder` in `account`.
pub fn index_file(data_dir: &Path, account: &str, folder: &str) -> PathBuf {
    data_dir
        .join(".filesync")
        .join("index")
        .join(account)
        .join(format!("{folder}.db"))
}

/// One file the server kept in its versions store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    /// The file in the store.
    pub file: PathBuf,
    /// The folder path it was kept for, from the slot's `path` record ("?" without one).
    pub path: String,
    /// Hex SHA-256 of its content.
    pub digest: String,
}

/// Every version in the store at `dir`: each regular file of a slot other than the
/// slot's `path` record; copies in progress (`.tmp/`) are not versions. A store that does
/// not exist (nothing was ever replaced or deleted) holds none.
pub fn kept_versions(dir: &Path) -> io::Result<Vec<KeptVersion>> {
    let mut out = Vec::new();
    let shards = match fs::read_dir(dir) {
        Ok(shards) => shards,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        if shard.file_name() == ".tmp" || !shard.file_type()?.is_dir() {
            continue;
        }
        for slot in fs::read_dir(shard.path())? {
            let slot = slot?;
            if !slot.file_type()?.is_dir() {
                continue;
            }
            let record =
                fs::read_to_string(slot.path().join("path")).unwrap_or_else(|_| "?".to_owned());
            for version in fs::read_dir(slot.path())? {
                let version = version?;
                if version.file_name() == "path" || !version.file_type()?.is_file() {
                    continue;
                }
                out.push(KeptVersion {
                    digest: sha256_file(&version.path())?,
                    file: version.path(),
                    path: record.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The server index at `db`, read-only.
fn open(db: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open the server index {}: {e}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The highest sequence number the server index at `db` holds, in `local`, in
/// `renames` or as `meta.removed_seq` (what the server's sequencer resumes after when it
/// starts); 0 for an index that does not exist yet. Read while the server is stopped, or
/// is between commits.
pub fn max_seq(db: &Path) -> Result<u64, String> {
    if !db.exists() {
        return Ok(0);
    }
    let conn = open(db)?;
    conn.query_row(
        "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM local), \
                    (SELECT COALESCE(MAX(seq), 0) FROM renames), \
                    (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'removed_seq'))",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|seq| seq as u64)
    .map_err(|e| format!("server index {}: {e}", db.display()))
}

/// The files the index at `db` says its daemon holds: each live, clean (not a local
/// change still to send) regular file's path and hex SHA-256. Devices' indexes
/// ([`crate::Node::folder_index`]) share the server's schema, so this reads either. Read
/// while the daemon is stopped: what it committed, for checking against its tree.
pub fn committed_files(db: &Path) -> Result<BTreeMap<String, String>, String> {
    let conn = open(db)?;
    conn.prepare("SELECT path, hash FROM local WHERE deleted = 0 AND kind = 0 AND dirty = 0")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, hex::encode(r.get::<_, Vec<u8>>(1)?)))
            })?
            .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("index {}: {e}", db.display()))
}

/// What [`check_index`] read from a sound index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSummary {
    /// Rows of `local`, tombstones included.
    pub rows: u64,
    /// The highest sequence number.
    pub max_seq: u64,
    /// Live regular files.
    pub files: u64,
}

/// Checks the server index at `db` against the server's tree `tree` once the cluster is
/// quiet: `PRAGMA integrity_check` says ok; every row has its own sequence number, all
/// above 0 (each committed change gets the next one, and a path's row holds its latest);
/// the live rows are exactly the tree's paths, with the same kinds and, for files, the
/// same SHA-256. `Err` lists every problem found.
pub fn check_index(db: &Path, tree: &Manifest) -> Result<IndexSummary, String> {
    let conn = open(db)?;
    let sql = |e: rusqlite::Error| format!("server index {}: {e}", db.display());
    let mut problems = Vec::new();

    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql)?;
    if integrity != ["ok"] {
        problems.push(format!("PRAGMA integrity_check: {integrity:?}"));
    }

    let (rows, distinct, min_seq, max_seq): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT seq), COALESCE(MIN(seq), 1), COALESCE(MAX(seq), 0) \
             FROM local",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(sql)?;
    if distinct != rows {
        let dups: Vec<String> = conn
            .prepare(
                "SELECT seq, group_concat(path, ', ') FROM local GROUP BY seq \
                 HAVING COUNT(*) > 1 ORDER BY seq LIMIT 8",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(format!(
                        "seq {} on [{}]",
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?
                    ))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(sql)?;
        problems.push(format!(
            "{rows} rows but {distinct} distinct sequence numbers: {}",
            dups.join("; ")
        ));
    }
    if min_seq < 1 {
        problems.push(format!("a row has sequence number {min_seq}"));
    }

    let live: BTreeMap<String, (i64, Vec<u8>)> = conn
        .prepare("SELECT path, kind, hash FROM local WHERE deleted = 0")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql)?;
    let mut disagree = Vec::new();
    for (path, (kind, hash)) in &live {
        let want = match tree.get(path) {
            None => {
                disagree.push(format!("{path}: live in the index, absent from the tree"));
                continue;
            }
            Some(entry) => entry,
        };
        let kind_ok = match (kind, want.kind) {
            (0, Kind::File) => {
                if hex::encode(hash) != want.digest {
                    disagree.push(format!(
                        "{path}: index sha256 {} but the tree holds {}",
                        hex::encode(hash),
                        want
                    ));
                }
                true
            }
            (1, Kind::Dir) | (2, Kind::Symlink) => true,
            _ => false,
        };
        if !kind_ok {
            disagree.push(format!("{path}: index kind {kind}, tree has {want}"));
        }
    }
    for (path, entry) in tree {
        if !live.contains_key(path) {
            disagree.push(format!(
                "{path} ({entry}): in the tree, not live in the index"
            ));
        }
    }
    if !disagree.is_empty() {
        problems.push(format!(
            "the index disagrees with the server's tree: {}",
            disagree.join("; ")
        ));
    }
    if problems.is_empty() {
        Ok(IndexSummary {
            rows: rows as u64,
            max_seq: max_seq as u64,
            files: live.values().filter(|(kind, _)| *kind == 0).count() as u64,
        })
    } else {
        Err(format!(
            "server index {}:\n - {}",
            db.display(),
            problems.join("\n - ")
        ))
    }
}
