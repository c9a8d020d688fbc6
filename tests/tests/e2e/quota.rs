//! A device cannot exhaust the server (review findings H2 and M2): per-account quotas
//! (`filesyncctl server quota`), the free space the server keeps (`server.min_free_space`),
//! pushes charged at their declared size before anything is written (a file that repeats
//! one block counts in full), the folder limit per account
//! (`server.max_folders_per_account`), and a folder that cannot be opened not stopping
//! the server.

use std::fs;

use filesync_proto::wire::{BlockInfo, ClientMsg, PushOutcome, ServerMsg};
use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::hostile::{self, all_paths, create, file_entry, sha256};
use filesync_tests::node::describe;
use filesync_tests::tree::stray_temp_files;
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, poll_until};
use serde_json::Value;

const MIB: usize = 1 << 20;
/// The account that open registration enrols every device of a [`Cluster`] into.
const OPEN: &str = "open";

/// Waits until client `i`'s status for `folder` has an error holding every one of
/// `words`, and returns it.
fn wait_for_error(cl: &Cluster, i: usize, folder: &str, words: &[&str]) -> String {
    poll_until(SYNC_TIMEOUT, || {
        let status = cl.client(i).folder_status(folder);
        let error = status["last_error"].as_str().unwrap_or_default().to_owned();
        if words.iter().all(|w| error.contains(w)) {
            Ok(error)
        } else {
            Err(format!("status does not say {words:?} yet: {status}"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}\nserver log:\n{}", cl.server().log_text()))
}

/// Waits until the server's copy of `folder` holds `rel` with `content`.
fn wait_on_server(cl: &Cluster, folder: &str, rel: &str, content: &[u8]) {
    poll_until(SYNC_TIMEOUT, || {
        match fs::read(cl.server_path(folder, rel)) {
            Ok(got) if got == content => Ok(()),
            _ => Err(format!("{rel} is not on the server yet")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}\nserver log:\n{}", cl.server().log_text()));
}

/// Nothing named `rel` nor any temp or partial file in the server's data dir.
fn nothing_of(cl: &Cluster, rel: &str) {
    let data = cl.server().data_dir();
    let paths = all_paths(data);
    assert!(
        !paths.iter().any(|p| p.ends_with(rel)),
        "{rel} reached the server: {paths:?}"
    );
    let stray = stray_temp_files(&cl.server_dir(DOCS).unwrap()).unwrap();
    assert!(stray.is_empty(), "left on the server: {stray:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.contains(".filesync-tmp-") || p.contains(".filesync-partial-")),
        "a temp or partial file is on the server: {paths:?}"
    );
}

/// The account `name` of `server devices --json`.
fn account(server: &Node, name: &str) -> Value {
    server
        .server_accounts()
        .into_iter()
        .find(|a| a["account"] == name)
        .unwrap_or_else(|| panic!("no account {name} in server devices"))
}

#[test]
fn a_push_over_the_quota_is_refused_before_anything_is_written() {
    let cl = Cluster::new(1);
    let small = b"fits\n";
    files::write(&cl.path_on(0, DOCS, "small.txt"), small);
    cl.settle(DOCS);
    let server = cl.server();
    let said = server.ctl_ok(["server", "quota", OPEN, "1MiB"]);
    assert!(said.contains("quota of 1.0 MiB"), "{said}");
    let open = account(server, OPEN);
    assert_eq!(open["quota"], 1 << 20, "{open}");
    assert_eq!(open["used"], small.len(), "{open}");
    let human = server.ctl_ok(["server", "devices"]);
    assert!(human.contains("uses 5 B of 1.0 MiB"), "{human}");

    files::write(&cl.path_on(0, DOCS, "big.bin"), pseudo_random(5, 2 * MIB));
    let error = wait_for_error(
        &cl,
        0,
        DOCS,
        &["big.bin", "quota exceeded (used 5 B of 1.0 MiB)"],
    );
    assert!(
        error.contains("filesyncctl server quota open SIZE"),
        "the error says what to do: {error}"
    );
    nothing_of(&cl, "big.bin");

    let later = b"smaller files still sync\n";
    files::write(&cl.path_on(0, DOCS, "later.txt"), later);
    wait_on_server(&cl, DOCS, "later.txt", later);
    nothing_of(&cl, "big.bin");

    // Raised: the refused file goes through on the device's next try.
    server.ctl_ok(["server", "quota", OPEN, "none"]);
    assert_eq!(account(server, OPEN)["quota"], Value::Null);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "big.bin", &pseudo_random(5, 2 * MIB));
}

#[test]
fn a_file_of_one_repeated_block_counts_its_full_size() {
    let cl = Cluster::new(1);
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"before\n");
    cl.settle(DOCS);
    let server = cl.server();
    server.ctl_ok(["server", "quota", OPEN, "1MiB"]);

    // 16 MiB that are one 1 MiB block sixteen times: what the server would fetch once
    // and write sixteen times. Its distinct content would fit in the quota; its size
    // does not.
    let block = pseudo_random(16, MIB);
    let content = block.repeat(16);
    let mut entry = file_entry("repeated.bin", &block);
    entry.size = content.len() as u64;
    entry.hash = sha256(&content);
    entry.blocks = vec![
        BlockInfo {
            hash: sha256(&block),
            size: MIB as u32,
        };
        16
    ];
    let (mut dev, _) = hostile::connect(&server.server_addr(), "hostile", DOCS).unwrap();
    let asked = std::cell::Cell::new(0);
    let outcomes = dev
        .push(1, vec![create(entry)], &|request| {
            asked.set(asked.get() + 1);
            hostile::serve_from(&content, request)
        })
        .unwrap();
    match outcomes.as_slice() {
        [PushOutcome::Failed { reason }] => assert!(
            reason.contains("quota exceeded (used 7 B of 1.0 MiB)")
                && reason.contains("repeated.bin (16.0 MiB)"),
            "{reason}"
        ),
        other => panic!("the push was not refused: {other:?}"),
    }
    assert_eq!(
        asked.get(),
        0,
        "the server asked for blocks of a refused push"
    );
    nothing_of(&cl, "repeated.bin");

    // The same file written on a real device is refused the same way.
    files::write(&cl.path_on(0, DOCS, "repeated.bin"), &content);
    wait_for_error(
        &cl,
        0,
        DOCS,
        &["repeated.bin", "quota exceeded (used 7 B of 1.0 MiB)"],
    );
    nothing_of(&cl, "repeated.bin");
}

#[test]
fn a_push_below_the_free_space_reserve_is_refused() {
    let cl = Cluster::new(1);
    let server = cl.server();
    // More than any test machine has free: every push with content is refused.
    server.restart_with_server_lines("min_free_space = \"1PiB\"\n");
    files::write(&cl.path_on(0, DOCS, "blocked.txt"), b"no room\n");
    let error = wait_for_error(
        &cl,
        0,
        DOCS,
        &[
            "blocked.txt",
            "server low on disk space",
            "server.min_free_space",
        ],
    );
    assert!(error.contains("1.0 PiB is kept free"), "{error}");
    nothing_of(&cl, "blocked.txt");
    let status = server.status_json();
    assert_eq!(status["server"]["min_free_space"], 1u64 << 50, "{status}");
    assert!(
        status["server"]["free_bytes"].as_u64().is_some(),
        "{status}"
    );
}

#[test]
fn max_folders_per_account_refuses_one_more() {
    let cl = Cluster::without_folders(1, Some(OPEN));
    cl.server()
        .restart_with_server_lines("max_folders_per_account = 2\n");
    for folder in ["one", "two"] {
        cl.add_folder(0, folder);
        files::write(&cl.path_on(0, folder, "f.txt"), folder.as_bytes());
        cl.settle(folder);
    }
    let args = cl.add_args(0, "three");
    let out = cl.client(0).ctl(args);
    let said = describe(&out);
    let error = if out.status.success() {
        // The folder was added; its connection is refused.
        wait_for_error(&cl, 0, "three", &["server.max_folders_per_account"])
    } else {
        said.clone()
    };
    assert!(
        error.contains("account open already has 2 folders")
            && error.contains("server.max_folders_per_account"),
        "{error}"
    );
    assert!(
        !cl.server().data_dir().join(OPEN).join("three").exists(),
        "the third folder was created"
    );
    // The two folders it has still sync.
    files::write(&cl.path_on(0, "two", "g.txt"), b"still\n");
    wait_on_server(&cl, "two", "g.txt", b"still\n");
}

#[test]
fn a_folder_that_cannot_be_opened_does_not_stop_the_server() {
    let cl = Cluster::new(1);
    cl.add_folder(0, "other");
    files::write(&cl.path_on(0, "other", "o.txt"), b"other\n");
    cl.settle("other");
    let server = cl.server();
    cl.client(0).ctl_ok(["pause", "other"]);
    server.stop();
    // The index of `other` cannot be opened: a directory stands where its file was.
    let index = server
        .data_dir()
        .join(".filesync/index")
        .join(OPEN)
        .join("other.db");
    for suffix in ["", "-wal", "-shm"] {
        let file = index.with_file_name(format!("other.db{suffix}"));
        if file.exists() {
            fs::remove_file(&file).unwrap();
        }
    }
    fs::create_dir(&index).unwrap();
    server.start();

    let problem = poll_until(SYNC_TIMEOUT, || {
        let status = server.status_json();
        let problems = status["server"]["folder_problems"].as_array().cloned();
        problems
            .unwrap_or_default()
            .into_iter()
            .find(|p| p["name"] == "other")
            .ok_or_else(|| format!("server status does not show the folder: {status}"))
    })
    .unwrap();
    assert!(
        problem["path"].as_str().unwrap().ends_with("open/other"),
        "{problem}"
    );
    assert!(!problem["error"].as_str().unwrap().is_empty(), "{problem}");
    let human = server.ctl_ok(["status"]);
    assert!(human.contains("open/other  NOT SERVED"), "{human}");
    assert!(
        server.log_text().contains("cannot open the folder"),
        "the server logs why"
    );

    // The other folder syncs.
    let content = b"the rest of the server still works\n";
    files::write(&cl.path_on(0, DOCS, "after.txt"), content);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "after.txt", content);
}

#[test]
fn an_idle_folder_is_closed_and_what_changed_meanwhile_is_found_when_it_opens() {
    let cl = Cluster::new(1);
    let server = cl.server();
    server.stop();
    server.set_daemon_env(filesyncd::server::FOLDER_IDLE_ENV, "1");
    server.start();
    files::write(&cl.path_on(0, DOCS, "first.txt"), b"first\n");
    cl.settle(DOCS);

    // No device uses the folder: after its idle period its sequencer, index and watcher
    // are closed.
    cl.client(0).ctl_ok(["pause", DOCS]);
    hostile::wait_for_log_line(
        || server.log_text(),
        &["folder closed: no device uses it", "open/docs"],
        SYNC_TIMEOUT,
    )
    .unwrap();
    let closed_at = server.log_text().len();
    let status = server.status_json();
    let folders = status["server"]["folders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        folders.iter().any(|f| f["name"] == DOCS && f["files"] == 1),
        "a closed folder is still shown with its last figures: {status}"
    );

    // A change made in the server's copy while the folder is closed is found when the
    // device's Hello opens it again.
    let made = b"written on the server while the folder was closed\n";
    files::write(&cl.server_path(DOCS, "made-on-server.txt"), made);
    cl.client(0).ctl_ok(["resume", DOCS]);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "made-on-server.txt", made);
    let log = server.log_text();
    assert!(
        log[closed_at..].contains("serving folder"),
        "the folder was not opened again after it closed"
    );
}

/// The partial upload files in `dir` (not below it), with their sizes.
fn partials_in(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".filesync-partial-")
        })
        .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
        .collect()
}

