//! Which server a [`crate::Cluster`] runs: the embedded server (one node, SQLite indexes
//! and a browsable tree under its data dir, the default) or the cluster backend (issue
//! 19): `nodes` `filesyncd` server nodes, each with its own config, state and port,
//! sharing one throwaway PostgreSQL database and one Garage bucket ([`Engines`]).
//!
//! The same test bodies run on both: a scenario takes `&Cluster`, and only the few
//! checks that look at the server's storage itself ask which backend it is.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::exec::{bin, run_with_timeout};
use crate::garage::{self, Garage};
use crate::node::describe;
use crate::pg::Postgres;

/// The server side of a [`crate::Cluster`].
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// One server with the embedded backend (`server.backend` left at its default).
    Embedded,
    /// `nodes` server nodes with `backend = "cluster"` on PostgreSQL and a Garage of
    /// `garage_nodes` nodes (1, or 3 for the fault tests: every object on all three).
    Cluster { nodes: usize, garage_nodes: usize },
}

impl Backend {
    /// Two nodes on one Garage node: what the cluster variants of the sync tests use.
    pub const TWO_NODES: Backend = Backend::Cluster {
        nodes: 2,
        garage_nodes: 1,
    };

    /// How many server nodes run.
    pub fn nodes(self) -> usize {
        match self {
            Backend::Embedded => 1,
            Backend::Cluster { nodes, .. } => nodes,
        }
    }
}

/// The database every cluster of a test run uses (one PostgreSQL per cluster).
const DB: &str = "filesync";

/// The engines the nodes of a cluster share, stopped and removed when dropped.
pub struct Engines {
    // Field order is drop order: the bucket's nodes, then the database.
    pub garage: Garage,
    pub pg: Postgres,
    url: String,
}

impl Engines {
    /// A PostgreSQL with an empty database and a Garage of `garage_nodes` nodes under
    /// `dir` (in `dir/garage`); `None` (the test says it skipped) where either is not
    /// installed, except under `FILESYNC_REQUIRE_TOOLS`, where that fails.
    pub fn start_or_skip(dir: &Path, garage_nodes: usize) -> Option<Engines> {
        let pg = Postgres::start_or_skip()?;
        let garage = Garage::start_or_skip(dir, garage_nodes)?;
        let url = pg.create_db(DB);
        Some(Engines { garage, pg, url })
    }

    /// The `[server.cluster]` table of node `node_name`, on Garage node 0.
    pub fn table(&self, node_name: &str) -> String {
        cluster_table(&self.url, &self.garage, &[("node_name", node_name)])
    }

    /// Runs `sql` in the cluster's database: its output, unaligned, without headers.
    pub fn psql(&self, sql: &str) -> String {
        self.pg.psql(DB, sql)
    }
}

/// The `[server.cluster]` table for database `url` and Garage node 0, with `extra`
/// lines (a key given again replaces the default).
pub fn cluster_table(url: &str, garage: &Garage, extra: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("node_name", "node-1".to_owned()),
        ("postgres", url.to_owned()),
        ("s3_endpoint", garage.endpoint(0)),
        ("s3_region", garage::REGION.to_owned()),
        ("s3_bucket", garage::BUCKET.to_owned()),
        ("s3_access_key_id", garage::KEY_ID.to_owned()),
        ("s3_secret_access_key", garage::SECRET.to_owned()),
    ];
    for (key, value) in extra {
        keys.retain(|(k, _)| k != key);
        keys.push((key, (*value).to_owned()));
    }
    let lines: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    format!("{}\n{}\n", crate::node::CLUSTER_TABLE, lines.join("\n"))
}

/// How long an admin command (`gc`, `export`) on a test cluster may take on a loaded
/// machine.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one `filesyncd gc` says it did: blocks deleted, in use, younger than the grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collected {
    pub deleted: usize,
    pub in_use: usize,
    pub young: usize,
}

/// `filesyncd --config CONFIG gc`, with `FILESYNC_GC_GRACE_SECS` when given; must
/// succeed.
pub fn gc(config: &Path, grace_secs: Option<u64>) -> Collected {
    let mut cmd = Command::new(bin("filesyncd"));
    cmd.arg("--config").arg(config).arg("gc");
    if let Some(secs) = grace_secs {
        cmd.env("FILESYNC_GC_GRACE_SECS", secs.to_string());
    }
    let out = run_with_timeout(&mut cmd, ADMIN_TIMEOUT);
    assert!(out.status.success(), "filesyncd gc: {}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let number_before = |words: &str| -> usize {
        let at = said
            .find(words)
            .unwrap_or_else(|| panic!("no {words:?} in {said:?}"));
        let digits: String = said[..at]
            .trim_end()
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    Collected {
        deleted: number_before("blocks ("),
        in_use: number_before("in use"),
        young: number_before("younger than"),
    }
}
