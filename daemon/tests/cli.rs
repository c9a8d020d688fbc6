//! The `filesyncd` binary's start-up contract: version, config errors that name the
//! file, line and key, refusing a second daemon on a live socket, and a clean stop on
//! SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_filesyncd");

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let file = dir.join("filesyncd.toml");
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n{extra}",
        dir.join("state").display(),
        dir.join("run/ctl.sock").display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Polls until `cond` holds, failing the test after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `filesyncd --config CONFIG` run to its end, output captured.
fn run(config: &Path) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// A `filesyncd --config CONFIG` left running; killed if the test fails before it stops.
struct Daemon(Child);

impl Daemon {
    fn start(config: &Path) -> Daemon {
        // Nobody reads its log: a pipe left unread could fill up and block the daemon.
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn version_prints() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("filesyncd "));
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "\n[[folder]]\npath = \"/tmp/x\"\nserver = \"h:1\"\nmdoe = \"two-way\"\n",
    );
    let out = run(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:8", file.display())), "{err}");
    assert!(err.contains("mdoe"), "{err}");
}

#[test]
fn second_daemon_on_a_live_socket_is_refused_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "");
    let socket = dir.path().join("run/ctl.sock");
    let mut first = Daemon::start(&file);
    wait_until(Duration::from_secs(30), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let second = run(&file);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(first.0.id() as i32, libc::SIGTERM) }, 0);
    let mut status = None;
    wait_until(
        Duration::from_secs(15),
        "filesyncd to stop on SIGTERM",
        || {
            status = first.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        !socket.exists(),
        "the control socket is removed on a clean stop"
    );
}
