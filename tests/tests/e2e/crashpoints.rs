//! Crashes at each step of the batch pipeline (issue 17, Safety): the server committing
//! a push, or the receiving device B applying a pull batch, aborts at a crash point (the
//! test-only switch `FILESYNC_CRASH_AT` of `filesyncd`) the first time it gets there
//! with a group of files:
//!
//! * `after-data-barrier`: the group's temp files are durable, none is renamed yet;
//! * `after-renames`: they are at their final names, the directories not fsynced;
//! * `after-dir-barrier`: the directories are fsynced, the index COMMIT not made.
//!
//! A holds files B and the server already have; it then writes new versions of some,
//! new files beside them and in new directories, and the victim dies on the way. While
//! it is down its disk and index are checked: every file holds a version A wrote (never
//! a torn one); everything the index calls committed is on disk with that content or a
//! newer version A wrote (the commit never comes before the renames); every file A was
//! told the server accepted is on the server's disk and in its index with A's content
//! (nothing is acknowledged before it is durable), and B holds no version the server did
//! not commit (nothing is announced before the commit); and the files are where the crash
//! point says: still in temp files after the data barrier, at their final names after
//! the renames. Restarted without the variable, it converges: every replica holds
//! exactly what A wrote last, no temp file is left after the start-up sweep, no conflict
//! copy appears, untouched files are untouched, and the server's index agrees with its
//! tree.
//!
//! A process that aborts keeps what it wrote in the page cache, so these tests check the
//! order of the steps, not that each fsync reaches the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, PseudoRandom};
use filesync_tests::tree::{METADATA_PREFIX, sha256};
use filesync_tests::{
    Cluster, Kind, Manifest, Node, SYNC_TIMEOUT, manifest, poll_until, server_store,
};

/// The daemon's test-only crash switch, and the line it logs before aborting.
const CRASH_ENV: &str = "FILESYNC_CRASH_AT";
const CRASH_LOG: &str = "crash point reached: ";

const AFTER_DATA_BARRIER: &str = "after-data-barrier";
const AFTER_RENAMES: &str = "after-renames";
const AFTER_DIR_BARRIER: &str = "after-dir-barrier";

/// Above `proto::wire::INLINE_MAX` (64 KiB): such files travel as blocks, not inline.
const LARGE: usize = 200 * 1024;
/// At least 1 MiB: such a file is received into a partial transfer that outlives a
/// crash (`.filesync-partial-*`), not an ordinary temp file.
const RESUMABLE: usize = 1536 * 1024;

#[test]
fn the_server_crashing_after_the_data_barrier_loses_and_tears_nothing() {
    crash_and_recover(Victim::Server, AFTER_DATA_BARRIER);
}

#[test]
fn the_server_crashing_after_the_renames_loses_and_tears_nothing() {
    crash_and_recover(Victim::Server, AFTER_RENAMES);
}

#[test]
fn the_server_crashing_after_the_directory_barrier_loses_and_tears_nothing() {
    crash_and_recover(Victim::Server, AFTER_DIR_BARRIER);
}

#[test]
fn a_receiving_device_crashing_after_the_data_barrier_loses_and_tears_nothing() {
    crash_and_recover(Victim::B, AFTER_DATA_BARRIER);
}

#[test]
fn a_receiving_device_crashing_after_the_renames_loses_and_tears_nothing() {
    crash_and_recover(Victim::B, AFTER_RENAMES);
}

#[test]
fn a_receiving_device_crashing_after_the_directory_barrier_loses_and_tears_nothing() {
    crash_and_recover(Victim::B, AFTER_DIR_BARRIER);
}

/// The process that dies at the crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// While committing A's push.
    Server,
    /// While applying the pull batch that brings A's files.
    B,
}

impl Victim {
    fn node(self, cl: &Cluster) -> &Node {
        match self {
            Victim::Server => cl.server(),
            Victim::B => cl.b(),
        }
    }

    /// Its copy of `docs` and its index of it.
    fn tree_and_index(self, cl: &Cluster) -> (std::path::PathBuf, std::path::PathBuf) {
        match self {
            Victim::Server => {
                let tree = cl.server_dir(DOCS).expect("the server has a copy of docs");
                (tree, cl.server_index(DOCS))
            }
            Victim::B => (cl.b().folder_dir(DOCS), cl.b().folder_index(DOCS)),
        }
    }
}

/// Path → content: what A writes in one step.
type Contents = BTreeMap<String, Vec<u8>>;

