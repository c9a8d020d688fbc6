//! The chaos soak (shared/test-matrix.md, "Chaos soak" after section b): a server and
//! three clients, each client behind its own fault proxy, a seeded random workload on
//! every client, and random faults, for `FILESYNC_SOAK_SECS` seconds; then everything is
//! healed, the cluster must converge, and nothing written may be lost.
//!
//! The workload is the model test's operations ([`filesync_tests::workload`]) plus
//! appends and large (1-8 MiB) files, on a bigger universe of paths, paced at
//! [`OPS_PER_SEC`] over all clients, with no waits between operations: they race with
//! the daemons' scans, pushes, applies and with the faults. Every [`FAULT_GAP`] one
//! fault is injected, and healed later by the same loop:
//!
//! * `kill-client`: SIGKILL a client, restart it a few seconds later (its folder keeps
//!   changing meanwhile: the start-up scan must find those changes, deletes included);
//! * `kill-server`: SIGKILL the server, restart it a few seconds later;
//! * `stall`: a silent partition of one client (its proxy passes no byte), then heal;
//! * `refuse`: one client's proxy cuts its connections and refuses new ones, then heal;
//! * `flap`: one client's connections are reset several times in a row.
//!
//! At the end every proxy passes again, every daemon that is down is started, and the
//! cluster settles (`Cluster::settle_clients`: the four replicas converge, `filesyncctl
//! wait` exits 0 on every client, daemons alive, no `last_error`, no temp files, nothing
//! written outside). Then the ledger's oracle: every content not destroyed by its own
//! writer is in the tree (at any path, conflict copies included) or among the server's
//! kept versions; no file holds content nobody wrote; the server's index is sound.
//! Extra content (a name brought back by the known rename-then-delete gap) passes;
//! missing content never does.
//!
//! # Running it
//!
//! * `FILESYNC_SOAK_SECS=N`: how long the chaos lasts (default 120, CI's run).
//! * `FILESYNC_SOAK_SEED=S` (decimal or `0x…`, or `random`): the seed. It is printed at
//!   the start with the command that re-runs it. By default a fixed one, so that CI
//!   runs the same operations and faults every time (the daemons' timing still
//!   varies) and a red build means a change broke something; `scripts/soak.sh` picks a
//!   random one for long runs.
//! * `FILESYNC_SOAK_LOG=FILE`: also write the op log there, line by line (a failure
//!   prints its tail).
//! * `scripts/soak.sh [MINUTES] [SEED]` builds and runs just this test with
//!   `--nocapture`, for long runs.
//!
//! A seed fixes the operations and faults and their order, not the timing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{LineWriter, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use filesync_tests::cluster::DOCS;
use filesync_tests::proxy::{FaultProxy, Mode};
use filesync_tests::tree::{Kind, conflict_copies};
use filesync_tests::workload::{
    Action, Ledger, Outcome, Rng, Universe, client_name, env_number, random_seed,
    server_index_problems, server_versions,
};
use filesync_tests::{Cluster, Manifest, Node};

const SECS_ENV: &str = "FILESYNC_SOAK_SECS";
const SEED_ENV: &str = "FILESYNC_SOAK_SEED";
/// The seed CI runs: one that passed 2-minute runs before and after the fixes it found.
const CI_SEED: u64 = 0x5ed6_2cd0_c1d9_613b;
const LOG_ENV: &str = "FILESYNC_SOAK_LOG";
const DEFAULT_SECS: u64 = 120;

const CLIENTS: usize = 3;
/// 9 dirs and 6 names in each and in the root: 60 paths, so clients collide often, and
/// fewer files than the 100 at which a mass-delete guard may hold a folder. Only dir
/// moves make and fill the last [`MOVED_ONLY`] dirs, so that a move often finds its
/// target free.
const UNIVERSE: Universe = Universe {
    dirs: &[
        "d0", "d1", "d0/e", "d2", "d2/f", "d2/f/g", "m0", "m1", "d1/h",
    ],
    names: &["a.txt", "b.txt", "c", "d.md", "e.bin", "f"],
};
const MOVED_ONLY: usize = 3;
/// Operations per second, over all clients.
const OPS_PER_SEC: u64 = 6;
/// The time between two faults: from the first to the second bound.
const FAULT_GAP: (u64, u64) = (5, 20);
/// How long the healed cluster may take to converge.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How many op log lines a failure prints.
const LOG_TAIL_LINES: usize = 300;

/// One fault, with its random choices made when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillClient(usize),
    KillServer,
    Stall(usize),
    Refuse(usize),
    Flap(usize),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::KillClient(_) => "kill-client",
            Fault::KillServer => "kill-server",
            Fault::Stall(_) => "stall",
            Fault::Refuse(_) => "refuse",
            Fault::Flap(_) => "flap",
        }
    }
}

