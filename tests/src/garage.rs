//! Garage, a real distributed S3-compatible store, for the cluster-backend tests: one
//! node, or three on loopback with every object on all three (`replication_factor = 3`,
//! so writes go on with one node down). `scripts/test-deps.sh` installs the `garage`
//! binary (`cargo install --locked garage@2.5.0`) and keeps it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::exec::free_port;
use crate::node::describe;
use crate::poll_until;
use crate::wine::REQUIRE_TOOLS_ENV;

/// The bucket and the fixed test credentials every test uses.
pub const BUCKET: &str = "filesync";
pub const REGION: &str = "garage";
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "abababababababababababababababababababababababababababababababab";

/// How long a node may take to answer after it starts, and the layout to settle.
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct GarageNode {
    config: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    /// `ID@127.0.0.1:RPC_PORT`, known once the node has started.
    address: String,
    child: Option<Child>,
}

pub struct Garage {
    binary: PathBuf,
    dir: PathBuf,
    nodes: Vec<GarageNode>,
}

/// `garage` on the PATH or where `cargo install` puts it.
fn find_binary() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let in_cargo = cargo_home.map(|c| c.join("bin").join("garage"));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"));
    on_path.chain(in_cargo).find(|p| p.is_file())
}

impl Garage {
    /// `nodes` (1 or 3) running Garage nodes under `dir` with the bucket [`BUCKET`] and
    /// the key [`KEY_ID`]; `None` (the test says it skipped) where Garage is not
    /// installed, except under `.ci/run` (`FILESYNC_REQUIRE_TOOLS`), where that fails.
    pub fn start_or_skip(dir: &Path, nodes: usize) -> Option<Garage> {
        let Some(binary) = find_binary() else {
            assert!(
                std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
                "garage is not installed, and {REQUIRE_TOOLS_ENV} says the cluster tests \
                 must run: scripts/test-deps.sh installs it (cargo install --locked \
                 garage@2.5.0)"
            );
            eprintln!("skipped: garage is not installed (cargo install --locked garage@2.5.0)");
            return None;
        };
        Some(Garage::start(binary, dir, nodes))
    }

    fn start(binary: PathBuf, dir: &Path, count: usize) -> Garage {
        let dir = dir.join("garage");
        fs::create_dir_all(&dir).expect("cannot make Garage's directory");
        let rpc_secret: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
        let nodes = (0..count)
            .map(|i| {
                let home = dir.join(format!("node{i}"));
                fs::create_dir_all(&home).expect("cannot make a Garage node's directory");
                let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
                let config = home.join("garage.toml");
                let text = format!(
                    "metadata_dir = \"{home}/meta\"\n\
                     data_dir = \"{home}/data\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = {count}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                    home = home.display()
                );
                fs::write(&config, text).expect("cannot write a Garage config");
                GarageNode {
                    config,
                    s3_port,
                    rpc_port,
                    address: String::new(),
                    child: None,
                }
            })
            .collect();
        let mut garage = Garage { binary, dir, nodes };
        for i in 0..count {
            garage.start_node(i);
        }
        garage.set_up();
        garage.wait_connected();
        garage
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The number of objects in [`BUCKET`] as `garage bucket info` counts them (a
    /// counter Garage updates in the background: poll for the figure you expect).
    pub fn object_count(&self) -> Result<u64, String> {
        let via = *self.running().first().ok_or("no garage node runs")?;
        let out = self.cli(via, &["bucket", "info", BUCKET]);
        let said = String::from_utf8_lossy(&out.stdout);
        said.lines()
            .find_map(|l| l.trim().strip_prefix("Objects:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no object count in `garage bucket info`: {said}"))
    }

    /// Kills node `i` (SIGKILL), as a crashed host, and waits until the others are
    /// connected among themselves.
    pub fn kill_node(&mut self, i: usize) {
        self.stop_node(i);
        self.reconnect();
    }

    /// The nodes that run.
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// Asks every running node to connect to every other at once, rather than after
    /// its retry interval (tens of seconds), and waits until each lists all the others
    /// among its healthy nodes.
    fn reconnect(&self) {
        let running = self.running();
        for &i in &running {
            for &j in running.iter().filter(|&&j| j != i) {
                self.cli_ok(i, &["node", "connect", &self.nodes[j].address]);
            }
        }
        self.wait_connected();
    }

    fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again after [`Garage::kill_node`] and waits until it sees every
    /// other node.
    pub fn restart_node(&mut self, i: usize) {
        self.start_node(i);
        self.reconnect();
    }

    /// Waits until every running node lists every other running node among its healthy
    /// ones: connections between nodes are made, and re-made after one goes, in the
    /// background.
    fn wait_connected(&self) {
        let running = self.running();
        for &via in &running {
            poll_until(START_TIMEOUT, || {
                let status =
                    String::from_utf8_lossy(&self.cli(via, &["status"]).stdout).into_owned();
                let healthy = status.split("FAILED NODES").next().unwrap_or_default();
                let missing: Vec<&str> = running
                    .iter()
                    .map(|&i| self.nodes[i].address.split('@').next().unwrap_or_default())
                    .filter(|id| !healthy.contains(&id[..16.min(id.len())]))
                    .collect();
                match missing.is_empty() {
                    true => Ok(()),
                    false => Err(format!(
                        "garage node {via} does not see {missing:?} yet:\n{status}"
                    )),
                }
            })
            .unwrap_or_else(|why| panic!("{why}\n{}", self.logs()));
        }
    }

    /// Starts node `i` and waits until it answers.
    fn start_node(&mut self, i: usize) {
        let log = fs::File::create(self.dir.join(format!("node{i}.log")))
            .expect("cannot make a Garage log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log)
            .spawn()
            .expect("cannot start garage");
        self.nodes[i].child = Some(child);
        poll_until(START_TIMEOUT, || {
            let out = self.cli(i, &["status"]);
            match out.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "garage node {i} does not answer: {}",
                    describe(&out)
                )),
            }
        })
        .unwrap_or_else(|why| panic!("{why}\n{}", self.logs()));
    }

    /// Connects the nodes, gives each a role in one zone, makes the bucket and the key.
    fn set_up(&mut self) {
        let ids: Vec<String> = (0..self.nodes.len())
            .map(|i| {
                let id = self.cli_ok(i, &["node", "id", "-q"]);
                id.split('@').next().unwrap_or_default().trim().to_owned()
            })
            .collect();
        for (node, id) in self.nodes.iter_mut().zip(&ids) {
            node.address = format!("{id}@127.0.0.1:{}", node.rpc_port);
        }
        for node in &self.nodes[1..] {
            self.cli_ok(0, &["node", "connect", &node.address]);
        }
        for id in &ids {
            self.cli_ok(0, &["layout", "assign", "-z", "dc1", "-c", "1G", id]);
        }
        self.cli_ok(0, &["layout", "apply", "--version", "1"]);
        poll_until(START_TIMEOUT, || {
            let out = self.cli(0, &["bucket", "create", BUCKET]);
            match out.status.success() {
                true => Ok(()),
                false => Err(format!("bucket create: {}", describe(&out))),
            }
        })
        .unwrap_or_else(|why| panic!("{why}\n{}", self.logs()));
        self.cli_ok(
            0,
            &["key", "import", "--yes", KEY_ID, SECRET, "-n", "filesync"],
        );
        self.cli_ok(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
            ],
        );
    }

    fn cli(&self, i: usize, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run garage")
    }

    fn cli_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}\n{}",
            describe(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The end of every node's log, for a failure report.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let text =
                    fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- garage node {i} log (end) ---\n{}\n", tail.join("\n"))
            })
            .collect()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}
