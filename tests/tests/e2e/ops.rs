//! Operations: the control socket's privacy, signals, systemd notification, `--daemon`.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::{Scratch, line_reader, run_with_timeout, signal};
use filesync_tests::files::{mode, set_mode};
use filesync_tests::process::Daemon;
use filesync_tests::{Cluster, SYNC_TIMEOUT, files, poll_until, tree};

/// The uid the "other user" checks run as.
const NOBODY: &str = "65534";

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
    assert_eq!(mode(dir), 0o700, "socket directory mode");
    assert_eq!(mode(&socket), 0o600, "socket mode");
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket(),
        "is a socket"
    );

    if !is_root() {
        println!("skipping the other-user checks: they need root to switch to uid {NOBODY}");
        return;
    }
    // Let the other user walk down to the socket's directory, which stays 0700.
    for d in [scratch.path(), home.as_path(), &home.join("run")] {
        set_mode(d, 0o755);
    }
    let out = status_as_nobody(&socket);
    assert_eq!(
        out.status.code(),
        Some(3),
        "another user reached a 0700 directory: {out:?}"
    );

    // Loosened by hand, the file modes no longer stop it: the peer check must. (The
    // directory stays writable by its owner alone, or filesyncctl itself refuses it.)
    set_mode(dir, 0o755);
    set_mode(&socket, 0o777);
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
    set_mode(&open_dir, 0o777);
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
        set_mode(&theirs, 0o700);
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

/// Every datagram received on `sock` within `timeout` until `done` says enough.
fn notifications(
    sock: &UnixDatagram,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let mut all = String::new();
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    for _ in 0..1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => break,
        }
        if done(&all) {
            return Ok(all);
        }
    }
    Err(format!("received so far: {all:?}"))
}

#[test]
fn ready_is_sent_once_the_control_socket_answers_and_the_watchdog_is_fed() {
    let scratch = Scratch::new();
    let home = scratch.path().join("d");
    let socket = home.join("ctl.sock");
    let mut daemon = Daemon::new(&home, &socket);
    let notify = scratch.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let mut cmd = daemon.command(None::<&str>);
    cmd.env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "1000000");
    daemon.spawn(cmd);

    let got = notifications(&sock, Duration::from_secs(30), |s| s.contains("READY=1"))
        .unwrap_or_else(|why| panic!("no READY=1: {why}\n{}", daemon.log_tail()));
    // No retry: READY means the socket is there and is answered.
    let out = daemon.ctl(["status"]);
    assert!(out.status.success(), "status right after READY: {out:?}");
    assert!(got.contains("STATUS=0 folders"), "{got}");
    assert!(got.contains(&format!("MAINPID={}", daemon.pid())), "{got}");
    notifications(&sock, Duration::from_secs(10), |s| s.contains("WATCHDOG=1"))
        .unwrap_or_else(|why| panic!("no WATCHDOG=1 with a 1 s watchdog: {why}"));

    signal(daemon.pid(), libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    notifications(&sock, Duration::from_secs(5), |s| s.contains("STOPPING=1"))
        .unwrap_or_else(|why| panic!("no STOPPING=1: {why}"));
}

/// Kills a detached daemon the test lost track of.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::path::Path::new(&format!("/proc/{}", self.0)).exists() {
            signal(self.0 as u32, libc::SIGKILL);
        }
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn exited(pid: i32) -> Result<(), String> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => Ok(()),
        Ok(stat)
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z')) =>
        {
            Ok(())
        }
        Ok(_) => Err(format!("{pid} still runs")),
    }
}