/// What the loop does later to end a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heal {
    /// Start a killed node: a client's index, or `None` for the server.
    Start(Option<usize>),
    /// Let a client's proxy pass bytes again.
    Pass(usize),
    /// One more reset of a client's connections (a flap).
    Reset(usize),
}

fn random_action(rng: &mut Rng) -> Action {
    let size = match rng.below(100) {
        0..=2 => (1 << 20) + rng.below(7 << 20),
        3..=12 => 20_000 + rng.below(280_000),
        _ => 1 + rng.below(400),
    };
    let small = 1 + rng.below(2000);
    let pick = rng.below(1 << 16);
    let dirs = UNIVERSE.dirs.len() - MOVED_ONLY;
    let dir = rng.below(dirs);
    // The root's files and those of the dirs that are not [`MOVED_ONLY`].
    let file = rng.below((dirs + 1) * UNIVERSE.names.len());
    match rng.below(100) {
        0..=21 => Action::Write { file, size },
        22..=39 => Action::Modify {
            pick,
            size: size.min(300_000),
            safe: rng.percent(30),
        },
        40..=49 => Action::Append { pick, size: small },
        50..=59 => Action::Delete { pick },
        60..=71 => Action::Rename { pick, to: file },
        72..=77 => Action::Mkdir { dir },
        78..=81 => Action::Rmdir { dir },
        82..=84 => Action::RmdirAll { dir },
        // Never onto itself: a dir move that does not apply teaches nothing.
        _ => {
            let from = rng.below(UNIVERSE.dirs.len());
            Action::RenameDir {
                from,
                to: (from + 1 + rng.below(UNIVERSE.dirs.len() - 1)) % UNIVERSE.dirs.len(),
            }
        }
    }
}

fn random_fault(rng: &mut Rng) -> Fault {
    let client = rng.below(CLIENTS);
    match rng.below(100) {
        0..=24 => Fault::KillClient(client),
        25..=44 => Fault::KillServer,
        45..=64 => Fault::Stall(client),
        65..=84 => Fault::Refuse(client),
        _ => Fault::Flap(client),
    }
}

/// A number of seconds in `lo..=hi`, as a duration.
fn secs_between(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo * 1000 + rng.below(((hi - lo) * 1000) as usize + 1) as u64)
}

/// Counts of done / skipped / failed operations of one kind.
#[derive(Default, Clone, Copy)]
struct OpCount {
    done: usize,
    skipped: usize,
    failed: usize,
}

/// The run: the workload's and the faults' random choices, the ledger, the heals due,
/// and the op log. Dropping it during a panic prints the seed and the log's tail.
struct Soak {
    seed: u64,
    secs: u64,
    rng: Rng,
    ledger: Ledger,
    proxies: Vec<FaultProxy>,
    heals: Vec<(Instant, Heal)>,
    ops: BTreeMap<&'static str, OpCount>,
    faults: BTreeMap<&'static str, usize>,
    start: Instant,
    log: Vec<String>,
    log_file: Option<LineWriter<File>>,
}

impl Drop for Soak {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let from = self.log.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "===== soak seed {:#x} failed; re-run: {} =====\n--- op log (last {} lines) ---\n{}\n\
                 ===== end of soak seed {:#x} =====",
                self.seed,
                rerun(self.seed, self.secs),
                self.log.len() - from,
                self.log[from..].join("\n"),
                self.seed
            );
        }
    }
}

fn rerun(seed: u64, secs: u64) -> String {
    format!(
        "{SEED_ENV}={seed:#x} {SECS_ENV}={secs} \
         cargo test -p filesync-tests --test e2e soak::chaos_soak -- --nocapture"
    )
}

impl Soak {
    fn note(&mut self, cl: &Cluster, text: String) {
        let line = format!("{:>8.2}s {text}", self.start.elapsed().as_secs_f64());
        cl.note(&format!("soak: {text}"));
        if let Some(f) = &mut self.log_file {
            let _ = writeln!(f, "{line}");
        }
        self.log.push(line);
    }

    fn node(cl: &Cluster, which: Option<usize>) -> &Node {
        which.map_or_else(|| cl.server(), |c| cl.client(c))
    }

