//! Faults of the server and of the network (shared/test-matrix.md, section b: F3, F6,
//! F7): the server SIGKILLed again and again while two devices push; a link that is cut
//! every second or so while a large file crosses it; a server that refuses connections;
//! a silent partition.
//!
//! The network faults put a [`FaultProxy`] between device A and the server; B talks to
//! the server directly, so every change A makes has a witness on the far side.
//!
//! The moments of the faults and the files written are drawn from a seed that each test
//! prints; `FILESYNC_FAULTS_SEED=N` replays a seed's choices (not its timing: the
//! daemons run at their own pace).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, PseudoRandom};
use filesync_tests::proxy::{FaultProxy, Mode};
use filesync_tests::tree::{conflict_copies, sha256};
use filesync_tests::{
    Cluster, Kind, Manifest, Node, SYNC_TIMEOUT, manifest, poll_until, server_store,
};

const SEED_ENV: &str = "FILESYNC_FAULTS_SEED";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The seed of a test: `FILESYNC_FAULTS_SEED` (decimal or `0x…`), else the clock.
/// Printed, so that a failing run can be replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={text:?} is not a number: {e}"))
        }
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} ({SEED_ENV}={seed} replays its choices)");
    seed
}

/// A random moment of the devices' work in `range_ms`: when the next fault strikes.
/// Choosing the moment is the point; nothing is waited for.
fn pause_ms(rng: &mut PseudoRandom, range_ms: std::ops::Range<u64>) -> Duration {
    let pause = Duration::from_millis(rng.in_range(range_ms));
    std::thread::sleep(pause);
    pause
}

/// What the writers wrote: the last content of each path, and how many writes.
#[derive(Default)]
struct Writes {
    last: BTreeMap<String, Vec<u8>>,
    count: u64,
}

type Written = Mutex<Writes>;

/// Writes `rel` on client `i` with content no other write produces, and records it.
fn write_unique(cl: &Cluster, i: usize, rel: &str, rng: &mut PseudoRandom, written: &Written) {
    let mut content = format!("{rel} {}\n", rng.next_u64()).into_bytes();
    let extra = rng.in_range(0..4 * KIB) as usize;
    content.extend_from_slice(&rng.take(extra));
    files::write(&cl.path_on(i, DOCS, rel), &content);
    let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
    written.last.insert(rel.to_owned(), content);
    written.count += 1;
}

/// Files each writer round makes, and earlier files it edits.
const ROUND_NEW: u64 = 8;
const ROUND_EDITS: u64 = 2;
/// The pace of a writer's rounds, and their most, however long the faults take.
const ROUND_PACE: Duration = Duration::from_millis(200);
const MAX_ROUNDS: u64 = 150;

/// Client `i` writes rounds of new files (`<client>/rNNN/fNN.txt`) and edits a few
/// files of its earlier rounds, until `done`. Only its own files: no two devices ever
/// edit the same path, so no conflict may come out of it.
fn write_rounds(cl: &Cluster, i: usize, seed: u64, done: &AtomicBool, written: &Written) {
    let name = cl.client(i).name().to_owned();
    let mut rng = PseudoRandom::new(seed ^ (i as u64 + 1));
    for round in 0..MAX_ROUNDS {
        if done.load(Ordering::SeqCst) {
            return;
        }
        for f in 0..ROUND_NEW {
            write_unique(
                cl,
                i,
                &format!("{name}/r{round:03}/f{f:02}.txt"),
                &mut rng,
                written,
            );
        }
        for _ in 0..ROUND_EDITS.min(round) {
            let (r, f) = (rng.in_range(0..round), rng.in_range(0..ROUND_NEW));
            write_unique(
                cl,
                i,
                &format!("{name}/r{r:03}/f{f:02}.txt"),
                &mut rng,
                written,
            );
        }
        std::thread::sleep(ROUND_PACE);
    }
}

