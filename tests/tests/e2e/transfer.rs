//! Chunked transfer (brief §2.5, §2.8): only the blocks a replica lacks cross the wire.
//! An edit in the middle, an insertion at the start, an append, a truncation and a copy
//! of a large file each move a small part of it; a file over 1 GiB syncs; a file whose
//! block list needs several frames syncs; a download or an upload interrupted by a killed
//! daemon resumes where it stopped.
//!
//! Every step checks the content on the receiving replicas against the SHA-256 of what
//! was written, and the file content the daemons counted in `status --json`.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::tree::{sha256, sha256_file};
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, poll_until};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The size of the "large file" the edits work on.
const LARGE: usize = 64 * MIB as usize;
/// The largest block the daemon cuts; an edit may change the blocks on either side.
const MAX_BLOCK: u64 = 256 * KIB;
/// How long one large transfer may take on the 2-core CI machines, debug build.
const LARGE_TIMEOUT: Duration = Duration::from_secs(180);

/// File content moved during one step.
#[derive(Debug)]
struct Moved {
    /// Content A sent to the server.
    a_sent: u64,
    /// Content B received from the server.
    b_received: u64,
    /// Content B copied from its own files.
    b_reused: u64,
}

fn grew(what: &str, before: u64, after: u64) -> u64 {
    after
        .checked_sub(before)
        .unwrap_or_else(|| panic!("{what} went backwards: {before} -> {after}"))
}

/// Waits (cheaply, on B's counters) until B has applied `n` files since its counter of
/// applied files read `before`, so that comparing the trees does not hash gigabytes
/// over and over while the transfer runs.
fn wait_downloads(cl: &Cluster, before: u64, n: u64, timeout: Duration) {
    poll_until(timeout, || {
        let now = cl.b().counters(DOCS);
        if now.files_downloaded >= before + n {
            Ok(())
        } else {
            Err(format!("B applied fewer than {n} files; counters {now:?}"))
        }
    })
    .unwrap_or_else(|why| panic!("B did not get the new content: {why}"));
}

/// Where a test prepares a file before it moves it into A's folder in one rename, so
/// that A's watcher never sees it half written: A's home, beside the folder.
fn staging(cl: &Cluster, name: &str) -> PathBuf {
    cl.root().join(cl.a().name()).join(name)
}

/// Moves a prepared file into A's folder at `rel`.
fn move_in(cl: &Cluster, staged: &Path, rel: &str) {
    let to = cl.path_on(0, DOCS, rel);
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::rename(staged, &to).unwrap_or_else(|e| panic!("cannot move {rel} in: {e}"));
}

/// `rel` on B and on the server holds content with the hex SHA-256 `want`.
fn assert_hash_on_receivers(cl: &Cluster, rel: &str, want: &str) {
    for path in [cl.path_on(1, DOCS, rel), cl.server_path(DOCS, rel)] {
        let got = sha256_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{} holds other content", path.display());
    }
}

/// Lets `change` alter A's folder, waits until B applied `downloads` files and every
/// replica agrees, checks `rel` by hash on B and the server against `want`, and returns
/// what moved meanwhile.
fn step(cl: &Cluster, downloads: u64, rel: &str, want: &str, change: impl FnOnce()) -> Moved {
    let (a0, b0) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    change();
    wait_downloads(cl, b0.files_downloaded, downloads, LARGE_TIMEOUT);
    cl.settle(DOCS);
    assert_hash_on_receivers(cl, rel, want);
    let (a1, b1) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    Moved {
        a_sent: grew(
            "A content_bytes_sent",
            a0.content_bytes_sent,
            a1.content_bytes_sent,
        ),
        b_received: grew(
            "B content_bytes_received",
            b0.content_bytes_received,
            b1.content_bytes_received,
        ),
        b_reused: grew(
            "B content_bytes_reused",
            b0.content_bytes_reused,
            b1.content_bytes_reused,
        ),
    }
}

