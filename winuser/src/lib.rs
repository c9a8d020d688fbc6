//! Which Windows user runs a process, for the control pipe's check of who is at its
//! other end (`SO_PEERCRED` and the socket's owner do this on Linux): the daemon admits
//! a client run by its own user or by SYSTEM, and `filesyncctl` talks only to a pipe
//! served by its own user's daemon. Both ends learn the other's process id from the
//! pipe (`GetNamedPipeClientProcessId`, `GetNamedPipeServerProcessId`) and compare the
//! user SID of that process's token with their own.
//!
//! Empty on other systems. Shared by `filesyncd` and `filesyncctl`, so the unsafe
//! Windows calls are written once.

#[cfg(windows)]
mod token;

#[cfg(windows)]
pub use token::owner_of;

/// Who runs a process, as seen by the process asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The same user as the process asking.
    Me,
    /// `NT AUTHORITY\SYSTEM` (a service), when that is not the asker itself.
    System,
    /// Anyone else.
    Other,
}
