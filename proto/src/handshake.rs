//! The first exchange on every device-to-server connection.
//!
//! These two types are frozen: their encoding must never change, so that a peer of any
//! version can read the other's protocol version and say clearly why they cannot talk.

use serde::{Deserialize, Serialize};

/// Version of the device-to-server protocol. Bump on any change to [`crate::wire`] or
/// [`crate::auth`]. Version 3: TLS underneath, and the auth exchange after the handshake.
/// Version 5: folders shared across accounts (`Sharing`, `Welcome::read_only`).
/// Version 6: small files' content inline (`Change::data`, `Index::inline`, `Fetch`).
pub const PROTOCOL_VERSION: u32 = 6;
/// Marks a filesync connection, so that a stray client gets a clear refusal.
pub const MAGIC: [u8; 4] = *b"FSYN";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub magic: [u8; 4],
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeReply {
    pub magic: [u8; 4],
    pub version: u32,
    /// Why the server will not talk to us, in words for a person; `None` when it will.
    pub refusal: Option<String>,
}

impl Handshake {
    pub fn current() -> Self {
        Handshake {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
        }
    }

    /// Checks a client's handshake; the error is the refusal text sent back to it.
    pub fn check(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err("not a filesync client (bad magic bytes)".into());
        }
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version mismatch: client speaks version {}, server speaks version {}; \
                 install the same filesync release on both",
                self.version, PROTOCOL_VERSION
            ));
        }
        Ok(())
    }
}

impl HandshakeReply {
    pub fn accept() -> Self {
        HandshakeReply {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            refusal: None,
        }
    }

    pub fn refuse(reason: String) -> Self {
        HandshakeReply {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            refusal: Some(reason),
        }
    }

    /// Checks the server's reply on the client side.
    pub fn check(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err("the server is not a filesync server (bad magic bytes)".into());
        }
        if let Some(reason) = &self.refusal {
            return Err(format!("server refused the connection: {reason}"));
        }
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version mismatch: server speaks version {}, this client speaks version {}",
                self.version, PROTOCOL_VERSION
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_payload};

    #[test]
    fn encoding_is_frozen() {
        // Pinned bytes: if this changes, old peers can no longer read our version.
        let bytes = encode_payload(&Handshake::current()).unwrap();
        assert_eq!(&bytes[..4], b"FSYN");
        assert_eq!(bytes.len(), 5);
        let back: Handshake = decode_payload(&bytes).unwrap();
        assert_eq!(back, Handshake::current());
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let old = Handshake {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
        };
        let err = old.check().unwrap_err();
        assert!(
            err.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{err}"
        );
        assert!(
            err.contains(&format!("version {PROTOCOL_VERSION}")),
            "{err}"
        );
        assert!(
            Handshake {
                magic: *b"HTTP",
                version: 1
            }
            .check()
            .is_err()
        );
        let refused = HandshakeReply::refuse("busy".into());
        assert!(refused.check().unwrap_err().contains("busy"));
    }
}
