//! The user SID in a process's access token, through `windows-sys`.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};

use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, HANDLE};
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, IsWellKnownSid, TOKEN_QUERY, TOKEN_USER, TokenUser,
    WinLocalSystemSid,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

use crate::Owner;

/// Who runs the process `pid`, compared with the calling process's user.
pub fn owner_of(pid: u32) -> io::Result<Owner> {
    // SAFETY: OpenProcess takes plain values; a null result is an error, checked here.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `process` is a handle we own from here on; OwnedHandle closes it.
    let process = unsafe { OwnedHandle::from_raw_handle(process as RawHandle) };
    let theirs = TokenUserBuf::of(process.as_raw_handle() as HANDLE)?;
    // SAFETY: the pseudo-handle of the current process needs no closing.
    let ours = TokenUserBuf::of(unsafe { GetCurrentProcess() })?;
    // SAFETY: both SIDs point into buffers that live until the end of this function.
    let (same, system) = unsafe {
        (
            EqualSid(theirs.sid(), ours.sid()) != 0,
            IsWellKnownSid(theirs.sid(), WinLocalSystemSid) != 0,
        )
    };
    Ok(if same {
        Owner::Me
    } else if system {
        Owner::System
    } else {
        Owner::Other
    })
}

/// A `TOKEN_USER` as `GetTokenInformation` fills it: the struct, followed by the SID
/// its pointer points at, in one buffer (of `u64`, for the struct's alignment).
struct TokenUserBuf(Vec<u64>);

impl TokenUserBuf {
    /// The `TokenUser` information of the process `process`.
    fn of(process: HANDLE) -> io::Result<TokenUserBuf> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `token` is a valid place for the handle OpenProcessToken returns.
        if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the token handle is ours from here on; OwnedHandle closes it.
        let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
        let token = token.as_raw_handle() as HANDLE;
        let mut len = 0u32;
        // SAFETY: a null buffer of length 0 asks for the size needed, written to `len`.
        unsafe { GetTokenInformation(token, TokenUser, std::ptr::null_mut(), 0, &mut len) };
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) {
            return Err(err);
        }
        let words = (len as usize)
            .div_ceil(8)
            .max(std::mem::size_of::<TOKEN_USER>() / 8);
        let mut buf = vec![0u64; words];
        let size = u32::try_from(words * 8).map_err(io::Error::other)?;
        // SAFETY: `buf` holds `size` writable bytes, aligned for TOKEN_USER.
        let ok = unsafe {
            GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), size, &mut len)
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TokenUserBuf(buf))
    }

    /// The user's SID, pointing into this buffer.
    fn sid(&self) -> windows_sys::Win32::Security::PSID {
        // SAFETY: GetTokenInformation filled the buffer's start with a TOKEN_USER.
        unsafe { (*self.0.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }
}
