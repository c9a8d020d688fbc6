//! One payload as either direction's message: decoding never panics, a decoded message
//! encodes to the same bytes, and every entry it carries passes or fails the daemon's
//! checks on received entries without panicking.
#![no_main]

use filesync_proto::frame::{decode_payload, encode_payload};
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesyncd::conn::received::check_entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_payload::<ClientMsg>(data) {
        assert_eq!(
            decode_payload::<ClientMsg>(&encode_payload(&msg).unwrap()).unwrap(),
            msg
        );
        if let ClientMsg::Push { changes, .. } = msg {
            for mut change in changes {
                if check_entry(&mut change.entry).is_ok() {
                    assert_eq!(change.entry.mode & !0o777, 0);
                }
            }
        }
    }
    if let Ok(msg) = decode_payload::<ServerMsg>(data) {
        assert_eq!(
            decode_payload::<ServerMsg>(&encode_payload(&msg).unwrap()).unwrap(),
            msg
        );
        if let ServerMsg::Index { entries, .. } = msg {
            for mut entry in entries {
                let _ = check_entry(&mut entry);
            }
        }
    }
});
