//! A server and N clients on loopback, each client syncing the folder `docs`, and the
//! common oracle every scenario step ends with (shared/test-matrix.md, top). The server
//! is the embedded one, or K nodes of the cluster backend ([`Backend`]), client `i`
//! reaching node `i % K`.
//!
//! Layout under the cluster's temp dir:
//!
//! ```text
//! server/            the server node's home (config, state, ctl.sock, daemon.log, data/)
//! server2/, …        the other nodes' homes on the cluster backend
//! garage/            the Garage nodes of the cluster backend
//! exports/           `filesyncd export`s of the cluster backend's folders
//! a/, b/, …          the client nodes' homes
//! a-docs/, b-docs/   the clients' synced folders (<client>-<folder>)
//! canary/            files no daemon may touch
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::backend::{ADMIN_TIMEOUT, Backend, Engines};
use crate::exec::{Scratch, bin, run_with_timeout};
use crate::files;
use crate::tree::{
    self, Manifest, Skip, converge_with_excluding, manifest, stray_temp_files_excluding,
};
use crate::{Node, SYNC_TIMEOUT, poll_until};

/// The folder every client of a [`Cluster`] syncs from the start.
pub const DOCS: &str = "docs";

/// One server (or K cluster nodes) and `n` clients with their own temp dirs and ports;
/// everything is killed and removed on drop (see [`Scratch`] for keeping the files).
pub struct Cluster {
    // Field order is drop order: processes go before the engines and their directories.
    clients: Vec<Node>,
    /// The server nodes: one embedded server, or the cluster backend's nodes.
    servers: Vec<Node>,
    /// The index in `servers` of the node each client reaches.
    homes: Vec<usize>,
    /// The database and bucket of the cluster backend; `None` for the embedded server.
    engines: Option<Engines>,
    /// On the cluster backend, the latest export of each folder, made when a step
    /// settles: the server's copy that [`Cluster::server_path`] reads.
    exports: Mutex<BTreeMap<String, PathBuf>>,
    /// Top-level names of the temp dir the cluster made; anything else appearing there
    /// was written by a daemon outside its folders and state.
    expected_entries: Mutex<BTreeSet<String>>,
    canary: Manifest,
    scratch: Scratch,
}

impl Cluster {
    /// Starts a server with open registration and `n_clients` clients (`a`, `b`, …) and
    /// adds `<client>-docs` on each with `filesyncctl add … --name docs`.
    pub fn new(n_clients: usize) -> Cluster {
        Cluster::new_on(Backend::Embedded, n_clients).expect("the embedded server starts")
    }

    /// [`Cluster::new`] on `backend`; `None` when the test is skipped (PostgreSQL or
    /// Garage is not installed), having said why.
    pub fn new_on(backend: Backend, n_clients: usize) -> Option<Cluster> {
        let cluster = Cluster::without_folders_on(backend, n_clients, Some("open"))?;
        for i in 0..n_clients {
            cluster.add_folder(i, DOCS);
        }
        Some(cluster)
    }

    /// Starts a server whose `registration` key is `registration` (left out for `None`:
    /// invite only) and `n_clients` clients, with no folder added.
    pub fn without_folders(n_clients: usize, registration: Option<&'static str>) -> Cluster {
        Cluster::without_folders_on(Backend::Embedded, n_clients, registration)
            .expect("the embedded server starts")
    }

    /// [`Cluster::without_folders`] on `backend`; `None` when the test is skipped, as
    /// for [`Cluster::new_on`].
    pub fn without_folders_on(
        backend: Backend,
        n_clients: usize,
        registration: Option<&'static str>,
    ) -> Option<Cluster> {
        assert!(n_clients <= 26, "clients are named a..z");
        let scratch = Scratch::new();
        let root = scratch.path();
        let canary_dir = root.join("canary");
        files::write(&canary_dir.join("keep.txt"), b"no daemon writes here\n");
        files::write(
            &canary_dir.join("sub/keep.bin"),
            files::pseudo_random(7, 4096),
        );
        let canary = manifest(&canary_dir).expect("cannot read the canary dir");

        let (servers, engines) = match backend {
            Backend::Embedded => {
                let server = Node::server_with_registration(root, "server", registration);
                server.start();
                (vec![server], None)
            }
            Backend::Cluster {
                nodes,
                garage_nodes,
            } => {
                let engines = Engines::start_or_skip(root, garage_nodes)?;
                let servers = start_nodes(root, &engines, nodes, registration);
                (servers, Some(engines))
            }
        };
        let clients: Vec<Node> = (0..n_clients)
            .map(|i| {
                let name = char::from(b'a' + i as u8).to_string();
                let node = Node::client(root, &name);
                node.start();
                node
            })
            .collect();
        let mut expected: BTreeSet<String> = ["canary"]
            .into_iter()
            .map(String::from)
            .chain(servers.iter().map(|s| s.name().to_owned()))
            .chain(clients.iter().map(|c| c.name().to_owned()))
            .collect();
        if engines.is_some() {
            expected.extend(["garage".to_owned(), "exports".to_owned()]);
        }
        Some(Cluster {
            clients,
            homes: (0..n_clients).map(|i| i % servers.len()).collect(),
            servers,
            engines,
            exports: Mutex::new(BTreeMap::new()),
            expected_entries: Mutex::new(expected),
            canary,
            scratch,
        })
    }

