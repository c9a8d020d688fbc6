//! Messages between a device (client role) and a server, after the [`crate::handshake`]
//! and the [`crate::auth`] exchange.
//!
//! One connection carries one folder. The sequence is:
//!
//! 1. device → `Hello` (who it is, which folder, the last sequence number it has seen);
//! 2. server → `Welcome` (the folder's epoch and current sequence) or `Error`;
//! 3. server → `Index` batches: every entry changed since the device's sequence, then
//!    every new change as it is committed;
//! 4. device → `Push` of local changes, each with the sequence it was based on; the server
//!    fetches content it lacks with `BlockRequest`, commits, and answers `PushResult`.
//!
//! Block requests and responses flow both ways, matched by `id`.
//! A block list too long for one frame goes ahead of its `Push` or `Index` in
//! `BlockList` pieces ([`BlockListPiece`]).
//!
//! Instead of `Hello`, a connection may carry one request that is not about syncing a
//! folder (`CreateInvite`, `Sharing`); the server answers it and closes.

use serde::{Deserialize, Serialize};

use crate::{AccountName, DeviceId, FolderName, Hash, RelPath};

/// Largest content block carried in one message.
pub const MAX_BLOCK_SIZE: u32 = 1024 * 1024;
/// Most changes in one `Push`, and most entries in one `Index` batch.
pub const MAX_BATCH: usize = 1000;
/// The largest file whose content travels inline: in a [`Change`], in an `Index` batch's
/// [`Inline`] list, or in a `Fetched` answer. Larger files go by [`BlockRequest`]s.
pub const INLINE_MAX: u64 = 64 * 1024;
/// Most bytes of inline content in one `Push`, `Index` or `Fetched` message, well under
/// the frame limit with the entries beside them.
pub const INLINE_BUDGET: usize = 8 * 1024 * 1024;
/// Most blocks in one file's block list (about 1 TiB of content at the average block of
/// 64 KiB; 600 MiB of list): a list longer than a frame holds travels in
/// [`BlockListPiece`]s, and the receiver holds at most this many before its entry comes.
pub const MAX_FILE_BLOCKS: usize = 1 << 24;
/// Most files asked for in one `Fetch`.
pub const FETCH_MAX_FILES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One content-defined block of a file: its SHA-256 and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub hash: Hash,
    pub size: u32,
}

/// The state of one path in a folder, as recorded in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
    /// A tombstone: the path was deleted at `seq`.
    pub deleted: bool,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (may be negative).
    pub mtime_ns: i64,
    /// Permission bits (`0o777` at most; setuid, setgid and sticky are never carried).
    pub mode: u32,
    /// SHA-256 of the whole content (files only).
    pub hash: Hash,
    /// The file's blocks in order (files only).
    pub blocks: Vec<BlockInfo>,
    /// Link target, stored verbatim and never followed (symlinks only).
    pub target: String,
    /// The server's sequence number of this version; 0 before the server accepts it.
    pub seq: u64,
    /// The device that made this version (or the server's own id for changes made in
    /// the server's copy).
    pub origin: DeviceId,
    /// Set on a conflict copy: which path it lost to, so that every device's index knows
    /// its conflicts without guessing from names.
    pub conflict: Option<ConflictNote>,
    /// Set on a directory that arrived by renaming another one, in two places: a pushed
    /// [`Change`] (the device renamed that directory to this path, subtree included) and
    /// a rename record in the server's `Index` stream (every entry below the old path now
    /// lives below this one, keeping its sequence number). Never set on a stored state.
    pub renamed_from: Option<RelPath>,
}

/// Why a file is a conflict copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictNote {
    /// The path whose server version won.
    pub original: RelPath,
    /// The winning server version's sequence number and author.
    pub winner_seq: u64,
    pub winner: DeviceId,
    /// When the copy was made, Unix seconds.
    pub made_at: i64,
}

/// One kept version of a file on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The sequence number the version had while it was current.
    pub version: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// When it was replaced or deleted, Unix seconds.
    pub kept_at: i64,
}

impl Entry {
    /// Whether two entries describe the same content, ignoring bookkeeping fields.
    pub fn same_content(&self, other: &Entry) -> bool {
        self.deleted == other.deleted
            && (self.deleted
                || (self.kind == other.kind
                    && match self.kind {
                        EntryKind::File => self.hash == other.hash && self.mode == other.mode,
                        EntryKind::Dir => true,
                        EntryKind::Symlink => self.target == other.target,
                    }))
    }
}

/// The head of the block list of the entry for `path` in the next `Push` or `Index`
/// message, which carries only the rest of it: sent when the whole list would not fit in
/// a frame. The pieces of one message come right before it, in the order of its entries,
/// each list's pieces in order (`first` is the position of the piece's first block in
/// the list), with no other message between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockListPiece {
    pub path: RelPath,
    pub first: u64,
    pub blocks: Vec<BlockInfo>,
}