#[test]
fn an_abandoned_upload_counts_against_its_account_until_it_is_removed_after_a_day() {
    let cl = Cluster::new(1);
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"before\n");
    cl.settle(DOCS);
    let server = cl.server();
    let server_dir = cl.server_dir(DOCS).unwrap();

    // A device pushes a 2 MiB file, sends its first block and goes away.
    let content = pseudo_random(24, 2 * MIB);
    let (mut dev, _) = hostile::connect(&server.server_addr(), "hostile", DOCS).unwrap();
    let push = ClientMsg::Push {
        id: 1,
        changes: vec![create(file_entry("cut.bin", &content))],
    };
    dev.send(push).unwrap();
    let mut answered = false;
    for _ in 0..1000 {
        match dev.recv().unwrap() {
            Some(ServerMsg::BlockRequest { id, request }) if request.offset == 0 => {
                let data = hostile::serve_from(&content, &request);
                dev.send(ClientMsg::BlockResponse {
                    id,
                    result: Ok(data),
                })
                .unwrap();
                answered = true;
                break;
            }
            Some(_) => {}
            None => panic!("the server closed the connection"),
        }
    }
    assert!(answered, "the server never asked for the first block");
    let kept = poll_until(SYNC_TIMEOUT, || match partials_in(&server_dir).as_slice() {
        [(path, len)] if *len >= MIB as u64 => Ok((path.clone(), *len)),
        other => Err(format!(
            "no partial upload with the first block yet: {other:?}"
        )),
    })
    .unwrap();
    drop(dev);

    // The sweep at start measures it: it counts against the account.
    server.stop();
    server.start();
    let before = b"before\n".len() as u64;
    poll_until(SYNC_TIMEOUT, || {
        let open = account(server, OPEN);
        if open["used"] == before + kept.1 {
            Ok(())
        } else {
            Err(format!("want {} used: {open}", before + kept.1))
        }
    })
    .unwrap();

    // Untouched for two days: the next sweep removes it, and the account is charged
    // for its files alone.
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    fs::File::options()
        .write(true)
        .open(&kept.0)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    server.stop();
    server.start();
    poll_until(SYNC_TIMEOUT, || {
        let open = account(server, OPEN);
        if open["used"] == before && !kept.0.exists() {
            Ok(())
        } else {
            Err(format!(
                "the old partial upload is still charged or there: {open}"
            ))
        }
    })
    .unwrap();
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `path` is a NUL-terminated string and `st` a zeroed statvfs that the call
    // fills in; both outlive the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    st.f_bavail.saturating_mul(st.f_frsize)
}