    /// The cluster's temp dir.
    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// The embedded server, or the cluster backend's first node.
    pub fn server(&self) -> &Node {
        &self.servers[0]
    }

    /// Every server node (one for the embedded server).
    pub fn servers(&self) -> &[Node] {
        &self.servers
    }

    /// The server node client `i` reaches.
    pub fn home(&self, i: usize) -> &Node {
        &self.servers[self.homes[i]]
    }

    /// The cluster backend's database and bucket; `None` for the embedded server.
    pub fn engines(&self) -> Option<&Engines> {
        self.engines.as_ref()
    }

    /// [`Cluster::engines`], to stop and start their nodes.
    pub fn engines_mut(&mut self) -> Option<&mut Engines> {
        self.engines.as_mut()
    }

    pub fn client(&self, i: usize) -> &Node {
        &self.clients[i]
    }

    /// Client `a`.
    pub fn a(&self) -> &Node {
        self.client(0)
    }

    /// Client `b`.
    pub fn b(&self) -> &Node {
        self.client(1)
    }

    /// Client `i`'s local dir for `folder`, created if needed (not yet added).
    pub fn folder_dir(&self, i: usize, folder: &str) -> PathBuf {
        let dir = self.clients[i].folder_dir(folder);
        fs::create_dir_all(&dir).expect("cannot create a folder dir");
        let name = dir.file_name().expect("a folder dir has a name");
        self.expect_entry(&name.to_string_lossy());
        dir
    }

    /// Tells the oracle that `name`, in the cluster's temp dir, was made by the test (a
    /// Wine prefix, the home and folder of a device the cluster does not start).
    pub fn expect_entry(&self, name: &str) {
        self.expected_entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
    }

    /// The `filesyncctl` arguments that add client `i`'s `folder` to the server.
    pub fn add_args(&self, i: usize, folder: &str) -> Vec<OsString> {
        self.add_args_via(i, folder, &self.home(i).server_addr())
    }

    /// [`Cluster::add_args`] with the server reached at `server` (`HOST:PORT`), e.g. a
    /// [`crate::proxy::FaultProxy`] in front of it.
    fn add_args_via(&self, i: usize, folder: &str, server: &str) -> Vec<OsString> {
        vec![
            "add".into(),
            self.folder_dir(i, folder).into(),
            "--server".into(),
            server.into(),
            "--name".into(),
            folder.into(),
        ]
    }

    /// [`Cluster::add_args`] with `--token TOKEN`.
    pub fn add_args_with_token(&self, i: usize, folder: &str, token: &str) -> Vec<OsString> {
        let mut args = self.add_args(i, folder);
        args.extend(["--token".into(), token.into()]);
        args
    }

    /// `filesyncctl add` of client `i`'s `folder` on the running daemon; returns its dir.
    pub fn add_folder(&self, i: usize, folder: &str) -> PathBuf {
        self.clients[i].ctl_ok(self.add_args(i, folder));
        self.clients[i].folder_dir(folder)
    }

    /// [`Cluster::add_folder`], with client `i` reaching the server at `server`
    /// (`HOST:PORT`), e.g. a [`crate::proxy::FaultProxy`] in front of it.
    pub fn add_folder_via(&self, i: usize, folder: &str, server: &str) -> PathBuf {
        self.clients[i].ctl_ok(self.add_args_via(i, folder, server));
        self.clients[i].folder_dir(folder)
    }

