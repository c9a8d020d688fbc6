//! A cluster folder's current tree written into a directory (`filesyncd export`): in a
//! cluster the content is blocks in a bucket, so this is how an admin gets a browsable
//! copy, or checks a backup.
//!
//! Every path is checked as on the wire ([`RelPath`]); every block is checked against
//! its hash as it is read and every file against its whole hash before it gets its
//! name, so a damaged bucket makes the export fail, naming the file, rather than write
//! wrong bytes. Symlinks are made last, so no file is ever written through one.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockInfo, EntryKind};
use filesync_proto::{AccountName, FolderName, Hash, RelPath};
use sha2::{Digest, Sha256};

use super::chunks::Chunks;
use crate::index::kind_code;

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub files: usize,
    pub dirs: usize,
    pub links: usize,
    pub bytes: u64,
}

/// Writes `folder` (`ACCOUNT/FOLDER`) into `dir`; what was written, in words.
pub async fn export_into(
    db: &tokio_postgres::Client,
    chunks: &Chunks,
    folder: &str,
    dir: &Path,
) -> Result<String> {
    let Some((account, name)) = folder.split_once('/') else {
        bail!("{folder:?} is not ACCOUNT/FOLDER; write e.g. alice/docs");
    };
    let account = filesync_proto::AccountName::new(account)?;
    let name = filesync_proto::FolderName::new(name)?;
    let done = export(db, chunks, &account, &name, dir).await?;
    Ok(format!(
        "wrote {account}/{name} into {}: {} files ({} bytes), {} directories, {} symlinks",
        dir.display(),
        done.files,
        done.bytes,
        done.dirs,
        done.links
    ))
}

/// Writes the live tree of `account`'s `folder` into `dir`, which must be absent or
/// empty.
pub async fn export(
    db: &tokio_postgres::Client,
    chunks: &Chunks,
    account: &AccountName,
    folder: &FolderName,
    dir: &Path,
) -> Result<Exported> {
    let found = db
        .query_opt(
            "SELECT f.id, a.id FROM folders f JOIN accounts a ON a.id = f.account_id \
             WHERE a.name = $1 AND f.name = $2",
            &[&account.as_str(), &folder.as_str()],
        )
        .await
        .context("cannot read the cluster's folders")?;
    let Some(row) = found else {
        bail!(
            "the cluster has no folder {account}/{folder}; `filesyncctl server status` lists them"
        );
    };
    let (folder_id, account_id): (i64, i64) = (row.get(0), row.get(1));
    if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty; export into a new or empty directory",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rows = db
        .query(
            "SELECT e.path, e.kind, e.size, e.mtime_ns, e.mode, e.hash, e.target, c.blocks \
             FROM entries e LEFT JOIN contents c ON c.account_id = $2 AND c.hash = e.hash \
             WHERE e.folder_id = $1 AND NOT e.deleted ORDER BY e.path",
            &[&folder_id, &account_id],
        )
        .await
        .with_context(|| format!("cannot read the entries of {account}/{folder}"))?;
    let mut done = Exported::default();
    let mut links = Vec::new();
    for row in rows {
        let text: String = row.get(0);
        let path = RelPath::new(text.clone())
            .with_context(|| format!("the cluster holds a path that is not one: {text:?}"))?;
        let kind: i16 = row.get(1);
        let target = dir.join(path.as_str());
        if i64::from(kind) == kind_code(EntryKind::Dir) {
            fs::create_dir_all(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            done.dirs += 1;
        } else if i64::from(kind) == kind_code(EntryKind::Symlink) {
            links.push((row.get::<_, String>(6), target));
        } else {
            let blocks: Option<Vec<u8>> = row.get(7);
            let blocks: Vec<BlockInfo> = match blocks {
                Some(b) => postcard::from_bytes(&b)
                    .with_context(|| format!("the block list of {path} cannot be read"))?,
                None => bail!("{path}: the cluster holds no content for it"),
            };
            let hash = Hash::from_slice(row.get(5)).context("a hash is not 32 bytes")?;
            let mode: i32 = row.get(4);
            let mtime_ns: i64 = row.get(3);
            let size = write_file(chunks, account_id, &path, &blocks, &hash, &target).await?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode as u32 & 0o777))
                .with_context(|| format!("cannot set the mode of {}", target.display()))?;
            let mtime = filetime::FileTime::from_unix_time(
                mtime_ns.div_euclid(1_000_000_000),
                mtime_ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_mtime(&target, mtime)
                .with_context(|| format!("cannot set the time of {}", target.display()))?;
            done.files += 1;
            done.bytes += size;
        }
    }
    for (to, link) in links {
        std::os::unix::fs::symlink(&to, &link)
            .with_context(|| format!("cannot make the symlink {}", link.display()))?;
        done.links += 1;
    }
    Ok(done)
}

/// Writes one file from its blocks beside `target`, checks it whole, and gives it its
/// name only then.
async fn write_file(
    chunks: &Chunks,
    account_id: i64,
    path: &RelPath,
    blocks: &[BlockInfo],
    hash: &Hash,
    target: &Path,
) -> Result<u64> {
    let name = target.file_name().context("a path without a name")?;
    let temp = target.with_file_name(format!(".{}.filesync-export", name.to_string_lossy()));
    let mut file =
        File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let mut whole = Sha256::new();
    let mut size = 0u64;
    for block in blocks.iter().filter(|b| b.size > 0) {
        let data = chunks
            .get(account_id, &block.hash)
            .await
            .with_context(|| format!("{path}: a block cannot be read from the bucket"))?;
        whole.update(&data);
        size += data.len() as u64;
        file.write_all(&data)
            .with_context(|| format!("cannot write {}", temp.display()))?;
    }
    if whole.finalize().as_slice() != hash.0 {
        let _ = fs::remove_file(&temp);
        bail!("{path}: its blocks do not add up to its content; the bucket's copy is damaged");
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", temp.display()))?;
    fs::rename(&temp, target).with_context(|| format!("cannot write {}", target.display()))?;
    Ok(size)
}
