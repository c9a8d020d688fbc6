//! Operations: the control socket's privacy, signals, systemd notification, `--daemon`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use filesync_tests::exec::{Scratch, run_with_timeout};
use filesync_tests::process::Daemon;

/// The uid the "other user" checks run as.
const NOBODY: &str = "65534";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .mode()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `filesyncctl --socket SOCKET status` as uid and gid 65534, without supplementary groups.
fn status_as_nobody(socket: &Path) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(filesync_tests::exec::bin("filesyncctl"))
    .arg("--socket")
    .arg(socket)
    .arg("status");
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

#[test]
fn control_socket_is_private_and_refuses_other_users() {
    let scratch = Scratch::new();
    let home = scratch.path().join("d");
    let socket = home.join("run/fs/ctl.sock");
    let mut daemon = Daemon::new(&home, &socket);
    daemon.spawn(daemon.command(None::<&str>));
    daemon.wait_ready();

    let dir = socket.parent().unwrap();
    assert_eq!(mode(dir) & 0o7777, 0o700, "socket directory mode");
    assert_eq!(mode(&socket) & 0o7777, 0o600, "socket mode");
    assert_eq!(mode(&socket) & libc::S_IFMT, libc::S_IFSOCK, "is a socket");

    if !is_root() {
        println!("skipping the other-user checks: they need root to switch to uid {NOBODY}");
        return;
    }
    // Let the other user walk down to the socket's directory, which stays 0700.
    for d in [scratch.path(), home.as_path(), &home.join("run")] {
        chmod(d, 0o755);
    }
    let out = status_as_nobody(&socket);
    assert_eq!(
        out.status.code(),
        Some(3),
        "another user reached a 0700 directory: {out:?}"
    );

    // Loosened by hand, the file modes no longer stop it: the peer check must.
    chmod(dir, 0o777);
    chmod(&socket, 0o777);
    let out = status_as_nobody(&socket);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        daemon.log_tail().contains("refused a control connection"),
        "no logged refusal:\n{}",
        daemon.log_tail()
    );
    assert!(daemon.ctl(["status"]).status.success(), "root was refused");
}

/// Starts a daemon that must fail, and returns its log.
fn refused_start(daemon: &mut Daemon) -> String {
    daemon.spawn(daemon.command(None::<&str>));
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", daemon.log_tail());
    daemon.log_tail()
}

#[test]
fn unsafe_control_socket_paths_stop_the_start() {
    let scratch = Scratch::new();
    let home = scratch.path().join("d");

    let open_dir = home.join("open");
    std::fs::create_dir_all(&open_dir).unwrap();
    chmod(&open_dir, 0o777);
    let log = refused_start(&mut Daemon::new(&home, &open_dir.join("ctl.sock")));
    assert!(log.contains("has mode 777"), "{log}");

    let target = home.join("elsewhere.sock");
    let link = home.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let log = refused_start(&mut Daemon::new(&home, &link));
    assert!(log.contains("symbolic link"), "{log}");
    assert!(!target.exists(), "the link was followed");

    if is_root() {
        let theirs = home.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chmod(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let log = refused_start(&mut Daemon::new(&home, &theirs.join("ctl.sock")));
        assert!(log.contains("owned by uid 65534"), "{log}");
    } else {
        println!("skipping the foreign-owner check: it needs root to chown");
    }
}

#[test]
fn stale_socket_is_replaced_and_live_one_means_already_running() {
    let scratch = Scratch::new();
    let home = scratch.path().join("d");
    let socket = home.join("ctl.sock");
    let mut first = Daemon::new(&home, &socket);
    // A socket file nobody listens on, as a crash leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    first.spawn(first.command(None::<&str>));
    first.wait_ready();

    let mut second = Daemon::new(&scratch.path().join("e"), &socket);
    let log = refused_start(&mut second);
    assert!(log.contains("already running"), "{log}");
    assert!(
        first.ctl(["status"]).status.success(),
        "the first daemon lost its socket"
    );
}