    /// The server's browsable copy of `folder`: `DATA_DIR/ACCOUNT/FOLDER/`, with the
    /// account found as the first non-dot entry of the data dir that holds `folder`
    /// (the account name is the server's choice under open registration).
    ///
    /// The cluster backend has no browsable tree: there it is the latest export, made
    /// when a step settled ([`Cluster::settle`]).
    pub fn server_dir(&self, folder: &str) -> Option<PathBuf> {
        if self.engines.is_some() {
            return self.lock_exports().get(folder).cloned();
        }
        let mut accounts: Vec<_> = fs::read_dir(self.server().data_dir())
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|name| !name.to_string_lossy().starts_with('.'))
            .collect();
        accounts.sort();
        accounts
            .into_iter()
            .map(|acct| self.server().data_dir().join(acct).join(folder))
            .find(|dir| dir.is_dir())
    }

    /// The embedded server's index of `folder` (see [`crate::server_store`]), its
    /// account found from the server's copy ([`Cluster::server_dir`]); panics without a
    /// copy.
    pub fn server_index(&self, folder: &str) -> PathBuf {
        assert!(
            self.engines.is_none(),
            "the cluster backend has no SQLite index"
        );
        let copy = self
            .server_dir(folder)
            .unwrap_or_else(|| panic!("the server has no copy of {folder:?}"));
        let account = copy
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|a| a.to_str())
            .expect("the server's folder lies in an account dir");
        crate::server_store::index_file(self.server().data_dir(), account, folder)
    }

    /// The trees that must agree: `folder` on each listed client, then the server's copy.
    /// A server serving from a cluster has no copy: only the clients' trees are compared
    /// then (on the cluster backend, its export once they agree).
    pub fn replicas(&self, folder: &str, clients: &[usize]) -> Result<Vec<PathBuf>, String> {
        let mut trees: Vec<PathBuf> = clients
            .iter()
            .map(|&i| self.clients[i].folder_dir(folder))
            .collect();
        if !self.server().serves_from_cluster() {
            let server = self.server_dir(folder).ok_or_else(|| {
                format!(
                    "no server copy of {folder:?} under {} yet",
                    self.server().data_dir().display()
                )
            })?;
            trees.push(server);
        }
        Ok(trees)
    }

    /// Every client's index, for [`Cluster::settle_clients`].
    pub fn all_clients(&self) -> Vec<usize> {
        (0..self.clients.len()).collect()
    }

    /// Ends a scenario step on every client: see [`Cluster::settle_clients`].
    pub fn settle(&self, folder: &str) -> Manifest {
        self.settle_clients(folder, &self.all_clients(), SYNC_TIMEOUT)
    }

    /// Ends a scenario step: the listed clients' copies of `folder` and the server's
    /// converge, `filesyncctl wait` exits 0 on each of those clients, the trees are still
    /// identical right after, and the common oracle holds. Returns the common manifest.
    pub fn settle_clients(&self, folder: &str, clients: &[usize], timeout: Duration) -> Manifest {
        self.settle_clients_excluding(folder, clients, timeout, &|_| false)
    }

    /// [`Cluster::settle`], with the paths `skip` accepts left out of the comparison and
    /// of the temp-file check: paths that exist on purpose on some replicas only
    /// (ignored, unsyncable). The test asserts what each replica holds there itself.
    pub fn settle_excluding(&self, folder: &str, skip: Skip<'_>) -> Manifest {
        self.settle_clients_excluding(folder, &self.all_clients(), SYNC_TIMEOUT, skip)
    }

    /// [`Cluster::settle_clients`] with the paths `skip` accepts left out, as in
    /// [`Cluster::settle_excluding`].
    pub fn settle_clients_excluding(
        &self,
        folder: &str,
        clients: &[usize],
        timeout: Duration,
        skip: Skip<'_>,
    ) -> Manifest {
        self.note(&format!("settle {folder} on clients {clients:?}"));
        let replicas = || self.replicas(folder, clients);
        converge_with_excluding(timeout, replicas, skip).unwrap_or_else(|why| {
            panic!(
                "{folder} did not converge within {timeout:?}: {why}{}",
                self.dead_daemons()
            )
        });
        for &i in clients {
            self.clients[i].assert_in_sync(folder, timeout);
        }
        // Every client now says it is in sync: the trees must agree without more waiting.
        let common = converge_with_excluding(Duration::ZERO, replicas, skip)
            .unwrap_or_else(|why| panic!("{folder} changed after `wait` returned 0: {why}"));
        if self.engines.is_some() {
            let exported = self.export(folder);
            let mut trees = self.replicas(folder, clients).unwrap_or_default();
            trees.push(exported);
            converge_with_excluding(Duration::ZERO, || Ok(trees.clone()), skip)
                .unwrap_or_else(|why| panic!("the cluster's {folder} differs: {why}"));
        }
        self.check_oracle_excluding(folder, clients, skip);
        common
    }

    /// On the cluster backend, `filesyncd export` of `folder` (of the first account, by
    /// name, that has one) into a new directory under `exports/`, which becomes the
    /// server's copy ([`Cluster::server_dir`]); returns it.
    pub fn export(&self, folder: &str) -> PathBuf {
        let engines = self
            .engines
            .as_ref()
            .expect("exports are of the cluster backend");
        let account = engines.psql(&format!(
            "SELECT a.name FROM folders f JOIN accounts a ON a.id = f.account_id \
             WHERE f.name = '{}' ORDER BY a.name LIMIT 1",
            folder.replace('\'', "''")
        ));
        assert!(!account.is_empty(), "the cluster has no folder {folder:?}");
        let mut exports = self.lock_exports();
        let all = self.root().join("exports");
        fs::create_dir_all(&all).expect("cannot make exports/");
        let dir = all.join(format!("{}-{folder}", files::list_dir(&all).len() + 1));
        let mut cmd = Command::new(bin("filesyncd"));
        cmd.arg("--config")
            .arg(self.server().config_path())
            .arg("export")
            .arg(format!("{account}/{folder}"))
            .arg(&dir);
        let out = run_with_timeout(&mut cmd, ADMIN_TIMEOUT);
        assert!(
            out.status.success(),
            "filesyncd export {account}/{folder}: {}",
            crate::node::describe(&out)
        );
        exports.insert(folder.to_owned(), dir.clone());
        dir
    }

    fn lock_exports(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PathBuf>> {
        self.exports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Started daemons that have exited since, as text for a failure message.
    fn dead_daemons(&self) -> String {
        self.servers
            .iter()
            .chain(&self.clients)
            .filter_map(|n| n.check_running().err())
            .map(|why| format!("\n{why}"))
            .collect()
    }

    /// The common oracle that fits these black-box tests: every started daemon still
    /// runs; `status --json` reports no `last_error` on any folder, no `config_error`,
    /// and a `server` object exactly on the server nodes; no daemon temp files are left in the
    /// replicas ([`stray_temp_files`]); nothing was written outside the folders and homes.
    pub fn check_oracle(&self, folder: &str, clients: &[usize]) {
        self.check_oracle_excluding(folder, clients, &|_| false)
    }

    /// [`Cluster::check_oracle`], not looking for temp files among the paths `skip`
    /// accepts.
    pub fn check_oracle_excluding(&self, folder: &str, clients: &[usize], skip: Skip<'_>) {
        let mut problems = Vec::new();
        let nodes: Vec<&Node> = self
            .servers
            .iter()
            .chain(self.clients.iter())
            .filter(|n| n.is_started())
            .collect();
        for node in &nodes {
            if let Err(why) = node.check_running() {
                problems.push(why);
            }
        }
        if problems.is_empty() {
            for node in &nodes {
                let is_server = self.servers.iter().any(|s| std::ptr::eq(*node, s));
                problems.extend(status_problems(node.name(), &node.status_json(), is_server));
            }
        }
        for tree in self.replicas(folder, clients).unwrap_or_default() {
            match stray_temp_files_excluding(&tree, skip) {
                Ok(stray) if stray.is_empty() => {}
                Ok(stray) => {
                    problems.push(format!("temp files left in {}: {stray:?}", tree.display()))
                }
                Err(e) => problems.push(format!("cannot walk {}: {e}", tree.display())),
            }
        }
        match manifest(&self.root().join("canary")) {
            Ok(now) if now == self.canary => {}
            Ok(now) => problems.push(format!(
                "canary dir changed: {}",
                tree::diff(&self.canary, &now)
            )),
            Err(e) => problems.push(format!("canary dir unreadable: {e}")),
        }
        let expected = self
            .expected_entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let unexpected: Vec<String> = files::list_dir(self.root())
            .into_iter()
            .filter(|name| !expected.contains(name))
            .collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "unexpected entries next to the folders: {unexpected:?}"
            ));
        }
        assert!(
            problems.is_empty(),
            "oracle failed after settling {folder}:\n - {}",
            problems.join("\n - ")
        );
    }

    /// Client `i`'s copy of `folder`/`rel`.
    pub fn path_on(&self, i: usize, folder: &str, rel: &str) -> PathBuf {
        self.clients[i].folder_dir(folder).join(rel)
    }

    /// The server's copy of `folder`/`rel` (on the cluster backend, in the latest
    /// export); panics when the server has no copy of `folder`.
    pub fn server_path(&self, folder: &str, rel: &str) -> PathBuf {
        self.server_dir(folder)
            .unwrap_or_else(|| panic!("the server has no copy of {folder:?}"))
            .join(rel)
    }

    /// `rel` holds exactly `content` on every client and on the server (in its latest
    /// export on the cluster backend; not at all for a server the test moved into a
    /// cluster itself, which has neither a copy nor the fixture's engines).
    pub fn assert_file_everywhere(&self, folder: &str, rel: &str, content: &[u8]) {
        for i in self.all_clients() {
            files::assert_file(&self.path_on(i, folder, rel), content);
        }
        if self.has_server_copy() {
            files::assert_file(&self.server_path(folder, rel), content);
        }
    }

    /// Whether [`Cluster::server_path`] finds the server's copy: a tree, or an export.
    fn has_server_copy(&self) -> bool {
        self.engines.is_some() || !self.server().serves_from_cluster()
    }

    /// No conflict copy (`*.sync-conflict-*`) in `tree`, a manifest of `folder`, and none
    /// listed by any client.
    pub fn assert_no_conflicts(&self, folder: &str, tree: &Manifest) {
        let copies = tree::conflict_copies(tree);
        assert!(copies.is_empty(), "conflict copies appeared: {copies:?}");
        for node in &self.clients {
            let listed = node.conflicts(folder);
            assert!(
                listed.is_empty(),
                "{} lists conflicts: {listed:?}",
                node.name()
            );
        }
    }

    /// Nothing exists at `rel` on any client nor on the server (see
    /// [`Cluster::assert_file_everywhere`]).
    pub fn assert_absent_everywhere(&self, folder: &str, rel: &str) {
        for i in self.all_clients() {
            files::assert_absent(&self.path_on(i, folder, rel));
        }
        if self.has_server_copy() {
            files::assert_absent(&self.server_path(folder, rel));
        }
    }

    /// `filesyncctl pause FOLDER` on client `i`, then waits until its status says
    /// `paused`. The client stays connected for its other folders.
    pub fn pause(&self, i: usize, folder: &str) {
        let node = &self.clients[i];
        node.ctl_ok(["pause", folder]);
        poll_until(Duration::from_secs(10), || {
            let state = node.folder_status(folder)["state"].clone();
            if state == "paused" {
                Ok(())
            } else {
                Err(format!("{}'s {folder} state is {state}", node.name()))
            }
        })
        .unwrap_or_else(|why| panic!("`pause {folder}` did not pause the folder: {why}"));
    }

    /// `filesyncctl resume FOLDER` on client `i`.
    pub fn resume(&self, i: usize, folder: &str) {
        self.clients[i].ctl_ok(["resume", folder]);
    }

    /// Marks a step in every daemon's log, to find it when a test fails.
    pub fn note(&self, text: &str) {
        for c in self.servers.iter().chain(&self.clients) {
            c.note(text);
        }
    }
}