/// A cluster whose replicas all hold `big.bin`, [`LARGE`] pseudo-random bytes, and the
/// bytes. Checks that the first sync did move the whole file, so that the small figures
/// of the later steps cannot come from counters that count nothing.
fn with_large_file(seed: u64) -> (Cluster, Vec<u8>) {
    let cl = Cluster::new(2);
    let content = pseudo_random(seed, LARGE);
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        let staged = staging(&cl, "big.bin");
        files::write(&staged, &content);
        move_in(&cl, &staged, "big.bin");
    });
    let len = LARGE as u64;
    assert!(
        moved.a_sent >= len && moved.b_received >= len,
        "the first sync of {len} bytes counted {moved:?}"
    );
    (cl, content)
}

/// Asserts `got <= limit` with the step's figures in the message.
fn at_most(what: &str, got: u64, limit: u64, moved: &Moved) {
    assert!(
        got <= limit,
        "{what}: {got} bytes, expected at most {limit} ({moved:?})"
    );
}

#[test]
fn an_edit_in_the_middle_moves_about_the_edit() {
    let (cl, mut content) = with_large_file(300);
    let mid = content.len() / 2 + 12_345;
    content[mid..mid + MIB as usize].copy_from_slice(&pseudo_random(301, MIB as usize));
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        let file = File::options()
            .write(true)
            .open(cl.path_on(0, DOCS, "big.bin"))
            .unwrap();
        file.write_all_at(&content[mid..mid + MIB as usize], mid as u64)
            .unwrap();
    });
    let limit = MIB + 2 * MAX_BLOCK;
    at_most("A sent", moved.a_sent, limit, &moved);
    at_most("B received", moved.b_received, limit, &moved);
    assert!(
        moved.b_received >= MIB,
        "B cannot have the edit without receiving it: {moved:?}"
    );
    assert!(
        moved.b_reused >= LARGE as u64 - limit,
        "B should copy the rest from its old version: {moved:?}"
    );
}

#[test]
fn an_insertion_at_the_start_moves_a_block_or_two() {
    let (cl, content) = with_large_file(310);
    let mut edited = vec![b'!'];
    edited.extend_from_slice(&content);
    let moved = step(&cl, 1, "big.bin", &sha256(&edited), || {
        // As an editor saves: the new content beside, then renamed over the old.
        let staged = staging(&cl, "big.bin");
        files::write(&staged, &edited);
        move_in(&cl, &staged, "big.bin");
    });
    let limit = 2 * MAX_BLOCK;
    at_most("A sent", moved.a_sent, limit, &moved);
    at_most("B received", moved.b_received, limit, &moved);
}

#[test]
fn an_append_moves_the_new_tail() {
    let (cl, mut content) = with_large_file(320);
    let tail = pseudo_random(321, MIB as usize);
    content.extend_from_slice(&tail);
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        let file = File::options()
            .append(true)
            .open(cl.path_on(0, DOCS, "big.bin"))
            .unwrap();
        file.write_all_at(&tail, LARGE as u64).unwrap();
    });
    let limit = MIB + 2 * MAX_BLOCK;
    at_most("A sent", moved.a_sent, limit, &moved);
    at_most("B received", moved.b_received, limit, &moved);
}

#[test]
fn a_truncation_moves_at_most_the_new_last_block() {
    let (cl, mut content) = with_large_file(330);
    let keep = content.len() / 3 + 777;
    content.truncate(keep);
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        File::options()
            .write(true)
            .open(cl.path_on(0, DOCS, "big.bin"))
            .unwrap()
            .set_len(keep as u64)
            .unwrap();
    });
    at_most("A sent", moved.a_sent, MAX_BLOCK, &moved);
    at_most("B received", moved.b_received, MAX_BLOCK, &moved);
}

