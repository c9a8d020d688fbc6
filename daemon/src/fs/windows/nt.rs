//! The NT and Win32 calls under [`beneath`](super::beneath), each in a small safe
//! function: opening one name relative to a directory handle (`NtCreateFile` with
//! `OBJECT_ATTRIBUTES.RootDirectory`), never through a reparse point; the attributes
//! and file index of an open handle; deleting, renaming and hard-linking by handle
//! (`NtSetInformationFile`); listing a directory handle; flushing; a lock.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::ptr;

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_CREATE, FILE_DIRECTORY_FILE, FILE_DISPOSITION_DELETE,
    FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE, FILE_DISPOSITION_POSIX_SEMANTICS,
    FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_IF, FILE_OPEN_REPARSE_POINT,
    FILE_RENAME_IGNORE_READONLY_ATTRIBUTE, FILE_RENAME_POSIX_SEMANTICS,
    FILE_RENAME_REPLACE_IF_EXISTS, FILE_SYNCHRONOUS_IO_NONALERT, FileDispositionInformation,
    FileDispositionInformationEx, FileLinkInformation, FileRenameInformation,
    FileRenameInformationEx, NtCreateFile, NtSetInformationFile,
};
use windows_sys::Win32::Foundation::{
    ERROR_NO_MORE_FILES, HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, RtlNtStatusToDosError,
    STATUS_INVALID_INFO_CLASS, STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED,
    STATUS_NOT_SUPPORTED, UNICODE_STRING,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_ATTRIBUTE_TAG_INFO, FILE_FULL_DIR_INFO, FILE_RENAME_INFO, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, FileAttributeTagInfo, FileFullDirectoryInfo,
    FlushFileBuffers, GetFileInformationByHandle, GetFileInformationByHandleEx,
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, SYNCHRONIZE,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, OVERLAPPED};

use super::ERROR_CANT_RESOLVE_FILENAME;
use super::rules::{Disposition, full_dir_info};

// The listing is parsed at the offsets `rules` knows; they must be the real layout's.
const _: () = {
    assert!(std::mem::offset_of!(FILE_FULL_DIR_INFO, NextEntryOffset) == 0);
    assert!(std::mem::offset_of!(FILE_FULL_DIR_INFO, FileAttributes) == 56);
    assert!(std::mem::offset_of!(FILE_FULL_DIR_INFO, FileNameLength) == 60);
    assert!(std::mem::offset_of!(FILE_FULL_DIR_INFO, FileName) == 68);
    assert!(full_dir_info::FILE_NAME == 68 && full_dir_info::FILE_ATTRIBUTES == 56);
};

fn raw(h: BorrowedHandle<'_>) -> HANDLE {
    h.as_raw_handle()
}

fn os_error(status: NTSTATUS) -> io::Error {
    // SAFETY: a pure conversion of a status code, reading no memory of ours.
    let code = unsafe { RtlNtStatusToDosError(status) };
    io::Error::from_raw_os_error(code as i32)
}

fn check(status: NTSTATUS) -> io::Result<()> {
    if status >= 0 {
        Ok(())
    } else {
        Err(os_error(status))
    }
}

