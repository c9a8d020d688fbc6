//! The model test: random sequences of file operations on three clients, with random
//! disconnects and reconnects, then convergence and "nothing lost".
//!
//! A case is a seed. From it, [`generate`] makes a list of operations, each done by one
//! of three clients in its own copy of `docs`: write a file (create or overwrite),
//! modify an existing file (in place, or by an editor's safe save: temp file, then rename
//! over), delete a file, rename or move a file (onto another file, too), mkdir, rmdir of
//! an empty dir, recursive rmdir, rename of a dir, and disconnect / reconnect
//! (`filesyncctl pause docs` / `resume docs`: a paused folder keeps its local edits and
//! sends them on resume). The paths come from a small universe (three names in the root
//! and in three dirs, two of them nested) so that clients collide and conflict. After
//! some operations the test waits for the client it used, or for every connected client,
//! with `filesyncctl wait`; after the others it goes straight on, so operations race
//! with the daemons' scans, pushes and applies. Operations that do not apply (modify
//! when the client has no file) are skipped. Every operation and its outcome goes to an
//! op log.
//!
//! At the end every client is resumed and the cluster settles (`Cluster::settle`: the
//! server's copy and the three clients' converge, `filesyncctl wait` exits 0 everywhere,
//! and the common oracle holds: daemons alive, no `last_error`, no temp files, nothing
//! written outside). Then:
//!
//! * **(a) identical trees**: part of `settle`, over all four replicas.
//! * **(b) nothing lost**: every *required* content is in the converged tree (at any
//!   path, a `*.sync-conflict-*` copy included) or among the versions the server kept.
//!   Every write puts a content that no other write produces (it names the seed, the
//!   operation and the client), so contents are told apart by their SHA-256. A content is
//!   required unless the client that wrote it later destroyed it itself: overwrote the
//!   file holding it, deleted it, removed a dir holding it, or renamed another file over
//!   it. Before each such operation the test reads the file it is about to destroy and
//!   looks its content up, so this follows the content wherever the daemons moved it (a
//!   conflict copy, a renamed dir). Content written by *another* client stays required
//!   when it is destroyed: that client's version reached this one through the server,
//!   which must keep it in its versions. A rename moves a content; it never releases it.
//! * **(c) nothing invented**: every file of the converged tree holds a content some
//!   client wrote, and every file the test read on a client during the run did too.
//! * **the server's index**: `PRAGMA integrity_check` is ok, every row has its own
//!   sequence number, its live rows are exactly the server's tree, and its highest
//!   sequence number and file count are what `status` reports.
//!
//! The operations and the ledger behind (b) and (c) are `filesync_tests::workload`, shared
//! with the chaos soak (`soak.rs`).
//!
//! # Running it
//!
//! * `FILESYNC_MODEL_CASES=N`: how many cases (default 3: CI's share, well under a
//!   minute). Raise it for a soak.
//! * `FILESYNC_MODEL_OPS=N`: operations per case (default 40).
//! * `FILESYNC_MODEL_SEED=S` (decimal or `0x…`): the seed of the first case (the next
//!   ones take S+1, S+2, …); with it, one case unless `FILESYNC_MODEL_CASES` says more.
//!   Without it the seeds are random. Every case prints its seed; a failing one prints
//!   the command that re-runs it, with its op log and every content it wrote.
//! * `FILESYNC_MODEL_SKIP=KIND,…`: leave these kinds of operation out, to narrow a
//!   failure down: `write`, `modify`, `delete`, `rename`, `mkdir`, `rmdir`, `rm-r`,
//!   `rename-dir`, `pause` (pause and resume). It changes the operations a seed makes,
//!   so it is part of the re-run command.
//!
//! A seed fixes the operations, not the timing: the daemons run at their own pace, so a
//! re-run replays the same operations with possibly other interleavings, and operations
//! that depend on what reached a client (modify, rename, delete pick among its files)
//! may pick other files. A failure that needs a tight race may take several re-runs to
//! come back; the op log and the daemons' logs (each operation is noted in every
//! daemon's log, `FILESYNC_KEEP_TEST_DIRS=1` keeps them) are the record of the run.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