impl Entry {
    /// Whether `other` is the same version as this one: the same content and, for a live
    /// file, the same mtime. An mtime set on its own (`touch -d`, a copy keeping dates)
    /// is a change like any other, which every replica must take.
    pub fn same_version(&self, other: &Entry) -> bool {
        self.same_content(other)
            && (self.deleted || self.kind != EntryKind::File || self.mtime_ns == other.mtime_ns)
    }
}

/// A local change pushed by a device: the new state and the server sequence it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub entry: Entry,
    /// The `seq` of the server version this change was made on; 0 for a path the device
    /// has never seen on the server.
    pub base_seq: u64,
    /// The whole content of a live file of at most [`INLINE_MAX`] bytes, read by the
    /// device when it hashed the file; the server then asks for no block of it. Checked
    /// against `entry.size` and `entry.hash` before anything is written.
    #[serde(with = "crate::block_data::optional")]
    pub data: Option<Vec<u8>>,
}

/// The content of one entry of an `Index` batch: `entry` is its position in `entries`.
/// Checked against that entry's size and hash before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inline {
    pub entry: u32,
    #[serde(with = "crate::block_data::bytes")]
    pub data: Vec<u8>,
}

/// One small file asked for in a `Fetch`: the version the device wants, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub path: RelPath,
    pub hash: Hash,
    pub size: u64,
}

/// The answer for one [`Want`], in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedFile {
    #[serde(with = "crate::block_data")]
    pub result: Result<Vec<u8>, BlockError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Committed as this sequence number.
    Accepted { seq: u64 },
    /// The server's version of the path is newer than the change's base: the device gets
    /// the server's version through the index and keeps its own as a conflict copy.
    Conflict { current_seq: u64 },
    /// Not committed for a reason that may pass (content changed while read, disk full);
    /// the device retries later.
    Failed { reason: String },
}

/// A request for `size` bytes at `offset` of the file at `path`, expected to hash to
/// `hash`. The server answers only for files in the same folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    pub path: RelPath,
    pub offset: u64,
    pub size: u32,
    pub hash: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockError {
    /// The file is gone or no longer holds that block; ask again after the next index.
    NotAvailable,
    /// The request itself is not acceptable (size over the limit, unknown path).
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub device: DeviceId,
    /// A human name for the device (its host name), shown in server status.
    pub device_name: String,
    pub folder: FolderName,
    /// The last sequence number the device has applied, and the epoch it belongs to.
    pub since_seq: u64,
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub server: DeviceId,
    /// Random id of the server's index of this folder; it changes when the folder is
    /// re-created or restored, and then the device's `since_seq` means nothing.
    pub epoch: u64,
    pub current_seq: u64,
    /// The folder is shared with the device's account read-only: the device must treat
    /// it as receive-only (the server refuses its pushes anyway).
    pub read_only: bool,
}

/// A change to, or a look at, the grants of folders of the device's own account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareRequest {
    /// Grant (or change) `with`'s access to the account's folder `folder`.
    Share {
        folder: FolderName,
        with: AccountName,
        read_only: bool,
    },
    /// Take `with`'s access back; its open connections to the folder are closed.
    Unshare {
        folder: FolderName,
        with: AccountName,
    },
    /// The grants of one of the account's folders, or of all of them.
    List { folder: Option<FolderName> },
}

/// One account's access to another account's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareGrant {
    pub owner: AccountName,
    pub folder: FolderName,
    pub member: AccountName,
    pub read_only: bool,
    /// When it was granted (or last changed), Unix seconds.
    pub granted_at: i64,
}

