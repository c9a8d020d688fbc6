//! What a user sees in a synced tree, and how tests compare, wait for and write trees.
//!
//! A [`Manifest`] maps every path under a folder root to its kind, its content digest
//! (or symlink target) and its owner-exec bit, including empty directories. Entries
//! named `.filesync*`, at any depth, are the daemon's own (marker, metadata, temp files,
//! design brief §5) and are left out: they never sync, so replicas may differ there.
//! [`stray_temp_files`] is the check that looks inside them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::poll_until;

/// Names starting with this are the daemon's, never synced and never compared.
pub const METADATA_PREFIX: &str = ".filesync";

/// A walk deeper than this is a loop or a bug, not a test tree.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One path of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Hex SHA-256 of a file's content, a symlink's target, empty for a directory.
    pub digest: String,
    /// The owner-exec mode bit of a file; false for directories and symlinks.
    pub exec: bool,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Dir => write!(f, "dir"),
            Kind::Symlink => write!(f, "symlink -> {}", self.digest),
            Kind::File => write!(
                f,
                "file sha256:{}{}",
                self.digest.get(..12).unwrap_or(&self.digest),
                if self.exec { " +x" } else { "" }
            ),
        }
    }
}

/// Relative path (with `/`) → entry, for everything a user sees under a folder root.
pub type Manifest = BTreeMap<String, Entry>;

/// The conflict copies (`*.sync-conflict-*`) among a manifest's paths.
pub fn conflict_copies(manifest: &Manifest) -> Vec<&str> {
    manifest
        .keys()
        .map(String::as_str)
        .filter(|p| p.contains(".sync-conflict-"))
        .collect()
}

/// Whether a file name is in the daemon's reserved namespace.
pub fn is_metadata(name: &str) -> bool {
    name.starts_with(METADATA_PREFIX)
}

/// Every entry under `root`, depth first, without following symlinks. With
/// `metadata == false`, `.filesync*` entries and everything under them are skipped; so
/// are the entries whose relative path `skip` accepts, and everything under them.
fn walk_excluding(
    root: &Path,
    metadata: bool,
    skip: Skip<'_>,
) -> io::Result<Vec<(String, PathBuf, Metadata)>> {
    if !fs::symlink_metadata(root)?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(io::Error::other(format!("{} is too deep", dir.display())));
        }
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if !metadata && is_metadata(&name) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if skip(&rel) {
                continue;
            }
            let meta = fs::symlink_metadata(item.path())?;
            if meta.is_dir() {
                stack.push((item.path(), format!("{rel}/"), depth + 1));
            }
            out.push((rel, item.path(), meta));
        }
    }
    Ok(out)
}

/// The [`Manifest`] of the tree at `root`. Fails when the root is missing or an entry
/// vanishes while it is read; [`converge`] then simply looks again.
pub fn manifest(root: &Path) -> io::Result<Manifest> {
    manifest_excluding(root, &|_| false)
}

/// Accepts the relative paths (`/`-separated, non-UTF-8 bytes shown as U+FFFD) that a
/// comparison leaves out, with everything under them: things that exist on purpose on
/// one replica only, like ignored files or unsyncable ones.
pub type Skip<'a> = &'a dyn Fn(&str) -> bool;

/// [`manifest`] without the paths `skip` accepts. A FIFO, socket or device that is not
/// skipped is an error (reading it could block), not an entry.
pub fn manifest_excluding(root: &Path, skip: Skip<'_>) -> io::Result<Manifest> {
    let mut out = Manifest::new();
    for (rel, path, meta) in walk_excluding(root, false, skip)? {
        let entry = if meta.is_dir() {
            Entry {
                kind: Kind::Dir,
                digest: String::new(),
                exec: false,
            }
        } else if meta.file_type().is_symlink() {
            Entry {
                kind: Kind::Symlink,
                digest: fs::read_link(&path)?.to_string_lossy().into_owned(),
                exec: false,
            }
        } else if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is a {:?}, not a file a replica can compare; skip it",
                path.display(),
                meta.file_type()
            )));
        } else {
            Entry {
                kind: Kind::File,
                digest: sha256_file(&path)?,
                exec: meta.permissions().mode() & 0o100 != 0,
            }
        };
        out.insert(rel, entry);
    }
    Ok(out)
}