#[test]
fn daemon_flag_detaches_and_writes_the_pid_file() {
    let scratch = Scratch::new();
    let home = scratch.path().join("d");
    let socket = home.join("run/ctl.sock");
    let daemon = Daemon::new(&home, &socket);
    let mut cmd = daemon.command(["--daemon"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}\n{}", daemon.log_tail());
    // It returned only once ready: no waiting here.
    let pid_file = home.join("run/filesyncd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("no pid file {}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("the pid file holds a number");
    let _guard = KillOnDrop(pid);
    assert!(daemon.ctl(["status"]).status.success());
    // SAFETY: getsid takes a plain integer.
    let (ours, theirs) = unsafe { (libc::getsid(0), libc::getsid(pid)) };
    assert_ne!(ours, theirs, "the daemon did not leave our session");
    assert_ne!(
        theirs, pid,
        "the daemon is a session leader and could get a terminal"
    );
    let log = std::fs::read_to_string(home.join("state/filesyncd.log")).unwrap_or_default();
    assert!(log.contains("filesyncd ready"), "log file: {log}");

    // A second one fails in the foreground, and leaves the first one's pid file alone.
    let mut cmd = daemon.command(["--daemon"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(pid_file.exists());

    signal(pid as u32, libc::SIGTERM);
    poll_until(Duration::from_secs(10), || exited(pid))
        .unwrap_or_else(|why| panic!("no exit after SIGTERM: {why}"));
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
}

#[test]
fn sighup_adds_and_removes_folders_and_a_broken_config_keeps_the_old_one() {
    let cluster = Cluster::new(1);
    let a = cluster.a();
    let original = std::fs::read_to_string(a.config_path()).unwrap();
    let more = cluster.folder_dir(0, "more");
    files::write(&more.join("hello.txt"), b"hello from a reload\n");
    let with_more = format!(
        "{original}\n[[folder]]\npath = \"{}\"\nserver = \"{}\"\nname = \"more\"\n",
        more.display(),
        cluster.server().server_addr()
    );
    std::fs::write(a.config_path(), &with_more).unwrap();
    a.signal(libc::SIGHUP);
    poll_until(SYNC_TIMEOUT, || {
        let on_server = cluster.server_dir("more").map(|d| d.join("hello.txt"));
        match on_server.map(std::fs::read) {
            Some(Ok(bytes)) if bytes == b"hello from a reload\n" => Ok(()),
            other => Err(format!("not on the server yet: {other:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("the added folder did not sync: {why}"));

    std::fs::write(a.config_path(), &original).unwrap();
    a.signal(libc::SIGHUP);
    poll_until(SYNC_TIMEOUT, || match a.folder_names() {
        names if names == ["docs"] => Ok(()),
        names => Err(format!("folders: {names:?}")),
    })
    .unwrap_or_else(|why| panic!("the removed folder still runs: {why}"));

    std::fs::write(a.config_path(), format!("{original}\n[[folder]\npath = ")).unwrap();
    a.signal(libc::SIGHUP);
    let error = poll_until(SYNC_TIMEOUT, || match &a.status_json()["config_error"] {
        serde_json::Value::String(e) => Ok(e.clone()),
        other => Err(format!("config_error: {other}")),
    })
    .unwrap_or_else(|why| panic!("status does not show the broken config: {why}"));
    assert!(error.contains("filesyncd.toml"), "names the file: {error}");
    let human = a.ctl_ok(["status"]);
    assert!(human.contains("could not be reloaded"), "{human}");
    a.check_running().unwrap();
    files::write(&cluster.path_on(0, DOCS, "after.txt"), b"still syncing\n");
    poll_until(SYNC_TIMEOUT, || {
        match std::fs::read(cluster.server_path(DOCS, "after.txt")) {
            Ok(bytes) if bytes == b"still syncing\n" => Ok(()),
            other => Err(format!("after.txt on the server: {other:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("the old config stopped syncing: {why}"));

    std::fs::write(a.config_path(), &original).unwrap();
    a.signal(libc::SIGHUP);
    poll_until(SYNC_TIMEOUT, || match &a.status_json()["config_error"] {
        serde_json::Value::Null => Ok(()),
        other => Err(format!("config_error: {other}")),
    })
    .unwrap_or_else(|why| panic!("a fixed config still shows the error: {why}"));
    cluster.settle(DOCS);
}

#[test]
fn sigterm_during_a_transfer_exits_0_within_10s_and_leaves_no_partial_file() {
    let cluster = Cluster::new(1);
    // Written beside the folder and moved in, so that no scan sees it half written.
    let outside = cluster.root().join("big.bin");
    let sum = files::write_pseudo_random(&outside, 11, 384 << 20);
    std::fs::rename(&outside, cluster.path_on(0, DOCS, "big.bin")).unwrap();
    let server_docs = cluster.server_dir(DOCS).expect("the server has docs");
    poll_until(SYNC_TIMEOUT, || {
        let names: Vec<String> = std::fs::read_dir(&server_docs)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        match names.iter().any(|n| n.starts_with(".filesync-partial-")) {
            true => Ok(()),
            false => Err(format!("no upload in progress on the server: {names:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));

    let started = Instant::now();
    let status = cluster.server().stop();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    let at_path = server_docs.join("big.bin");
    if at_path.exists() {
        assert_eq!(
            tree::sha256_file(&at_path).unwrap(),
            sum,
            "a partial file at a real path"
        );
    }

    cluster.server().start();
    cluster.settle(DOCS);
    assert_eq!(
        tree::sha256_file(&cluster.server_path(DOCS, "big.bin")).unwrap(),
        sum
    );
}

/// The repository's `systemd/` directory.
fn units_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// `systemd-analyze verify` of both units, with `ExecStart` pointing at the built
/// daemon (verify checks that the binary exists). It exits 0 even on unknown keys and
/// bad values, so any complaint on stderr fails the test.
#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipping: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let scratch = Scratch::new();
    let daemon = filesync_tests::exec::bin("filesyncd");
    let runtime = scratch.path().join("rt");
    std::fs::create_dir(&runtime).unwrap();
    for (unit, user) in [
        ("filesyncd.service", false),
        ("user/filesyncd.service", true),
    ] {
        let dir = scratch.path().join(if user { "user" } else { "system" });
        let (copy, text) = copy_unit(unit, &dir, &daemon);
        assert!(
            text.contains("Type=notify") && text.contains("WatchdogSec="),
            "{unit}"
        );
        let mut cmd = Command::new("systemd-analyze");
        if user {
            cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        assert_verifies(cmd.arg("verify").arg(&copy), unit);
        if !user {
            let mut cmd = Command::new("systemd-analyze");
            cmd.args(["security", "--offline=true"]).arg(&copy);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
            let report = String::from_utf8_lossy(&out.stdout);
            let score = report.lines().last().unwrap_or_default();
            println!("systemd-analyze security {unit}: {score}");
            assert!(score.contains("OK"), "exposure is worse than OK:\n{report}");
        }
    }
    // The cluster's garbage collection: a oneshot service and its daily timer.
    let dir = scratch.path().join("gc");
    let (service, _) = copy_unit("filesyncd-gc.service", &dir, &daemon);
    let (timer, _) = copy_unit("filesyncd-gc.timer", &dir, &daemon);
    let mut cmd = Command::new("systemd-analyze");
    assert_verifies(cmd.arg("verify").arg(service).arg(timer), "the gc units");
}

/// Copies `unit` of `systemd/` into `dir` (made if needed) with `ExecStart` pointing at
/// `daemon` (verify checks that the binary exists); the copy's path and text.
fn copy_unit(unit: &str, dir: &Path, daemon: &Path) -> (std::path::PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
    let text = text.replace("/usr/bin/filesyncd", daemon.to_str().unwrap());
    let name = Path::new(unit).file_name().unwrap();
    let copy = dir.join(name);
    std::fs::write(&copy, &text).unwrap();
    (copy, text)
}

/// Runs `cmd`, a `systemd-analyze verify`, which exits 0 even on unknown keys and bad
/// values: any complaint on stderr fails the test.
fn assert_verifies(cmd: &mut Command, what: &str) {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {what}: {}\n{stderr}",
        out.status
    );
}

/// The example config of a cluster node (`packaging/cluster-node.toml`) is read without
/// a complaint: with its paths moved into a temp dir, `filesyncd gc` gets as far as
/// connecting to the example's database, which it names.
#[test]
fn the_cluster_node_example_config_is_valid() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cluster-node.toml");
    let text = std::fs::read_to_string(example).unwrap();
    std::fs::write(dir.join("s3-secret"), "secret\n").unwrap();
    let at = |p: &str| dir.join(p).to_str().unwrap().to_owned();
    let text = text
        .replace("/etc/filesync/s3-secret", &at("s3-secret"))
        .replace("/var/lib/filesyncd", &at("state"))
        .replace("/run/filesyncd", &at("run"))
        .replace("db.example.com", "127.0.0.1:1");
    let config = dir.join("cluster-node.toml");
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(filesync_tests::exec::bin("filesyncd"));
    cmd.arg("--config").arg(&config).arg("gc");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot connect to PostgreSQL") && said.contains("server.cluster.postgres"),
        "{said}"
    );
}

#[test]
fn events_follow_shows_a_change_arriving() {
    let cluster = Cluster::new(2);
    // An event from before the follower subscribed comes among the recent ones it is
    // sent first: seeing it says the follower is subscribed, so what comes after the
    // second write can only have been followed live.
    files::write(
        &cluster.path_on(0, DOCS, "before.txt"),
        b"an earlier event\n",
    );
    cluster.settle(DOCS);
    let mut follow = cluster
        .b()
        .ctl_spawn(["events", "--follow", "--json", DOCS]);
    let lines = line_reader(&mut follow);
    let mut seen = Vec::new();
    let mut downloaded = |path: &str| {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                break None;
            };
            let event: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            if event["kind"] == "downloaded" && event["path"] == path {
                break Some(event);
            }
            seen.push(line);
        }
    };
    let earlier = downloaded("before.txt");
    files::write(&cluster.path_on(0, DOCS, "note.txt"), b"an event\n");
    cluster.settle(DOCS);
    let found = earlier.and_then(|_| downloaded("note.txt"));
    let _ = follow.kill();
    let _ = follow.wait();
    let event = found.unwrap_or_else(|| {
        panic!("no downloaded event for before.txt, then note.txt; saw {seen:?}")
    });
    assert_eq!(event["folder"], DOCS);
    assert!(event["time_ms"].as_i64().is_some_and(|t| t > 0), "{event}");

    let uploaded = cluster.a().ctl_ok(["events", DOCS]);
    assert!(
        uploaded
            .lines()
            .any(|l| l.contains(" docs  uploaded  note.txt")),
        "{uploaded}"
    );
    assert!(uploaded.contains(" docs  scanned"), "{uploaded}");
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// `status --json` has exactly the fields the README documents, each named there.
#[test]
fn status_json_matches_its_documented_schema() {
    let cluster = Cluster::new(1);
    cluster.settle(DOCS);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let check = |what: &str, value: &serde_json::Value, want: &[&str]| {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(keys(value), want, "fields of {what}");
        for key in &want {
            assert!(
                readme.contains(&format!("`{key}`")),
                "README does not document {what}.{key}"
            );
        }
    };
    let client = cluster.a().status_json();
    check(
        "the status",
        &client,
        &[
            "version",
            "device",
            "config",
            "folders",
            "server",
            "servers",
            "config_error",
            "metrics",
            "web",
        ],
    );
    assert!(client["server"].is_null() && client["config_error"].is_null());
    assert!(client["metrics"].is_null(), "metrics are off by default");
    assert!(
        client["web"].is_null(),
        "the fixture turns the web page off"
    );
    check(
        "a trusted server",
        &client["servers"][0],
        &["server", "fingerprint", "pinned_by", "account", "device"],
    );
    let folder = &client["folders"][0];
    check(
        "a folder",
        folder,
        &[
            "name",
            "path",
            "server",
            "mode",
            "state",
            "connected",
            "scanned",
            "files",
            "bytes",
            "pending_up_files",
            "pending_up_bytes",
            "pending_down_files",
            "pending_down_bytes",
            "seq",
            "last_sync",
            "conflicts",
            "last_error",
            "unsyncable",
            "counters",
            "rate_up_bps",
            "rate_down_bps",
            "index_bytes",
            "last_scan",
            "watch_problem",
            "account",
            "owner",
            "local_changes",
        ],
    );
    check(
        "the local changes",
        &folder["local_changes"],
        &["count", "paths", "reason"],
    );
    check(
        "the last full scan",
        &folder["last_scan"],
        &[
            "at_ms",
            "reason",
            "entries",
            "hashed_files",
            "hashed_bytes",
            "millis",
        ],
    );
    assert!(folder["watch_problem"].is_null(), "{folder}");
    assert_eq!(folder["state"], "idle");
    assert_eq!(folder["mode"], "two-way");
    assert!(folder["last_sync"].as_i64().is_some(), "{folder}");
    check(
        "counters",
        &folder["counters"],
        &[
            "wire_bytes_sent",
            "wire_bytes_received",
            "content_bytes_sent",
            "content_bytes_received",
            "content_bytes_reused",
            "files_uploaded",
            "files_downloaded",
            "deletes_applied",
            "bytes_hashed",
            "files_hashed",
            "pushes",
        ],
    );
    let server = cluster.server().status_json();
    let role = &server["server"];
    check(
        "the server role",
        role,
        &[
            "listen",
            "public_address",
            "data_dir",
            "fingerprint",
            "registration",
            "folders",
            "devices",
            "usage",
            "folder_problems",
            "free_bytes",
            "min_free_space",
        ],
    );
    check(
        "an account's usage",
        &role["usage"][0],
        &["account", "used", "quota"],
    );
    check(
        "a server folder",
        &role["folders"][0],
        &["account", "name", "seq", "files", "bytes", "index_bytes"],
    );
    check(
        "a connected device",
        &role["devices"][0],
        &["device", "name", "account", "folder", "address"],
    );
}