/// The review's amplification (H2) with the default config, no quota at all: one push
/// of a few MiB declaring more bytes than the server's disk has free, all one block.
/// The free-space reserve refuses it before a block is asked for.
#[test]
fn a_push_declaring_more_than_the_disk_holds_is_refused_without_a_quota() {
    let cl = Cluster::new(1);
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"before\n");
    cl.settle(DOCS);
    let server = cl.server();
    let free = free_bytes(server.data_dir());
    // A 1 MiB block repeated 32 GiB past the free space (and so past the 1 GiB reserve
    // too, even if other tests free some gigabytes meanwhile: with 16 MiB, this failed
    // once beside builds that did), within one frame: up to about 400 GiB free.
    let blocks = (free / MIB as u64 + 32 * 1024).min(450_000) as usize;
    let block = pseudo_random(450, MIB);
    let mut entry = file_entry("amplified.bin", &block);
    entry.size = (blocks * MIB) as u64;
    entry.blocks = vec![
        BlockInfo {
            hash: sha256(&block),
            size: MIB as u32,
        };
        blocks
    ];
    let (mut dev, _) = hostile::connect(&server.server_addr(), "hostile", DOCS).unwrap();
    let asked = std::cell::Cell::new(0);
    // Asked anyway (a disk larger than this test can declare), it gets bytes that do
    // not match, so the server stops at its first block instead of filling the disk.
    let outcomes = dev
        .push(1, vec![create(entry)], &|_| {
            asked.set(asked.get() + 1);
            vec![0; 1]
        })
        .unwrap();
    assert_eq!(
        asked.get(),
        0,
        "the server asked for blocks of a refused push"
    );
    match outcomes.as_slice() {
        [PushOutcome::Failed { reason }] => assert!(
            reason.contains("server low on disk space") && reason.contains("amplified.bin"),
            "{reason}"
        ),
        other => panic!("the push was not refused: {other:?}"),
    }
    nothing_of(&cl, "amplified.bin");
}