/// Every file in `written` is in `tree` with its last content, and `tree` holds no file
/// that nobody wrote.
fn assert_holds_exactly(tree: &Manifest, written: &BTreeMap<String, Vec<u8>>) {
    for (rel, content) in written {
        let got = tree.get(rel).map(|e| e.digest.as_str());
        assert_eq!(
            got,
            Some(sha256(content).as_str()),
            "{rel} does not hold its last content"
        );
    }
    let strays: Vec<&String> = tree
        .iter()
        .filter(|(rel, e)| e.kind == Kind::File && !written.contains_key(*rel))
        .map(|(rel, _)| rel)
        .collect();
    assert!(strays.is_empty(), "files nobody wrote: {strays:?}");
}

/// The highest sequence number any client has received, from `status --json`.
fn highest_seq_seen(cl: &Cluster) -> u64 {
    cl.all_clients()
        .into_iter()
        .map(|i| {
            cl.client(i).folder_status(DOCS)["seq"]
                .as_u64()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// How many times the server is killed while the devices push.
const SERVER_KILLS: usize = 5;

/// F3, issue 8 item 2: the server is SIGKILLed five times at random moments while both
/// devices push batches of new files and edits, so kills land among staging, renaming
/// into place and committing. Each time, the index it left must hold every sequence
/// number a device had already received (else it would hand them out again); after the
/// last restart the replicas converge with every file's last content, no conflict copy,
/// and the server's index and tree agree, with one sequence number per row.
#[test]
fn a_server_killed_while_devices_push_reuses_no_sequence_number_and_loses_nothing() {
    let seed = seed("server kills");
    let mut rng = PseudoRandom::new(seed);
    let cl = Cluster::new(2);
    cl.settle(DOCS);
    let index = cl.server_index(DOCS);
    let written = Written::default();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for i in cl.all_clients() {
            let (cl, written, done) = (&cl, &written, &done);
            s.spawn(move || write_rounds(cl, i, seed, done, written));
        }
        let stop_writers = StopOnDrop(&done);
        for kill in 1..=SERVER_KILLS {
            let pause = pause_ms(&mut rng, 300..2000);
            let seen = highest_seq_seen(&cl);
            cl.note(&format!(
                "kill #{kill} of the server, {pause:?} into the round"
            ));
            cl.server().kill();
            let kept = server_store::max_seq(&index).unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "kill #{kill} after {pause:?}: devices had seq {seen}, the index kept {kept}"
            );
            assert!(
                kept >= seen,
                "kill #{kill}: a device had received sequence number {seen}, but the server's \
                 index only reached {kept}: the server would hand those numbers out again"
            );
            cl.server().start();
        }
        drop(stop_writers);
    });
    let Writes {
        last: written,
        count: writes,
    } = written.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "{writes} writes of {} files by the two devices",
        written.len()
    );

    let common = cl.settle(DOCS);
    assert_holds_exactly(&common, &written);
    cl.assert_no_conflicts(DOCS, &common);
    let server_tree = manifest(&cl.server_dir(DOCS).unwrap()).unwrap();
    let summary = server_store::check_index(&index, &server_tree).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("server index after the kills: {summary:?}");
    assert_eq!(summary.files, written.len() as u64);
    for i in cl.all_clients() {
        let seq = cl.client(i).folder_status(DOCS)["seq"].as_u64();
        assert_eq!(
            seq,
            Some(summary.max_seq),
            "{} is not at the server's last sequence number",
            cl.client(i).name()
        );
    }
}

/// F3, issue 8 item 2, one kill placed by hand: the server dies after putting a pushed
/// file in place but before recording it, so its restart takes the file in as a change
/// of its own, and the device never hears that its push was taken. The device has
/// edited the file since; its edit was made on what it pushed, so it goes on top of the
/// server's version: no conflict copy of a device against itself.
///
/// The server is frozen (SIGSTOP) while A pushes, killed, and handed the pushed content
/// in its tree while down: the state such a kill leaves, without racing for it.
#[test]
fn a_push_the_server_took_in_as_its_own_at_restart_is_the_base_of_later_edits() {
    let cl = Cluster::new(2);
    let a = cl.a();
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"first\n");
    cl.settle(DOCS);
    let pushes = || {
        a.folder_status(DOCS)["counters"]["pushes"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = pushes();

    cl.server().signal(libc::SIGSTOP);
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"first\npushed\n");
    poll_until(SYNC_TIMEOUT, || {
        let n = pushes();
        (n > before)
            .then_some(n)
            .ok_or_else(|| "A has not pushed its edit".to_owned())
    })
    .unwrap_or_else(|why| panic!("{why}"));
    files::write(
        &cl.path_on(0, DOCS, "notes.txt"),
        b"first\npushed\nthen edited\n",
    );
    cl.note("killing the frozen server; its tree gets A's pushed content");
    cl.server().kill();
    files::write(&cl.server_path(DOCS, "notes.txt"), b"first\npushed\n");
    cl.server().start();

    let common = cl.settle(DOCS);
    cl.assert_no_conflicts(DOCS, &common);
    cl.assert_file_everywhere(DOCS, "notes.txt", b"first\npushed\nthen edited\n");
    assert!(
        a.log_text().contains("our earlier push was taken"),
        "A did not take the server's version as its own push"
    );
}

