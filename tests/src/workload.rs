//! Random file operations on the clients of a [`Cluster`] and the ledger of every
//! content they wrote, shared by the model test and the chaos soak.
//!
//! * [`Rng`] makes a seed's choices the same on every platform and Rust version.
//! * [`Universe`] is the small set of dirs and file names operations pick from, so that
//!   clients collide and conflict.
//! * [`Action`] is one operation with its random choices made in advance;
//!   [`Ledger::act`] runs it in a client's copy of a folder.
//! * [`Ledger`] records every content written, by whom, and whether its writer destroyed
//!   it itself. Its "nothing lost" oracle ([`Ledger::lost`]): every content not released
//!   by its writer is in the converged tree (at any path, conflict copies included) or
//!   among the versions the server kept. Every write puts a content no other write
//!   produces, so contents are told apart by their SHA-256. Before an operation destroys
//!   a file (overwrite, delete, rename over it, `rm -r` of a dir holding it), the ledger
//!   reads it and looks its content up, so this follows the content wherever the daemons
//!   moved it. Content written by *another* client stays required when it is destroyed:
//!   it reached this client through the server, which must keep it in its versions. A
//!   rename moves a content; it never releases it.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Cluster;
use crate::cluster::DOCS;
use crate::files::pseudo_random;
use crate::server_store::{self, KeptVersion};
use crate::tree::{self, Kind, Manifest};

/// The temp file of a safe save: a GIO name, which the daemon ignores.
pub const SAFE_SAVE_PREFIX: &str = ".goutputstream-";

/// Contents smaller than this stay text, to read in a kept test dir.
const TEXT_LIMIT: usize = 1000;

/// splitmix64: small, fast, and the same on every platform and Rust version, so a seed
/// printed today replays the same operations tomorrow.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }
}

/// A seed that differs from run to run.
pub fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// A number from the environment, decimal or `0x` hex; panics naming the variable when
/// it is set to something else.
pub fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")))
}

/// `a`, `b`, … for client 0, 1, …
pub fn client_name(c: usize) -> char {
    char::from(b'a' + c as u8)
}

/// The paths operations pick from: `dirs` (a parent before its children), and files
/// named `names` in the root and in each dir.
#[derive(Debug, Clone, Copy)]
pub struct Universe {
    pub dirs: &'static [&'static str],
    pub names: &'static [&'static str],
}

impl Universe {
    /// How many file paths there are.
    pub fn files(&self) -> usize {
        (self.dirs.len() + 1) * self.names.len()
    }

    /// File path `i`: the root's files first, then each dir's.
    pub fn file(&self, i: usize) -> String {
        let name = self.names[i % self.names.len()];
        match i / self.names.len() {
            0 => name.to_owned(),
            d => format!("{}/{name}", self.dirs[d - 1]),
        }
    }
}

/// One file operation, with its random choices made in advance. `pick` chooses among
/// the files the client has when the operation runs (modulo their number); `file`,
/// `dir`, `from` and `to` index the [`Universe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fresh content of `size` bytes at a path: creates the file (and its dirs) or
    /// overwrites it in place.
    Write {
        file: usize,
        size: usize,
    },
    /// Fresh content over an existing file, in place or by a safe save (temp file, then
    /// rename over).
    Modify {
        pick: usize,
        size: usize,
        safe: bool,
    },
    /// `size` more bytes at the end of an existing file: a new content at its path.
    Append {
        pick: usize,
        size: usize,
    },
    Delete {
        pick: usize,
    },
    /// Rename an existing file to a path of the universe, replacing a file there.
    Rename {
        pick: usize,
        to: usize,
    },
    Mkdir {
        dir: usize,
    },
    /// Remove a dir if it is empty.
    Rmdir {
        dir: usize,
    },
    /// Remove a dir and everything in it.
    RmdirAll {
        dir: usize,
    },
    /// Rename a dir to another dir of the universe that does not exist or is empty.
    RenameDir {
        from: usize,
        to: usize,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Write { .. } => "write",
            Action::Modify { .. } => "modify",
            Action::Append { .. } => "append",
            Action::Delete { .. } => "delete",
            Action::Rename { .. } => "rename",
            Action::Mkdir { .. } => "mkdir",
            Action::Rmdir { .. } => "rmdir",
            Action::RmdirAll { .. } => "rm-r",
            Action::RenameDir { .. } => "rename-dir",
        }
    }
}

