//! Symbolic links inside a folder on Windows, made and read by handle
//! (`FSCTL_SET_REPARSE_POINT`, `FSCTL_GET_REPARSE_POINT`) so that neither goes through a
//! link on the way. Making one needs the symbolic-link privilege (an administrator, or
//! developer mode for `SeCreateSymbolicLinkPrivilege`); without it the error says so and
//! names what to do, and the link is reported, never written as something else.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle};
use std::path::PathBuf;
use std::ptr;

use windows_sys::Win32::Foundation::ERROR_PRIVILEGE_NOT_HELD;
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, FILE_WRITE_DATA,
};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl::{FSCTL_GET_REPARSE_POINT, FSCTL_SET_REPARSE_POINT};

use super::nt::{self, Want};
use super::reparse;
use super::rules::Disposition;

/// `MAXIMUM_REPARSE_DATA_BUFFER_SIZE`, in `u32`s for the alignment of its fields.
const MAX_REPARSE_DATA: usize = 16 * 1024 / 4;

/// Makes `name` in the directory `dir` a symbolic link to `target` (Unix form,
/// relative): a new file made relative to `dir`, then its reparse data set on its
/// handle; removed again if that fails.
pub fn create(dir: BorrowedHandle<'_>, target: &str, name: &str) -> io::Result<()> {
    let data = reparse::symlink_data(target)?;
    let want = Want {
        access: FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES | DELETE,
        disposition: Disposition::Create,
        directory: false,
        non_directory: true,
    };
    let handle = nt::open_at(dir, name, want)?;
    let mut returned = 0;
    // SAFETY: `data` is readable for the length passed; no output buffer; the handle is
    // synchronous, so the call completes before it returns.
    let ok = unsafe {
        DeviceIoControl(
            handle.as_raw_handle(),
            FSCTL_SET_REPARSE_POINT,
            data.as_ptr().cast(),
            data.len() as u32,
            ptr::null_mut(),
            0,
            &mut returned,
            ptr::null_mut(),
        )
    };
    if ok != 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    let _ = nt::delete(handle.as_handle());
    if e.raw_os_error() == Some(ERROR_PRIVILEGE_NOT_HELD as i32) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "Windows lets only administrators, or any user in developer mode, create \
             symbolic links: turn on developer mode (Settings, For developers) to sync links",
        ));
    }
    Err(e)
}

/// The target of the link or junction open (itself) as `h`, in Unix form when relative.
pub fn target(h: BorrowedHandle<'_>) -> io::Result<PathBuf> {
    let mut buf = vec![0u32; MAX_REPARSE_DATA];
    let mut returned = 0;
    // SAFETY: `buf` is writable for the length passed; no input; synchronous handle.
    let ok = unsafe {
        DeviceIoControl(
            h.as_raw_handle(),
            FSCTL_GET_REPARSE_POINT,
            ptr::null(),
            0,
            buf.as_mut_ptr().cast(),
            (buf.len() * 4) as u32,
            &mut returned,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
    let len = (returned as usize).min(bytes.len());
    Ok(PathBuf::from(reparse::target(&bytes[..len])?))
}
