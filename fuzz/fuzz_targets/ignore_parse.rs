//! A `.filesyncignore` from any bytes: it parses or gives an error, never panics, and the
//! rules it makes answer for paths and never ignore the ignore file itself.
#![no_main]

use filesync_proto::RelPath;
use filesyncd::fs::IGNORE_FILE;
use filesyncd::fs::ignore::IgnoreRules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rules) = IgnoreRules::parse(data) else {
        return;
    };
    for path in ["a", "a/b.txt", "build/x", ".git/config", "x~"] {
        let path = RelPath::new(path).unwrap();
        let _ = rules.is_ignored(&path, false);
        let _ = rules.is_ignored(&path, true);
    }
    assert!(!rules.is_ignored(&RelPath::new(IGNORE_FILE).unwrap(), false));
});