#[test]
fn a_copy_moves_no_content() {
    let (cl, content) = with_large_file(340);
    let moved = step(&cl, 1, "copy/big-copy.bin", &sha256(&content), || {
        let staged = staging(&cl, "big-copy.bin");
        fs::copy(cl.path_on(0, DOCS, "big.bin"), &staged).unwrap();
        move_in(&cl, &staged, "copy/big-copy.bin");
    });
    at_most("A sent", moved.a_sent, 0, &moved);
    at_most("B received", moved.b_received, 0, &moved);
    assert!(moved.b_reused >= LARGE as u64, "{moved:?}");
    assert_hash_on_receivers(&cl, "big.bin", &sha256(&content));
}

/// A sparse file over 1 GiB: mostly a hole (zero blocks, never fetched, left as holes),
/// with pseudo-random islands at the start, across the 1 GiB mark and at the end, so that
/// a misplaced block or an offset cut to 32 bits shows in the content. It stays sparse on
/// the server and on B.
#[test]
fn a_file_over_one_gib_syncs_exactly() {
    let cl = Cluster::new(2);
    let size = (1 << 30) + 100 * MIB + 12_345;
    let islands = [(0, 1), ((1 << 30) - 300 * KIB, 2), (size - MIB, 3)];
    let staged = staging(&cl, "huge.img");
    {
        let file = File::create(&staged).unwrap();
        file.set_len(size).unwrap();
        for (at, seed) in islands {
            file.write_all_at(&pseudo_random(seed, MIB as usize), at)
                .unwrap();
        }
    }
    let want = sha256_file(&staged).unwrap();
    let b0 = cl.b().counters(DOCS);
    let a0 = cl.a().counters(DOCS);
    move_in(&cl, &staged, "huge.img");
    wait_downloads(&cl, b0.files_downloaded, 1, LARGE_TIMEOUT);
    for node in [cl.a(), cl.b()] {
        node.assert_in_sync(DOCS, SYNC_TIMEOUT);
    }
    assert_hash_on_receivers(&cl, "huge.img", &want);
    for path in [
        cl.path_on(1, DOCS, "huge.img"),
        cl.server_path(DOCS, "huge.img"),
    ] {
        let on_disk = fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            on_disk < 64 * MIB,
            "{} takes {on_disk} bytes on disk for 3 MiB of data",
            path.display()
        );
    }
    cl.check_oracle(DOCS, &[0, 1]);
    let (a1, b1) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    let moved = Moved {
        a_sent: grew("A sent", a0.content_bytes_sent, a1.content_bytes_sent),
        b_received: grew(
            "B received",
            b0.content_bytes_received,
            b1.content_bytes_received,
        ),
        b_reused: grew("B reused", b0.content_bytes_reused, b1.content_bytes_reused),
    };
    // The islands and the blocks around them.
    let limit = 3 * MIB + 6 * MAX_BLOCK;
    at_most("A sent", moved.a_sent, limit, &moved);
    at_most("B received", moved.b_received, limit, &moved);
    assert!(moved.b_received >= 3 * MIB, "{moved:?}");
}

/// The frame limit the daemons of [`a_block_list_longer_than_a_frame_travels_in_pieces`]
/// run with (`FILESYNC_TEST_MAX_FRAME`): room for a block of 256 KiB, and pieces of 256
/// blocks, so that [`LARGE`] bytes (about 1,000 blocks) need four frames for their list.
const SMALL_FRAME: u64 = 320 * KIB;

