//! Files on disk, for both roles: the names the daemon reserves inside a synced folder
//! (here, so that every module below can ask without importing another), confined
//! access below a folder root ([`beneath`]), what is at a path ([`stat`]), writing
//! content through verified temp files ([`temp`]) and keeping partial transfers
//! ([`partial`]), making a group of them durable together ([`durable`]), the other
//! operations on a tree ([`tree`]), copying a range between open files ([`copy`]),
//! chunking and hashing ([`chunk`]), holes in sparse files ([`sparse`]), a full disk
//! ([`space`]), owner-only files ([`private`]), a folder's ignore rules ([`ignore`]),
//! watching a tree ([`watch`]) and the names Windows cannot hold ([`windows_names`]).
//!
//! All platform file code is here: Unix calls directly in these modules, and their
//! Windows counterparts in `windows/` or beside the Unix call under `#[cfg(windows)]`.
//!
//! Nothing here imports anything else from the crate: `fs` is the bottom of the data
//! path.

#[cfg(unix)]
pub mod beneath;
mod beneath_common;
pub mod chunk;
pub mod copy;
pub mod durable;
pub mod ignore;
pub mod partial;
pub mod private;
pub mod space;
pub mod sparse;
pub mod stat;
pub mod temp;
pub mod tree;
pub mod watch;
#[cfg(any(windows, test))]
mod windows;
pub mod windows_names;

#[cfg(unix)]
pub use std::os::unix::fs::FileExt;
#[cfg(windows)]
pub use windows::{FileExt, beneath};

/// Prefix of everything the daemon keeps inside a synced folder.
pub const RESERVED_PREFIX: &str = ".filesync";
/// Temp files, beside their target so the final rename stays on one filesystem.
pub const TEMP_PREFIX: &str = ".filesync-tmp-";
/// A large file's interrupted transfer, kept to be resumed.
pub const PARTIAL_PREFIX: &str = ".filesync-partial-";

/// The per-folder rule file, at the folder root.
pub const IGNORE_FILE: &str = ".filesyncignore";

/// The marker file in a folder's root, in the reserved `.filesync*` namespace, so it is
/// never synced. Its absence in a folder that has synced before means the directory is
/// not the folder any more (an unmounted disk, a replaced or emptied directory).
pub const MARKER: &str = ".filesync-folder";

/// Where `revert` moves local versions, one dated directory per revert, inside the
/// folder: the same filesystem, so a move is one rename that cannot half happen, and a
/// reserved name, so it is never scanned, synced or served, and no server can write
/// there.
pub const REVERTED_DIR: &str = ".filesync-reverted";

/// Whether a name belongs to the daemon and must never be synced. The ignore file is
/// the user's, not the daemon's: it syncs like any file.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX) && name != IGNORE_FILE
}