use filesync_tests::cluster::DOCS;
use filesync_tests::files::pseudo_random;
use filesync_tests::node::describe;
use filesync_tests::tree;
use filesync_tests::workload::{
    Action, Ledger, Outcome, Rng, Universe, client_name, env_number, random_seed,
    server_index_problems, server_versions,
};
use filesync_tests::{Cluster, poll_until};

const CASES_ENV: &str = "FILESYNC_MODEL_CASES";
const OPS_ENV: &str = "FILESYNC_MODEL_OPS";
const SEED_ENV: &str = "FILESYNC_MODEL_SEED";
const SKIP_ENV: &str = "FILESYNC_MODEL_SKIP";
const DEFAULT_CASES: u64 = 3;
/// The first seed when none is given: any value works, this one must just stay put.
const DEFAULT_SEED: u64 = 0x5eed_f11e_2026_1121;
const DEFAULT_OPS: u64 = 40;

const CLIENTS: usize = 3;
/// Three dirs, two of them nested, and three names in each and in the root; one name
/// without an extension, for the conflict copy's name.
const UNIVERSE: Universe = Universe {
    dirs: &["d0", "d1", "d0/e"],
    names: &["a.txt", "b.txt", "c"],
};
/// How long a `wait` between two operations may take; the cluster is quiet then.
const STEP_WAIT: Duration = Duration::from_secs(30);

/// One step of a case: a file operation, or a disconnect / reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Files(Action),
    /// Disconnect the client (`pause docs`) if it is connected, else reconnect it.
    Toggle,
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Files(action) => action.kind(),
            Step::Toggle => "pause",
        }
    }
}

/// What the test waits for after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing: the next operation races with the daemons.
    Go,
    /// `filesyncctl wait` on the client that did the operation, if it is connected.
    WaitClient,
    /// `filesyncctl wait` on every connected client.
    WaitAll,
}

/// The kinds of step the model makes, for `FILESYNC_MODEL_SKIP`.
const STEP_KINDS: [&str; 9] = [
    "write",
    "modify",
    "delete",
    "rename",
    "mkdir",
    "rmdir",
    "rm-r",
    "rename-dir",
    "pause",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    client: usize,
    step: Step,
    then: Then,
}

/// The operations of the case `seed`, without the kinds named in `skip` (see
/// [`Step::kind`]).
fn generate(seed: u64, n: usize, skip: &[String]) -> Vec<Op> {
    assert!(
        skip.len() < STEP_KINDS.len(),
        "{SKIP_ENV} leaves no kind of operation"
    );
    let mut rng = Rng(seed);
    let mut ops = Vec::with_capacity(n);
    while ops.len() < n {
        let op = random_op(&mut rng);
        if !skip.iter().any(|k| k == op.step.kind()) {
            ops.push(op);
        }
    }
    ops
}

fn random_op(rng: &mut Rng) -> Op {
    let client = rng.below(CLIENTS);
    let size = if rng.percent(8) {
        // Several content-defined blocks (min 16 KiB, average 64 KiB).
        20_000 + rng.below(280_000)
    } else {
        1 + rng.below(400)
    };
    let pick = rng.below(1 << 16);
    let dir = rng.below(UNIVERSE.dirs.len());
    let step = match rng.below(100) {
        0..=25 => Step::Files(Action::Write {
            file: rng.below(UNIVERSE.files()),
            size,
        }),
        26..=43 => Step::Files(Action::Modify {
            pick,
            size,
            safe: rng.percent(30),
        }),
        44..=53 => Step::Files(Action::Delete { pick }),
        54..=65 => Step::Files(Action::Rename {
            pick,
            to: rng.below(UNIVERSE.files()),
        }),
        66..=70 => Step::Files(Action::Mkdir { dir }),
        71..=74 => Step::Files(Action::Rmdir { dir }),
        75..=78 => Step::Files(Action::RmdirAll { dir }),
        79..=81 => Step::Files(Action::RenameDir {
            from: dir,
            to: rng.below(UNIVERSE.dirs.len()),
        }),
        _ => Step::Toggle,
    };
    let then = match rng.below(100) {
        0..=64 => Then::Go,
        65..=89 => Then::WaitClient,
        _ => Then::WaitAll,
    };
    Op { client, step, then }
}

#[derive(Default)]
struct Stats {
    done: usize,
    skipped: usize,
    failed: usize,
    toggles: usize,
    waits: usize,
}