/// A file whose block list does not fit in one frame syncs both ways (A pushes it to the
/// server in pieces, the server's index stream sends it to B in pieces), and an edit of it
/// after that too. The senders' logs show the pieces (at this frame limit the whole list
/// would still fit in one frame: a list that does not needs a file of about 600 MiB).
#[test]
fn a_block_list_longer_than_a_frame_travels_in_pieces() {
    let cl = Cluster::new(2);
    for node in [cl.server(), cl.a(), cl.b()] {
        node.set_daemon_env("FILESYNC_TEST_MAX_FRAME", SMALL_FRAME.to_string());
        node.stop();
        node.start();
    }
    let mut content = pseudo_random(320, LARGE);
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        let staged = staging(&cl, "big.bin");
        files::write(&staged, &content);
        move_in(&cl, &staged, "big.bin");
    });
    assert!(moved.b_received >= LARGE as u64, "{moved:?}");
    for node in [cl.a(), cl.server()] {
        let log = node.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("the block list goes ahead in pieces") && l.contains("big.bin")),
            "{} sent no block list in pieces",
            node.name()
        );
    }
    let at = content.len() / 3;
    content[at..at + 1000].copy_from_slice(&pseudo_random(321, 1000));
    let moved = step(&cl, 1, "big.bin", &sha256(&content), || {
        let file = File::options()
            .write(true)
            .open(cl.path_on(0, DOCS, "big.bin"))
            .unwrap();
        file.write_all_at(&content[at..at + 1000], at as u64)
            .unwrap();
    });
    at_most("B received", moved.b_received, 2 * MAX_BLOCK + 1000, &moved);
    cl.check_oracle(DOCS, &[0, 1]);
}

/// The size of the file an interrupted transfer moves: large enough that a daemon can
/// be killed while it is under way.
const INTERRUPTED: u64 = 384 * MIB;

/// The largest `.filesync*` file directly in `dir` (where the daemon receives a file
/// for that directory), with its size.
fn largest_daemon_file(dir: &Path) -> Option<(PathBuf, u64)> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".filesync"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (e.path(), meta.len()))
        })
        .max_by_key(|(_, len)| *len)
}

