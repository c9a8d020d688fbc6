//! The first scan of a big folder streams into pushes (issue 17): files reach the
//! server while the device still shows the folder as scanning, instead of after the
//! whole folder was walked and hashed.

use std::fs;
use std::path::Path;

use filesync_tests::cluster::DOCS;
use filesync_tests::tree::Kind;
use filesync_tests::{Cluster, SYNC_TIMEOUT, files, poll_until};

/// A folder big enough that its first scan outlasts a push's round trip many times
/// over: the scan hands its first piece over after 1,000 files.
const DIRS: usize = 40;
const PER_DIR: usize = 500;

/// Whether the server's copy of the folder holds any of the files yet (under its
/// name: a temp file has another).
fn server_has_a_file(copy: Option<&Path>) -> bool {
    let Some(copy) = copy else { return false };
    (0..DIRS).any(|d| {
        fs::read_dir(copy.join(format!("d{d}"))).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with('f')))
        })
    })
}

#[test]
fn files_reach_the_server_while_the_first_scan_still_runs() {
    let cluster = Cluster::without_folders(1, Some("open"));
    let dir = cluster.folder_dir(0, DOCS);
    for d in 0..DIRS {
        for f in 0..PER_DIR {
            files::write(
                &dir.join(format!("d{d}/f{f}")),
                format!("file {f} of directory {d}\n"),
            );
        }
    }
    cluster.add_folder(0, DOCS);
    // Until the first scan ends, the folder shows as scanning; a file on the server by
    // then was pushed while the walk went on.
    let before_the_end = poll_until(SYNC_TIMEOUT, || {
        let state = cluster.a().folder_status(DOCS)["state"].clone();
        if state != "scanning" {
            return Ok(Err(format!(
                "the first scan ended ({state}) before any file reached the server"
            )));
        }
        if server_has_a_file(cluster.server_dir(DOCS).as_deref()) {
            return Ok(Ok(()));
        }
        Err("the folder is still scanning and no file is on the server yet".into())
    })
    .unwrap_or_else(|why| panic!("{why}"));
    before_the_end.unwrap_or_else(|why| panic!("{why}"));
    let tree = cluster.settle(DOCS);
    let files = tree.values().filter(|e| e.kind == Kind::File).count();
    assert_eq!(files, DIRS * PER_DIR, "every file reached the server");
}
