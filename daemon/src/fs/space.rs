//! Recognising a full disk among errors, on both roles, so that it is reported in words
//! a user acts on ("free some space") instead of as one more I/O error, and so that a
//! transfer that ran out of space does not keep what it wrote; and how much room a
//! filesystem has left, for the server's quota check.

use std::io;
use std::path::Path;

/// Whether an I/O error means the filesystem has no room left: no free blocks or
/// inodes (`ENOSPC`), or the user's quota is used up (`EDQUOT`).
#[cfg(unix)]
pub fn is_full_io(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// [`is_full_io`] on Windows: `ERROR_DISK_FULL` or `ERROR_HANDLE_DISK_FULL`.
#[cfg(windows)]
pub fn is_full_io(e: &io::Error) -> bool {
    e.raw_os_error()
        .is_some_and(|code| crate::fs::windows::DISK_FULL.contains(&code))
}

/// Whether any link of the error's chain is a full disk: an I/O error as in
/// [`is_full_io`], or SQLite's `SQLITE_FULL` (an index that cannot grow).
pub fn is_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return is_full_io(io);
        }
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DiskFull
        )
    })
}

/// Bytes available to the daemon's user on the filesystem holding `path`, or `None`
/// when the filesystem does not say.
#[cfg(unix)]
pub fn available(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// [`available`] on Windows: `GetDiskFreeSpaceExW`'s bytes free to the caller (its
/// quota included).
#[cfg(windows)]
pub fn available(path: &Path) -> Option<u64> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut free = 0u64;
    // SAFETY: `wide` is NUL-terminated and `free` writable for the call; the two other
    // outputs are optional and not asked for.
    let ok = unsafe {
        windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut free,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(free)
}

/// `e` in words, with what to do when it is a full disk: the chain names the file that
/// could not be written, this names the folder (local `dir`) that waits for space.
pub fn explain(e: &anyhow::Error, folder: &str, dir: &Path) -> String {
    if is_full(e) {
        format!(
            "{e:#}; disk full: free some space on the disk of folder {folder} ({}) or of its \
             index, and it resumes by itself",
            dir.display()
        )
    } else {
        format!("{e:#}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: anyhow::Error, full: bool) {
        assert_eq!(is_full(&error), full, "{error:#}");
    }

    // EDQUOT exists on Unix only.
    #[cfg(unix)]
    #[test]
    fn a_full_disk_is_found_anywhere_in_the_chain() {
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        check(anyhow::Error::new(enospc()), true);
        check(anyhow::Error::new(enospc()).context("cannot write x"), true);
        check(
            anyhow::Error::new(io::Error::from_raw_os_error(libc::EDQUOT)),
            true,
        );
        let sqlite_full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        check(
            anyhow::Error::new(sqlite_full).context("cannot commit"),
            true,
        );
    }

    #[test]
    fn other_errors_are_not_a_full_disk() {
        check(
            anyhow::Error::new(io::Error::from_raw_os_error(libc::EIO)),
            false,
        );
        check(
            anyhow::anyhow!("no space left on device, says a peer"),
            false,
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        check(anyhow::Error::new(busy), false);
    }
}