/// What A holds before the crash, synced everywhere: files that stay as they are, and
/// files that get new versions (small ones, which travel inline, and large ones).
fn first_versions() -> Contents {
    let mut out = Contents::new();
    for i in 0..6 {
        out.insert(format!("keep/k{i}.txt"), version("keep", i, 1, 3000));
    }
    for i in 0..8 {
        out.insert(
            format!("edit/e{i}.txt"),
            version("edit", i, 1, 1000 + 700 * i),
        );
    }
    for i in 0..2 {
        out.insert(format!("edit/big{i}.bin"), version("big", i, 1, LARGE));
    }
    out
}

/// What A writes while the victim waits at its crash point: new versions of the `edit/`
/// files, new files beside them, and new files in new directories.
fn second_versions() -> Contents {
    let mut out = Contents::new();
    for i in 0..8 {
        out.insert(
            format!("edit/e{i}.txt"),
            version("edit", i, 2, 500 + 900 * i),
        );
    }
    for i in 0..2 {
        out.insert(
            format!("edit/big{i}.bin"),
            version("big", i, 2, LARGE + 4096),
        );
    }
    for i in 0..6 {
        out.insert(format!("edit/n{i}.txt"), version("new", i, 2, 2000));
    }
    for d in 0..3 {
        for i in 0..4 {
            out.insert(
                format!("fresh/d{d}/f{i}.txt"),
                version("fresh", d * 10 + i, 2, 1500),
            );
        }
    }
    out.insert("fresh/d0/deep/big.bin".into(), version("deep", 0, 2, LARGE));
    out.insert("fresh/d1/huge.bin".into(), version("huge", 0, 2, RESUMABLE));
    out
}

/// Content no other file or version of these tests has: a header naming it, then
/// pseudo-random bytes up to `len`.
fn version(kind: &str, i: usize, v: u64, len: usize) -> Vec<u8> {
    let mut out = format!("{kind} {i} version {v}\n").into_bytes();
    let seed = (v << 32) ^ (i as u64) << 8 ^ kind.len() as u64;
    out.extend(PseudoRandom::new(seed).take(len.saturating_sub(out.len())));
    out
}

/// Writes `contents` into A's folder, each file whole: staged in A's home, then renamed
/// into place, so that A never reads (nor sends) a half-written version.
fn write_on_a(cl: &Cluster, contents: &Contents) {
    let staging = cl.root().join(cl.a().name()).join("staging");
    for (rel, content) in contents {
        let staged = staging.join(rel.replace('/', "_"));
        files::write(&staged, content);
        let target = cl.path_on(0, DOCS, rel);
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))
            .unwrap_or_else(|e| panic!("cannot create the parent of {}: {e}", target.display()));
        std::fs::rename(&staged, &target)
            .unwrap_or_else(|e| panic!("cannot rename into {}: {e}", target.display()));
    }
}

/// The scenario of every test of this module (see the module's doc).
fn crash_and_recover(victim: Victim, point: &str) {
    let cl = Cluster::new(2);
    let first = first_versions();
    let second = second_versions();
    write_on_a(&cl, &first);
    cl.settle(DOCS);

    let node = victim.node(&cl);
    cl.note(&format!(
        "{} restarts with {CRASH_ENV}={point}",
        node.name()
    ));
    node.stop();
    node.set_daemon_env(CRASH_ENV, point);
    node.start();
    cl.settle(DOCS);

    // Paused while it is written, A sends the whole set in one push: one group on the
    // server, and on B a pull batch of many files.
    cl.pause(0, DOCS);
    let since_ms = unix_ms();
    write_on_a(&cl, &second);
    cl.resume(0, DOCS);
    let status = node.wait_exit(SYNC_TIMEOUT).unwrap_or_else(|why| {
        panic!(
            "{} did not reach the crash point {point} while A's files came \
             (does this filesyncd implement {CRASH_ENV}?): {why}",
            node.name()
        )
    });
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{} should abort at {point}, but ended with {status}",
        node.name()
    );
    assert!(
        node.log_text().contains(&format!("{CRASH_LOG}{point}")),
        "{} died without logging `{CRASH_LOG}{point}`",
        node.name()
    );
    cl.note(&format!("{} crashed at {point}", node.name()));

    check_crashed(&cl, victim, point, &first, &second, since_ms);

    node.clear_daemon_env(CRASH_ENV);
    node.start();
    let common = cl.settle(DOCS);
    check_recovered(&cl, &common, &first, &second);
    if victim == Victim::B {
        // The server never crashed: it accepted every file of A. Seeing each of them
        // among A's uploads says the source of the acknowledgement check above works.
        let uploaded = Uploads::of(cl.a()).paths(since_ms..);
        let missing: Vec<&String> = second.keys().filter(|p| !uploaded.contains(*p)).collect();
        assert!(
            missing.is_empty(),
            "A never reported these files uploaded: {missing:?}"
        );
    }
}

