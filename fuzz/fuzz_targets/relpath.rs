//! `RelPath` from any string, directly and through decoding: whatever it accepts stays
//! inside the folder (no empty, `.` or `..` component, not absolute, no backslash, NUL
//! or drive letter, within the length limits), and both ways agree.
#![no_main]

use filesync_proto::RelPath;
use filesync_proto::path::{MAX_COMPONENT_LEN, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let direct = RelPath::new(text);
    let encoded = [&[text.len().min(127) as u8][..], data].concat();
    if text.len() < 128 {
        let decoded = filesync_proto::frame::decode_payload::<RelPath>(&encoded);
        assert_eq!(direct.is_ok(), decoded.is_ok(), "{text:?}");
    }
    let Ok(path) = direct else { return };
    assert!(path.as_str().len() <= MAX_PATH_LEN);
    assert!(!path.as_str().starts_with('/'));
    assert!(!path.as_str().contains(['\\', '\0']));
    for c in path.components() {
        assert!(!c.is_empty() && c != "." && c != "..", "{text:?}");
        assert!(c.len() <= MAX_COMPONENT_LEN);
    }
    let root = std::path::Path::new("/root");
    assert!(path.to_path(root).starts_with(root));
    if let Some(parent) = path.parent() {
        assert!(path.starts_with(&parent));
    }
});
