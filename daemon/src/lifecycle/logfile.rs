//! A log file that cannot fill the disk: once it holds its limit it is renamed to
//! `NAME.1` (replacing the older one) and started anew, so at most twice the limit is
//! kept. Used by the detached daemon on Windows, where standard error reaches no one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The limit of the daemon's log file.
#[cfg_attr(not(windows), allow(dead_code))]
pub const LOG_LIMIT: u64 = 10 * 1024 * 1024;

/// An append-only log file, rotated at `limit` bytes. A failure to rotate keeps writing
/// to the file it has.
#[cfg_attr(not(windows), allow(dead_code))]
pub struct SizeCapped {
    path: PathBuf,
    file: File,
    len: u64,
    limit: u64,
}

#[cfg_attr(not(windows), allow(dead_code))]
impl SizeCapped {
    pub fn open(path: &Path, limit: u64) -> Result<SizeCapped> {
        let file = open_append(path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut log = SizeCapped {
            path: path.to_owned(),
            file,
            len,
            limit,
        };
        log.rotate_if_full();
        Ok(log)
    }

    fn rotate_if_full(&mut self) {
        if self.len < self.limit {
            return;
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        if std::fs::rename(&self.path, &old).is_ok()
            && let Ok(file) = open_append(&self.path)
        {
            self.file = file;
            self.len = 0;
        }
    }
}

impl Write for SizeCapped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        self.rotate_if_full();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Opens `path` for appending, creating it.
pub fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_moves_to_dot_1_and_starts_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filesyncd.log");
        let old = dir.path().join("filesyncd.log.1");
        std::fs::write(&path, b"from before\n").unwrap();
        let mut log = SizeCapped::open(&path, 30).unwrap();
        log.write_all(b"line one\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"from before\nline one\n");
        // 30 bytes: the file is full and moves aside.
        log.write_all(b"line two\n").unwrap();
        assert_eq!(
            std::fs::read(&old).unwrap(),
            b"from before\nline one\nline two\n"
        );
        log.write_all(b"line three\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"line three\n");
        // The next rotation replaces the older file: never more than two.
        log.write_all(b"four, and enough\n").unwrap();
        log.write_all(b"!\n").unwrap();
        assert_eq!(
            std::fs::read(&old).unwrap(),
            b"line three\nfour, and enough\n!\n"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_log_already_full_at_start_is_moved_aside_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filesyncd.log");
        std::fs::write(&path, vec![b'x'; 40]).unwrap();
        let mut log = SizeCapped::open(&path, 30).unwrap();
        log.write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(
            std::fs::read(dir.path().join("filesyncd.log.1"))
                .unwrap()
                .len(),
            40
        );
    }
}