/// What an operation did, for the op log and the counts.
pub enum Outcome {
    Done(String),
    /// The operation did not apply (no file to modify, a dir in the way).
    Skipped(String),
    /// The file system refused it (the daemon changed the tree meanwhile).
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done(s) => write!(f, "{s}"),
            Outcome::Skipped(s) => write!(f, "(skipped) {s}"),
            Outcome::Failed(s) => write!(f, "(failed) {s}"),
        }
    }
}

/// A content one client wrote.
pub struct Content {
    pub writer: usize,
    /// The operation that wrote it.
    pub op: usize,
    /// Where it was written.
    pub path: String,
    pub len: usize,
    pub digest: String,
    /// The operation by which its writer destroyed it; then it need not survive.
    pub released: Option<usize>,
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "written by {} at op {} to {} ({} B, sha256 {})",
            client_name(self.writer),
            self.op,
            self.path,
            self.len,
            &self.digest[..12]
        )?;
        if let Some(op) = self.released {
            write!(f, ", released by its writer at op {op}")?;
        }
        Ok(())
    }
}

/// Every content the operations of one run wrote (see the module docs), and the
/// problems seen while running them.
pub struct Ledger {
    /// Names the run in every content it writes, e.g. "filesync model test, seed 0x2a".
    label: String,
    /// Feeds the filler of every content.
    seed: u64,
    universe: Universe,
    contents: Vec<Content>,
    by_digest: HashMap<String, usize>,
    /// Files read during the run that hold content no client wrote.
    pub problems: Vec<String>,
}

impl Ledger {
    pub fn new(label: String, seed: u64, universe: Universe) -> Ledger {
        Ledger {
            label,
            seed,
            universe,
            contents: Vec::new(),
            by_digest: HashMap::new(),
            problems: Vec::new(),
        }
    }

    pub fn contents(&self) -> &[Content] {
        &self.contents
    }

    /// How many contents are still required (not released by their writers).
    pub fn required(&self) -> usize {
        self.contents
            .iter()
            .filter(|c| c.released.is_none())
            .count()
    }

    /// Every content, one per line, for a failure report.
    pub fn dump(&self) -> String {
        self.contents
            .iter()
            .enumerate()
            .map(|(id, c)| format!("#{id}: {c}\n"))
            .collect()
    }

    /// Fresh bytes that no other write of any run produces: a line naming the run, the
    /// operation and the client, then filler.
    fn fresh(&self, n: usize, client: usize, size: usize) -> Vec<u8> {
        let mut bytes =
            format!("{}, op {n}, client {}\n", self.label, client_name(client)).into_bytes();
        let filler = pseudo_random(self.seed ^ ((n as u64) << 20), size);
        if size < TEXT_LIMIT {
            bytes.extend(
                filler
                    .iter()
                    .map(|b| b"abcdefghijklmnopqrstuvwxyz \n"[*b as usize % 28]),
            );
        } else {
            bytes.extend(filler);
        }
        bytes
    }

    /// Records a content that `client` wrote at op `n`; returns its id.
    fn register(&mut self, n: usize, client: usize, path: &str, bytes: &[u8]) -> usize {
        let digest = tree::sha256(bytes);
        let id = self.contents.len();
        self.contents.push(Content {
            writer: client,
            op: n,
            path: path.to_owned(),
            len: bytes.len(),
            digest: digest.clone(),
            released: None,
        });
        let earlier = self.by_digest.insert(digest, id);
        assert!(earlier.is_none(), "two writes produced the same content");
        id
    }

    /// Names the content of a file on a client, for the op log; a content nobody wrote
    /// is a problem. `None` when the file cannot be read (it is gone).
    pub fn identify(&mut self, n: usize, client: usize, rel: &str, path: &Path) -> Option<usize> {
        let bytes = fs::read(path).ok()?;
        if bytes.is_empty() {
            // Every content the ledger writes starts with a header line, so an empty file
            // is the moment inside a non-atomic write (`fs::write` truncates, then
            // writes) that a scan may catch and sync like any state of the file.
            return None;
        }
        let digest = tree::sha256(&bytes);
        match self.by_digest.get(&digest) {
            Some(&id) => Some(id),
            None => {
                self.problems.push(format!(
                    "op {n}: {rel} on {} holds {} bytes (sha256 {}) that no client wrote: {:?}",
                    client_name(client),
                    bytes.len(),
                    &digest[..12],
                    String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
                ));
                None
            }
        }
    }