    /// Injects a random fault; a kill of a node that is already down is a no-op fault
    /// drawn again, at most a few times.
    fn inject(&mut self, cl: &Cluster) {
        for _ in 0..4 {
            let fault = random_fault(&mut self.rng);
            let target = match fault {
                Fault::KillClient(c) => Some(Some(c)),
                Fault::KillServer => Some(None),
                _ => None,
            };
            if target.is_some_and(|t| !Self::node(cl, t).is_started()) {
                continue;
            }
            *self.faults.entry(fault.kind()).or_default() += 1;
            self.note(cl, format!("FAULT {fault:?}"));
            let now = Instant::now();
            match fault {
                Fault::KillClient(c) => {
                    cl.client(c).kill();
                    let down = secs_between(&mut self.rng, 1, 6);
                    self.heals.push((now + down, Heal::Start(Some(c))));
                }
                Fault::KillServer => {
                    cl.server().kill();
                    let down = secs_between(&mut self.rng, 1, 4);
                    self.heals.push((now + down, Heal::Start(None)));
                }
                Fault::Stall(c) => {
                    self.proxies[c].set_mode(Mode::Stall);
                    let down = secs_between(&mut self.rng, 3, 15);
                    self.heals.push((now + down, Heal::Pass(c)));
                }
                Fault::Refuse(c) => {
                    self.proxies[c].set_mode(Mode::Refuse);
                    self.proxies[c].reset_all();
                    let down = secs_between(&mut self.rng, 2, 10);
                    self.heals.push((now + down, Heal::Pass(c)));
                }
                Fault::Flap(c) => {
                    self.proxies[c].reset_all();
                    let mut at = now;
                    for _ in 0..2 + self.rng.below(5) {
                        at += Duration::from_millis(300 + self.rng.below(1700) as u64);
                        self.heals.push((at, Heal::Reset(c)));
                    }
                }
            }
            return;
        }
    }

    fn heal(&mut self, cl: &Cluster, heal: Heal) {
        match heal {
            Heal::Start(which) => {
                let node = Self::node(cl, which);
                if !node.is_started() {
                    node.start();
                }
            }
            Heal::Pass(c) => self.proxies[c].set_mode(Mode::Pass),
            Heal::Reset(c) => {
                self.proxies[c].reset_all();
            }
        }
        self.note(cl, format!("heal {heal:?}"));
    }

    /// Runs the heals that are due, earliest first.
    fn heal_due(&mut self, cl: &Cluster) {
        let now = Instant::now();
        self.heals.sort_by_key(|(at, _)| *at);
        let due = self.heals.iter().take_while(|(at, _)| *at <= now).count();
        let heals: Vec<Heal> = self.heals.drain(..due).map(|(_, h)| h).collect();
        for heal in heals {
            self.heal(cl, heal);
        }
    }

    /// Every daemon that was not killed on purpose must still run.
    fn check_alive(&self, cl: &Cluster) {
        for which in std::iter::once(None).chain((0..CLIENTS).map(Some)) {
            let node = Self::node(cl, which);
            if node.is_started()
                && let Err(why) = node.check_running()
            {
                panic!("soak seed {:#x}: a daemon died: {why}", self.seed);
            }
        }
    }

    /// The chaos: operations at [`OPS_PER_SEC`] and a fault every [`FAULT_GAP`], until
    /// `duration` has passed.
    fn run(&mut self, cl: &Cluster, duration: Duration) {
        let gap = Duration::from_millis(1000 / OPS_PER_SEC);
        let end = self.start + duration;
        let mut next_fault = self.start + secs_between(&mut self.rng, FAULT_GAP.0, FAULT_GAP.1);
        let mut next_op = self.start;
        let max_ops = duration.as_secs() * OPS_PER_SEC + OPS_PER_SEC;
        for n in 0..max_ops as usize {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.heal_due(cl);
            if now >= next_fault {
                self.check_alive(cl);
                self.inject(cl);
                next_fault = now + secs_between(&mut self.rng, FAULT_GAP.0, FAULT_GAP.1);
            }
            let c = self.rng.below(CLIENTS);
            let action = random_action(&mut self.rng);
            let root = cl.client(c).folder_dir(DOCS);
            let outcome = self.ledger.act(n, c, &root, action);
            let count = self.ops.entry(action.kind()).or_default();
            match &outcome {
                Outcome::Done(_) => count.done += 1,
                Outcome::Skipped(_) => count.skipped += 1,
                Outcome::Failed(_) => count.failed += 1,
            }
            self.note(cl, format!("op {n} {}: {outcome}", client_name(c)));
            // Pacing the workload, not waiting for a condition.
            next_op += gap;
            let now = Instant::now();
            if next_op > now {
                std::thread::sleep((next_op - now).min(end.saturating_duration_since(now)));
            } else {
                next_op = now;
            }
        }
    }

    /// Ends every fault: proxies pass, killed daemons start.
    fn heal_all(&mut self, cl: &Cluster) {
        self.heals.clear();
        for c in 0..CLIENTS {
            self.heal(cl, Heal::Pass(c));
        }
        for which in std::iter::once(None).chain((0..CLIENTS).map(Some)) {
            self.heal(cl, Heal::Start(which));
        }
    }
}

