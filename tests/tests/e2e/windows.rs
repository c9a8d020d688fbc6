//! A Windows device: `filesyncd.exe` under Wine, in a fresh prefix, controlled with
//! `filesyncctl.exe` over its named pipe, syncs one folder with a Linux server and a
//! Linux device. Files and nested directories go each way, an edit made by a Windows
//! program comes back, and names Windows cannot hold (`aux.txt`, `notes:v2.txt`, and
//! `README.md` beside `Readme.md`) are listed as unsyncable on the Windows device while
//! everything else syncs. (`a:b.txt` is refused by every device, the Linux one too: a
//! first name of one letter and a colon reads as a drive on Windows.)
//!
//! In the background: `filesyncd.exe --daemon` detaches and logs to its state
//! directory, and `filesyncctl.exe autostart` registers it to start at logon.
//!
//! Needs Wine, mingw and the Windows binaries (`cargo build --target
//! x86_64-pc-windows-gnu -p filesyncd -p filesyncctl`); skipped without them, except
//! under `.ci/run`, where it fails instead.

use std::path::PathBuf;
use std::time::Duration;

use std::process::Command;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::{Scratch, bin, run_with_timeout};
use filesync_tests::node::describe;
use filesync_tests::tree::{Skip, converge_with_excluding};
use filesync_tests::wine::{Tools, WinNode, Wine, run_to_end, windows_path};
use filesync_tests::{Cluster, Manifest, files, poll_until};
use serde_json::Value;

/// How long a step may take to converge with a daemon under Wine on a loaded machine.
const WINE_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// The names made on Linux that Windows cannot hold: a reserved device name (with an
/// extension) and a colon.
const NOT_FOR_WINDOWS: [&str; 2] = ["aux.txt", "notes:v2.txt"];

/// Two names made on Linux that differ only in case: Windows holds one of them.
const CASE_PAIR: [&str; 2] = ["README.md", "Readme.md"];

/// A name every device refuses.
const DRIVE: &str = "a:b.txt";

