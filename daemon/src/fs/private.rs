//! Files only the daemon's user may read: the server's TLS key, the account store, a
//! device's pins and credentials. Directories are made 0700 and files 0600 from the
//! start, never created readable and tightened afterwards.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Makes `dir` (and its parents) if missing; a directory it makes is 0700.
pub fn create_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

#[cfg(unix)]
fn options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// On Windows a file gets the ACL its directory passes on: files under the state
/// directory (`%LOCALAPPDATA%`) are the user's; an explicit ACL is not set yet.
#[cfg(windows)]
fn options() -> std::fs::OpenOptions {
    std::fs::OpenOptions::new()
}

/// Creates `path` as a new 0600 file for writing; fails if anything is there, a
/// symlink included.
pub fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = options();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.write(true).create_new(true).open(path)
}

/// Writes `bytes` to `path` through a 0600 temp file renamed into place.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = options()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Makes sure `path` exists as a 0600 file before a database is opened there: SQLite
/// gives its journal files the database file's permissions. A file made readable by an
/// earlier version, or by hand, is made 0600 again.
pub fn touch(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let file = options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    make_private(&file, path)
}

#[cfg(unix)]
fn make_private(file: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata().map(|m| m.permissions().mode() & 0o777);
    if mode.is_ok_and(|m| m != 0o600) {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private (0600)", path.display()))?;
    }
    Ok(())
}

/// See [`options`]: nothing to tighten on Windows yet.
#[cfg(windows)]
fn make_private(_: &std::fs::File, _: &Path) -> Result<()> {
    Ok(())
}