fn check_bool(ok: impl Into<i32>) -> io::Result<()> {
    if ok.into() != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a status says the call or its information class is not there (an older
/// Windows, a filesystem other than NTFS, Wine): the caller falls back to an older one.
fn unsupported(status: NTSTATUS) -> bool {
    [
        STATUS_INVALID_INFO_CLASS,
        STATUS_INVALID_PARAMETER,
        STATUS_NOT_IMPLEMENTED,
        STATUS_NOT_SUPPORTED,
    ]
    .contains(&status)
}

/// What [`open_at`] asks for: the access rights and whether it must (not) be a
/// directory.
#[derive(Clone, Copy)]
pub struct Want {
    pub access: u32,
    pub disposition: Disposition,
    pub directory: bool,
    pub non_directory: bool,
}

impl Want {
    pub fn existing(access: u32) -> Want {
        Want {
            access,
            disposition: Disposition::Open,
            directory: false,
            non_directory: false,
        }
    }

    pub fn dir(self) -> Want {
        Want {
            directory: true,
            ..self
        }
    }
}

/// Opens `name` (one component, checked by the caller; empty for `dir` itself) relative
/// to `dir`, sharing it for reading, writing and deleting as Unix does, and opening a
/// reparse point itself rather than what it names (`FILE_OPEN_REPARSE_POINT`).
pub fn open_at(dir: BorrowedHandle<'_>, name: &str, want: Want) -> io::Result<OwnedHandle> {
    let wide: Vec<u16> = name.encode_utf16().collect();
    let bytes = u16::try_from(wide.len() * 2)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
    let object = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: wide.as_ptr().cast_mut(),
    };
    let attributes = OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: raw(dir),
        ObjectName: &object,
        Attributes: OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: ptr::null(),
        SecurityQualityOfService: ptr::null(),
    };
    let disposition = match want.disposition {
        Disposition::Open => FILE_OPEN,
        Disposition::Create => FILE_CREATE,
        Disposition::OpenIf => FILE_OPEN_IF,
    };
    let mut options = FILE_OPEN_REPARSE_POINT | FILE_SYNCHRONOUS_IO_NONALERT;
    if want.directory {
        options |= FILE_DIRECTORY_FILE;
    }
    if want.non_directory {
        options |= FILE_NON_DIRECTORY_FILE;
    }
    let mut handle: HANDLE = ptr::null_mut();
    let mut io_status = IO_STATUS_BLOCK::default();
    // SAFETY: every pointer is to a live local for the length of the call: the name's
    // UTF-16 buffer outlives `object` and `attributes`; `dir` is an open handle.
    let status = unsafe {
        NtCreateFile(
            &mut handle,
            want.access | SYNCHRONIZE,
            &attributes,
            &mut io_status,
            ptr::null(),
            FILE_ATTRIBUTE_NORMAL,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            disposition,
            options,
            ptr::null(),
            0,
        )
    };
    check(status)?;
    // SAFETY: NtCreateFile succeeded, so `handle` is a new open handle, ours to close.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// [`open_at`], refusing a reparse point (a link, a junction, a mount point) with
/// `ERROR_CANT_RESOLVE_FILENAME`, as `O_NOFOLLOW` refuses a symlink with `ELOOP`. The
/// handle must have been asked with `FILE_READ_ATTRIBUTES`.
pub fn open_no_reparse(dir: BorrowedHandle<'_>, name: &str, want: Want) -> io::Result<OwnedHandle> {
    let handle = open_at(dir, name, want)?;
    if attributes(handle.as_handle())? & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(io::Error::from_raw_os_error(ERROR_CANT_RESOLVE_FILENAME));
    }
    Ok(handle)
}

/// The attributes of an open handle (`FILE_ATTRIBUTE_*`).
pub fn attributes(h: BorrowedHandle<'_>) -> io::Result<u32> {
    let mut info = FILE_ATTRIBUTE_TAG_INFO::default();
    // SAFETY: `info` is a FILE_ATTRIBUTE_TAG_INFO of the size passed, live for the call.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            raw(h),
            FileAttributeTagInfo,
            (&raw mut info).cast(),
            size_of::<FILE_ATTRIBUTE_TAG_INFO>() as u32,
        )
    };
    check_bool(ok)?;
    Ok(info.FileAttributes)
}

/// The volume serial number and file index of an open handle: the same for every
/// handle of one file, as `st_dev` and `st_ino` on Unix.
pub fn file_id(h: BorrowedHandle<'_>) -> io::Result<(u64, u64)> {
    let mut info = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: `info` is a BY_HANDLE_FILE_INFORMATION, live for the call.
    check_bool(unsafe { GetFileInformationByHandle(raw(h), &mut info) })?;
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Ok((u64::from(info.dwVolumeSerialNumber), index))
}

fn set_information(h: BorrowedHandle<'_>, info: &[u8], class: i32) -> NTSTATUS {
    let mut io_status = IO_STATUS_BLOCK::default();
    // SAFETY: `info` is a buffer of the length passed, laid out for `class` by the
    // caller, and only read by the call.
    unsafe {
        NtSetInformationFile(
            raw(h),
            &mut io_status,
            info.as_ptr().cast(),
            info.len() as u32,
            class,
        )
    }
}

/// Deletes the file or directory open as `h` (asked with `DELETE`): its name goes at
/// once where the filesystem has POSIX semantics (NTFS on Windows 10 1709 and later),
/// else when the last handle of it closes; read-only files too.
pub fn delete(h: BorrowedHandle<'_>) -> io::Result<()> {
    let flags = FILE_DISPOSITION_DELETE
        | FILE_DISPOSITION_POSIX_SEMANTICS
        | FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE;
    let status = set_information(h, &flags.to_le_bytes(), FileDispositionInformationEx);
    if !unsupported(status) {
        return check(status);
    }
    // FILE_DISPOSITION_INFORMATION: one BOOLEAN, DeleteFile.
    check(set_information(h, &[1], FileDispositionInformation))
}

