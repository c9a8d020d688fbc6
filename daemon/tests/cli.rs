//! The `filesyncd` binary's start-up contract: version, config errors that name the
//! file, line and key, refusing a second daemon on a live socket, and a clean stop on
//! SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
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

fn start(config: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
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
    let mut first = start(&file);
    wait_until(Duration::from_secs(30), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let second = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(first.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "filesyncd did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !socket.exists(),
        "the control socket is removed on a clean stop"
    );
}