/// The oracle on the victim while it is down (see the module's doc).
fn check_crashed(
    cl: &Cluster,
    victim: Victim,
    point: &str,
    first: &Contents,
    second: &Contents,
    since_ms: i64,
) {
    let (tree_dir, index) = victim.tree_and_index(cl);
    let tree = manifest(&tree_dir).unwrap_or_else(|e| panic!("{}: {e}", tree_dir.display()));
    let committed = server_store::committed_files(&index).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = torn_or_stray(&tree, first, second);
    problems.extend(committed_not_on_disk(&tree, &committed, second));
    if victim == Victim::Server {
        problems.extend(accepted_not_durable(
            cl, &tree, &committed, first, second, since_ms,
        ));
        problems.extend(announced_not_committed(cl, &committed, first));
    }
    problems.extend(not_where_the_point_says(
        &tree_dir, &tree, &committed, second, point,
    ));
    assert!(
        problems.is_empty(),
        "{} crashed at {point}:\n - {}",
        victim.node(cl).name(),
        problems.join("\n - ")
    );
}

/// Files the index at `committed` holds that the disk lacks, or holds in an older
/// version: a commit made before the renames.
fn committed_not_on_disk(
    tree: &Manifest,
    committed: &BTreeMap<String, String>,
    second: &Contents,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (rel, hash) in committed {
        let newer = second.get(rel).map(|c| sha256(c));
        match tree.get(rel) {
            None => problems.push(format!(
                "{rel}: committed in the index, absent from the disk"
            )),
            Some(e) if e.digest != *hash && Some(&e.digest) != newer.as_ref() => problems.push(
                format!("{rel}: the index committed {hash}, the disk holds an older {e}"),
            ),
            Some(_) => {}
        }
    }
    problems
}

