//! Making and checking test content: deterministic bytes, writing files with their
//! parent dirs, mode bits, and assertions on a single path with readable failures.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::tree::{is_metadata, sha256};

/// Deterministic bytes that do not repeat (splitmix64), so that no two test files and no
/// two parts of one file share content-defined chunks unless a test means them to.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    PseudoRandom::new(seed).take(len)
}

/// The stream of bytes [`pseudo_random`] starts, for content too large to hold at once.
pub struct PseudoRandom {
    state: u64,
}

impl PseudoRandom {
    pub fn new(seed: u64) -> PseudoRandom {
        PseudoRandom {
            state: seed ^ 0x5151_5eed_f11e_5e11,
        }
    }

    /// The next `len` bytes. A stream read in pieces whose lengths are multiples of 8
    /// holds the same bytes as one read of the whole.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// The next 8 bytes as a number: the stream doubles as a seeded random generator for
    /// the choices of a test (which file, how long to wait before a fault).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range`, `range.start` when it is empty.
    pub fn in_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        let span = range.end.saturating_sub(range.start).max(1);
        range.start + self.next_u64() % span
    }
}

/// Writes `len` bytes of [`pseudo_random`]`(seed, len)` to `path` without holding them
/// all, and returns their hex SHA-256.
pub fn write_pseudo_random(path: &Path, seed: u64, len: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    const PIECE: u64 = 1 << 20;
    let mut file =
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut source = PseudoRandom::new(seed);
    let mut hasher = Sha256::new();
    let mut left = len;
    while left > 0 {
        let piece = source.take(left.min(PIECE) as usize);
        hasher.update(&piece);
        file.write_all(&piece)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        left -= piece.len() as u64;
    }
    hex::encode(hasher.finalize())
}

/// Writes `bytes` to `path`, creating parent directories.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Sets the mode of `path` to 0755 or 0644.
pub fn set_exec(path: &Path, exec: bool) {
    let mode = if exec { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Panics unless `path` is a regular file holding exactly `expected`.
pub fn assert_file(path: &Path, expected: &[u8]) {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{} should be a file: {e}", path.display()));
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    let got = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        got == expected,
        "{} holds {} bytes (sha256 {}), expected {} bytes (sha256 {}){}",
        path.display(),
        got.len(),
        sha256(&got),
        expected.len(),
        sha256(expected),
        if got.len() < 200 && expected.len() < 200 {
            format!(
                ": {:?} vs {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected)
            )
        } else {
            String::new()
        }
    );
}

/// Panics if anything exists at `path` (a dangling symlink counts).
pub fn assert_absent(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        panic!(
            "{} should not exist, found {:?}",
            path.display(),
            meta.file_type()
        );
    }
}

/// The names in `dir` as UTF-8 strings, sorted, with `.filesync*` left out.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|item| {
            let item = item.expect("cannot read a directory entry");
            String::from_utf8_lossy(item.file_name().as_bytes()).into_owned()
        })
        .filter(|name| !is_metadata(name))
        .collect();
    names.sort();
    names
}

/// The permission bits of `path` (`mode & 0o7777`), without following a symlink.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Sets the permission bits of `path` to `mode` exactly.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// The modification time of `path` in nanoseconds since the Unix epoch, without
/// following a symlink.
pub fn mtime_ns(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// Sets the modification time of the file `path` to `ns` nanoseconds since the epoch
/// (`File::set_modified`, i.e. `utimensat`); the access time is left alone.
pub fn set_mtime_ns(path: &Path, ns: i64) {
    let ns = u64::try_from(ns).expect("test mtimes are after 1970");
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("cannot set the mtime of {}: {e}", path.display()));
}

/// Makes a FIFO (named pipe) at `path`, mode 0644.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths");
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        rc,
        0,
        "cannot mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}