    /// `client` is about to destroy the file `rel`: if it holds a content this client
    /// wrote, that content is no longer required. Returns text for the op log.
    fn release(&mut self, n: usize, client: usize, rel: &str, path: &Path) -> String {
        let Some(id) = self.identify(n, client, rel, path) else {
            return format!("{rel}: unreadable or unknown");
        };
        let c = &mut self.contents[id];
        if c.writer == client && c.released.is_none() {
            c.released = Some(n);
            format!("{rel}: #{id}, released")
        } else if c.writer == client {
            format!("{rel}: #{id}, already released")
        } else {
            format!("{rel}: #{id} of {}, stays required", client_name(c.writer))
        }
    }

    /// Runs operation `n`, `action` of client `c`, in `root` (its copy of the folder).
    pub fn act(&mut self, n: usize, c: usize, root: &Path, action: Action) -> Outcome {
        let u = self.universe;
        match action {
            Action::Write { file, size } => self.write(n, c, root, &u.file(file), size),
            Action::Modify { pick, size, safe } => self.modify(n, c, root, pick, size, safe),
            Action::Append { pick, size } => self.append(n, c, root, pick, size),
            Action::Delete { pick } => self.delete(n, c, root, pick),
            Action::Rename { pick, to } => self.rename(n, c, root, pick, &u.file(to)),
            Action::Mkdir { dir } => mkdir(root, u.dirs[dir]),
            Action::Rmdir { dir } => rmdir(root, u.dirs[dir]),
            Action::RmdirAll { dir } => self.rmdir_all(n, c, root, u.dirs[dir]),
            Action::RenameDir { from, to } => self.rename_dir(n, c, root, u.dirs[from], u.dirs[to]),
        }
    }

