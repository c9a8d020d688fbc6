//! The end-to-end scenarios of filesync, compiled into one test binary.
//!
//! Each test starts its own server and clients (`filesync_tests::Cluster`) in its own
//! temp dir with its own ports, so tests run in parallel. Every step ends with
//! `Cluster::settle`: the replicas converge, `filesyncctl wait` exits 0 on the clients,
//! and the common oracle holds. Tests then check the expected content explicitly, since
//! replicas that all lost a change would also agree.
//!
//! Needs the binaries: `cargo build --workspace` before `cargo test`.
#![cfg(unix)]

#[path = "e2e/accounts.rs"]
mod accounts;
#[path = "e2e/changes.rs"]
mod changes;
#[path = "e2e/clock.rs"]
mod clock;
#[path = "e2e/cluster_accounts.rs"]
mod cluster_accounts;
#[path = "e2e/cluster_faults.rs"]
mod cluster_faults;
#[path = "e2e/confinement.rs"]
mod confinement;
#[path = "e2e/conflicts.rs"]
mod conflicts;
#[path = "e2e/control.rs"]
mod control;
#[path = "e2e/crashpoints.rs"]
mod crashpoints;
#[path = "e2e/diskfull.rs"]
mod diskfull;
#[path = "e2e/drift.rs"]
mod drift;
#[path = "e2e/editors.rs"]
mod editors;
#[path = "e2e/fanout.rs"]
mod fanout;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/first_scan.rs"]
mod first_scan;
#[path = "e2e/follows.rs"]
mod follows;
#[path = "e2e/guard.rs"]
mod guard;
#[path = "e2e/hardcases.rs"]
mod hardcases;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/ignore.rs"]
mod ignore;
#[path = "e2e/inline.rs"]
mod inline;
#[path = "e2e/invites.rs"]
mod invites;
#[path = "e2e/latency.rs"]
mod latency;
#[path = "e2e/local.rs"]
mod local;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/model.rs"]
mod model;
#[path = "e2e/names.rs"]
mod names;
#[path = "e2e/offline.rs"]
mod offline;
#[path = "e2e/on_cluster.rs"]
mod on_cluster;
#[path = "e2e/ops.rs"]
mod ops;
#[path = "e2e/owed.rs"]
mod owed;
#[path = "e2e/quota.rs"]
mod quota;
#[path = "e2e/receive_only.rs"]
mod receive_only;
#[path = "e2e/renames.rs"]
mod renames;
#[path = "e2e/restore.rs"]
mod restore;
#[path = "e2e/scale.rs"]
mod scale;
#[path = "e2e/scaleout.rs"]
mod scaleout;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/sharing.rs"]
mod sharing;
#[path = "e2e/shown.rs"]
mod shown;
#[path = "e2e/soak.rs"]
mod soak;
#[path = "e2e/transfer.rs"]
mod transfer;
#[path = "e2e/versions.rs"]
mod versions;
#[path = "e2e/web.rs"]
mod web;
#[path = "e2e/windows.rs"]
mod windows;

use std::time::{SystemTime, UNIX_EPOCH};

use filesync_tests::Manifest;

/// The paths of a manifest, for comparing with the paths a step should leave.
fn paths(manifest: &Manifest) -> Vec<&str> {
    manifest.keys().map(String::as_str).collect()
}

/// Now, in seconds since the Unix epoch: the unit of the times `filesyncctl` prints.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