/// The state of one case: the ledger of what was written, the op log, and problems.
/// When the case fails, dropping it prints all of that with the seed.
struct Model {
    seed: u64,
    n_ops: usize,
    skip: Vec<String>,
    start: Instant,
    log: Vec<String>,
    ledger: Ledger,
    paused: [bool; CLIENTS],
    /// Problems seen during the run, reported at the end.
    problems: Vec<String>,
    stats: Stats,
}

impl Drop for Model {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

impl Model {
    fn new(seed: u64, n_ops: usize, skip: &[String]) -> Model {
        Model {
            seed,
            n_ops,
            skip: skip.to_vec(),
            start: Instant::now(),
            log: Vec::new(),
            ledger: Ledger::new(
                format!("filesync model test, seed {seed:#x}"),
                seed,
                UNIVERSE,
            ),
            paused: [false; CLIENTS],
            problems: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn rerun(&self) -> String {
        format!(
            "{} cargo test -p filesync-tests --test e2e model::random",
            rerun_env(self.seed, self.n_ops, &self.skip)
        )
    }

    /// The op log and every content, for a failing case.
    fn report(&self) -> String {
        let mut text = format!(
            "===== model case seed {:#x} ({} ops) failed; re-run: {} =====\n--- op log ---\n",
            self.seed,
            self.n_ops,
            self.rerun()
        );
        for line in &self.log {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("--- contents ---\n");
        text.push_str(&self.ledger.dump());
        text.push_str(&format!(
            "===== end of model case seed {:#x} =====",
            self.seed
        ));
        text
    }

    fn note(&mut self, n: Option<usize>, text: String) {
        let op = n.map_or_else(|| "  -".to_owned(), |n| format!("{n:>3}"));
        self.log.push(format!(
            "{op} {:>7.2}s {text}",
            self.start.elapsed().as_secs_f64()
        ));
    }

    /// Runs one operation on the cluster and logs what it did.
    fn apply(&mut self, cl: &Cluster, n: usize, op: Op) {
        let c = op.client;
        let name = client_name(c);
        let outcome = match op.step {
            Step::Files(action) => self
                .ledger
                .act(n, c, &cl.client(c).folder_dir(DOCS), action),
            Step::Toggle => self.toggle(cl, c),
        };
        match &outcome {
            Outcome::Done(_) => self.stats.done += 1,
            Outcome::Skipped(_) => self.stats.skipped += 1,
            Outcome::Failed(_) => self.stats.failed += 1,
        }
        self.note(Some(n), format!("{name}: {outcome}"));
        let waits: Vec<usize> = match op.then {
            Then::Go => vec![],
            Then::WaitClient => vec![c],
            Then::WaitAll => (0..CLIENTS).collect(),
        };
        let paused = self.paused;
        for w in waits.into_iter().filter(|&w| !paused[w]) {
            let started = Instant::now();
            let out = cl.client(w).wait(DOCS, STEP_WAIT);
            self.stats.waits += 1;
            let took = started.elapsed();
            if out.status.success() {
                self.note(
                    Some(n),
                    format!("  wait {}: ok in {took:.2?}", client_name(w)),
                );
            } else {
                let why = describe(&out);
                self.note(
                    Some(n),
                    format!("  wait {}: FAILED after {took:.2?}: {why}", client_name(w)),
                );
                self.problems.push(format!(
                    "op {n}: `filesyncctl wait` on {} failed on a quiet cluster: {why}",
                    client_name(w)
                ));
            }
        }
    }

    /// `pause docs` on client `c` if it is connected, else `resume docs`.
    fn toggle(&mut self, cl: &Cluster, c: usize) -> Outcome {
        let verb = if self.paused[c] { "resume" } else { "pause" };
        let out = cl.client(c).ctl([verb, DOCS]);
        if out.status.success() {
            self.paused[c] = !self.paused[c];
            self.stats.toggles += 1;
            Outcome::Done(verb.to_owned())
        } else {
            Outcome::Failed(format!("{verb}: {}", describe(&out)))
        }
    }

    /// Reconnects every paused client, settles the cluster, and checks the properties.
    fn finish(&mut self, cl: &Cluster) -> CaseSummary {
        for c in 0..CLIENTS {
            if !self.paused[c] {
                continue;
            }
            let node = cl.client(c);
            poll_until(Duration::from_secs(20), || {
                let out = node.ctl(["resume", DOCS]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(describe(&out))
                }
            })
            .unwrap_or_else(|why| {
                panic!(
                    "seed {:#x}: cannot resume {}: {why}",
                    self.seed,
                    node.name()
                )
            });
            self.paused[c] = false;
            self.note(None, format!("{}: resume", client_name(c)));
        }
        self.note(None, "settle".to_owned());
        let common = cl.settle(DOCS);
        self.note(None, format!("settled: {} paths", common.len()));

        let (account, versions) = server_versions(cl);
        let mut problems = std::mem::take(&mut self.problems);
        problems.append(&mut self.ledger.problems);
        problems.extend(self.ledger.lost(&common, &versions));
        problems.extend(self.ledger.invented(&common));
        problems.extend(server_index_problems(cl, &account, &common));

        assert!(
            problems.is_empty(),
            "model case seed {:#x} ({} ops) broke a property (re-run: {}):\n - {}",
            self.seed,
            self.n_ops,
            self.rerun(),
            problems.join("\n - ")
        );
        CaseSummary {
            paths: common.len(),
            conflicts: tree::conflict_copies(&common).len(),
            versions: versions.len(),
        }
    }
}

struct CaseSummary {
    paths: usize,
    conflicts: usize,
    versions: usize,
}

/// The environment that replays a case.
fn rerun_env(seed: u64, n_ops: usize, skip: &[String]) -> String {
    let mut env = format!("{SEED_ENV}={seed:#x} {OPS_ENV}={n_ops}");
    if !skip.is_empty() {
        env += &format!(" {SKIP_ENV}={}", skip.join(","));
    }
    env
}

/// `FILESYNC_MODEL_SKIP`: kinds of operation to leave out, comma-separated.
fn env_skip() -> Vec<String> {
    let text = std::env::var(SKIP_ENV).unwrap_or_default();
    let skip: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    for kind in &skip {
        assert!(
            STEP_KINDS.contains(&kind.as_str()),
            "{SKIP_ENV}: unknown kind {kind:?}; the kinds are {STEP_KINDS:?}"
        );
    }
    skip
}

/// Random operations on three clients with disconnects and reconnects converge, and
/// lose no content that its writer did not destroy itself (see the module docs).
#[test]
fn random_operations_converge_and_lose_nothing() {
    // A fixed seed by default, so that CI runs the same operations every time and a red
    // build means a change broke something; `FILESYNC_MODEL_SEED=random` explores.
    let random = std::env::var(SEED_ENV).is_ok_and(|v| v == "random");
    let seed = if random {
        Some(random_seed())
    } else {
        env_number(SEED_ENV)
    };
    let cases = env_number(CASES_ENV).unwrap_or(if seed.is_some() && !random {
        1
    } else {
        DEFAULT_CASES
    });
    let n_ops = env_number(OPS_ENV).unwrap_or(DEFAULT_OPS) as usize;
    let skip = env_skip();
    let first = seed.unwrap_or(DEFAULT_SEED);
    let started = Instant::now();
    for case in 0..cases {
        let seed = first.wrapping_add(case);
        eprintln!(
            "model case {}/{cases}: seed {seed:#x} (re-run: {})",
            case + 1,
            rerun_env(seed, n_ops, &skip)
        );
        run_case(seed, n_ops, &skip);
    }
    eprintln!("model: {cases} cases in {:.1?}", started.elapsed());
}

fn run_case(seed: u64, n_ops: usize, skip: &[String]) {
    let ops = generate(seed, n_ops, skip);
    // Declared before the cluster, so dropped after it: on failure the daemons' log
    // tails come first and the seed and op log last, where they are seen.
    let mut model = Model::new(seed, n_ops, skip);
    let cl = Cluster::new(CLIENTS);
    model.note(None, "cluster started".to_owned());
    model.start = Instant::now();
    for (n, op) in ops.into_iter().enumerate() {
        cl.note(&format!("model op {n}: {op:?}"));
        model.apply(&cl, n, op);
    }
    let summary = model.finish(&cl);
    let required = model.ledger.required();
    let s = &model.stats;
    eprintln!(
        "model seed {seed:#x}: ok in {:.1?}: {} ops done, {} skipped, {} failed, {} pause/resume, \
         {} waits; {} contents written, {required} required; converged on {} paths, \
         {} conflict copies, {} server versions",
        model.start.elapsed(),
        s.done,
        s.skipped,
        s.failed,
        s.toggles,
        s.waits,
        model.ledger.contents().len(),
        summary.paths,
        summary.conflicts,
        summary.versions
    );
}

#[test]
fn a_seed_always_makes_the_same_operations() {
    assert_eq!(generate(42, 200, &[]), generate(42, 200, &[]));
    assert_ne!(generate(42, 50, &[]), generate(43, 50, &[]));
    let ops = generate(7, 2000, &[]);
    let kinds: HashSet<&str> = ops.iter().map(|op| op.step.kind()).collect();
    assert_eq!(
        kinds.len(),
        STEP_KINDS.len(),
        "every kind comes up: {kinds:?}"
    );
    let per_client: BTreeMap<usize, usize> = ops.iter().fold(BTreeMap::new(), |mut m, op| {
        *m.entry(op.client).or_default() += 1;
        m
    });
    assert_eq!(per_client.len(), CLIENTS);
    let skip = ["rm-r".to_owned(), "pause".to_owned()];
    let ops = generate(7, 500, &skip);
    assert_eq!(ops.len(), 500);
    assert!(
        ops.iter()
            .all(|op| !skip.iter().any(|k| k == op.step.kind()))
    );
}

/// The smallest case the model test found (seed 0x4fa49b622d63cd5): a client away
/// (paused) adds a file to a dir that another client deletes meanwhile. Edit beats
/// delete, so the new file, and its dir, must reach every replica when it comes back.
#[test]
fn new_file_in_a_dir_deleted_elsewhere_while_away_survives() {
    let cl = Cluster::new(2);
    filesync_tests::files::write(&cl.path_on(0, DOCS, "d/old.txt"), b"old\n");
    cl.settle(DOCS);

    cl.pause(0, DOCS);
    fs::remove_dir_all(cl.path_on(1, DOCS, "d")).unwrap();
    cl.settle_clients(DOCS, &[1], filesync_tests::SYNC_TIMEOUT);

    let new = b"written on A while away, in a dir B deleted\n";
    filesync_tests::files::write(&cl.path_on(0, DOCS, "d/new.txt"), new);
    cl.resume(0, DOCS);
    let common = cl.settle(DOCS);
    assert_eq!(crate::paths(&common), ["d", "d/new.txt"]);
    cl.assert_file_everywhere(DOCS, "d/new.txt", new);
}

/// Another loss the model test found (seed 0xfe418e70869b6f97): B downloaded `d0/e/c`
/// while its user created that file, and the download's rename replaced the user's file,
/// which reached nobody. Here the window is made wide with a large file: A writes its
/// own file at the path while the download's temp file is being filled. Whichever
/// version keeps the name, the other must survive, as a conflict copy or, if A's write
/// came after the download, as a version on the server.
#[test]
fn local_file_written_while_its_remote_version_downloads_is_kept() {
    let cl = Cluster::new(2);
    cl.settle(DOCS);
    let remote = pseudo_random(77, 24 << 20);
    filesync_tests::files::write(&cl.path_on(1, DOCS, "big.bin"), &remote);
    let a_dir = cl.client(0).folder_dir(DOCS);
    // The file the download is filling (a file this large goes to `.filesync-partial-*`,
    // a smaller one to `.filesync-tmp-*`), or the download already done on a fast machine.
    poll_until(filesync_tests::SYNC_TIMEOUT, || {
        let started = fs::read_dir(&a_dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".filesync-") || name == "big.bin"
            });
        if started {
            Ok(())
        } else {
            Err("A has not started downloading big.bin".to_owned())
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let local = b"A's own big.bin, written while B's was downloading\n";
    fs::write(cl.path_on(0, DOCS, "big.bin"), local).unwrap();

    let common = cl.settle(DOCS);
    let (_, versions) = server_versions(&cl);
    let digests: HashSet<&str> = common
        .values()
        .map(|e| e.digest.as_str())
        .chain(versions.iter().map(|v| v.digest.as_str()))
        .collect();
    for (whose, content) in [("B's", &remote[..]), ("A's own", &local[..])] {
        assert!(
            digests.contains(tree::sha256(content).as_str()),
            "{whose} big.bin is in no replica and not among the server's versions; \
             the tree: {:?}",
            crate::paths(&common)
        );
    }
}