/// Never lose data: a delete from the server reaches A in the same batch as new files
/// that cross a slow link, and A's user edits the file to be deleted while they come.
/// A checked its disk when it read the batch; the edit came after, while the batch's
/// downloads ran, and must survive the delete applied after them (an edit beats a
/// delete) and reach every replica.
#[test]
fn a_file_edited_while_its_delete_waits_behind_slow_downloads_is_kept() {
    const FILES: usize = 8;
    const SIZE: u64 = 64 * KIB;
    let (cl, proxy) = behind_proxy();
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"first\n");
    cl.settle(DOCS);

    // Held at the proxy while B makes its changes, A gets them in one batch.
    proxy.set_mode(Mode::Stall);
    let mut rng = PseudoRandom::new(seed("edit behind downloads"));
    for i in 0..FILES {
        files::write(
            &cl.path_on(1, DOCS, &format!("new/f{i}.bin")),
            rng.take(SIZE as usize),
        );
    }
    std::fs::remove_file(cl.path_on(1, DOCS, "notes.txt")).unwrap();
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    // The edit is made once the downloads have begun, with most of them still to come
    // over a link slow enough (about 16 s for all) that a busy machine cannot let them
    // all arrive before the edit.
    let before = proxy.traffic().down;
    proxy.set_rate(FILES as u64 * SIZE / 16);
    proxy.set_mode(Mode::Pass);
    poll_until(SYNC_TIMEOUT, || {
        let down = proxy.traffic().down - before;
        if down > SIZE / 2 {
            Ok(())
        } else {
            Err(format!("A has received {down} bytes of the new files"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let edited = b"first\nedited on A while the new files came\n";
    files::write(&cl.path_on(0, DOCS, "notes.txt"), edited);
    assert!(
        !cl.path_on(0, DOCS, &format!("new/f{}.bin", FILES - 1))
            .exists(),
        "the new files all arrived before the edit; slow the link further"
    );
    proxy.set_rate(0);

    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", edited);
}

/// Found by the 2-minute soak: the server refuses A's push of an edit (B's newer version
/// got there first); A takes B's version in and keeps its own as a conflict copy. The
/// refusal must not outlive that: when a directory rename later moves B's version away
/// and A's user makes a new file of the old name, the file goes out like any other,
/// instead of waiting for ever for B's version to come back to that path.
#[test]
fn a_refused_push_does_not_hold_a_later_file_of_that_name() {
    let (cl, proxy) = behind_proxy();
    files::write(&cl.path_on(0, DOCS, "d/p.txt"), b"first\n");
    cl.settle(DOCS);

    // A hears nothing from the server, so it edits the version it knows and pushes that
    // edit after B's reached the server: the server refuses it.
    proxy.set_mode(Mode::HoldDown);
    files::write(&cl.path_on(1, DOCS, "d/p.txt"), b"B's edit\n");
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::write(&cl.path_on(0, DOCS, "d/p.txt"), b"A's edit\n");
    poll_until(SYNC_TIMEOUT, || {
        let log = cl.server().log_text();
        if log
            .lines()
            .any(|l| l.contains("refused a push made on an older version") && l.contains("d/p.txt"))
        {
            Ok(())
        } else {
            Err("the server has not refused A's push of d/p.txt".to_owned())
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    proxy.set_mode(Mode::Pass);
    let common = cl.settle(DOCS);
    let copies = conflict_copies(&common);
    assert!(
        copies.len() == 1 && copies[0].starts_with("d/p.sync-conflict-"),
        "A's edit is kept as one conflict copy: {common:?}"
    );
    cl.assert_file_everywhere(DOCS, "d/p.txt", b"B's edit\n");

    std::fs::rename(cl.path_on(1, DOCS, "d"), cl.path_on(1, DOCS, "e")).unwrap();
    cl.settle(DOCS);
    files::write(&cl.path_on(0, DOCS, "d/p.txt"), b"A's new file\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "d/p.txt", b"A's new file\n");
    cl.assert_file_everywhere(DOCS, "e/p.txt", b"B's edit\n");
}

/// Found by the 2-minute soak: while its link was down, A renamed `d` to `m` and then
/// made a new file at `d/a.txt`. Both go out in one push; the new file must not reach
/// the server before the rename, or it lands in the old `d` there and the rename
/// carries it to `m/a.txt`, while A holds it at `d/a.txt`.
#[test]
fn a_file_made_at_a_renamed_directorys_old_path_while_offline_stays_there() {
    let (cl, proxy) = behind_proxy();
    files::write(&cl.path_on(0, DOCS, "d/x.txt"), b"x\n");
    cl.settle(DOCS);

    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    wait_offline(cl.a(), proxy.addr(), Duration::from_secs(10));
    let scans = || cl.a().log_text().matches(" scanned ").count();
    let before = scans();
    std::fs::rename(cl.path_on(0, DOCS, "d"), cl.path_on(0, DOCS, "m")).unwrap();
    poll_until(SYNC_TIMEOUT, || {
        if scans() > before {
            Ok(())
        } else {
            Err("A has not scanned the rename".to_owned())
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    files::write(&cl.path_on(0, DOCS, "d/a.txt"), b"new at the old path\n");
    proxy.set_mode(Mode::Pass);

    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "m/x.txt", b"x\n");
    cl.assert_file_everywhere(DOCS, "d/a.txt", b"new at the old path\n");
    assert_eq!(
        common.keys().collect::<Vec<_>>(),
        ["d", "d/a.txt", "m", "m/x.txt"],
        "every replica holds exactly A's tree"
    );
    assert!(
        cl.server().log_text().contains("renamed a directory"),
        "the server took the move as a directory rename"
    );
}

/// Sets the flag when dropped, so that writer threads stop even when the main thread
/// of a scope panics (else the scope would wait for them to run out of rounds).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A server and two devices syncing `docs`: A through a fault proxy, B directly.
fn behind_proxy() -> (Cluster, FaultProxy) {
    let cl = Cluster::without_folders(2, Some("open"));
    let server: SocketAddr = cl
        .server()
        .server_addr()
        .parse()
        .expect("the server address is IP:PORT");
    let proxy = FaultProxy::start(server);
    let mut args = cl.add_args(0, DOCS);
    let at = args
        .iter()
        .position(|a| a == "--server")
        .expect("add_args names the server")
        + 1;
    args[at] = OsString::from(proxy.addr().to_string());
    cl.client(0).ctl_ok(args);
    cl.add_folder(1, DOCS);
    (cl, proxy)
}

/// Waits until the proxy has relayed more than `than` connections: A reconnected.
fn wait_connections(proxy: &FaultProxy, than: u64, timeout: Duration) -> u64 {
    poll_until(timeout, || {
        let n = proxy.traffic().connections;
        if n > than {
            Ok(n)
        } else {
            Err(format!("A has not reconnected: {:?}", proxy.traffic()))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"))
}

/// Waits until A's status shows the folder offline with an error naming the server it
/// cannot reach (the proxy's address), and returns that status.
fn wait_offline(node: &Node, server: SocketAddr, timeout: Duration) -> serde_json::Value {
    poll_until(timeout, || {
        let f = node.folder_status(DOCS);
        let error = f["last_error"].as_str().unwrap_or_default();
        if f["state"] == "offline" && f["connected"] == false && error.contains(&server.to_string())
        {
            Ok(f)
        } else {
            Err(format!("status does not show {server} offline: {f}"))
        }
    })
    .unwrap_or_else(|why| panic!("{}: {why}", node.name()))
}

/// How many times the link between A and the server is cut.
const FLAPS: usize = 30;
/// The large file that crosses the flapping link, and the link's rate while it does.
const BIG: u64 = 8 * MIB;
const FLAP_RATE: u64 = 2 * MIB;

/// F7, issue 8 item 3: the link between A and the server is reset thirty times, each
/// time a little after A has reconnected, while A writes small files and uploads a large
/// one. After it heals: every replica has every file, there is no conflict, the large
/// file's bytes crossed about once (interrupted uploads resume), and B applied each
/// file once.
#[test]
fn a_flapping_link_costs_reconnects_not_resends_and_converges() {
    let seed = seed("flapping link");
    let mut rng = PseudoRandom::new(seed);
    let (cl, proxy) = behind_proxy();
    let mut connections = wait_connections(&proxy, 0, SYNC_TIMEOUT);
    // One commit before the flapping: sequence numbers are not counts (they start from
    // the clock), so the run's commits are counted from this one's number.
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"before");
    cl.settle(DOCS);
    let seq0 = server_store::max_seq(&cl.server_index(DOCS)).unwrap_or_else(|e| panic!("{e}"));
    let b0 = cl.b().counters(DOCS);
    let up0 = proxy.traffic().up;
    proxy.set_rate(FLAP_RATE);

    let staged = cl.root().join(cl.a().name()).join("big.bin");
    let big_hash = files::write_pseudo_random(&staged, seed, BIG);
    std::fs::rename(&staged, cl.path_on(0, DOCS, "big.bin")).unwrap();
    let written = Written::default();
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        let (cl_ref, written_ref, done_ref) = (&cl, &written, &done);
        s.spawn(move || write_rounds(cl_ref, 0, seed, done_ref, written_ref));
        let _stop_writers = StopOnDrop(&done);
        for flap in 1..=FLAPS {
            pause_ms(&mut rng, 100..700);
            cl.note(&format!("flap #{flap}"));
            proxy.reset_all();
            connections = wait_connections(&proxy, connections, Duration::from_secs(20));
        }
    });
    let flapping = started.elapsed();
    proxy.set_rate(0);
    let Writes {
        last: written,
        count: writes,
    } = written.into_inner().unwrap_or_else(|e| e.into_inner());

    let common = cl.settle(DOCS);
    let traffic = proxy.traffic();
    let small: u64 = written.values().map(|c| c.len() as u64).sum();
    let a = cl.a().counters(DOCS);
    let b = cl.b().counters(DOCS);
    eprintln!(
        "{FLAPS} flaps in {flapping:.1?}; {writes} writes of {} files ({small} bytes) and \
         {BIG} bytes written; proxy {traffic:?}, {} bytes up since the start; A {a:?}; B {b:?}",
        written.len(),
        traffic.up - up0
    );
    assert_eq!(
        common.get("big.bin").map(|e| e.digest.as_str()),
        Some(big_hash.as_str())
    );
    let dirs = common.values().filter(|e| e.kind == Kind::Dir).count() as u64;
    let files: Manifest = common
        .into_iter()
        .filter(|(rel, _)| rel != "big.bin" && rel != "before.txt")
        .collect();
    assert_holds_exactly(&files, &written);
    cl.assert_no_conflicts(DOCS, &files);
    // What crossed the link for content: every byte of the files once, plus what a cut
    // loses (blocks on their way, small files staged but not committed), plus per
    // connection its handshake and the pushes it repeats. A's own count of content it
    // served is higher: what sat in its queues when the link was cut never crossed.
    let content = BIG + small;
    let up = traffic.up - up0;
    let allowance = content / 2 + traffic.connections * 64 * KIB;
    assert!(
        up <= content + allowance,
        "{up} bytes went up through the proxy for {content} bytes of files and {} \
         connections: interrupted uploads did not resume, or pushes were repeated",
        traffic.connections
    );
    // Each write is one version at most (B may skip versions replaced before it
    // looked); a push repeated after a cut must not become a second one.
    let versions = writes + 1;
    assert!(
        b.files_downloaded - b0.files_downloaded <= versions,
        "B applied {} files for {versions} versions written",
        b.files_downloaded - b0.files_downloaded
    );
    let summary = server_store::check_index(
        &cl.server_index(DOCS),
        &manifest(&cl.server_dir(DOCS).unwrap()).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary.max_seq - seq0 <= versions + dirs,
        "the server committed {} changes for {versions} file versions and {dirs} dirs",
        summary.max_seq - seq0
    );
}

/// How long the proxy refuses A's connections while the test counts them.
const REFUSED_FOR: Duration = Duration::from_secs(5);
/// The most connection attempts A may make in [`REFUSED_FOR`]. Its waits start at
/// 0.25 s and double (0.25, 0.5, 1, 2, 4 s, plus up to 0.25 s of jitter each): the
/// attempts come at 0.25, 0.75, 1.75 and 3.75 s at the earliest, four in 5 s.
const MOST_ATTEMPTS_REFUSED: u64 = 4;

/// F7's other half: a server that refuses connections gets a few attempts that back
/// off, not a tight loop; status says offline and names the server; a file written
/// meanwhile syncs once the server takes connections again.
#[test]
fn a_refusing_server_gets_backed_off_attempts_and_status_says_offline() {
    let (cl, proxy) = behind_proxy();
    wait_connections(&proxy, 0, SYNC_TIMEOUT);
    cl.settle(DOCS);

    proxy.set_mode(Mode::Refuse);
    let refusing = Instant::now();
    proxy.reset_all();
    files::write(
        &cl.path_on(0, DOCS, "offline.txt"),
        b"written while offline\n",
    );
    let status = wait_offline(cl.a(), proxy.addr(), Duration::from_secs(10));
    eprintln!("A while refused: {status}");
    // The window in which attempts are counted: its length is what is measured.
    std::thread::sleep(REFUSED_FOR.saturating_sub(refusing.elapsed()));
    let refused = proxy.traffic().refused;
    eprintln!("{refused} connection attempts refused in {REFUSED_FOR:?}");
    assert!(
        (2..=MOST_ATTEMPTS_REFUSED).contains(&refused),
        "A made {refused} connection attempts in {REFUSED_FOR:?}; with its backoff, 2 to \
         {MOST_ATTEMPTS_REFUSED}"
    );
    let human = cl.a().ctl_ok(["status", DOCS]);
    assert!(
        human.contains("offline") && human.contains(&proxy.addr().to_string()),
        "`status` does not say the folder is offline and why:\n{human}"
    );

    proxy.set_mode(Mode::Pass);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "offline.txt", b"written while offline\n");
}

/// F6, issue 8 item 3: a silent partition. The proxy holds every byte; A must notice
/// within the idle timeout (30 s: the server pings every 10 s) and say so; edits made on
/// both sides meanwhile are kept and sync once the partition heals, without conflict.
#[test]
fn a_silent_partition_is_noticed_and_edits_sync_after_it_heals() {
    let (cl, proxy) = behind_proxy();
    wait_connections(&proxy, 0, SYNC_TIMEOUT);
    files::write(&cl.path_on(0, DOCS, "shared.txt"), b"first\n");
    cl.settle(DOCS);

    proxy.set_mode(Mode::Stall);
    let stalled = Instant::now();
    files::write(
        &cl.path_on(0, DOCS, "from-a.txt"),
        b"A, during the partition\n",
    );
    files::write(
        &cl.path_on(1, DOCS, "shared.txt"),
        b"B, during the partition\n",
    );
    let status = wait_offline(cl.a(), proxy.addr(), Duration::from_secs(45));
    let noticed = stalled.elapsed();
    eprintln!("A noticed the partition after {noticed:.1?}: {status}");
    assert!(
        noticed <= Duration::from_secs(35),
        "A took {noticed:?} to notice a silent partition"
    );
    files::assert_file(
        &cl.path_on(0, DOCS, "from-a.txt"),
        b"A, during the partition\n",
    );
    files::assert_absent(&cl.path_on(1, DOCS, "from-a.txt"));

    proxy.set_mode(Mode::Pass);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "from-a.txt", b"A, during the partition\n");
    cl.assert_file_everywhere(DOCS, "shared.txt", b"B, during the partition\n");
    cl.assert_no_conflicts(DOCS, &common);
}