    fn write(&mut self, n: usize, c: usize, root: &Path, rel: &str, size: usize) -> Outcome {
        let path = root.join(rel);
        let replaced = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Outcome::Skipped(format!("write {rel}: a dir is there"));
            }
            Ok(_) => format!(", replacing {}", self.release(n, c, rel, &path)),
            Err(_) => String::new(),
        };
        let bytes = self.fresh(n, c, size);
        match create_parent(&path).and_then(|()| fs::write(&path, &bytes)) {
            Ok(()) => {
                let id = self.register(n, c, rel, &bytes);
                Outcome::Done(format!(
                    "write {rel} <- #{id} ({} B){replaced}",
                    bytes.len()
                ))
            }
            Err(e) => Outcome::Failed(format!("write {rel}: {e}{replaced}")),
        }
    }

    fn modify(
        &mut self,
        n: usize,
        c: usize,
        root: &Path,
        pick: usize,
        size: usize,
        safe: bool,
    ) -> Outcome {
        let Some(rel) = pick_file(root, pick) else {
            return Outcome::Skipped("modify: no file".into());
        };
        let path = root.join(&rel);
        let replaced = self.release(n, c, &rel, &path);
        let bytes = self.fresh(n, c, size);
        let how = if safe { "safe save" } else { "in place" };
        let written = if safe {
            let tmp = path.with_file_name(format!("{SAFE_SAVE_PREFIX}{n}"));
            fs::write(&tmp, &bytes)
                .and_then(|()| fs::rename(&tmp, &path))
                .inspect_err(|_| {
                    let _ = fs::remove_file(&tmp);
                })
        } else {
            fs::write(&path, &bytes)
        };
        match written {
            Ok(()) => {
                let id = self.register(n, c, &rel, &bytes);
                Outcome::Done(format!(
                    "modify {rel} ({how}) <- #{id} ({} B), replacing {replaced}",
                    bytes.len()
                ))
            }
            Err(e) => Outcome::Failed(format!("modify {rel} ({how}): {e}, was {replaced}")),
        }
    }

    /// Appends to a file whose content the ledger knows: the old content is released
    /// (or stays required, if another client wrote it) as by an overwrite.
    fn append(&mut self, n: usize, c: usize, root: &Path, pick: usize, size: usize) -> Outcome {
        let Some(rel) = pick_file(root, pick) else {
            return Outcome::Skipped("append: no file".into());
        };
        let path = root.join(&rel);
        let Ok(mut bytes) = fs::read(&path) else {
            return Outcome::Skipped(format!("append {rel}: gone"));
        };
        let replaced = self.release(n, c, &rel, &path);
        let tail = self.fresh(n, c, size);
        let appended = OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&tail));
        match appended {
            Ok(()) => {
                bytes.extend_from_slice(&tail);
                let id = self.register(n, c, &rel, &bytes);
                Outcome::Done(format!(
                    "append {rel} <- #{id} (+{} B), replacing {replaced}",
                    tail.len()
                ))
            }
            Err(e) => Outcome::Failed(format!("append {rel}: {e}, was {replaced}")),
        }
    }

    fn delete(&mut self, n: usize, c: usize, root: &Path, pick: usize) -> Outcome {
        let Some(rel) = pick_file(root, pick) else {
            return Outcome::Skipped("delete: no file".into());
        };
        let path = root.join(&rel);
        let gone = self.release(n, c, &rel, &path);
        match fs::remove_file(&path) {
            Ok(()) => Outcome::Done(format!("delete {gone}")),
            Err(e) => Outcome::Failed(format!("delete {rel}: {e}")),
        }
    }

    fn rename(&mut self, n: usize, c: usize, root: &Path, pick: usize, dest: &str) -> Outcome {
        let Some(rel) = pick_file(root, pick) else {
            return Outcome::Skipped("rename: no file".into());
        };
        if dest == rel {
            return Outcome::Skipped(format!("rename {rel} onto itself"));
        }
        let (from, target) = (root.join(&rel), root.join(dest));
        let moved = self
            .identify(n, c, &rel, &from)
            .map_or_else(|| "?".to_owned(), |id| format!("#{id}"));
        let replaced = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Outcome::Skipped(format!("rename {rel} -> {dest}: a dir is there"));
            }
            Ok(_) => format!(", replacing {}", self.release(n, c, dest, &target)),
            Err(_) => String::new(),
        };
        match create_parent(&target).and_then(|()| fs::rename(&from, &target)) {
            Ok(()) => Outcome::Done(format!("rename {rel} -> {dest} ({moved}){replaced}")),
            Err(e) => Outcome::Failed(format!("rename {rel} -> {dest}: {e}{replaced}")),
        }
    }

    fn rmdir_all(&mut self, n: usize, c: usize, root: &Path, rel: &str) -> Outcome {
        let path = root.join(rel);
        if !path.is_dir() {
            return Outcome::Skipped(format!("rm -r {rel}: no such dir"));
        }
        let inside: Vec<String> = files_in(&path)
            .into_iter()
            .map(|f| self.release(n, c, &format!("{rel}/{f}"), &path.join(&f)))
            .collect();
        match fs::remove_dir_all(&path) {
            Ok(()) => Outcome::Done(format!("rm -r {rel} [{}]", inside.join("; "))),
            Err(e) => Outcome::Failed(format!("rm -r {rel}: {e} [{}]", inside.join("; "))),
        }
    }

    fn rename_dir(&mut self, n: usize, c: usize, root: &Path, src: &str, dst: &str) -> Outcome {
        if src == dst || dst.starts_with(&format!("{src}/")) {
            return Outcome::Skipped(format!("rename dir {src} -> {dst}: into itself"));
        }
        let (from_path, to_path) = (root.join(src), root.join(dst));
        if !from_path.is_dir() {
            return Outcome::Skipped(format!("rename dir {src}: no such dir"));
        }
        if fs::read_dir(&to_path).is_ok_and(|mut d| d.next().is_some()) {
            return Outcome::Skipped(format!("rename dir {src} -> {dst}: target not empty"));
        }
        let moved: Vec<String> = files_in(&from_path)
            .into_iter()
            .map(|f| {
                let id = self.identify(n, c, &format!("{src}/{f}"), &from_path.join(&f));
                format!(
                    "{f} {}",
                    id.map_or_else(|| "?".to_owned(), |i| format!("#{i}"))
                )
            })
            .collect();
        match create_parent(&to_path).and_then(|()| fs::rename(&from_path, &to_path)) {
            Ok(()) => Outcome::Done(format!("rename dir {src} -> {dst} [{}]", moved.join("; "))),
            Err(e) => Outcome::Failed(format!("rename dir {src} -> {dst}: {e}")),
        }
    }

    /// The required contents found neither in the converged tree nor among the
    /// server's versions.
    pub fn lost(&self, common: &Manifest, versions: &[KeptVersion]) -> Vec<String> {
        let mut found: HashMap<&str, String> = HashMap::new();
        for v in versions {
            found.insert(&v.digest, format!("version of {}", v.path));
        }
        for (path, entry) in common {
            if entry.kind == Kind::File {
                found.insert(&entry.digest, path.clone());
            }
        }
        self.contents
            .iter()
            .enumerate()
            .filter(|(_, c)| c.released.is_none() && !found.contains_key(c.digest.as_str()))
            .map(|(id, c)| {
                format!(
                    "LOST #{id} ({c}): in no replica and not among the server's {} versions",
                    versions.len()
                )
            })
            .collect()
    }

    /// Files of the converged tree whose content no client wrote.
    pub fn invented(&self, common: &Manifest) -> Vec<String> {
        common
            .iter()
            .filter(|(_, e)| e.kind == Kind::File && !self.by_digest.contains_key(&e.digest))
            .map(|(path, e)| format!("{path} holds content no client wrote ({e})"))
            .collect()
    }
}

