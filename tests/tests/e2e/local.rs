//! Local hardening: what other users of the machine can reach. `filesyncctl` talks only
//! to a control socket of its own user (or root), and the daemons keep their state,
//! data and index files private whatever umask they start with.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use filesync_tests::Cluster;
use filesync_tests::cluster::DOCS;
use filesync_tests::exec::{Scratch, bin, run_with_timeout};
use filesync_tests::files;

/// A user id that is not the tests' (nobody).
const OTHER_USER: u32 = 65534;

/// Listens at `socket` and closes every connection at once, as a stand-in for another
/// user's listener: a `filesyncctl` that talks to it fails fast instead of waiting.
fn listen(socket: &Path) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

/// L1: as root here, a socket in a directory owned by another user, and one in a
/// directory everyone can write to, are refused by `filesyncctl` with the path in the
/// message, before a byte is sent.
#[test]
fn filesyncctl_refuses_a_socket_another_user_could_have_made() {
    let scratch = Scratch::new();
    let other = scratch.path().join("other");
    let open = scratch.path().join("open");
    for dir in [&other, &open] {
        fs::create_dir(dir).unwrap();
    }
    let sockets: Vec<PathBuf> = [&other, &open]
        .iter()
        .map(|d| d.join("filesyncd.sock"))
        .collect();
    for socket in &sockets {
        listen(socket);
    }
    std::os::unix::fs::chown(&sockets[0], Some(OTHER_USER), None).unwrap();
    std::os::unix::fs::chown(&other, Some(OTHER_USER), None).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();

    for (socket, why) in sockets.iter().zip(["belongs to user 65534", "mode 777"]) {
        let out = run_with_timeout(
            Command::new(bin("filesyncctl"))
                .arg("--socket")
                .arg(socket)
                .arg("status"),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}: {stderr}", socket.display());
        assert!(
            stderr.contains(&format!(
                "refusing the control socket at {}",
                socket.display()
            )) && stderr.contains(why),
            "{}: {stderr}",
            socket.display()
        );
    }
}

/// Every directory (0700 at most) and file (0600 at most) under `dir`; `skip` leaves out
/// a subtree that holds synced content, whose modes are the user's.
fn private_tree(dir: &Path, skip: &dyn Fn(&Path) -> bool, wrong: &mut Vec<String>) {
    let mode = fs::symlink_metadata(dir).unwrap().mode();
    if mode & 0o077 != 0 {
        wrong.push(format!("{} is {:o}", dir.display(), mode & 0o7777));
    }
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if skip(&path) {
            continue;
        }
        if meta.is_dir() {
            private_tree(&path, skip, wrong);
        } else if meta.is_file() && meta.mode() & 0o077 != 0 {
            wrong.push(format!("{} is {:o}", path.display(), meta.mode() & 0o7777));
        }
    }
}

/// L4: a server and a client started under umask 000 keep their state dirs, the
/// server's data dir and account dirs, the TLS keys, credentials and every SQLite index
/// (with its journal files) private: 0700 directories, 0600 files.
#[test]
fn daemon_files_are_private_whatever_the_umask() {
    let cl = Cluster::without_folders(1, Some("open"));
    for node in [cl.server(), cl.client(0)] {
        node.stop();
        node.set_umask(0);
        node.start();
    }
    cl.add_folder(0, DOCS);
    files::write(&cl.path_on(0, DOCS, "a.txt"), b"synced\n");
    cl.settle(DOCS);

    let mut wrong = Vec::new();
    let data = cl.server().data_dir().to_owned();
    let versions = data.join(".filesync/versions");
    let copy = cl.server_dir(DOCS).expect("the server has the folder");
    // The folder copy's content has the modes its files were synced with.
    private_tree(
        &data,
        &|p| p == versions || p.parent() == Some(&copy),
        &mut wrong,
    );
    private_tree(&cl.client(0).state_dir(), &|_| false, &mut wrong);
    private_tree(&cl.server().state_dir(), &|_| false, &mut wrong);
    assert!(wrong.is_empty(), "not private:\n{}", wrong.join("\n"));
}
