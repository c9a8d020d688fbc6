//! The shared vocabulary of filesync: everything that crosses a wire or a socket.
//!
//! * [`frame`]: the length-prefixed, size-limited frame codec carrying postcard payloads;
//! * [`handshake`]: the frozen first exchange that states the protocol version;
//! * [`auth`]: the device's credential, invite token or registration, right after it;
//! * [`wire`]: messages between a device and a server (block content through
//!   `block_data`, a byte string rather than a sequence of numbers);
//! * [`control`]: messages between `filesyncctl` and the local daemon;
//! * [`path`], [`names`], [`hash`]: types that are validated when they are built, so that
//!   a value received from the network is either valid or never exists.
//!
//! This crate holds no I/O policy and starts no tasks.

pub mod auth;
mod block_data;
pub mod control;
pub mod frame;
pub mod handshake;
pub mod hash;
pub mod names;
pub mod path;
pub mod wire;

pub use frame::{FrameCodec, FrameError, MAX_CONTROL_FRAME, MAX_CONTROL_REQUEST, MAX_WIRE_FRAME};
pub use handshake::{Handshake, HandshakeReply, PROTOCOL_VERSION};
pub use hash::Hash;
pub use names::{AccountName, DeviceId, FolderName, NameError};
pub use path::{PathError, RelPath};