/// Waits until the daemon receiving `target` holds at least a quarter of it in a
/// temp file, then SIGKILLs `node`; returns how much the temp file holds after the kill.
fn kill_mid_transfer(node: &Node, target: &Path) -> u64 {
    let dir = target.parent().expect("a target has a directory");
    poll_until(LARGE_TIMEOUT, || {
        if target.exists() {
            return Err(format!(
                "{} was complete before the transfer could be interrupted; make the file larger",
                target.display()
            ));
        }
        match largest_daemon_file(dir) {
            Some((_, len)) if len >= INTERRUPTED / 4 => Ok(()),
            found => Err(format!("the transfer has not got far: {found:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("no transfer to interrupt: {why}"));
    node.kill();
    assert!(
        !target.exists(),
        "{} completed before the kill; make the file larger",
        target.display()
    );
    let (_, kept) = largest_daemon_file(dir).expect("the partial transfer is gone after a kill");
    kept
}

/// After a restart, a resumed transfer moved what the partial file (`kept` bytes long
/// when the sender or receiver was killed) lacked: at most that, the gaps before the
/// blocks that arrived before their turn (written at their offsets, so counted in its
/// length; the pipeline holds 16) and a block the killed daemon may have been writing.
/// And about as much at least, since nothing else holds this content, so that a counter
/// that counts nothing fails too; a receiver that outlived the kill (the server of an
/// upload) may have written the 16 blocks it had asked for.
fn assert_resumed(what: &str, moved: u64, kept: u64) {
    let missing = INTERRUPTED - kept;
    let least = missing.saturating_sub(16 * MAX_BLOCK);
    assert!(
        (least..=missing + 17 * MAX_BLOCK).contains(&moved),
        "after the restart {what} {moved} content bytes; {kept} of {INTERRUPTED} were \
         already there, so {missing} (give or take a few blocks) were missing"
    );
}

/// Brief §2.11: while `node` downloads `target`, its status says so: syncing, the file
/// pending, content coming in at some rate, in `--json` and in the human form.
fn assert_status_shows_the_download(node: &Node, target: &Path) {
    let seen = poll_until(LARGE_TIMEOUT, || {
        if target.exists() {
            return Err(format!(
                "{} was complete before its download showed in status",
                target.display()
            ));
        }
        let f = node.folder_status(DOCS);
        let moving = f["state"] == "syncing"
            && f["pending_down_files"] == 1
            && f["pending_down_bytes"] == INTERRUPTED
            && f["rate_down_bps"].as_u64().is_some_and(|r| r > 0);
        if moving {
            Ok(f)
        } else {
            Err(format!("status does not show the download yet: {f}"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let human = node.ctl_ok(["status", DOCS]);
    assert!(
        human.contains("down 1 file (384.0 MiB)") && human.contains("  rate:      up 0 B/s, down "),
        "`status` does not show the download ({seen}):\n{human}"
    );
}

/// Brief §2.8: B's daemon is killed while it downloads a large file; once it runs again,
/// it asks only for the blocks it did not have, and the file is exact.
#[test]
fn an_interrupted_download_resumes_after_a_restart() {
    let cl = Cluster::new(2);
    cl.pause(1, DOCS);
    let staged = staging(&cl, "big.bin");
    let want = files::write_pseudo_random(&staged, 350, INTERRUPTED);
    move_in(&cl, &staged, "big.bin");
    cl.a().assert_in_sync(DOCS, LARGE_TIMEOUT);
    cl.resume(1, DOCS);
    let target = cl.path_on(1, DOCS, "big.bin");
    assert_status_shows_the_download(cl.b(), &target);
    let kept = kill_mid_transfer(cl.b(), &target);

    cl.b().start();
    // A restarted daemon counts from zero.
    wait_downloads(&cl, 0, 1, LARGE_TIMEOUT);
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert_hash_on_receivers(&cl, "big.bin", &want);
    cl.check_oracle(DOCS, &[0, 1]);
    let received = cl.b().counters(DOCS).content_bytes_received;
    assert_resumed("B received", received, kept);
}

/// The same for an upload: A's daemon is killed while the server stages its file; once
/// A runs again, the server asks A only for the blocks it did not have.
#[test]
fn an_interrupted_upload_resumes_after_a_restart() {
    let cl = Cluster::new(1);
    let staged = staging(&cl, "big.bin");
    let want = files::write_pseudo_random(&staged, 360, INTERRUPTED);
    move_in(&cl, &staged, "big.bin");
    let target = cl.server_path(DOCS, "big.bin");
    let kept = kill_mid_transfer(cl.a(), &target);

    cl.a().start();
    cl.a().assert_in_sync(DOCS, LARGE_TIMEOUT);
    let got = sha256_file(&target).unwrap();
    assert_eq!(got, want, "the server's copy differs");
    cl.check_oracle(DOCS, &[0]);
    let sent = cl.a().counters(DOCS).content_bytes_sent;
    assert_resumed("A sent", sent, kept);
}

/// A download cut off by a kill leaves its partial transfer in the file's directory. If
/// that directory is deleted elsewhere meanwhile, the restarted device deletes it too,
/// partial and all: a cache of ours must not keep alive, on one device only, a
/// directory everyone else has deleted (the 30-minute soak found one so kept).
#[test]
fn a_directory_deleted_elsewhere_goes_with_an_interrupted_downloads_partial() {
    let cl = Cluster::new(2);
    cl.pause(1, DOCS);
    let staged = staging(&cl, "big.bin");
    files::write_pseudo_random(&staged, 370, INTERRUPTED);
    move_in(&cl, &staged, "d/big.bin");
    cl.a().assert_in_sync(DOCS, LARGE_TIMEOUT);
    cl.resume(1, DOCS);
    let target = cl.path_on(1, DOCS, "d/big.bin");
    kill_mid_transfer(cl.b(), &target);

    fs::remove_dir_all(cl.path_on(0, DOCS, "d")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert!(
        !cl.server_path(DOCS, "d").exists(),
        "the server still has d after A deleted it"
    );
    cl.b().start();
    cl.settle(DOCS);
    let kept = cl.path_on(1, DOCS, "d");
    let held: Vec<_> = fs::read_dir(&kept)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !kept.exists(),
        "B kept {}, holding {held:?}",
        kept.display()
    );
}
