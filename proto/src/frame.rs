//! Frames: a 4-byte big-endian length, then that many bytes of postcard payload.
//!
//! The length is checked against a per-codec maximum before any buffer is reserved, so
//! a peer cannot make us allocate more than the limit by announcing a large frame; and
//! beyond the first MiB, room is made only as the frame's bytes arrive.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame on a device-to-server connection. A block is at most 1 MiB, an index
/// batch is cut well below this, so only a hostile peer reaches it.
pub const MAX_WIRE_FRAME: usize = 16 * 1024 * 1024;
/// Largest frame on the control socket: requests are small; status of many folders is not.
pub const MAX_CONTROL_FRAME: usize = 4 * 1024 * 1024;
/// Largest request the daemon reads from the control socket: a request names a few
/// folders and paths, so more than this is not one.
pub const MAX_CONTROL_REQUEST: usize = 1024 * 1024;

const PREFIX: usize = 4;
/// Most room made for a frame's bytes before they arrive: a block's frame in one go.
const RESERVE_AHEAD: usize = 1024 * 1024 + 64;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes `Out` and decodes `In` messages as frames. One codec per connection end.
///
/// Stateless: each `decode` looks at the buffer from its start, so a frame that arrives
/// over many reads is judged by the same prefix every time.
pub struct FrameCodec<In, Out> {
    max: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new(max: usize) -> Self {
        FrameCodec {
            max,
            _types: PhantomData,
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        if src.len() < PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if src.len() < PREFIX + len {
            // Only now, with the length known to be within the limit, make room for it;
            // at most `RESERVE_AHEAD` before the bytes come, so that a peer announcing
            // large frames and sending nothing holds no more than that of our memory.
            src.reserve((PREFIX + len - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(PREFIX);
        let frame = src.split_to(len);
        Ok(Some(decode_payload(&frame)?))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let payload = encode_payload(&msg)?;
        if payload.len() > self.max {
            return Err(FrameError::TooLarge {
                len: payload.len(),
                max: self.max,
            });
        }
        dst.reserve(PREFIX + payload.len());
        dst.put_u32(payload.len() as u32);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

/// Serialises one message to its postcard payload (no length prefix).
pub fn encode_payload<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    Ok(postcard::to_stdvec(msg)?)
}

/// Parses one payload; trailing bytes after a complete message are an error, so that a
/// frame means exactly one message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_WIRE_FRAME;
    use crate::wire::{ClientMsg, ServerMsg};

    type ServerCodec = FrameCodec<ClientMsg, ServerMsg>;

    fn feed(bytes: &[u8]) -> Result<Option<ClientMsg>, FrameError> {
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(bytes);
        codec.decode_eof(&mut buf)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trip_through_codec() {
        let mut enc = FrameCodec::<ServerMsg, ClientMsg>::new(1024);
        let mut buf = BytesMut::new();
        enc.encode(ClientMsg::Ping { nonce: 7 }, &mut buf).unwrap();
        let mut dec = ServerCodec::new(1024);
        assert!(matches!(
            dec.decode(&mut buf).unwrap(),
            Some(ClientMsg::Ping { nonce: 7 })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let bytes = frame(&encode_payload(&ClientMsg::Ping { nonce: 1 }).unwrap());
        let mut dec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert!(dec.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn a_frame_split_over_many_reads_decodes() {
        // Regression: a large frame arriving in pieces must be judged by its own prefix
        // each time, never by payload bytes.
        let msg = ClientMsg::BlockResponse {
            id: 9,
            result: Ok((0..=255u8).cycle().take(70_000).collect()),
        };
        let mut enc = FrameCodec::<ServerMsg, ClientMsg>::new(1 << 20);
        let mut all = BytesMut::new();
        enc.encode(msg.clone(), &mut all).unwrap();
        enc.encode(ClientMsg::Ping { nonce: 3 }, &mut all).unwrap();
        let mut dec = FrameCodec::<ClientMsg, ServerMsg>::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in all.chunks(1000) {
            buf.extend_from_slice(piece);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![msg, ClientMsg::Ping { nonce: 3 }]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let check = |bytes: &[u8], want: fn(&FrameError) -> bool| {
            let err = feed(bytes).expect_err("must be refused");
            assert!(want(&err), "{bytes:?} gave {err:?}");
        };
        let too_large = |e: &FrameError| matches!(e, FrameError::TooLarge { .. });
        let malformed = |e: &FrameError| matches!(e, FrameError::Malformed(_));
        let truncated = |e: &FrameError| matches!(e, FrameError::Truncated);
        // Oversized lengths are refused from the prefix alone, before allocation.
        check(&1025u32.to_be_bytes(), too_large);
        check(&u32::MAX.to_be_bytes(), too_large);
        // Exactly the limit is read, and judged by its content.
        check(&frame(&[0xff; 1024]), malformed);
        // Truncated: a prefix promising more than arrives, or a cut prefix.
        check(&[0, 0, 0, 9, 1, 2], truncated);
        check(&[0, 0], truncated);
        // Zero-length frame: no message at all.
        check(&frame(&[]), malformed);
        // Unknown variant index and garbage.
        check(&frame(&[0x7f]), malformed);
        check(&frame(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), malformed);
        // A counted field claiming more items than there are bytes.
        check(&frame(&[1, 1, 0xff, 0xff, 0x03]), malformed);
        // A valid message followed by trailing bytes.
        let mut ping = encode_payload(&ClientMsg::Ping { nonce: 1 }).unwrap();
        ping.push(0);
        check(&frame(&ping), malformed);
    }

    #[test]
    fn an_announced_frame_reserves_little_before_its_bytes_arrive() {
        let mut dec = FrameCodec::<ClientMsg, ServerMsg>::new(MAX_WIRE_FRAME);
        let mut buf = BytesMut::from(&(MAX_WIRE_FRAME as u32).to_be_bytes()[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 2 * RESERVE_AHEAD,
            "{} bytes reserved for a frame with no bytes yet",
            buf.capacity()
        );
    }

    #[test]
    fn empty_input_at_eof_is_a_clean_close() {
        assert!(feed(&[]).unwrap().is_none());
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let mut enc = FrameCodec::<ServerMsg, ClientMsg>::new(16);
        let msg = ClientMsg::Ping { nonce: u64::MAX };
        let mut buf = BytesMut::new();
        assert!(enc.encode(msg, &mut buf).is_ok());
        let big = ClientMsg::BlockResponse {
            id: 1,
            result: Ok(vec![0; 64]),
        };
        assert!(matches!(
            enc.encode(big, &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