/// Hex SHA-256 of the file at `path`, read in pieces: files of gigabytes are fine.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex SHA-256 of `bytes`, as a [`Manifest`] entry holds it.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `Ok` with the common manifest when every tree in `roots` looks the same, else a
/// readable account of how each tree differs from the first.
pub fn compare(roots: &[PathBuf]) -> Result<Manifest, String> {
    compare_excluding(roots, &|_| false)
}

/// [`compare`] of the trees without the paths `skip` accepts.
pub fn compare_excluding(roots: &[PathBuf], skip: Skip<'_>) -> Result<Manifest, String> {
    let mut manifests = Vec::with_capacity(roots.len());
    for root in roots {
        manifests
            .push(manifest_excluding(root, skip).map_err(|e| format!("{}: {e}", root.display()))?);
    }
    let Some((first, rest)) = manifests.split_first() else {
        return Ok(Manifest::new());
    };
    let report: Vec<String> = rest
        .iter()
        .zip(&roots[1..])
        .filter(|(m, _)| *m != first)
        .map(|(m, root)| format!("  {}: {}", root.display(), diff(first, m)))
        .collect();
    if report.is_empty() {
        Ok(first.clone())
    } else {
        Err(format!(
            "replicas differ from {} ({} entries):\n{}",
            roots[0].display(),
            first.len(),
            report.join("\n")
        ))
    }
}

/// What `other` lacks, has in excess, and has differently from `reference`, a few of each.
pub fn diff(reference: &Manifest, other: &Manifest) -> String {
    const SHOWN: usize = 8;
    fn list<'a>(items: impl Iterator<Item = String> + 'a) -> String {
        let all: Vec<String> = items.collect();
        let more = all.len().saturating_sub(SHOWN);
        let mut text = all.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text += &format!(", and {more} more");
        }
        text
    }
    let missing: Vec<_> = reference
        .iter()
        .filter(|(k, _)| !other.contains_key(*k))
        .collect();
    let extra: Vec<_> = other
        .iter()
        .filter(|(k, _)| !reference.contains_key(*k))
        .collect();
    let differ: Vec<_> = reference
        .iter()
        .filter_map(|(k, a)| other.get(k).filter(|b| *b != a).map(|b| (k, a, b)))
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let n = missing.len();
        parts.push(format!(
            "missing {n} [{}]",
            list(missing.into_iter().map(|(k, e)| format!("{k} ({e})")))
        ));
    }
    if !extra.is_empty() {
        let n = extra.len();
        parts.push(format!(
            "extra {n} [{}]",
            list(extra.into_iter().map(|(k, e)| format!("{k} ({e})")))
        ));
    }
    if !differ.is_empty() {
        let n = differ.len();
        parts.push(format!(
            "different {n} [{}]",
            list(
                differ
                    .into_iter()
                    .map(|(k, a, b)| format!("{k}: {a} here {b}"))
            )
        ));
    }
    parts.join("; ")
}

/// Waits until every tree in `roots` has the same [`Manifest`], looking every 50 ms;
/// on timeout, the error says how the trees still differ.
pub fn converge(roots: &[PathBuf], timeout: Duration) -> Result<Manifest, String> {
    poll_until(timeout, || compare(roots))
}

/// [`converge`] over trees found anew at each look (a replica that does not exist yet,
/// as the server's copy before first contact, is an `Err` from `roots`), comparing them
/// without the paths `skip` accepts.
pub fn converge_with_excluding(
    timeout: Duration,
    mut roots: impl FnMut() -> Result<Vec<PathBuf>, String>,
    skip: Skip<'_>,
) -> Result<Manifest, String> {
    poll_until(timeout, || compare_excluding(&roots()?, skip))
}

/// Daemon temp files left in a tree that should be quiet, as relative paths.
///
/// What the daemon keeps in a folder is named `.filesync*` (brief §5): a marker, a
/// metadata dir, temp files, and the user's `.filesyncignore`. Once every client says it
/// is in sync, only the lasting ones may remain. So this reports:
/// * a `.filesync*` entry below the top level: a temp file written next to its target
///   and never renamed into place (the marker and metadata live at the top);
/// * a `.filesync*` entry at the top level, or a file inside a top-level `.filesync*`
///   dir, whose name or path there looks temporary (`tmp`, `temp`, `partial`, `.part`);
/// * anywhere, a `*.partial`, `*.part` or `*.tmp` name, which no test creates.
pub fn stray_temp_files(root: &Path) -> io::Result<Vec<String>> {
    stray_temp_files_excluding(root, &|_| false)
}

