//! Replacing the config file so that a crash, a full disk or a kill at any moment leaves
//! either the old file or the new one, never a mix or an empty file (the Dropbox 2014 shape
//! of losing a config mid-write).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Temp file in the same directory (so the rename cannot cross filesystems), fsync, rename
/// over `file`, fsync the directory. The parent directory is created if missing, and the
/// old file's permissions are kept. If anything before the rename fails, `file` is
/// untouched and the temp file removed; only the final directory fsync can fail after
/// `file` has been replaced, and then it is the durability of the new file that is unknown.
pub(super) fn write_atomic(file: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let permissions = fs::metadata(file).ok().map(|m| m.permissions());
    let (temp_path, mut temp) = create_temp(dir, file)?;
    let written = (|| {
        temp.write_all(contents)?;
        if let Some(permissions) = permissions {
            temp.set_permissions(permissions)?;
        }
        temp.sync_all()?;
        drop(temp);
        fs::rename(&temp_path, file)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp_path);
        return Err(e);
    }
    sync_dir(dir)
}

/// Counts temp files made by this process, so that two edits never pick the same name.
static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new, hidden file next to `file`, named after it so that a leftover (after a power
/// cut) says where it came from.
fn create_temp(dir: &Path, file: &Path) -> io::Result<(PathBuf, File)> {
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{base}.tmp.{}.{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(temp) => return Ok((path, temp)),
            // Left behind by an earlier process that had our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename itself durable: without this, a power cut can bring back the old
/// directory entry.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory to fsync it; NTFS journals the rename instead.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The names in `dir`, sorted: to check what a write left behind.
    pub(in crate::config) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/filesyncd.toml");
        write_atomic(&file, b"one\n").unwrap();
        write_atomic(&file, b"two\n").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two\n");
        assert_eq!(names(&dir.path().join("a/b")), ["filesyncd.toml"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_file_and_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the file's place makes the rename fail after the temp file exists.
        let file = dir.path().join("filesyncd.toml");
        fs::create_dir(&file).unwrap();
        fs::write(file.join("inside"), "x").unwrap();
        assert!(write_atomic(&file, b"new\n").is_err());
        assert!(file.join("inside").exists());
        assert_eq!(names(dir.path()), ["filesyncd.toml"]);
    }

    #[cfg(unix)]
    #[test]
    fn keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        fs::write(&file, "old\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&file, b"new\n").unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