/// Files and bytes of the server's copy of the converged tree.
fn files_and_bytes(cl: &Cluster, common: &Manifest) -> (usize, u64) {
    let files: Vec<&String> = common
        .iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, _)| p)
        .collect();
    let bytes = files
        .iter()
        .filter_map(|p| fs::metadata(cl.server_path(DOCS, p)).ok())
        .map(|m| m.len())
        .sum();
    (files.len(), bytes)
}

/// Random operations and faults on a server and three clients behind fault proxies for
/// `FILESYNC_SOAK_SECS`, then heal, converge, and lose nothing (see the module docs).
#[test]
fn chaos_soak() {
    let secs = env_number(SECS_ENV).unwrap_or(DEFAULT_SECS);
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) if v == "random" => random_seed(),
        _ => env_number(SEED_ENV).unwrap_or(CI_SEED),
    };
    eprintln!(
        "soak: seed {seed:#x}, {secs} s (re-run: {})",
        rerun(seed, secs)
    );
    let log_file = std::env::var_os(LOG_ENV).map(|path| {
        LineWriter::new(File::create(&path).unwrap_or_else(|e| {
            panic!(
                "{LOG_ENV}={}: cannot create it: {e}",
                path.to_string_lossy()
            )
        }))
    });
    // Declared before the cluster, so dropped after it: on failure the daemons' log
    // tails come first and the seed and op log last, where they are seen.
    let mut soak = Soak {
        seed,
        secs,
        rng: Rng(seed),
        ledger: Ledger::new(format!("filesync soak, seed {seed:#x}"), seed, UNIVERSE),
        proxies: Vec::new(),
        heals: Vec::new(),
        ops: BTreeMap::new(),
        faults: BTreeMap::new(),
        start: Instant::now(),
        log: Vec::new(),
        log_file,
    };
    let cl = Cluster::without_folders(CLIENTS, Some("open"));
    let server: SocketAddr = cl
        .server()
        .server_addr()
        .parse()
        .expect("the server's address is IP:PORT");
    for c in 0..CLIENTS {
        let proxy = FaultProxy::start(server);
        cl.add_folder_via(c, DOCS, &proxy.addr().to_string());
        soak.proxies.push(proxy);
    }
    soak.start = Instant::now();
    soak.run(&cl, Duration::from_secs(secs));
    let chaos = soak.start.elapsed();
    soak.check_alive(&cl);
    soak.heal_all(&cl);
    soak.note(&cl, "healed; settling".to_owned());
    let settle_start = Instant::now();
    let common = cl.settle_clients(DOCS, &cl.all_clients(), SETTLE_TIMEOUT);
    let settled_in = settle_start.elapsed();
    soak.note(
        &cl,
        format!("settled in {settled_in:.1?}: {} paths", common.len()),
    );

    let (account, versions) = server_versions(&cl);
    let mut problems = std::mem::take(&mut soak.ledger.problems);
    problems.extend(soak.ledger.lost(&common, &versions));
    problems.extend(soak.ledger.invented(&common));
    problems.extend(server_index_problems(&cl, &account, &common));

    let (files, bytes) = files_and_bytes(&cl, &common);
    let conflicts = conflict_copies(&common).len();
    let ops: Vec<String> = soak
        .ops
        .iter()
        .map(|(k, c)| format!("{k} {}/{}/{}", c.done, c.skipped, c.failed))
        .collect();
    let faults: Vec<String> = soak
        .faults
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let connections: Vec<u64> = soak
        .proxies
        .iter()
        .map(|p| p.traffic().connections)
        .collect();
    let summary = format!(
        "soak seed {seed:#x}: {:.0?} of chaos, settled in {settled_in:.1?}\n  \
         ops (done/skipped/failed): {} total; {}\n  \
         faults: {} total; {}\n  \
         connections per client: {connections:?}\n  \
         contents written {}, still required {}; server versions {}\n  \
         end: {} paths, {files} files, {bytes} bytes, {conflicts} conflict copies\n  \
         result: {}",
        chaos,
        soak.ops
            .values()
            .map(|c| c.done + c.skipped + c.failed)
            .sum::<usize>(),
        ops.join(", "),
        soak.faults.values().sum::<usize>(),
        faults.join(", "),
        soak.ledger.contents().len(),
        soak.ledger.required(),
        versions.len(),
        common.len(),
        if problems.is_empty() { "ok" } else { "FAILED" },
    );
    eprintln!("{summary}");
    soak.note(&cl, summary);
    assert!(
        problems.is_empty(),
        "soak seed {seed:#x} broke a property (re-run: {}):\n - {}",
        rerun(seed, secs),
        problems.join("\n - ")
    );
    assert!(
        soak.faults.values().sum::<usize>() >= (secs / (2 * FAULT_GAP.1)) as usize,
        "soak seed {seed:#x}: too few faults were injected: {faults:?}"
    );
}
