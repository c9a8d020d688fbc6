//! A control socket request (and, for completeness, a response) from any bytes: an
//! error or a value, never a panic.
#![no_main]

use filesync_proto::control::{Request, Response, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Request>(data);
    let _ = decode::<Response>(data);
});