/// Why a server or device ended a conversation, as data rather than a dropped socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    Protocol,
    NotFound,
    Denied,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    Hello(Hello),
    Push {
        id: u64,
        changes: Vec<Change>,
    },
    BlockRequest {
        id: u64,
        request: BlockRequest,
    },
    BlockResponse {
        id: u64,
        #[serde(with = "crate::block_data")]
        result: Result<Vec<u8>, BlockError>,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Several small files' whole content at once (at most [`FETCH_MAX_FILES`] files,
    /// each at most [`INLINE_MAX`] bytes, at most [`INLINE_BUDGET`] bytes together),
    /// answered by one `Fetched`.
    Fetch {
        id: u64,
        files: Vec<Want>,
    },
    /// The kept versions of a path.
    ListVersions {
        id: u64,
        path: RelPath,
    },
    /// Bring back a kept version (the newest if `version` is `None`) as a new change.
    Restore {
        id: u64,
        path: RelPath,
        version: Option<u64>,
    },
    /// Instead of `Hello`, as the first message: ask for an invite token that enrols
    /// another device into this device's account. The server answers `Invite` and closes.
    CreateInvite,
    /// Instead of `Hello`, as the first message: share a folder of this device's account,
    /// take a share back, or list shares. The server answers `Sharing` and closes.
    Sharing(ShareRequest),
    /// Part of the block list of an entry of the `Push` that follows.
    BlockList(BlockListPiece),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    Welcome(Welcome),
    /// Entries in increasing `seq`; `up_to` is the folder sequence they bring the device
    /// to, and `caught_up` says there was nothing newer when the batch was cut. `as_of`
    /// is the folder's highest sequence number when the batch was read: every entry is
    /// at its path as of then, so a rename record at or below it has already moved it.
    Index {
        entries: Vec<Entry>,
        /// The content of some of `entries` (small live files), never sent back to the
        /// device that made that version.
        inline: Vec<Inline>,
        up_to: u64,
        as_of: u64,
        caught_up: bool,
    },
    PushResult {
        id: u64,
        outcomes: Vec<PushOutcome>,
    },
    BlockRequest {
        id: u64,
        request: BlockRequest,
    },
    BlockResponse {
        id: u64,
        #[serde(with = "crate::block_data")]
        result: Result<Vec<u8>, BlockError>,
    },
    /// The answer to a `Fetch`: one result per file asked, in order.
    Fetched {
        id: u64,
        files: Vec<FetchedFile>,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Error(WireError),
    Versions {
        id: u64,
        result: Result<Vec<VersionInfo>, String>,
    },
    /// The sequence number of the restored version.
    Restored {
        id: u64,
        result: Result<u64, String>,
    },
    /// The answer to `CreateInvite`: the token's text, or why there is none.
    Invite(Result<String, String>),
    /// The answer to `Sharing`: the grants of the folder concerned (of every folder of
    /// the account, for a list of all), or why the request was refused.
    Sharing(Result<Vec<ShareGrant>, String>),
    /// Part of the block list of an entry of the `Index` that follows.
    BlockList(BlockListPiece),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_payload};

    fn entry() -> Entry {
        Entry {
            path: RelPath::new("dir/file.txt").unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size: 10,
            mtime_ns: -5,
            mode: 0o644,
            hash: Hash([7; 32]),
            blocks: vec![BlockInfo {
                hash: Hash([7; 32]),
                size: 10,
            }],
            target: String::new(),
            seq: 3,
            origin: DeviceId::new("dev1").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    fn piece() -> BlockListPiece {
        BlockListPiece {
            path: entry().path,
            first: 1 << 20,
            blocks: entry().blocks,
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        msg: T,
    ) {
        let bytes = encode_payload(&msg).unwrap();
        let back: T = decode_payload(&bytes).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn a_version_is_its_content_and_a_live_files_mtime() {
        let e = entry();
        let mut touched = entry();
        touched.mtime_ns += 1;
        assert!(e.same_content(&touched) && !e.same_version(&touched));
        let mut other = entry();
        other.seq = 9;
        assert!(
            e.same_version(&other),
            "bookkeeping is no part of a version"
        );
        let (mut dir, mut dir_touched) = (entry(), entry());
        dir.kind = EntryKind::Dir;
        dir_touched.kind = EntryKind::Dir;
        dir_touched.mtime_ns += 1;
        assert!(
            dir.same_version(&dir_touched),
            "a directory's mtime is not synced"
        );
        let (mut gone, mut gone_touched) = (entry(), touched.clone());
        gone.deleted = true;
        gone_touched.deleted = true;
        assert!(gone.same_version(&gone_touched));
    }

    #[test]
    fn every_client_message_round_trips() {
        let request = BlockRequest {
            path: entry().path,
            offset: 1 << 40,
            size: 5,
            hash: Hash([1; 32]),
        };
        for msg in [
            ClientMsg::Hello(Hello {
                device: DeviceId::new("d").unwrap(),
                device_name: "host".into(),
                folder: FolderName::new("docs").unwrap(),
                since_seq: 9,
                epoch: u64::MAX,
            }),
            ClientMsg::Push {
                id: 1,
                changes: vec![
                    Change {
                        entry: entry(),
                        base_seq: 2,
                        data: None,
                    },
                    Change {
                        entry: entry(),
                        base_seq: 0,
                        data: Some(b"0123456789".to_vec()),
                    },
                ],
            },
            ClientMsg::Fetch {
                id: 8,
                files: vec![Want {
                    path: entry().path,
                    hash: Hash([7; 32]),
                    size: 10,
                }],
            },
            ClientMsg::BlockRequest { id: 2, request },
            ClientMsg::BlockResponse {
                id: 3,
                result: Ok(vec![1, 2, 3]),
            },
            ClientMsg::BlockResponse {
                id: 4,
                result: Err(BlockError::NotAvailable),
            },
            ClientMsg::BlockResponse {
                id: 5,
                result: Err(BlockError::Refused("no".into())),
            },
            ClientMsg::Ping { nonce: 1 },
            ClientMsg::Pong { nonce: 1 },
            ClientMsg::ListVersions {
                id: 6,
                path: entry().path,
            },
            ClientMsg::Restore {
                id: 7,
                path: entry().path,
                version: Some(3),
            },
            ClientMsg::CreateInvite,
            ClientMsg::Sharing(ShareRequest::Share {
                folder: FolderName::new("docs").unwrap(),
                with: AccountName::new("bob").unwrap(),
                read_only: true,
            }),
            ClientMsg::Sharing(ShareRequest::Unshare {
                folder: FolderName::new("docs").unwrap(),
                with: AccountName::new("bob").unwrap(),
            }),
            ClientMsg::Sharing(ShareRequest::List { folder: None }),
            ClientMsg::BlockList(piece()),
        ] {
            round_trip(msg);
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        let request = BlockRequest {
            path: entry().path,
            offset: 0,
            size: 5,
            hash: Hash::ZERO,
        };
        for msg in [
            ServerMsg::Welcome(Welcome {
                server: DeviceId::new("s").unwrap(),
                epoch: 1,
                current_seq: 2,
                read_only: true,
            }),
            ServerMsg::Sharing(Ok(vec![ShareGrant {
                owner: AccountName::new("alice").unwrap(),
                folder: FolderName::new("docs").unwrap(),
                member: AccountName::new("bob").unwrap(),
                read_only: false,
                granted_at: 1_700_000_000,
            }])),
            ServerMsg::Sharing(Err("no such account".into())),
            ServerMsg::BlockList(piece()),
            ServerMsg::Index {
                entries: vec![entry()],
                inline: vec![Inline {
                    entry: 0,
                    data: b"0123456789".to_vec(),
                }],
                up_to: 3,
                as_of: 5,
                caught_up: true,
            },
            ServerMsg::Fetched {
                id: 9,
                files: vec![
                    FetchedFile {
                        result: Ok(b"0123456789".to_vec()),
                    },
                    FetchedFile {
                        result: Err(BlockError::NotAvailable),
                    },
                ],
            },
            ServerMsg::PushResult {
                id: 1,
                outcomes: vec![
                    PushOutcome::Accepted { seq: 4 },
                    PushOutcome::Conflict { current_seq: 5 },
                    PushOutcome::Failed {
                        reason: "disk full".into(),
                    },
                ],
            },
            ServerMsg::BlockRequest { id: 2, request },
            ServerMsg::BlockResponse {
                id: 2,
                result: Ok(vec![]),
            },
            ServerMsg::Ping { nonce: 3 },
            ServerMsg::Pong { nonce: 3 },
            ServerMsg::Error(WireError {
                kind: ErrorKind::NotFound,
                message: "no such folder".into(),
            }),
            ServerMsg::Versions {
                id: 4,
                result: Ok(vec![VersionInfo {
                    version: 3,
                    size: 5,
                    mtime_ns: -1,
                    kept_at: 1_700_000_000,
                }]),
            },
            ServerMsg::Versions {
                id: 5,
                result: Err("no such file".into()),
            },
            ServerMsg::Restored {
                id: 6,
                result: Ok(9),
            },
        ] {
            round_trip(msg);
        }
    }

    #[test]
    fn hostile_path_inside_a_message_fails_decoding() {
        let mut e = entry();
        e.path = RelPath::new("aa/b").unwrap();
        let mut bytes = encode_payload(&ClientMsg::Push {
            id: 1,
            changes: vec![Change {
                entry: e,
                base_seq: 0,
                data: None,
            }],
        })
        .unwrap();
        // Overwrite "aa" with ".." in the encoded path: decoding must refuse it.
        let at = bytes.windows(4).position(|w| w == b"aa/b").unwrap();
        bytes[at..at + 2].copy_from_slice(b"..");
        assert!(decode_payload::<ClientMsg>(&bytes).is_err());
    }

    #[test]
    fn conflict_notes_round_trip() {
        let mut e = entry();
        e.conflict = Some(ConflictNote {
            original: RelPath::new("dir/a.txt").unwrap(),
            winner_seq: 4,
            winner: DeviceId::new("w").unwrap(),
            made_at: 1_700_000_000,
        });
        round_trip(ServerMsg::Index {
            entries: vec![e],
            inline: Vec::new(),
            up_to: 4,
            as_of: 4,
            caught_up: false,
        });
    }

    #[test]
    fn same_content_ignores_bookkeeping() {
        let a = entry();
        let mut b = entry();
        b.seq = 99;
        b.mtime_ns = 1;
        b.origin = DeviceId::new("other").unwrap();
        assert!(a.same_content(&b));
        b.hash = Hash([8; 32]);
        assert!(!a.same_content(&b));
    }
}
