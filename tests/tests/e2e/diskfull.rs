//! A full disk (shared/test-matrix.md F9): on a client's folder, then on the server's
//! data dir (its index included). A small tmpfs is mounted for the test, so these run
//! as root only (CI is root); elsewhere they say why and return.
//!
//! What must hold: no file is replaced by a truncated one, no temp or partial file is
//! left to eat the space, the folder's status and log say "disk full" naming the folder
//! and the file, the server refuses a push it cannot store and keeps its index in step
//! with its tree, and sync resumes by itself once space is freed.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::run_with_timeout;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::node::{TEST_MIN_FREE_SPACE, describe};
use filesync_tests::tree::{manifest, stray_temp_files_excluding};
use filesync_tests::{Cluster, SYNC_TIMEOUT, poll_until, server_store};

/// The size of each test filesystem.
const TMPFS_SIZE: &str = "8m";
/// The filler that takes a full disk's space; `*.part` is ignored, so it never syncs.
const FILLER: &str = "filler.part";

/// A tmpfs mounted on a directory for one test; unmounted on drop, even when the test
/// panics (lazily, as the daemon may still hold it open).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a fresh tmpfs on `dir`; `None`, with the reason printed, when not root.
    fn mount(dir: &Path) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs for a full disk needs root (CI is root)");
            return None;
        }
        fs::create_dir_all(dir).expect("cannot create the mount point");
        let out = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={TMPFS_SIZE},mode=0755"))
                .arg("tmpfs")
                .arg(dir),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "mount failed: {}", describe(&out));
        Some(Tmpfs(dir.to_owned()))
    }

    /// Mounts a fresh tmpfs on the existing directory `dir`, with what `dir` held copied
    /// onto it. The daemon that uses `dir` must be stopped.
    fn mount_keeping(dir: &Path) -> Option<Tmpfs> {
        let saved = dir.with_extension("saved");
        fs::rename(dir, &saved).expect("cannot move the directory aside");
        let Some(disk) = Tmpfs::mount(dir) else {
            fs::rename(&saved, dir).expect("cannot move the directory back");
            return None;
        };
        let out = run_with_timeout(
            Command::new("cp").arg("-a").arg(saved.join(".")).arg(dir),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "cp failed: {}", describe(&out));
        fs::remove_dir_all(&saved).expect("cannot remove the saved directory");
        Some(disk)
    }

    /// Fills the filesystem with `dir/FILLER` until a write fails for lack of space.
    fn fill(&self, dir: &Path) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILLER))
            .expect("cannot create the filler");
        let chunk = vec![0x5a; 64 * 1024];
        // 8 MiB hold at most 128 chunks; the bound keeps a mount that never fills finite.
        for _ in 0..1024 {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                return;
            }
        }
        panic!("{} never filled up", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new("umount").arg("-l").arg(&self.0),
            Duration::from_secs(10),
        );
    }
}

/// Daemon temp and partial files under `root`, the filler aside.
fn leftovers(root: &Path) -> Vec<String> {
    stray_temp_files_excluding(root, &|p| p == FILLER).expect("cannot walk the folder")
}

/// Waits until `node`'s log has a line holding every one of `words`.
fn wait_for_log_line(node: &filesync_tests::Node, words: &[&str]) {
    filesync_tests::hostile::wait_for_log_line(|| node.log_text(), words, SYNC_TIMEOUT)
        .unwrap_or_else(|why| panic!("{}: {why}\n{}", node.name(), node.log_text()));
}

