//! The frame codec on bytes from a peer, fed in pieces of the size the input chooses:
//! it never panics, and every message it returns encodes back to a frame the codec
//! reads as the same message.
#![no_main]

use bytes::BytesMut;
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesync_proto::{FrameCodec, Handshake, HandshakeReply};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece.max(1));
    let mut server = FrameCodec::<ClientMsg, ServerMsg>::new(LIMIT);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        match server.decode(&mut buf) {
            Ok(Some(msg)) => {
                let mut out = BytesMut::new();
                let mut client = FrameCodec::<ServerMsg, ClientMsg>::new(LIMIT);
                client
                    .encode(msg.clone(), &mut out)
                    .expect("a decoded message encodes");
                assert_eq!(server.decode(&mut out).expect("re-decodes"), Some(msg));
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
    let _ = server.decode_eof(&mut buf);
    let mut hs = FrameCodec::<Handshake, HandshakeReply>::new(1024);
    let _ = hs.decode_eof(&mut BytesMut::from(data));
});
