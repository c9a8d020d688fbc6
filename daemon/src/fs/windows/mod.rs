//! The Windows side of `fs`: what `std::os::unix` and `libc` give the other modules on
//! Unix, in the few calls they make ([`compat`]), and [`beneath`], confined access below
//! a folder root, on the NT calls of [`nt`] (links in [`links`]). Everything `#[cfg(windows)]` about files
//! lives here or next to its Unix counterpart in this directory's parent. The pure rules
//! of [`rules`] (names, flags, paths, listings) and [`reparse`] (link data) are built
//! and tested on every platform.

#[cfg(windows)]
pub mod beneath;
#[cfg(windows)]
mod compat;
#[cfg(windows)]
mod links;
#[cfg(windows)]
mod nt;
mod reparse;
mod rules;

#[cfg(windows)]
pub use compat::*;