fn mkdir(root: &Path, rel: &str) -> Outcome {
    let path = root.join(rel);
    if path.exists() {
        return Outcome::Skipped(format!("mkdir {rel}: exists"));
    }
    match fs::create_dir_all(&path) {
        Ok(()) => Outcome::Done(format!("mkdir {rel}")),
        Err(e) => Outcome::Failed(format!("mkdir {rel}: {e}")),
    }
}

fn rmdir(root: &Path, rel: &str) -> Outcome {
    let path = root.join(rel);
    if !path.is_dir() {
        return Outcome::Skipped(format!("rmdir {rel}: no such dir"));
    }
    match fs::remove_dir(&path) {
        Ok(()) => Outcome::Done(format!("rmdir {rel}")),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            Outcome::Skipped(format!("rmdir {rel}: not empty"))
        }
        Err(e) => Outcome::Failed(format!("rmdir {rel}: {e}")),
    }
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// The regular files under `dir`, as sorted relative paths, without the daemon's
/// `.filesync*` names and safe-save temp files. Entries that vanish during the walk
/// (the daemons keep working) are left out.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(items) = fs::read_dir(&d) else {
            continue;
        };
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if tree::is_metadata(&name) || name.starts_with(SAFE_SAVE_PREFIX) {
                continue;
            }
            match item.file_type() {
                Ok(t) if t.is_dir() => stack.push((item.path(), format!("{prefix}{name}/"))),
                Ok(t) if t.is_file() => out.push(format!("{prefix}{name}")),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The `pick`-th (modulo their number) regular file of a client's folder, conflict
/// copies included.
fn pick_file(root: &Path, pick: usize) -> Option<String> {
    let files = files_in(root);
    (!files.is_empty()).then(|| files[pick % files.len()].clone())
}

/// The account of the server's copy of `docs` (`DATA_DIR/ACCOUNT/docs`, found once the
/// cluster has settled) and the versions the server kept of it.
pub fn server_versions(cl: &Cluster) -> (String, Vec<KeptVersion>) {
    let server_dir = cl.server_dir(DOCS).expect("settle found the server's copy");
    let account = server_dir
        .parent()
        .and_then(Path::file_name)
        .expect("the server's copy is DATA_DIR/ACCOUNT/FOLDER")
        .to_string_lossy()
        .into_owned();
    let store = server_store::versions_dir(cl.server().data_dir(), &account, DOCS);
    let versions = server_store::kept_versions(&store).unwrap_or_else(|e| {
        panic!(
            "cannot read the server's versions in {}: {e}",
            store.display()
        )
    });
    (account, versions)
}

/// Problems with the server's index of `docs` in `account` once the cluster settled on
/// `common`: [`server_store::check_index`], and the sequence number and file count that
/// the server's `status` reports must be the index's.
pub fn server_index_problems(cl: &Cluster, account: &str, common: &Manifest) -> Vec<String> {
    let index: PathBuf = server_store::index_file(cl.server().data_dir(), account, DOCS);
    let summary = match server_store::check_index(&index, common) {
        Ok(summary) => summary,
        Err(why) => return vec![why],
    };
    let status = cl.server().status_json();
    let folder = status["server"]["folders"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == DOCS && f["account"] == account);
    match folder {
        None => vec![format!("server status lists no {DOCS}: {status}")],
        Some(f) if f["seq"] != summary.max_seq || f["files"] != summary.files => {
            vec![format!(
                "server status says seq {} and {} files, its index {} and {}",
                f["seq"], f["files"], summary.max_seq, summary.files
            )]
        }
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_files_are_the_root_then_each_dir() {
        let u = Universe {
            dirs: &["d0", "d0/e"],
            names: &["a", "b"],
        };
        let all: Vec<String> = (0..u.files()).map(|i| u.file(i)).collect();
        assert_eq!(all, ["a", "b", "d0/a", "d0/b", "d0/e/a", "d0/e/b"]);
    }

    #[test]
    fn a_seed_always_draws_the_same_numbers() {
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