/// Files A was told the crashed server accepted that its disk (`tree`) or its index
/// (`committed`) lacks in that version or a later one.
fn accepted_not_durable(
    cl: &Cluster,
    tree: &Manifest,
    committed: &BTreeMap<String, String>,
    first: &Contents,
    second: &Contents,
    since_ms: i64,
) -> Vec<String> {
    // The server is down: A heard every answer it will ever get from that process.
    poll_until(Duration::from_secs(20), || {
        let f = cl.a().folder_status(DOCS);
        (f["connected"] == false)
            .then_some(())
            .ok_or_else(|| format!("A still looks connected: {f}"))
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let uploads = Uploads::of(cl.a());
    let before = uploads.paths(..since_ms);
    let during = uploads.paths(since_ms..);
    // Every first version went up before: seeing them all says the events reach back
    // far enough to hold every answer of the crashed process.
    assert_eq!(
        before,
        first.keys().cloned().collect(),
        "A's events do not show the uploads of the first versions"
    );
    eprintln!(
        "A was told of {} accepted files while the server crashed: {during:?}",
        during.len()
    );
    let mut problems = Vec::new();
    for rel in before.union(&during) {
        // The version told accepted, or a later one A wrote: never an older one.
        let told = if during.contains(rel) {
            None
        } else {
            first.get(rel)
        };
        let wanted: Vec<String> = [told, second.get(rel)]
            .into_iter()
            .flatten()
            .map(|c| sha256(c))
            .collect();
        if !tree.get(rel).is_some_and(|e| wanted.contains(&e.digest)) {
            problems.push(format!("{rel}: accepted, but not on the server's disk"));
        }
        if !committed.get(rel).is_some_and(|d| wanted.contains(d)) {
            problems.push(format!("{rel}: accepted, but not committed in the index"));
        }
    }
    problems
}

/// Files B holds in a version the crashed server never committed: B hears of a version
/// only from the server, which must not announce (nor send inline) what it has not
/// committed. B runs on, but nothing reaches it while the server is down.
fn announced_not_committed(
    cl: &Cluster,
    committed: &BTreeMap<String, String>,
    first: &Contents,
) -> Vec<String> {
    let dir = cl.b().folder_dir(DOCS);
    let tree = poll_until(Duration::from_secs(10), || {
        manifest(&dir).map_err(|e| format!("{}: {e}", dir.display()))
    })
    .unwrap_or_else(|why| panic!("{why}"));
    tree.iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .filter(|(rel, e)| {
            committed.get(*rel) != Some(&e.digest)
                && first.get(*rel).map(|c| sha256(c)) != Some(e.digest.clone())
        })
        .map(|(rel, e)| format!("{rel}: B holds {e}, which the server never committed"))
        .collect()
}

/// Whether the group is where `point` says: in temp files and none at its name after
/// the data barrier; some at their names, not committed, after the renames.
fn not_where_the_point_says(
    tree_dir: &Path,
    tree: &Manifest,
    committed: &BTreeMap<String, String>,
    second: &Contents,
    point: &str,
) -> Vec<String> {
    let uncommitted: Vec<&String> = tree
        .iter()
        .filter(|(rel, e)| {
            second.get(*rel).is_some_and(|c| sha256(c) == e.digest)
                && committed.get(*rel) != Some(&e.digest)
        })
        .map(|(rel, _)| rel)
        .collect();
    let temps = temp_files(tree_dir);
    eprintln!(
        "at {point}: {} temp files, {} files at their names but not committed",
        temps.len(),
        uncommitted.len()
    );
    let mut problems = Vec::new();
    if point == AFTER_DATA_BARRIER {
        if temps.is_empty() {
            problems.push("after the data barrier, no temp file holds the group".into());
        }
        if !uncommitted.is_empty() {
            problems.push(format!(
                "after the data barrier, files are at their names already: {uncommitted:?}"
            ));
        }
    } else if uncommitted.is_empty() {
        problems.push(format!("at {point}, no file of the group is at its name"));
    }
    problems
}

/// The oracle after the victim's restart, on the common manifest `common` of the
/// settled replicas (settling checked that no temp file is left anywhere).
fn check_recovered(cl: &Cluster, common: &Manifest, first: &Contents, second: &Contents) {
    let mut last = first.clone();
    last.extend(second.clone());
    let files: BTreeMap<&String, &String> = common
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(rel, e)| (rel, &e.digest))
        .collect();
    let want: BTreeMap<&String, String> = last.iter().map(|(rel, c)| (rel, sha256(c))).collect();
    let want: BTreeMap<&String, &String> = want.iter().map(|(rel, d)| (*rel, d)).collect();
    assert_eq!(
        files, want,
        "the replicas do not hold exactly what A wrote last"
    );
    cl.assert_no_conflicts(DOCS, common);
    let server_tree = manifest(&cl.server_dir(DOCS).expect("the server has docs")).unwrap();
    server_store::check_index(&cl.server_index(DOCS), &server_tree)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Files of `tree` that hold no version A wrote at their path: torn, or strays.
fn torn_or_stray(tree: &Manifest, first: &Contents, second: &Contents) -> Vec<String> {
    let versions = |rel: &String| {
        [first.get(rel), second.get(rel)]
            .into_iter()
            .flatten()
            .map(|c| sha256(c))
            .collect::<Vec<_>>()
    };
    tree.iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .filter(|(rel, e)| !versions(rel).contains(&e.digest))
        .map(|(rel, e)| format!("{rel}: {e} is no version A wrote there"))
        .collect()
}

/// The daemon's temp files (`.filesync-tmp-*`, `.filesync-partial-*`) anywhere in `root`,
/// its own directories included.
fn temp_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    for _ in 0..10_000 {
        let Some(dir) = dirs.pop() else { break };
        for item in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
            if name.starts_with(&format!("{METADATA_PREFIX}-tmp-"))
                || name.starts_with(&format!("{METADATA_PREFIX}-partial-"))
            {
                found.push(item.path().display().to_string());
            } else if is_dir {
                dirs.push(item.path());
            }
        }
    }
    found
}

/// The uploads a device reported (its server accepted their push), from
/// `filesyncctl events`: the daemon keeps its last 100 events.
struct Uploads {
    /// When (ms since 1970) and which path, oldest first.
    events: Vec<(i64, String)>,
    /// The time of the oldest event kept, of any kind.
    oldest: i64,
}

impl Uploads {
    fn of(node: &Node) -> Uploads {
        let text = node.ctl_ok(["events", "--json", DOCS]);
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        Uploads {
            oldest: events
                .iter()
                .filter_map(|e| e["time_ms"].as_i64())
                .min()
                .unwrap_or(i64::MAX),
            events: events
                .iter()
                .filter(|e| e["kind"] == "uploaded")
                .filter_map(|e| Some((e["time_ms"].as_i64()?, e["path"].as_str()?.to_owned())))
                .collect(),
        }
    }

    /// The paths uploaded in `when`; panics when the events kept do not reach back to
    /// its start.
    fn paths(&self, when: impl std::ops::RangeBounds<i64>) -> BTreeSet<String> {
        if let std::ops::Bound::Included(&start) = when.start_bound() {
            assert!(
                self.oldest < start,
                "the events kept do not reach back to {start} ms"
            );
        }
        self.events
            .iter()
            .filter(|(t, _)| when.contains(t))
            .map(|(_, p)| p.clone())
            .collect()
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}