/// Starts `count` nodes of the cluster backend on `engines`, one after the other (the
/// first lays out the database).
fn start_nodes(
    root: &Path,
    engines: &Engines,
    count: usize,
    registration: Option<&'static str>,
) -> Vec<Node> {
    (1..=count)
        .map(|n| {
            let name = match n {
                1 => "server".to_owned(),
                n => format!("server{n}"),
            };
            let table = engines.table(&format!("node-{n}"));
            let node = Node::cluster_node(root, &name, registration, table);
            node.start();
            node
        })
        .collect()
}

/// What is wrong in one node's `status --json` after a quiet step.
fn status_problems(name: &str, status: &Value, is_server: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !status["config_error"].is_null() {
        problems.push(format!("{name}: config_error = {}", status["config_error"]));
    }
    if status["server"].is_object() != is_server {
        problems.push(format!(
            "{name}: status `server` should be {} but is {}",
            if is_server { "an object" } else { "null" },
            status["server"]
        ));
    }
    for folder in status["folders"].as_array().into_iter().flatten() {
        match folder.get("last_error") {
            Some(Value::Null) => {}
            Some(err) => problems.push(format!(
                "{name}: folder {} last_error = {err}",
                folder["name"]
            )),
            None => problems.push(format!(
                "{name}: folder {} has no last_error field",
                folder["name"]
            )),
        }
    }
    problems
}