#[test]
fn a_windows_device_under_wine_syncs_both_ways_and_lists_names_it_cannot_hold() {
    let Some(tools) = Tools::find_or_skip() else {
        return;
    };
    let cl = Cluster::new(1);
    for entry in ["wine", "shim", "w", "w-docs"] {
        cl.expect_entry(entry);
    }
    // Declared after the cluster, so dropped before its temp dir goes: the node, then
    // the prefix's wineserver.
    let wine = Wine::boot(tools, cl.root());
    let w = WinNode::new(&wine, cl.root(), "w");
    w.start();
    let on_w = w.add_folder(DOCS, &cl.server().server_addr());
    let on_a = |rel: &str| cl.path_on(0, DOCS, rel);

    // Linux to Windows: a file, nested directories, an empty one.
    files::write(&on_a("hello.txt"), b"from Linux\n");
    files::write(&on_a("deep/er/still/nested.txt"), b"three levels down\n");
    std::fs::create_dir_all(on_a("empty/dir")).expect("cannot make empty/dir");
    settle(&cl, &w, &|_| false);
    files::assert_file(
        &on_w.join("deep/er/still/nested.txt"),
        b"three levels down\n",
    );
    assert!(on_w.join("empty/dir").is_dir(), "empty/dir did not reach w");

    // Windows to Linux: files and nested directories made in the Windows device's folder.
    std::fs::create_dir_all(on_w.join("win/sub")).expect("cannot make win/sub");
    let blob = files::write_pseudo_random(&on_w.join("win/sub/blob.bin"), 18, 300_000);
    files::write(&on_w.join("win/from-windows.txt"), b"made on w\n");
    std::fs::create_dir_all(on_w.join("win/empty")).expect("cannot make win/empty");
    settle(&cl, &w, &|_| false);
    assert_eq!(
        filesync_tests::tree::sha256_file(&on_a("win/sub/blob.bin")).expect("blob on a"),
        blob
    );
    cl.assert_file_everywhere(DOCS, "win/from-windows.txt", b"made on w\n");

    // An edit on the Windows side, written by a Windows program (cmd.exe, which ends
    // the line with CR LF: line endings are bytes like any other).
    let edit = run_to_end(
        wine.command("cmd").args([
            "/c",
            &format!("echo edited on w>{}", windows_path(&on_w.join("hello.txt"))),
        ]),
        Duration::from_secs(60),
    );
    assert!(edit.status.success(), "cmd /c echo: {}", describe(&edit));
    settle(&cl, &w, &|_| false);
    cl.assert_file_everywhere(DOCS, "hello.txt", b"edited on w\r\n");
    files::assert_file(&on_w.join("hello.txt"), b"edited on w\r\n");

    // Names Windows cannot hold, made on Linux: the Linux replicas keep them, the Windows
    // device lists each as unsyncable with a reason and syncs everything else.
    for name in NOT_FOR_WINDOWS {
        files::write(&on_a(name), format!("{name} from Linux\n"));
    }
    for name in CASE_PAIR {
        files::write(&on_a(name), format!("{name} from Linux\n"));
    }
    files::write(&on_a(DRIVE), b"a drive?\n");
    files::write(&on_a("fine.txt"), b"a name every system holds\n");
    let skip =
        |rel: &str| NOT_FOR_WINDOWS.contains(&rel) || CASE_PAIR.contains(&rel) || rel == DRIVE;
    let common = settle(&cl, &w, &skip);
    assert!(
        common.contains_key("fine.txt"),
        "fine.txt did not sync: {common:?}"
    );
    for name in NOT_FOR_WINDOWS {
        files::assert_file(
            &cl.server_path(DOCS, name),
            format!("{name} from Linux\n").as_bytes(),
        );
        let listed = wait_unsyncable(&w, name);
        assert!(
            !on_w.join(name).exists(),
            "{name} was written on the Windows device: {listed}"
        );
    }
    // Of the two names differing only in case, the Windows device holds one, with its
    // own content, and lists the other, saying so.
    let names_on_w = files::list_dir(&on_w);
    let held: Vec<&str> = CASE_PAIR
        .into_iter()
        .filter(|c| names_on_w.iter().any(|n| n == c))
        .collect();
    assert_eq!(held.len(), 1, "w holds {held:?} of {CASE_PAIR:?}");
    let kept = held[0];
    files::assert_file(&on_w.join(kept), format!("{kept} from Linux\n").as_bytes());
    let other = CASE_PAIR
        .iter()
        .copied()
        .find(|c| *c != kept)
        .expect("two names");
    let listed = wait_unsyncable(&w, other);
    assert!(
        listed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("case")),
        "w does not say {other} clashes in case: {listed}"
    );
    // The name every device refuses: listed on Linux, nowhere else.
    let on_linux = cl.a().folder_status(DOCS)["unsyncable"].clone();
    assert!(
        on_linux.as_array().is_some_and(|l| l
            .iter()
            .any(|u| u["path"].as_str().is_some_and(|p| p.ends_with(DRIVE)))),
        "the Linux device does not list {DRIVE}: {on_linux}"
    );
    w.assert_in_sync(DOCS, WINE_SYNC_TIMEOUT);
    // Nothing on the Linux side was deleted because Windows could not hold it.
    for name in NOT_FOR_WINDOWS.into_iter().chain(CASE_PAIR) {
        files::assert_file(&on_a(name), format!("{name} from Linux\n").as_bytes());
    }
}

/// Ends a step: the Linux device's, the server's and the Windows device's copies of
/// `docs` converge (without the paths `skip` accepts), `wait` exits 0 on both devices,
/// the cluster's oracle holds, and the Windows device reports no folder error.
fn settle(cl: &Cluster, w: &WinNode<'_>, skip: Skip<'_>) -> Manifest {
    let everywhere = || -> Result<Vec<PathBuf>, String> {
        let mut trees = cl.replicas(DOCS, &[0])?;
        trees.push(w.folder_dir(DOCS));
        Ok(trees)
    };
    let common =
        converge_with_excluding(WINE_SYNC_TIMEOUT, everywhere, skip).unwrap_or_else(|why| {
            panic!(
                "docs did not converge on a, the server and w within \
                 {WINE_SYNC_TIMEOUT:?}: {why}\nw's status: {}{}",
                w.folder_status(DOCS),
                w.check_running().err().unwrap_or_default()
            )
        });
    w.assert_in_sync(DOCS, WINE_SYNC_TIMEOUT);
    cl.a().assert_in_sync(DOCS, WINE_SYNC_TIMEOUT);
    cl.check_oracle(DOCS, &[0]);
    let status = w.folder_status(DOCS);
    assert!(
        status["last_error"].is_null(),
        "w's folder reports an error: {status}"
    );
    common
}

