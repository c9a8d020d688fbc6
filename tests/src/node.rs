//! One `filesyncd` process with its own home: config file, state dir, control socket
//! and log, all under `<root>/<name>/`. Its lifecycle is here; the `filesyncctl` calls
//! that drive it are in `node/ctl.rs`.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::exec::{bin, free_port, signal, tail};
use crate::poll_until;

pub(crate) mod ctl;

pub use ctl::{Conflict, Counters, Version, describe};

/// How long a daemon may take from spawn until its control socket answers.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a daemon's log a failing test prints.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// The `min_free_space` every test server starts with: none, whatever the disk holds.
pub const TEST_MIN_FREE_SPACE: &str = "0";

/// The header of the cluster backend's table, which follows `[server]` in a node's config.
pub const CLUSTER_TABLE: &str = "[server.cluster]";

/// The server role of a node: its TCP port and the data dir holding the folder copies.
struct ServerRole {
    /// Only changes before the first successful start (see [`Node::start`]).
    port: AtomicU16,
    data_dir: PathBuf,
    /// The `registration` key, or `None` to leave it out (the daemon's default).
    registration: Option<&'static str>,
    /// The `[server.cluster]` table of a node of the cluster backend (written after
    /// `backend = "cluster"`), `None` for the embedded server.
    cluster: Option<String>,
}

/// One `filesyncd` and everything it owns on disk. Killed on drop; a failing test
/// prints the tail of its log.
pub struct Node {
    name: String,
    home: PathBuf,
    /// Where this node's synced folders are made: `<root>/<name>-<folder>`.
    root: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    server: Option<ServerRole>,
    /// The running process; `None` before `start` and after `stop`/`kill`.
    child: Mutex<Option<Child>>,
    starts: AtomicU32,
    /// Start the daemon without the powers that let root read any file, so that file
    /// permissions apply to it as to a user's daemon (see [`Node::run_unprivileged`]).
    unprivileged: std::sync::atomic::AtomicBool,
    /// Environment variables added to the daemon's from the next start on
    /// (see [`Node::set_daemon_env`]).
    daemon_env: Mutex<Vec<(OsString, OsString)>>,
    /// The umask the daemon starts with from the next start on, if not the tests' own
    /// (see [`Node::set_umask`]).
    umask: Mutex<Option<libc::mode_t>>,
    /// The host name the daemon sees from the next start on, if not the machine's (see
    /// [`Node::set_hostname`]).
    hostname: Mutex<Option<Vec<u8>>>,
}

impl Node {
    /// A client-only node under `root`; not started.
    pub fn client(root: &Path, name: &str) -> Node {
        Node::new(root, name, None)
    }

    /// A node with the server role (open registration) under `root`; not started.
    pub fn server(root: &Path, name: &str) -> Node {
        Node::new(root, name, Some((Some("open"), None)))
    }

    /// A node with the server role whose config says `registration = "…"`, or has no
    /// `registration` key for `None`; not started.
    pub fn server_with_registration(
        root: &Path,
        name: &str,
        registration: Option<&'static str>,
    ) -> Node {
        Node::new(root, name, Some((registration, None)))
    }

    /// A server node of the cluster backend: `backend = "cluster"` and `table`, its
    /// `[server.cluster]` table (see [`crate::backend`]); not started.
    pub fn cluster_node(
        root: &Path,
        name: &str,
        registration: Option<&'static str>,
        table: String,
    ) -> Node {
        Node::new(root, name, Some((registration, Some(table))))
    }

    /// `server` is `None` for a client-only node, else the server's `registration` and
    /// its `[server.cluster]` table on the cluster backend.
    fn new(
        root: &Path,
        name: &str,
        server: Option<(Option<&'static str>, Option<String>)>,
    ) -> Node {
        let home = root.join(name);
        // 0700: the control socket lives here, and a daemon may insist that the socket's
        // directory be private (brief §2.9).
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&home)
            .expect("cannot create the node's home");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(home.join("run"))
            .expect("cannot create the node's XDG_RUNTIME_DIR");
        let node = Node {
            name: name.to_owned(),
            config: home.join("filesyncd.toml"),
            socket: home.join("ctl.sock"),
            log: home.join("daemon.log"),
            server: server.map(|(registration, cluster)| ServerRole {
                port: AtomicU16::new(free_port()),
                data_dir: home.join("data"),
                registration,
                cluster,
            }),
            root: root.to_owned(),
            home,
            child: Mutex::new(None),
            starts: AtomicU32::new(0),
            unprivileged: std::sync::atomic::AtomicBool::new(false),
            daemon_env: Mutex::new(Vec::new()),
            umask: Mutex::new(None),
            hostname: Mutex::new(None),
        };
        assert!(
            node.socket.as_os_str().len() < 100,
            "control socket path {} is too long for a Unix socket: point TMPDIR at a shorter dir",
            node.socket.display()
        );
        node.write_config();
        node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The local directory this node syncs as `folder` (created by the caller).
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        self.root.join(format!("{}-{folder}", self.name))
    }

