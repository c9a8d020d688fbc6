//! What `std::os::unix` and `libc` give the other `fs` modules on Unix, on Windows: the
//! error codes they test, positional reads and writes, an open that refuses a link, a
//! file's mtime and mode.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// `ERROR_CANT_RESOLVE_FILENAME`: what Windows answers for too many levels of links, and
/// what [`open_no_follow`] answers for a link, like `ELOOP` for `O_NOFOLLOW` on Unix.
pub const ERROR_CANT_RESOLVE_FILENAME: i32 = 1921;
/// `ERROR_NOT_SAME_DEVICE`: a rename between two volumes, `EXDEV` on Unix.
pub const ERROR_NOT_SAME_DEVICE: i32 = 17;
/// `ERROR_HANDLE_DISK_FULL` and `ERROR_DISK_FULL`: `ENOSPC` on Unix.
pub const DISK_FULL: [i32; 2] = [39, 112];
/// `FILE_FLAG_OPEN_REPARSE_POINT`: open a link or junction itself, not what it names.
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// The positional reads and writes of `std::os::unix::fs::FileExt` the daemon uses.
/// Windows' `seek_read` and `seek_write` also move the file's cursor, which no caller
/// relies on: files here are read and written at offsets only.
pub trait FileExt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Opens the file at `path` for reading, refusing a link or junction there with
/// [`ERROR_CANT_RESOLVE_FILENAME`].
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    if file.metadata()?.is_symlink() {
        return Err(io::Error::from_raw_os_error(ERROR_CANT_RESOLVE_FILENAME));
    }
    Ok(file)
}

/// A file's mtime in nanoseconds since the Unix epoch (NTFS keeps 100 ns).
pub fn mtime_ns(m: &Metadata) -> i64 {
    let Ok(at) = m.modified() else { return 0 };
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Permission bits in Unix terms for what Windows holds: a directory is 0755, a file
/// 0644, or 0444 when it is read-only. Windows cannot hold the executable bit.
pub fn mode_of(m: &Metadata) -> u32 {
    match (m.is_dir(), m.permissions().readonly()) {
        (true, _) => 0o755,
        (false, false) => 0o644,
        (false, true) => 0o444,
    }
}