/// [`stray_temp_files`] outside the paths `skip` accepts (say, a user's `download.part`
/// that the ignore rules keep on its device).
pub fn stray_temp_files_excluding(root: &Path, skip: Skip<'_>) -> io::Result<Vec<String>> {
    fn looks_temp(name: &str) -> bool {
        ["tmp", "temp", "partial"].iter().any(|t| name.contains(t)) || name.ends_with(".part")
    }
    let mut stray = Vec::new();
    for (rel, _, meta) in walk_excluding(root, true, skip)? {
        let top = rel.split('/').next().unwrap_or_default();
        let name = rel.rsplit('/').next().unwrap_or_default().to_lowercase();
        let nested = rel.contains('/');
        let bad = if nested && is_metadata(top) {
            let below = rel[top.len() + 1..].to_lowercase();
            !meta.is_dir() && looks_temp(&below)
        } else if is_metadata(&name) {
            nested || looks_temp(&name)
        } else {
            [".partial", ".part", ".tmp"]
                .iter()
                .any(|s| name.ends_with(s))
        };
        if bad {
            stray.push(rel);
        }
    }
    Ok(stray)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write;

    #[test]
    fn stray_temp_files_tells_metadata_from_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            ".filesync",
            ".filesyncignore",
            ".filesync-meta/index.db",
            "sub/file.txt",
            "attempt.txt",
        ] {
            write(&root.join(rel), b"x");
        }
        fs::create_dir_all(root.join(".filesync-meta/tmp")).unwrap();
        assert_eq!(stray_temp_files(root).unwrap(), Vec::<String>::new());

        for rel in [
            ".filesync-tmp-1",
            "sub/.filesync-2",
            ".filesync-meta/tmp/chunk",
            "sub/x.partial",
        ] {
            write(&root.join(rel), b"x");
        }
        let mut found = stray_temp_files(root).unwrap();
        found.sort();
        assert_eq!(
            found,
            [
                ".filesync-meta/tmp/chunk",
                ".filesync-tmp-1",
                "sub/.filesync-2",
                "sub/x.partial"
            ]
        );
    }

    #[test]
    fn excluded_paths_are_neither_compared_nor_opened() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(&a.path().join("same.txt"), b"1");
        write(&b.path().join("same.txt"), b"1");
        write(&a.path().join("only-a/x.log"), b"x");
        write(&a.path().join("download.part"), b"partial");
        crate::files::mkfifo(&a.path().join("pipe"));
        let err = manifest(a.path()).unwrap_err().to_string();
        assert!(err.contains("pipe"), "{err}");
        let skip = |rel: &str| matches!(rel, "only-a" | "pipe" | "download.part");
        let roots = [a.path().to_owned(), b.path().to_owned()];
        assert_eq!(compare_excluding(&roots, &skip).unwrap().len(), 1);
        assert!(compare(&[b.path().to_owned(), a.path().to_owned()]).is_err());
        assert_eq!(stray_temp_files(a.path()).unwrap(), ["download.part"]);
        assert!(
            stray_temp_files_excluding(a.path(), &skip)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn manifest_skips_metadata_and_diff_names_what_differs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(&a.path().join("same.txt"), b"1");
        write(&b.path().join("same.txt"), b"1");
        write(&a.path().join("changed.txt"), b"a");
        write(&b.path().join("changed.txt"), b"b");
        write(&a.path().join("only-a/x"), b"x");
        write(&b.path().join(".filesync-tmp"), b"ignored");
        fs::create_dir(b.path().join("empty")).unwrap();
        let ma = manifest(a.path()).unwrap();
        let mb = manifest(b.path()).unwrap();
        assert!(!mb.contains_key(".filesync-tmp"));
        assert_eq!(mb["empty"].kind, Kind::Dir);
        let text = diff(&ma, &mb);
        assert!(text.contains("missing 2 [only-a (dir), only-a/x"), "{text}");
        assert!(text.contains("extra 1 [empty (dir)]"), "{text}");
        assert!(text.contains("different 1 [changed.txt"), "{text}");
        let roots = [a.path().to_owned(), b.path().to_owned()];
        assert!(compare(&roots).is_err());
        fs::remove_dir_all(a.path().join("only-a")).unwrap();
        fs::create_dir(a.path().join("empty")).unwrap();
        write(&a.path().join("changed.txt"), b"b");
        assert_eq!(compare(&roots).unwrap().len(), 3);
    }
}
