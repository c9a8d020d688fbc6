//! The one way the server role takes a std mutex, kept in a leaf module so that the
//! account store, the quotas and the server itself share it without importing each other.

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a thread panicked while holding it: every lock of the server role
/// guards a map or a database connection that each step leaves whole, and one panicked
/// session must not stop the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