/// Waits until the Windows device lists `name` as unsyncable, with a reason; returns
/// the entry.
fn wait_unsyncable(w: &WinNode<'_>, name: &str) -> Value {
    let listed = poll_until(WINE_SYNC_TIMEOUT, || {
        let status = w.folder_status(DOCS);
        status["unsyncable"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["path"] == name)
            .cloned()
            .ok_or_else(|| format!("w's unsyncable list: {}", status["unsyncable"]))
    })
    .unwrap_or_else(|why| panic!("w never listed {name} as unsyncable: {why}"));
    assert!(
        listed["reason"]
            .as_str()
            .is_some_and(|r| !r.trim().is_empty()),
        "w lists {name} as unsyncable without a reason: {listed}"
    );
    listed
}

/// `filesyncd.exe --daemon` returns 0 once the daemon it started is ready, and that
/// daemon, without a console, logs to `filesyncd.log` in its state directory (no colour
/// codes) and writes its pid file there. `filesyncctl.exe autostart enable` registers
/// `"…\filesyncd.exe" --daemon` in the user's Run key (read back with Windows' own
/// `reg query`), `status` says so, and `disable` removes it.
#[test]
fn a_windows_daemon_detaches_logs_to_its_state_dir_and_autostarts_from_the_run_key() {
    let Some(tools) = Tools::find_or_skip() else {
        return;
    };
    let scratch = Scratch::new();
    let wine = Wine::boot(tools, scratch.path());
    let w = WinNode::new(&wine, scratch.path(), "w");
    w.start_in_background();
    let log = std::fs::read_to_string(w.state_dir().join("filesyncd.log"))
        .expect("the detached daemon wrote no filesyncd.log in its state dir");
    assert!(log.contains("filesyncd ready"), "log: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file: {log}"
    );
    let pid = std::fs::read_to_string(w.state_dir().join("filesyncd.pid"))
        .expect("the detached daemon wrote no pid file in its state dir");
    assert!(pid.trim().parse::<u32>().is_ok(), "pid file: {pid:?}");

    let run_key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
    let query = || {
        run_to_end(
            wine.command("reg")
                .args(["query", run_key, "/v", "filesync"]),
            Duration::from_secs(60),
        )
    };
    assert!(w.ctl_ok(["autostart", "status"]).starts_with("disabled"));
    w.ctl_ok(["autostart", "enable"]);
    let status = w.ctl_ok(["autostart", "status"]);
    assert!(
        status.starts_with("enabled") && status.contains(r#"filesyncd.exe" --daemon"#),
        "autostart status after enable: {status}"
    );
    let registered = query();
    let text = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.status.success() && text.contains(r#"\filesyncd.exe" --daemon"#),
        "reg query after enable: {}",
        describe(&registered)
    );
    w.ctl_ok(["autostart", "disable"]);
    assert!(w.ctl_ok(["autostart", "status"]).starts_with("disabled"));
    assert!(
        !query().status.success(),
        "the Run key still holds filesync after disable"
    );
}

/// On Linux `filesyncctl autostart` points to the user unit instead.
#[test]
fn on_linux_autostart_points_to_the_user_unit() {
    let out = run_with_timeout(
        Command::new(bin("filesyncctl")).args(["autostart", "enable"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr.contains("systemctl --user enable --now filesyncd"),
        "{stderr}"
    );
}

/// The unit tests of the daemon's Windows file code (`daemon/src/fs/windows/`: opens
/// relative to directory handles, renames and deletes by handle, listings, the partial
/// transfer's lock, and the pure rules), of modes kept where files hold none, and of
/// case clashes, built for Windows and run under Wine: the Linux build never makes
/// those calls or takes those branches. Links and junctions are not among them: Wine has none.
#[test]
fn the_windows_file_code_passes_its_unit_tests_under_wine() {
    let Some(tools) = Tools::find_or_skip() else {
        return;
    };
    let scratch = Scratch::new();
    let wine = Wine::boot(tools, scratch.path());
    // `fs::stat` holds keep_mode, whose Windows branch (the index's mode kept) no Linux
    // run takes; `client::task::names` the case clashes.
    let out = wine.daemon_unit_tests(&["fs::windows", "fs::stat::", "client::task::names"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let passed = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        out.status.success() && passed.is_some_and(|n| n >= 20),
        "the Windows unit tests of fs::windows did not pass under Wine ({passed:?} passed): {}",
        describe(&out)
    );
}
