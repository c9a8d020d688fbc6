//! A device's view of the server that drifted heals itself (issue 8): entries the server
//! does not have, put straight into a stopped device's index, stand for whatever bug
//! could leave them there. The device asks for their content, is told twice that the
//! server does not have it, reads the server's whole index again, and converges.

use std::fs;
use std::os::unix::fs::MetadataExt;

use filesync_proto::wire::{BlockInfo, Entry, EntryKind};
use filesync_proto::{DeviceId, Hash, RelPath};
use filesync_tests::cluster::DOCS;
use filesync_tests::{Cluster, files};
use filesyncd::index::{Index, LocalRow, Meta};

/// A server entry at `path` that no server ever had, numbered `seq`.
fn ghost(path: &str, kind: EntryKind, seq: u64) -> Entry {
    let content = b"content the server never had\n";
    let file = kind == EntryKind::File;
    Entry {
        path: RelPath::new(path).unwrap(),
        kind,
        deleted: false,
        size: if file { content.len() as u64 } else { 0 },
        mtime_ns: 1,
        mode: if file { 0o644 } else { 0o755 },
        hash: Hash([7; 32]),
        blocks: if file {
            vec![BlockInfo {
                hash: Hash([7; 32]),
                size: content.len() as u32,
            }]
        } else {
            Vec::new()
        },
        target: String::new(),
        seq,
        origin: DeviceId::new("server").unwrap(),
        conflict: None,
        renamed_from: None,
    }
}

/// B's view of the server lists two directories the server never had, a file in each
/// and a file beside them; B also holds both directories on disk as if it had taken
/// them from the server, one with a file of its own that nobody has seen yet. B reads
/// the server's index again: the files it asked for are forgotten, the empty directory
/// goes, its own file is kept and sent (so its directory stays, everywhere), and nothing
/// stays pending.
#[test]
fn a_device_whose_view_drifted_reads_the_servers_index_again() {
    let cl = Cluster::new(2);
    let a = cl.a().folder_dir(DOCS);
    files::write(&a.join("keep.txt"), "keep\n");
    cl.settle(DOCS);

    cl.b().stop();
    {
        let index = Index::open(&cl.b().folder_index(DOCS)).unwrap();
        let since = index.meta(Meta::Since).unwrap().unwrap() as u64;
        let b_dir = cl.b().folder_dir(DOCS);
        // As the soak left them: directories taken from the server, empty here, and
        // files in them the server never had. One also holds a file of B's own.
        for dir in ["ghost", "stale"] {
            let entry = ghost(dir, EntryKind::Dir, since);
            index.put_remote(&entry, since).unwrap();
            let file = ghost(&format!("{dir}/f.txt"), EntryKind::File, since);
            index.put_remote(&file, since).unwrap();
            fs::create_dir(b_dir.join(dir)).unwrap();
            let row = LocalRow {
                entry,
                inode: fs::metadata(b_dir.join(dir)).unwrap().ino(),
                dirty: false,
            };
            index.put_local(&row).unwrap();
        }
        let beside = ghost("beside.txt", EntryKind::File, since);
        index.put_remote(&beside, since).unwrap();
        files::write(&b_dir.join("ghost/mine.txt"), "mine\n");
    }
    cl.b().start();

    let b_log = || cl.b().log_text();
    let converged = cl.b().wait(DOCS, filesync_tests::SYNC_TIMEOUT);
    assert!(
        converged.status.success(),
        "B did not converge: {}\n{}",
        filesync_tests::node::describe(&converged),
        b_log()
    );
    assert!(
        b_log().contains("read the server's whole index again"),
        "B converged without a refresh:\n{}",
        b_log()
    );
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "keep.txt", b"keep\n");
    cl.assert_file_everywhere(DOCS, "ghost/mine.txt", b"mine\n");
    cl.assert_absent_everywhere(DOCS, "ghost/f.txt");
    cl.assert_absent_everywhere(DOCS, "stale");
    cl.assert_absent_everywhere(DOCS, "beside.txt");
    let status = cl.b().folder_status(DOCS);
    assert_eq!(status["state"], "idle", "{status}");
}

/// B's view of the server lost its entry of a file B holds: B's edit of it goes out
/// based on nothing, the server refuses it as a conflict with its version, and that
/// version never comes down the stream again. After a while B reads the server's index
/// again, finds the version its edit is based on, and sends the edit on top of it: no
/// conflict copy, nothing pending.
#[test]
fn a_refused_push_that_never_sees_the_servers_version_reads_the_index_again() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "f.txt"), "from a\n");
    cl.settle(DOCS);

    cl.b().stop();
    let db = rusqlite::Connection::open(cl.b().folder_index(DOCS)).unwrap();
    let removed = db
        .execute("DELETE FROM remote WHERE path = 'f.txt'", [])
        .unwrap();
    assert_eq!(removed, 1, "B's index had the server's entry of f.txt");
    drop(db);
    cl.b().start();
    cl.b().assert_in_sync(DOCS, filesync_tests::SYNC_TIMEOUT);

    files::write(&cl.path_on(1, DOCS, "f.txt"), "edited on b\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "f.txt", b"edited on b\n");
    assert_eq!(cl.b().conflicts(DOCS).len(), 0, "no conflict copy");
    let b_log = cl.b().log_text();
    assert!(
        b_log.contains("never arrived: reading the server's whole index again"),
        "B converged without a refresh:\n{b_log}"
    );
}
