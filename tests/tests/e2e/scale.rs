//! Big folders, bursts of changes and the watcher's limits (issue 7), at sizes that fit
//! in CI; `bench/scale.sh` runs the big sizes.

use std::fs;
use std::path::Path;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, PseudoRandom};
use filesync_tests::{Cluster, poll_until};
use serde_json::Value;

/// How long the CI-sized runs may take to sync.
const BIG_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes `files` files of 0..=`max_len` bytes spread over `dirs` directories two levels
/// deep under `root`; returns their total size.
fn make_tree(root: &Path, files: usize, dirs: usize, max_len: usize) -> u64 {
    let mut data = PseudoRandom::new(11);
    let mut total = 0;
    for i in 0..files {
        let d = i % dirs;
        let path = root.join(format!("d{:02}/s{d:04}/f{i:05}.bin", d / 100));
        let len = (i * 7919) % (max_len + 1);
        files::write(&path, data.take(len));
        total += len as u64;
    }
    total
}

/// The `last_scan` of client `i`'s folder once it differs from `before` (a full scan
/// finished since), within `timeout`.
fn next_full_scan(cl: &Cluster, i: usize, before: &Value, timeout: Duration) -> Value {
    poll_until(timeout, || {
        let scan = cl.client(i).folder_status(DOCS)["last_scan"].clone();
        if scan.is_object() && scan != *before {
            Ok(scan)
        } else {
            Err(format!("no new full scan yet; last: {scan}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A tree that exists before the folder is added is scanned (and hashed) once; a rescan
/// with no change reads no file, and status reports the index's size on disk. Only the
/// scans are timed here: the upload of the files goes on meanwhile and is not waited for.
#[test]
fn a_rescan_of_an_unchanged_big_folder_reads_no_file() {
    let cl = Cluster::without_folders(1, Some("open"));
    let (files, dirs) = (20_000, 1_000);
    let total = make_tree(&cl.folder_dir(0, DOCS), files, dirs, 512);
    cl.add_folder(0, DOCS);
    let first = next_full_scan(&cl, 0, &Value::Null, BIG_TIMEOUT);
    assert_eq!(first["reason"], "start-up", "{first}");
    assert_eq!(first["hashed_files"], files, "each file read once: {first}");
    assert_eq!(first["hashed_bytes"], total, "each byte read once: {first}");
    let status = cl.a().folder_status(DOCS);
    assert_eq!(status["files"], files, "{status}");
    assert_eq!(cl.a().counters(DOCS).bytes_hashed, total);
    let index = status["index_bytes"].as_u64().expect("index_bytes");
    assert!(
        index > 50 * files as u64,
        "an index of {files} files cannot take {index} bytes"
    );

    cl.a().ctl_ok(["rescan", DOCS]);
    let scan = next_full_scan(&cl, 0, &first, BIG_TIMEOUT);
    assert_eq!(scan["reason"], "requested", "{scan}");
    assert!(
        scan["entries"].as_u64() > Some((files + dirs) as u64),
        "the rescan looked at every path: {scan}"
    );
    assert_eq!(
        scan["hashed_files"], 0,
        "an unchanged file was read: {scan}"
    );
    assert_eq!(scan["hashed_bytes"], 0, "{scan}");
    assert_eq!(cl.a().counters(DOCS).bytes_hashed, total);
    let human = cl.a().ctl_ok(["status", DOCS]);
    assert!(
        human.contains("last scan:") && human.contains("index:"),
        "{human}"
    );

    poll_until(BIG_TIMEOUT, || {
        let server = cl.server().status_json();
        match server["server"]["folders"][0]["index_bytes"].as_u64() {
            Some(n) if n > 0 => Ok(()),
            _ => Err(format!("no index size on the server: {server}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Thousands of files made at once (an archive extracted) go up in batches, not one
/// round trip each, and each file is read to hash once on the device that made it and
/// never on the device that receives it. (`bench/scale.sh` runs bigger bursts.)
#[test]
fn a_burst_of_thousands_of_files_is_sent_in_batches_and_hashed_once() {
    let cl = Cluster::new(2);
    cl.settle(DOCS);
    let (a0, b0) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    let files = 4_000;
    let total = make_tree(&cl.folder_dir(0, DOCS), files, 40, 1024);
    cl.settle_clients(DOCS, &cl.all_clients(), BIG_TIMEOUT);
    let (a1, b1) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    let (hashed, bytes) = (
        a1.files_hashed - a0.files_hashed,
        a1.bytes_hashed - a0.bytes_hashed,
    );
    let pushes = a1.pushes - a0.pushes;
    eprintln!(
        "{files} new files ({total} bytes): A hashed {hashed} files ({bytes} bytes) in {pushes} pushes"
    );
    // A scan may catch a file between its creation and its write, and read both states:
    // a little over once, never twice.
    assert!(
        (total..total + total / 20).contains(&bytes),
        "A read {bytes} bytes for {total} new bytes"
    );
    assert!(
        (files as u64..files as u64 + files as u64 / 20).contains(&hashed),
        "A hashed {hashed} times for {files} new files"
    );
    assert!(
        (1..=files as u64 / 20).contains(&pushes),
        "{files} new files took {pushes} pushes"
    );
    assert_eq!(
        b1.bytes_hashed, b0.bytes_hashed,
        "B read what it received again"
    );
    assert!(b1.files_downloaded - b0.files_downloaded >= files as u64);
}

/// A folder whose tree needs more watches than allowed keeps syncing by rescanning,
/// says so in status with how to raise the limit, and watches fully again once it can.
#[test]
fn a_folder_over_the_watch_limit_rescans_and_says_why() {
    let cl = Cluster::without_folders(1, Some("open"));
    cl.a().stop();
    cl.a().set_daemon_env("FILESYNC_MAX_WATCHES", "5");
    cl.a().start();
    let root = cl.folder_dir(0, DOCS);
    for i in 0..8 {
        files::write(&root.join(format!("dir{i}/seed.txt")), b"seed");
    }
    cl.add_folder(0, DOCS);
    // A short rescan interval, so the fallback rescan comes within the test's time.
    let config = fs::read_to_string(cl.a().config_path()).unwrap();
    fs::write(
        cl.a().config_path(),
        format!("{config}rescan_interval = \"2s\"\n"),
    )
    .unwrap();
    cl.a().ctl_ok(["reload"]);
    let problem = poll_until(Duration::from_secs(30), || {
        match cl.a().folder_status(DOCS)["watch_problem"].as_str() {
            Some(p) if p.contains("every 2 s") => Ok(p.to_owned()),
            other => Err(format!("watch_problem: {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        problem.contains("allows 5 inotify watches")
            && problem.contains("sysctl fs.inotify.max_user_watches="),
        "{problem}"
    );
    let human = cl.a().ctl_ok(["status", DOCS]);
    assert!(human.contains("watching incomplete"), "{human}");

    // No `wait` (it scans): the periodic rescan alone must bring the change.
    files::write(&root.join("dir3/new.txt"), b"seen by a rescan");
    poll_until(BIG_TIMEOUT, || {
        let on_server = cl.server_dir(DOCS).map(|d| d.join("dir3/new.txt"));
        match on_server.map(fs::read) {
            Some(Ok(b)) if b == b"seen by a rescan" => Ok(()),
            other => Err(format!("server copy: {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    for i in 0..6 {
        fs::remove_dir_all(root.join(format!("dir{i}"))).unwrap();
    }
    poll_until(Duration::from_secs(30), || {
        match &cl.a().folder_status(DOCS)["watch_problem"] {
            Value::Null => Ok(()),
            other => Err(format!("watch_problem: {other}")),
        }
    })
    .unwrap_or_else(|e| panic!("the watcher did not recover: {e}"));
    cl.settle(DOCS);
}

/// More changes than the kernel queues while the daemon is stopped: the watcher's
/// overflow becomes a full rescan that status names, and every file syncs.
#[test]
fn an_inotify_queue_overflow_becomes_a_rescan() {
    let cl = Cluster::new(1);
    let root = cl.folder_dir(0, DOCS);
    // A directory the watcher already watches: files made in a new one would raise a
    // single event (the directory's), however many they are.
    files::write(&root.join("burst/seed"), b"seed");
    cl.settle(DOCS);
    let before = cl.a().folder_status(DOCS)["last_scan"].clone();
    let queued: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384);
    // Each new file is at least two events (create, close after writing).
    let count = queued / 2 + 500;
    cl.a().signal(libc::SIGSTOP);
    for i in 0..count {
        files::write(&root.join(format!("burst/f{i:05}")), b"x");
    }
    cl.a().signal(libc::SIGCONT);
    let scan = poll_until(BIG_TIMEOUT, || {
        let scan = cl.a().folder_status(DOCS)["last_scan"].clone();
        match scan["reason"].as_str() {
            Some(r) if scan != before && r.contains("overflow") => Ok(scan),
            _ => Err(format!("no overflow rescan yet; last scan: {scan}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(scan["entries"].as_u64() > Some(count as u64), "{scan}");
    cl.settle_clients(DOCS, &[0], BIG_TIMEOUT);
    assert_eq!(
        files::list_dir(&cl.server_path(DOCS, "burst")).len(),
        count + 1,
        "every file reached the server"
    );
}
