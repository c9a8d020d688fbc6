//! Files on disk, for both roles: confined access below a folder root ([`beneath`]),
//! chunking and hashing ([`chunk`]), a full disk ([`space`]), owner-only files
//! ([`private`]), a folder's ignore rules ([`ignore`]) and watching a tree ([`watch`]).

pub mod beneath;
pub mod chunk;
pub mod ignore;
pub mod private;
pub mod space;
pub mod watch;