    /// `127.0.0.1:PORT` of the server role; panics on a client-only node.
    pub fn server_addr(&self) -> String {
        format!("127.0.0.1:{}", self.role().port.load(Ordering::SeqCst))
    }

    /// The daemon's `state_dir` (device id, pins and credentials, indexes).
    pub fn state_dir(&self) -> PathBuf {
        self.home.join("state")
    }

    /// The index of this device's `folder` in its state dir (`folders/FOLDER-*.db`; a
    /// node here syncs each folder name from one path only, so there is one).
    pub fn folder_index(&self, folder: &str) -> PathBuf {
        let folders = self.state_dir().join("folders");
        let mut found: Vec<PathBuf> = fs::read_dir(&folders)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", folders.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&format!("{folder}-")) && name.ends_with(".db")
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one index of {folder}: {found:?}",
            self.name
        );
        found.pop().expect("one index")
    }

    /// The server role's `data_dir`; panics on a client-only node.
    pub fn data_dir(&self) -> &Path {
        &self.role().data_dir
    }

    fn role(&self) -> &ServerRole {
        self.server
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no server role", self.name))
    }

    fn write_config(&self) {
        let mut lines = vec![
            format!(
                "# Written by filesync-tests for node {}. \
                 filesyncctl add/remove must keep this comment.",
                self.name
            ),
            "[daemon]".to_owned(),
            format!("state_dir = {}", toml_string(&self.home.join("state"))),
            format!("control_socket = {}", toml_string(&self.socket)),
            // No web page: the default port would be taken by whichever node started
            // first. The web page's tests turn it on (tests/tests/e2e/web.rs).
            "web_listen = \"\"".to_owned(),
        ];
        if let Some(role) = &self.server {
            lines.extend([
                String::new(),
                "[server]".to_owned(),
                format!(
                    "listen = \"127.0.0.1:{}\"",
                    role.port.load(Ordering::SeqCst)
                ),
                format!("data_dir = {}", toml_string(&role.data_dir)),
                // The free-space reserve (default 1 GiB) would make every test depend on
                // how full this machine's disk is; the tests of the reserve set their own.
                format!("min_free_space = \"{TEST_MIN_FREE_SPACE}\""),
            ]);
            if let Some(registration) = role.registration {
                lines.push(format!("registration = \"{registration}\""));
            }
            if let Some(table) = &role.cluster {
                lines.extend(["backend = \"cluster\"".to_owned(), table.clone()]);
            }
        }
        lines.push(String::new());
        fs::write(&self.config, lines.join("\n")).expect("cannot write the node's config");
    }

    /// Whether this server's config says it serves from a cluster.
    pub fn serves_from_cluster(&self) -> bool {
        fs::read_to_string(&self.config).is_ok_and(|c| c.contains("backend = \"cluster\""))
    }

    /// Stops this server, adds `lines` to its `[server]` table (the last table of its
    /// config but for `[server.cluster]`; a key given again replaces the fixture's line,
    /// `min_free_space` say) and starts it again.
    pub fn restart_with_server_lines(&self, lines: &str) {
        self.stop();
        let config = fs::read_to_string(&self.config).expect("cannot read the node's config");
        assert!(config.contains("[server]"), "{config}");
        assert!(!config.contains("[[folder]]"), "{config}");
        let (server, cluster) = match config.find(CLUSTER_TABLE) {
            Some(at) => config.split_at(at),
            None => (config.as_str(), ""),
        };
        let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_owned();
        let new_keys: Vec<String> = lines.lines().map(key).collect();
        let mut config: String = server
            .lines()
            .filter(|l| !new_keys.contains(&key(l)))
            .map(|l| format!("{l}\n"))
            .collect();
        config.push_str(lines);
        config.push_str(cluster);
        fs::write(&self.config, config).expect("cannot write the node's config");
        self.start();
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while the lock was held must not hide the process from Drop.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From the next start on, runs the daemon as file permissions see a user: when the
    /// tests run as root, without the capabilities that bypass them (needs `setpriv`).
    pub fn run_unprivileged(&self) {
        self.unprivileged.store(true, Ordering::SeqCst);
    }

    /// From the next start on, runs the daemon with `key=value` in its environment (say,
    /// `LD_PRELOAD` of a library that skews its clock).
    pub fn set_daemon_env(&self, key: impl Into<OsString>, value: impl Into<OsString>) {
        let (key, value) = (key.into(), value.into());
        let mut env = self.daemon_env.lock().unwrap_or_else(|e| e.into_inner());
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }

    /// From the next start on, runs the daemon without `key` in its environment again
    /// (undoes [`Node::set_daemon_env`]).
    pub fn clear_daemon_env(&self, key: impl AsRef<std::ffi::OsStr>) {
        let mut env = self.daemon_env.lock().unwrap_or_else(|e| e.into_inner());
        env.retain(|(k, _)| k.as_os_str() != key.as_ref());
    }

    /// From the next start on, runs the daemon under `umask` (say 0 to see that it
    /// makes its files private whatever umask it gets).
    pub fn set_umask(&self, umask: libc::mode_t) {
        *self.umask.lock().unwrap_or_else(|e| e.into_inner()) = Some(umask);
    }

    /// From the next start on, runs the daemon in a UTS namespace of its own whose host
    /// name is `name`, any bytes (needs root, as the tests run here).
    pub fn set_hostname(&self, name: &[u8]) {
        *self.hostname.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_vec());
    }

    /// The process id of the running daemon, `None` when it is not running.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Starts `filesyncd --config …` in the foreground and returns once its control
    /// socket answers `status` (and, for a server, once its port accepts connections).
    ///
    /// A server's port was only free when the node was made; if the very first start
    /// fails because the address is taken, the node moves to a new port and tries again.
    pub fn start(&self) {
        let first_server_start = self.server.is_some() && self.starts.load(Ordering::SeqCst) == 0;
        let attempts = if first_server_start { 3 } else { 1 };
        for attempt in 1..=attempts {
            match self.try_start() {
                Ok(()) => return,
                Err(log) if attempt < attempts && log.to_lowercase().contains("in use") => {
                    eprintln!("{}: port taken, retrying on another port", self.name);
                    self.role().port.store(free_port(), Ordering::SeqCst);
                    self.write_config();
                }
                Err(log) => panic!(
                    "{}: filesyncd exited during start-up; its log:\n{log}",
                    self.name
                ),
            }
        }
    }

    /// Spawns the daemon and waits until it is ready; `Err` carries the log written since
    /// the spawn when the process exited before becoming ready.
    fn try_start(&self) -> Result<(), String> {
        let mut guard = self.lock_child();
        assert!(guard.is_none(), "{}: start() on a running node", self.name);
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("cannot open the daemon log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        writeln!(
            log,
            "===== filesync-tests: start #{n} of {} =====",
            self.name
        )
        .expect("cannot write the daemon log");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut cmd = if root && self.unprivileged.load(Ordering::SeqCst) {
            // Without these two capabilities root obeys file permissions like anyone.
            let mut c = Command::new("setpriv");
            c.args(["--bounding-set", "-dac_override,-dac_read_search"])
                .arg(bin("filesyncd"));
            c
        } else {
            Command::new(bin("filesyncd"))
        };
        cmd.arg("--config")
            .arg(&self.config)
            .env(
                "FILESYNC_LOG",
                std::env::var_os("FILESYNC_LOG").unwrap_or_else(|| "debug".into()),
            )
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log handle"))
            .stderr(log);
        self.hermetic_env(&mut cmd);
        cmd.envs(
            self.daemon_env
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k, v)),
        );
        kill_with_parent(&mut cmd);
        if let Some(umask) = *self.umask.lock().unwrap_or_else(|e| e.into_inner()) {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs between fork and exec and only makes one
            // async-signal-safe system call, which cannot fail.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                });
            }
        }
        if let Some(name) = self
            .hostname
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs between fork and exec and makes only two system
            // calls, both async-signal-safe, on memory owned by the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(name.as_ptr().cast(), name.len()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot spawn filesyncd: {e}", self.name));
        *guard = Some(child);
        drop(guard);

        let ready = poll_until(START_TIMEOUT, || {
            if let Some(status) = self.exit_status() {
                return Ok(Some(status));
            }
            self.readiness().map(|()| None)
        });
        match ready {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                *self.lock_child() = None;
                let log = fs::read(&self.log).unwrap_or_default();
                let since = log.get(log_start as usize..).unwrap_or_default();
                Err(format!("({status})\n{}", String::from_utf8_lossy(since)))
            }
            Err(why) => {
                self.kill();
                panic!(
                    "{}: filesyncd not ready within {START_TIMEOUT:?}: {why}\n--- log ---\n{}",
                    self.name,
                    tail(&self.log, LOG_TAIL_BYTES)
                );
            }
        }
    }

    /// `Ok` once the control socket answers and, for a server, the listener accepts.
    fn readiness(&self) -> Result<(), String> {
        if !self.socket.exists() {
            return Err(format!("no control socket at {}", self.socket.display()));
        }
        let out = self.ctl_with_timeout(["status"], Duration::from_secs(10));
        if !out.status.success() {
            return Err(format!("filesyncctl status: {}", describe(&out)));
        }
        if let Some(role) = &self.server {
            let addr = SocketAddr::from(([127, 0, 0, 1], role.port.load(Ordering::SeqCst)));
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .map_err(|e| format!("server port {addr}: {e}"))?;
        }
        Ok(())
    }

    /// The daemons and the CLI get a home of their own, so that no default path
    /// (config, socket, state) can reach the real user's files or another test's.
    fn hermetic_env(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env("XDG_CONFIG_HOME", self.home.join("xdg/config"))
            .env("XDG_STATE_HOME", self.home.join("xdg/state"))
            .env("XDG_DATA_HOME", self.home.join("xdg/data"))
            .env("XDG_CACHE_HOME", self.home.join("xdg/cache"))
            .env_remove("FILESYNC_SOCKET")
            .env_remove("FILESYNC_TOKEN");
    }

    /// The exit status if the process has exited; `None` while it runs or when it
    /// was not started.
    fn exit_status(&self) -> Option<ExitStatus> {
        self.lock_child()
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Whether `start` was called and neither `stop` nor `kill` since.
    pub fn is_started(&self) -> bool {
        self.lock_child().is_some()
    }

    /// `Err` with the exit status and the log when a started daemon is no longer running.
    pub fn check_running(&self) -> Result<(), String> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{}: filesyncd exited unexpectedly ({status}); log:\n{}",
                self.name,
                tail(&self.log, LOG_TAIL_BYTES)
            )),
        }
    }

    /// SIGTERM, then waits for the process to exit and returns its status. A daemon that
    /// does not exit within the grace period is killed and the test fails.
    pub fn stop(&self) -> ExitStatus {
        let mut child = self
            .lock_child()
            .take()
            .unwrap_or_else(|| panic!("{}: stop() on a node that is not running", self.name));
        signal(child.id(), libc::SIGTERM);
        let exited = poll_until(STOP_TIMEOUT, || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        });
        exited.unwrap_or_else(|why| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{}: filesyncd did not exit after SIGTERM: {why}\n--- log ---\n{}",
                self.name,
                tail(&self.log, LOG_TAIL_BYTES)
            )
        })
    }

    /// Waits for a daemon that is to end by itself (a test-only crash point) to exit
    /// within `timeout`, reaps it and returns its status; the node can be started again.
    /// `Err` says it still runs, with the tail of its log.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, String> {
        let status = poll_until(timeout, || {
            self.exit_status()
                .ok_or_else(|| format!("{}: filesyncd is still running", self.name))
        })
        .map_err(|why| format!("{why}\n--- log ---\n{}", tail(&self.log, LOG_TAIL_BYTES)))?;
        *self.lock_child() = None;
        Ok(status)
    }

    /// Sends `sig` to the running daemon.
    pub fn signal(&self, sig: libc::c_int) {
        let guard = self.lock_child();
        let child = guard
            .as_ref()
            .unwrap_or_else(|| panic!("{}: signal() on a node that is not running", self.name));
        signal(child.id(), sig);
    }

    /// SIGKILL and reap; a no-op on a node that is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's whole log so far (empty before the first start).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Appends a marker line to the daemon's log, so a failing step can be found in it.
    /// The daemon writes the same file through an `O_APPEND` handle, so lines do not mix.
    pub fn note(&self, text: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "===== filesync-tests: {text} =====");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && self.starts.load(Ordering::SeqCst) > 0 {
            print_log_tail(&self.name, &self.log);
        }
        self.kill();
    }
}

/// Prints the end of a daemon's log, for a test that is failing.
pub(crate) fn print_log_tail(name: &str, log: &Path) {
    eprintln!(
        "----- tail of {} ({name}) -----\n{}\n----- end of {name} -----",
        log.display(),
        tail(log, LOG_TAIL_BYTES),
    );
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    let text = path.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Makes the daemon die with the test process: if the test binary is killed (a CI
/// timeout), no `filesyncd` is left running. Drop handles every other exit.
///
/// Linux sends the signal when the spawning *thread* ends; nodes are started on the
/// test's own thread, which outlives them.
pub(crate) fn kill_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and only makes one
        // async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
