//! The `filesyncctl` binary as users and scripts see it: exit codes, usage errors, help,
//! and whole request/response exchanges with a fake daemon on a Unix socket that
//! checks the framing byte for byte.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `filesyncctl --socket SOCKET ARGS…` with no socket from the environment.
fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_filesyncctl"))
        .env_remove("FILESYNC_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run filesyncctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_daemon_exits_3_and_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("filesyncd.sock");
    let out = ctl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("filesyncctl: error: the filesync daemon is not running"));
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert!(err.contains("systemctl --user start filesyncd"), "{err}");
}

#[test]
fn the_socket_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("from-env.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_filesyncctl"))
        .env("FILESYNC_SOCKET", &socket)
        .arg("reload")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(&socket.display().to_string()));
}

#[test]
fn usage_errors_exit_2() {
    let socket = Path::new("/nonexistent/filesyncd.sock");
    for args in [
        &["pause"][..],
        &["resume", "docs", "--all"],
        &["add", "X", "--server", "h:1", "--mode", "bogus"],
        &["wait", "--timeout", "soon"],
        &["frobnicate"],
        &["resolve", "docs", "*.txt"],
        &["resolve", "docs", "*.txt", "--keep", "mine"],
        &["versions", "docs"],
        &["restore", "docs", "a.txt", "--version", "newest"],
        &["revert"],
    ] {
        let out = ctl(socket, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = ctl(Path::new("/nonexistent"), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for command in [
        "add",
        "remove",
        "pause",
        "resume",
        "status",
        "wait",
        "rescan",
        "reload",
        "conflicts",
        "resolve",
        "versions",
        "restore",
        "revert",
    ] {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "{command}:\n{help}"
        );
    }
    assert!(help.contains("3  the daemon is not reachable"), "{help}");
}

#[test]
fn resolve_help_explains_each_side() {
    let out = ctl(Path::new("/nonexistent"), &["resolve", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for text in [
        "--keep <KEEP> <FOLDER> <PATH_OR_GLOB>",
        "local:",
        "the one that lost",
        "remote:",
        "the server's",
        "newer:",
        "later modification time",
        "retention period",
    ] {
        assert!(help.contains(text), "{text}:\n{help}");
    }
}

/// Exchanges with a stand-in daemon, which binds a Unix socket.
#[cfg(unix)]
mod with_a_daemon {
    use super::*;
    use std::path::PathBuf;

    use filesync_proto::control::{
        ConflictInfo, ControlErrorKind, Counters, DaemonStatus, FolderMode, FolderState,
        FolderStatus, Keep, Request, Response, VersionEntry,
    };

    /// A daemon stand-in on a Unix socket in a temp dir. For each connection it reads one
    /// frame, hands the request to `answer`, and writes back the response. When `answer`
    /// says to stop, the socket file is removed before the response goes out, so the CLI's
    /// next connection finds no daemon.
    struct FakeDaemon {
        socket: PathBuf,
        served: std::thread::JoinHandle<Vec<Request>>,
        _dir: tempfile::TempDir,
    }

    /// What the fake daemon does after answering.
    #[derive(PartialEq)]
    enum Then {
        Serve,
        Vanish,
    }

    impl FakeDaemon {
        fn start(mut answer: impl FnMut(&Request) -> (Response, Then) + Send + 'static) -> Self {
            use std::io::{Read, Write};
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("filesyncd.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let path = socket.clone();
            let served = std::thread::spawn(move || {
                let mut requests = Vec::new();
                for conn in listener.incoming() {
                    let mut conn = conn.unwrap();
                    let mut len = [0u8; 4];
                    conn.read_exact(&mut len).unwrap();
                    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
                    conn.read_exact(&mut payload).unwrap();
                    let request: Request = filesync_proto::control::decode(&payload).unwrap();
                    let (response, then) = answer(&request);
                    requests.push(request);
                    if then == Then::Vanish {
                        std::fs::remove_file(&path).unwrap();
                    }
                    let payload = filesync_proto::control::encode(&response);
                    conn.write_all(&(payload.len() as u32).to_be_bytes())
                        .unwrap();
                    conn.write_all(&payload).unwrap();
                    if then == Then::Vanish {
                        break;
                    }
                }
                requests
            });
            FakeDaemon {
                socket,
                served,
                _dir: dir,
            }
        }

        /// The requests it served; only for a daemon whose `answer` ends with `Vanish`.
        fn requests(self) -> Vec<Request> {
            self.served.join().expect("fake daemon failed")
        }
    }

    fn ok(message: &str) -> Response {
        Response::Ok {
            message: message.into(),
        }
    }

    fn folder(name: &str, pending_down_files: u64) -> FolderStatus {
        FolderStatus {
            name: name.into(),
            path: format!("/home/a/{name}"),
            server: "server.example:7101".into(),
            mode: FolderMode::TwoWay,
            state: if pending_down_files == 0 {
                FolderState::Idle
            } else {
                FolderState::Syncing
            },
            connected: true,
            scanned: true,
            files: 10,
            bytes: 2048,
            pending_up_files: 0,
            pending_up_bytes: 0,
            pending_down_files,
            pending_down_bytes: pending_down_files * 100,
            seq: 1,
            last_sync: None,
            conflicts: 0,
            last_error: None,
            unsyncable: Vec::new(),
            counters: Counters::default(),
            rate_up_bps: 0,
            rate_down_bps: 0,
            index_bytes: 0,
            last_scan: None,
            watch_problem: None,
            account: Some("alice".into()),
            owner: Some("alice".into()),
            local_changes: Default::default(),
        }
    }

    fn status(folders: Vec<FolderStatus>) -> Response {
        Response::Status(Box::new(DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/home/a/.config/filesync/filesyncd.toml".into(),
            folders,
            server: None,
            servers: Vec::new(),
            config_error: None,
            metrics: None,
            web: None,
        }))
    }

    #[test]
    fn a_daemon_error_exits_1_with_its_message() {
        let daemon = FakeDaemon::start(|_| {
            let error = Response::Error {
                kind: ControlErrorKind::Failed,
                message: "the index is locked".into(),
            };
            (error, Then::Vanish)
        });
        let out = ctl(&daemon.socket, &["status"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out), "filesyncctl: error: the index is locked\n");
        assert_eq!(daemon.requests(), [Request::Status { folder: None }]);
    }

    #[test]
    fn pause_all_prints_the_confirmation() {
        let daemon = FakeDaemon::start(|_| (ok("paused 2 folders"), Then::Vanish));
        let out = ctl(&daemon.socket, &["pause", "--all"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "paused 2 folders\n");
        assert_eq!(daemon.requests(), [Request::Pause { folder: None }]);
    }

    #[test]
    fn status_renders_for_people_and_for_scripts() {
        let daemon = FakeDaemon::start(|_| (status(vec![folder("docs", 3)]), Then::Vanish));
        let out = ctl(&daemon.socket, &["status", "--json", "docs"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["folders"][0]["pending_down_files"], 3);
        assert_eq!(
            daemon.requests(),
            [Request::Status {
                folder: Some("docs".into())
            }]
        );

        let daemon = FakeDaemon::start(|_| (status(vec![folder("docs", 3)]), Then::Vanish));
        let out = ctl(&daemon.socket, &["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("docs  /home/a/docs  ->  server.example:7101  (two-way)"),
            "{text}"
        );
        assert!(text.contains("down 3 files (300 B)"), "{text}");
    }

    #[test]
    fn wait_flushes_then_polls_until_in_sync() {
        let mut polls = 0;
        let daemon = FakeDaemon::start(move |request| match request {
            Request::Flush { .. } => (ok(""), Then::Serve),
            _ => {
                polls += 1;
                let pending = if polls < 3 { 1 } else { 0 };
                let then = if pending == 0 {
                    Then::Vanish
                } else {
                    Then::Serve
                };
                (status(vec![folder("docs", pending)]), then)
            }
        });
        let out = ctl(&daemon.socket, &["wait", "--timeout", "1m", "docs"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "",
            "no progress output when not on a terminal"
        );
        let docs = Some("docs".to_owned());
        let status = Request::Status {
            folder: docs.clone(),
        };
        assert_eq!(
            daemon.requests(),
            [
                Request::Flush { folder: docs },
                status.clone(),
                status.clone(),
                status
            ]
        );
    }

    #[test]
    fn wait_times_out_with_the_reason() {
        let daemon = FakeDaemon::start(|request| match request {
            Request::Flush { .. } => (ok(""), Then::Serve),
            _ => (status(vec![folder("docs", 2)]), Then::Serve),
        });
        let out = ctl(&daemon.socket, &["wait", "--timeout", "300ms"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "filesyncctl: error: timed out after 300ms waiting for sync\n  \
             docs: syncing, connected, scanned, pending up 0 files (0 B), down 2 files (200 B)\n"
        );
    }

    #[test]
    fn wait_exits_3_when_the_daemon_goes_away() {
        let daemon = FakeDaemon::start(|request| match request {
            Request::Flush { .. } => (ok(""), Then::Serve),
            _ => (status(vec![folder("docs", 2)]), Then::Vanish),
        });
        let out = ctl(&daemon.socket, &["wait"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
        assert_eq!(
            daemon.requests(),
            [
                Request::Flush { folder: None },
                Request::Status { folder: None }
            ]
        );
    }

    #[test]
    fn wait_reports_an_unknown_folder() {
        let daemon = FakeDaemon::start(|_| {
            let error = Response::Error {
                kind: ControlErrorKind::BadRequest,
                message: "no folder named nope".into(),
            };
            (error, Then::Vanish)
        });
        let out = ctl(&daemon.socket, &["wait", "nope"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out), "filesyncctl: error: no folder named nope\n");
        let nope = Some("nope".to_owned());
        assert_eq!(daemon.requests(), [Request::Flush { folder: nope }]);
    }

    #[test]
    fn conflicts_json_is_the_daemon_list() {
        let conflict = ConflictInfo {
            folder: "docs".into(),
            path: "report.txt".into(),
            copy: "report.sync-conflict-20261121-140211-ABCDEFG.txt".into(),
            winner: "DEV2".into(),
            winner_seq: 12,
            loser: "ABCDEFG".into(),
            made_at: 1_795_269_731,
            copy_size: 1_229,
            copy_mtime_ns: 1_795_269_731_000_000_000,
        };
        let answer = Response::Conflicts(vec![conflict]);
        let daemon = FakeDaemon::start(move |_| (answer.clone(), Then::Vanish));
        let out = ctl(&daemon.socket, &["conflicts", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "folder": "docs",
                "path": "report.txt",
                "copy": "report.sync-conflict-20261121-140211-ABCDEFG.txt",
                "winner": "DEV2",
                "winner_seq": 12,
                "loser": "ABCDEFG",
                "made_at": 1_795_269_731_i64,
                "copy_size": 1_229,
                "copy_mtime_ns": 1_795_269_731_000_000_000_i64,
            }])
        );
        assert_eq!(daemon.requests(), [Request::Conflicts { folder: None }]);
    }

    #[test]
    fn conflicts_says_so_when_there_are_none() {
        let daemon = FakeDaemon::start(|_| (Response::Conflicts(Vec::new()), Then::Vanish));
        let out = ctl(&daemon.socket, &["conflicts", "docs"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "no conflicts\n");
        assert_eq!(
            daemon.requests(),
            [Request::Conflicts {
                folder: Some("docs".into())
            }]
        );
    }

    #[test]
    fn resolve_sends_the_glob_as_given() {
        let daemon = FakeDaemon::start(|_| (ok("resolved 2 conflicts"), Then::Vanish));
        let out = ctl(
            &daemon.socket,
            &["resolve", "docs", "*.txt", "--keep", "newer"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "resolved 2 conflicts\n");
        assert_eq!(
            daemon.requests(),
            [Request::Resolve {
                folder: "docs".into(),
                pattern: "*.txt".into(),
                keep: Keep::Newer,
            }]
        );
    }

    #[test]
    fn versions_prints_a_table_of_the_daemon_list() {
        let answer = Response::Versions(vec![VersionEntry {
            version: 4,
            size: 2048,
            mtime_ns: 1_795_269_000_000_000_000,
            kept_at: 1_795_269_731,
        }]);
        let daemon = FakeDaemon::start(move |_| (answer.clone(), Then::Vanish));
        let out = ctl(&daemon.socket, &["versions", "docs", "notes/todo.txt"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("VERSION     SIZE  MODIFIED                 REPLACED")
        );
        let row = lines.next().unwrap_or_default();
        assert!(
            row.starts_with("      4  2.0 KiB  2026-11-21 13:50:00 UTC  2026-11-21 14:02:11 UTC ("),
            "{text}"
        );
        assert_eq!(lines.next(), None, "{text}");
        assert_eq!(
            daemon.requests(),
            [Request::Versions {
                folder: "docs".into(),
                path: "notes/todo.txt".into(),
            }]
        );
    }

    #[test]
    fn restore_prints_the_confirmation() {
        let daemon = FakeDaemon::start(|_| (ok("restored notes/todo.txt version 4"), Then::Vanish));
        let out = ctl(
            &daemon.socket,
            &["restore", "docs", "notes/todo.txt", "--version", "4"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "restored notes/todo.txt version 4\n");
        assert_eq!(
            daemon.requests(),
            [Request::Restore {
                folder: "docs".into(),
                path: "notes/todo.txt".into(),
                version: Some(4),
            }]
        );
    }
}
