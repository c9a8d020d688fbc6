//! The end-to-end test fixture of filesync: it starts real `filesyncd` processes on
//! loopback, each with its own temporary home, drives them with `filesyncctl`, and
//! compares the synced trees on disk.
//!
//! It is a black box on purpose. It speaks only the interface contract of the design
//! brief (§5): the config file keys, the `filesyncctl` commands and exit codes, the JSON
//! printed by `filesyncctl status --json`, and the on-disk layout of the server's copy
//! (`DATA_DIR/ACCOUNT/FOLDER/`). It does not link against the daemon, so a test here
//! breaks only when behaviour a user can see breaks. It mirrors the Python harness in
//! `shared/checks/fsharness.py`, which the product must pass as well. The one exception
//! is [`hostile`], which links `filesync-proto` to speak the wire protocol itself.
//!
//! * [`exec`] finds the built binaries, runs commands with a deadline, owns scratch dirs.
//! * [`node`] is one `filesyncd` process: [`Node`].
//! * [`process`] is a bare `filesyncd` whose arguments and environment a test chooses.
//! * [`cluster`] is a server and N clients syncing a folder, with the common oracle
//!   that every scenario ends with: [`Cluster`]. [`backend`] says which server it runs:
//!   the embedded one or nodes of the cluster backend on [`pg`] and [`garage`].
//! * [`tree`] reads a synced tree into a [`Manifest`], compares trees, waits for them to
//!   converge, and finds daemon temp files left behind.
//! * [`files`] makes and checks test content.
//! * [`hostile`] speaks the real protocol, or raw bytes, as a hostile device or server.
//! * [`server_store`] reads what the server keeps beside its tree: kept versions, index.
//! * [`proxy`] is a TCP relay that a test turns into a bad network: stall, refuse, reset,
//!   throttle.
//! * [`workload`] runs seeded random file operations on clients and keeps the ledger of
//!   every content written, for the "nothing lost" oracle of the model test and the soak.
//! * [`browser`] is a headless chromium driven over WebDriver, for the web page; [`http`]
//!   sends one plain HTTP request.
//! * [`wine`] runs the Windows binaries under Wine, in a fresh prefix per test:
//!   [`wine::WinNode`].
//!
//! Every wait is a poll with a deadline ([`poll_until`]) or `filesyncctl wait`; nothing
//! sleeps for a fixed time hoping that the daemons are done.
//!
//! The binaries are not built by `cargo test -p filesync-tests` (Cargo builds binaries
//! only for the package that owns them): run `cargo build --workspace` first, or point
//! `FILESYNC_BIN_DIR` at a directory holding `filesyncd` and `filesyncctl`. Set
//! `FILESYNC_KEEP_TEST_DIRS=1` to keep every test's temp dir (configs, state, logs).
#![cfg(unix)]

pub mod backend;
pub mod browser;
pub mod cluster;
pub mod exec;
pub mod files;
pub mod garage;
pub mod hostile;
pub mod http;
pub mod node;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod server_store;
pub mod tree;
pub mod wine;
pub mod workload;

use std::time::{Duration, Instant};

pub use backend::Backend;
pub use cluster::Cluster;
pub use node::{Counters, Node};
pub use tree::{Entry, Kind, Manifest, converge, manifest};

/// How long a scenario step may take to converge on the 2-core CI machines.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The interval between two looks at a condition we wait for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `attempt` every [`POLL_INTERVAL`] until it returns `Ok` or `timeout` has passed,
/// and returns the last error, with how long it waited, when time runs out.
///
/// `attempt` runs at least once, so a zero timeout is a single check. The loop is bounded
/// both by the deadline and by a count, so a clock that misbehaves cannot make it spin
/// forever.
pub fn poll_until<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let max_attempts = timeout.as_millis() / POLL_INTERVAL.as_millis() + 2;
    let mut last = String::from("condition never checked");
    for n in 1..=max_attempts {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(why) => last = why,
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "{last}\n(gave up after {:.1?} and {n} attempts)",
                start.elapsed()
            ));
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
    Err(format!(
        "{last}\n(gave up after {max_attempts} attempts in {:.1?})",
        start.elapsed()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_returns_the_first_success() {
        let mut calls = 0;
        let got = poll_until(Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        });
        assert_eq!(got, Ok(3));
    }

    #[test]
    fn poll_until_with_zero_timeout_checks_once_and_reports_the_reason() {
        let mut calls = 0;
        let got: Result<(), String> = poll_until(Duration::ZERO, || {
            calls += 1;
            Err("not yet".into())
        });
        assert_eq!(calls, 1);
        assert!(got.unwrap_err().starts_with("not yet"));
    }
}