/// A `FILE_RENAME_INFORMATION` (also `FILE_LINK_INFORMATION`): `flags` (or the
/// `ReplaceIfExists` boolean in its first byte), the directory handle the name is
/// relative to (null for a full NT path), and the name. In `u64`s for the alignment of
/// the handle in it.
fn rename_info(flags: u32, to_dir: HANDLE, to_name: &str) -> Vec<u64> {
    let wide: Vec<u16> = to_name.encode_utf16().collect();
    let name_at = std::mem::offset_of!(FILE_RENAME_INFO, FileName);
    let len = name_at + wide.len() * 2;
    let mut buf = vec![0u64; len.div_ceil(8).max(size_of::<FILE_RENAME_INFO>() / 8)];
    let bytes = bytes_mut(&mut buf);
    bytes[..4].copy_from_slice(&flags.to_le_bytes());
    let dir_at = std::mem::offset_of!(FILE_RENAME_INFO, RootDirectory);
    bytes[dir_at..dir_at + size_of::<HANDLE>()].copy_from_slice(&(to_dir as usize).to_le_bytes());
    let len_at = std::mem::offset_of!(FILE_RENAME_INFO, FileNameLength);
    bytes[len_at..len_at + 4].copy_from_slice(&((wide.len() * 2) as u32).to_le_bytes());
    for (i, unit) in wide.iter().enumerate() {
        bytes[name_at + 2 * i..name_at + 2 * i + 2].copy_from_slice(&unit.to_le_bytes());
    }
    buf
}

fn bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: the bytes of a u64 slice, same lifetime, any bit pattern valid.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), size_of_val(buf)) }
}

fn bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: the bytes of a u64 slice, same lifetime, any bit pattern valid.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), size_of_val(buf)) }
}

/// Renames what is open as `h` (asked with `DELETE`) to `to_name` relative to `to_dir`
/// (a full NT path when `to_dir` is `None`), replacing what is there when `replace`
/// (even a file open elsewhere, or read-only, with POSIX semantics where the filesystem
/// has them), else failing with `AlreadyExists`.
pub fn rename(
    h: BorrowedHandle<'_>,
    to_dir: Option<BorrowedHandle<'_>>,
    to_name: &str,
    replace: bool,
) -> io::Result<()> {
    let dir = to_dir.map_or(ptr::null_mut(), raw);
    let mut flags = FILE_RENAME_POSIX_SEMANTICS | FILE_RENAME_IGNORE_READONLY_ATTRIBUTE;
    if replace {
        flags |= FILE_RENAME_REPLACE_IF_EXISTS;
    }
    let status = set_information(
        h,
        bytes(&rename_info(flags, dir, to_name)),
        FileRenameInformationEx,
    );
    if !unsupported(status) {
        return check(status);
    }
    let info = rename_info(u32::from(replace), dir, to_name);
    check(set_information(h, bytes(&info), FileRenameInformation))
}

/// Makes `to` (a full NT path) a hard link of what is open as `h`, failing if `to`
/// exists.
pub fn link(h: BorrowedHandle<'_>, to: &str) -> io::Result<()> {
    let info = rename_info(0, ptr::null_mut(), to);
    check(set_information(h, bytes(&info), FileLinkInformation))
}

/// One batch of the listing of the directory open as `h`, in `buf`; false when the
/// listing is done. Each call goes on where the last one stopped, on that handle.
pub fn list_more(h: BorrowedHandle<'_>, buf: &mut [u64]) -> io::Result<bool> {
    let len = u32::try_from(size_of_val(buf)).unwrap_or(u32::MAX);
    // SAFETY: `buf` is writable for `len` bytes and 8-aligned, as FILE_FULL_DIR_INFO
    // records need.
    let ok = unsafe {
        GetFileInformationByHandleEx(raw(h), FileFullDirectoryInfo, buf.as_mut_ptr().cast(), len)
    };
    match check_bool(ok) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(ERROR_NO_MORE_FILES as i32) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The bytes of a listing buffer, for [`rules::parse_full_dir_info`](super::rules).
pub fn listing(buf: &[u64]) -> &[u8] {
    bytes(buf)
}

/// `FlushFileBuffers` of the handle.
pub fn flush(h: BorrowedHandle<'_>) -> io::Result<()> {
    // SAFETY: `h` is an open handle for the length of the call.
    check_bool(unsafe { FlushFileBuffers(raw(h)) })
}

/// The offset of the byte [`try_lock`] locks: far beyond any content, because a lock on
/// Windows is mandatory and a lock on the data would block reading it through another
/// handle.
const LOCK_BYTE: u64 = u64::MAX - 1;

/// Takes an exclusive lock on one byte beyond the file's data, without waiting.
pub fn try_lock(h: BorrowedHandle<'_>) -> bool {
    let mut overlapped = OVERLAPPED::default();
    overlapped.Anonymous.Anonymous.Offset = LOCK_BYTE as u32;
    overlapped.Anonymous.Anonymous.OffsetHigh = (LOCK_BYTE >> 32) as u32;
    // SAFETY: `overlapped` is live for the call; the handle is synchronous, so the call
    // completes before it returns.
    let ok = unsafe {
        LockFileEx(
            raw(h),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut overlapped,
        )
    };
    ok != 0
}