/// Client B's folder fills up: a new file larger than the space left and an edit that
/// no longer fits both fail with "disk full" in status and log, B's old copy stays whole,
/// no temp file is left; deleting the filler lets B catch up without any command.
#[test]
fn a_full_client_folder_keeps_old_files_and_resumes_when_space_is_freed() {
    let cl = Cluster::without_folders(2, Some("open"));
    let b_dir = cl.folder_dir(1, DOCS);
    let Some(disk) = Tmpfs::mount(&b_dir) else {
        return;
    };
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    let old_edit = pseudo_random(900, 300_000);
    files::write(&cl.path_on(0, DOCS, "edit.bin"), &old_edit);
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"small and synced\n");
    cl.settle(DOCS);

    disk.fill(&b_dir);
    let new_edit = pseudo_random(901, 400_000);
    let big = pseudo_random(902, 2 * 1024 * 1024);
    files::write(&cl.path_on(0, DOCS, "edit.bin"), &new_edit);
    files::write(&cl.path_on(0, DOCS, "big.bin"), &big);

    cl.note("B's disk is full: expecting disk-full errors");
    let b = cl.b();
    for file in ["edit.bin", "big.bin"] {
        wait_for_log_line(
            b,
            &["cannot apply", file, "No space left on device", "disk full"],
        );
    }
    let status = b.folder_status(DOCS);
    let error = status["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("disk full")
            && error.contains(&format!("folder {DOCS}"))
            && (error.contains("edit.bin") || error.contains("big.bin")),
        "B's status should say its folder's disk is full, naming the file: {status}"
    );
    assert_ne!(status["state"], "idle", "B cannot be in sync: {status}");
    // Between retries nothing of the failed downloads stays to hold the space.
    poll_until(Duration::from_secs(20), || {
        let left = leftovers(&b_dir);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("temp files left in B's full folder: {left:?}"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    files::assert_file(&cl.path_on(1, DOCS, "edit.bin"), &old_edit);
    files::assert_absent(&cl.path_on(1, DOCS, "big.bin"));

    cl.note("freeing B's disk");
    fs::remove_file(b_dir.join(FILLER)).expect("cannot remove the filler");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "edit.bin", &new_edit);
    cl.assert_file_everywhere(DOCS, "big.bin", &big);
    drop(disk);
}

/// The server's data dir fills up, index included: A's new file and its edit are refused
/// with "server low on disk space" before anything is staged, its new directories with
/// "server disk full" at the commit, the server's copy and
/// B keep the old content, and once space is freed A sends them again by itself and the
/// server's index agrees with its tree.
#[test]
fn a_full_server_refuses_pushes_cleanly_and_takes_them_once_space_is_freed() {
    let cl = Cluster::without_folders(2, Some("open"));
    let server = cl.server();
    let data = server.data_dir().to_owned();
    // The server made its key and account store at start: they move onto the tmpfs.
    server.stop();
    // This test fills the disk itself: the server's free-space reserve (default 1 GiB,
    // larger than the whole tmpfs) is off in the fixture, so that writes reach the full
    // disk.
    assert!(
        fs::read_to_string(server.config_path())
            .unwrap()
            .contains(&format!("min_free_space = \"{TEST_MIN_FREE_SPACE}\"")),
        "the fixture no longer turns the reserve off"
    );
    let Some(disk) = Tmpfs::mount_keeping(&data) else {
        server.start();
        return;
    };
    server.start();
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    let old = pseudo_random(910, 200_000);
    files::write(&cl.path_on(0, DOCS, "keep.bin"), &old);
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"first\n");
    cl.settle(DOCS);

    disk.fill(&data);
    let new = pseudo_random(911, 300_000);
    let fresh = pseudo_random(912, 500_000);
    files::write(&cl.path_on(0, DOCS, "keep.bin"), &new);
    files::write(&cl.path_on(0, DOCS, "fresh.bin"), &fresh);
    // Empty directories need no data blocks on the server, only index rows: they reach
    // the commit, where the index cannot grow.
    for i in 0..40 {
        fs::create_dir(cl.path_on(0, DOCS, &format!("dir{i:02}"))).unwrap();
    }

    cl.note("the server's disk is full: expecting refusals");
    let a = cl.a();
    poll_until(SYNC_TIMEOUT, || {
        let status = a.folder_status(DOCS);
        let error = status["last_error"].as_str().unwrap_or_default();
        if error.contains("server disk full") && error.contains("server did not take") {
            Ok(())
        } else {
            Err(format!(
                "A's status does not say the server's disk is full: {status}"
            ))
        }
    })
    .unwrap_or_else(|why| panic!("{why}\n{}", server.log_text()));
    // File content is refused before it is staged, since the disk has less free than
    // the file's size; the directories reach the commit, where the index cannot grow.
    wait_for_log_line(server, &["push refused", "min_free_space", "keep.bin"]);
    wait_for_log_line(
        a,
        &["server did not take keep.bin", "server low on disk space"],
    );
    wait_for_log_line(a, &["server did not take", "server disk full"]);
    let server_copy = cl.server_path(DOCS, "keep.bin");
    files::assert_file(&server_copy, &old);
    files::assert_file(&cl.path_on(1, DOCS, "keep.bin"), &old);
    files::assert_absent(&cl.path_on(1, DOCS, "fresh.bin"));

    cl.note("freeing the server's disk");
    fs::remove_file(data.join(FILLER)).expect("cannot remove the filler");
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "keep.bin", &new);
    cl.assert_file_everywhere(DOCS, "fresh.bin", &fresh);
    assert_eq!(common.len(), 3 + 40, "{common:?}");
    let tree = manifest(&cl.server_dir(DOCS).unwrap()).unwrap();
    server_store::check_index(&server_store::index_file(&data, "open", DOCS), &tree)
        .unwrap_or_else(|why| panic!("the server's index disagrees with its tree: {why}"));
    server.stop();
    drop(disk);
}

/// Client B's index cannot grow (its state dir is full) while its folder has room: the
/// downloads that cannot be recorded fail with "disk full" in B's status, B's index and
/// disk stay consistent, and once space is freed B records what it has and converges
/// without sending anything it should not.
#[test]
fn a_full_client_index_is_reported_and_recovers_when_space_is_freed() {
    let cl = Cluster::without_folders(2, Some("open"));
    let b = cl.b();
    let state = b.state_dir();
    b.stop();
    let Some(disk) = Tmpfs::mount_keeping(&state) else {
        b.start();
        return;
    };
    b.start();
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    files::write(
        &cl.path_on(0, DOCS, "first.txt"),
        b"recorded while there is room\n",
    );
    cl.settle(DOCS);

    disk.fill(&state);
    // Many small files: enough index rows that the index has to grow for them.
    let files_made: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("f{i:03}.bin"), pseudo_random(920 + i, 2_000)))
        .collect();
    for (name, content) in &files_made {
        files::write(&cl.path_on(0, DOCS, name), content);
    }
    cl.note("B's index cannot grow: expecting a disk-full error");
    poll_until(SYNC_TIMEOUT, || {
        let status = b.folder_status(DOCS);
        let error = status["last_error"].as_str().unwrap_or_default();
        if error.contains("disk full") && error.contains(&format!("folder {DOCS}")) {
            Ok(())
        } else {
            Err(format!("B's status does not say disk full: {status}"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}\n{}", b.log_text()));
    files::assert_file(
        &cl.path_on(1, DOCS, "first.txt"),
        b"recorded while there is room\n",
    );

    cl.note("freeing B's state dir");
    fs::remove_file(state.join(FILLER)).expect("cannot remove the filler");
    let common = cl.settle(DOCS);
    assert_eq!(common.len(), 201, "{common:?}");
    for (name, content) in &files_made {
        cl.assert_file_everywhere(DOCS, name, content);
    }
    assert!(
        b.conflicts(DOCS).is_empty(),
        "files B downloaded but could not record are no conflict"
    );
    b.stop();
    drop(disk);
}
