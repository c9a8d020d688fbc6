//! Folders shared across accounts: account `alice` shares `docs` with account `bob`,
//! whose device adds it as `alice/docs` with bob's own credential. Read-write members
//! sync both ways into the owner's folder; read-only members receive only, and the
//! server refuses their pushes even from a device that ignores its mode; taking a share
//! back closes a member's live connection and refuses later ones.

use std::path::PathBuf;
use std::time::Duration;

use filesync_proto::RelPath;
use filesync_proto::wire::{ClientMsg, PushOutcome, ServerMsg};
use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::hostile::{self, create, file_entry, serve_from};
use filesync_tests::node::describe;
use filesync_tests::{Cluster, SYNC_TIMEOUT, poll_until};
use serde_json::Value;

/// Bob's name for alice's folder.
const SHARED: &str = "alice/docs";
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// Client `a` (account alice) syncs `docs` holding `hello.txt`; client `b` is enrolled
/// in account bob by adding alice's folder as `alice/docs` after alice ran
/// `filesyncctl share docs --with bob` (plus `share_flags`). Returns b's local dir.
fn shared_cluster(share_flags: &[&str]) -> (Cluster, PathBuf) {
    let cl = Cluster::without_folders(2, None);
    let alice = cl.server().server_invite("alice", None);
    cl.a().ctl_ok(cl.add_args_with_token(0, DOCS, &alice));
    files::write(&cl.path_on(0, DOCS, "hello.txt"), b"hello from alice\n");
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);

    // Inviting bob's device makes account bob, which a share must name.
    let bob = cl.server().server_invite("bob", None);
    let mut share = vec!["share", DOCS, "--with", "bob"];
    share.extend(share_flags);
    let listed = cl.a().ctl_ok(&share);
    assert!(listed.contains("alice/docs  shared with  bob"), "{listed}");

    let dir = cl.folder_dir(1, "shared");
    let addr = cl.server().server_addr();
    let add = [
        "add".into(),
        dir.clone().into_os_string(),
        "--server".into(),
        addr.into(),
        "--name".into(),
        SHARED.into(),
        "--token".into(),
        bob.into(),
    ];
    cl.b().ctl_ok(add);
    wait_for(&cl, 1, "the shared folder to arrive", |_| {
        dir.join("hello.txt").is_file()
    });
    files::assert_file(&dir.join("hello.txt"), b"hello from alice\n");
    (cl, dir)
}

/// Polls client `i`'s status of its one folder until `check` accepts it.
fn wait_for(cl: &Cluster, i: usize, what: &str, check: impl Fn(&Value) -> bool) {
    let node = cl.client(i);
    poll_until(STATUS_TIMEOUT, || {
        let status = node.status_json();
        let folder = &status["folders"][0];
        if check(folder) {
            Ok(())
        } else {
            Err(format!("{}: waiting for {what}: {folder}", node.name()))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
}

/// The server's copy of alice's folder.
fn owner_copy(cl: &Cluster, rel: &str) -> PathBuf {
    cl.server().data_dir().join("alice").join(DOCS).join(rel)
}

/// Why a device connection was refused; panics if it was welcomed.
fn refused<T>(connected: Result<T, String>) -> String {
    match connected {
        Ok(_) => panic!("the server welcomed a device it should refuse"),
        Err(why) => why,
    }
}

fn grants(out: &str) -> Vec<Value> {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not a list of shares ({e}): {out}"))
}

#[test]
fn a_read_write_member_syncs_both_ways_into_the_owners_folder_and_restores() {
    let (cl, dir) = shared_cluster(&[]);
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);
    assert_eq!(cl.b().folder_status(SHARED)["mode"], "two-way");

    // Bob's change lands in alice's folder on the server, and reaches alice.
    files::write(&dir.join("from-bob.txt"), b"written by bob\n");
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);
    files::assert_file(&owner_copy(&cl, "from-bob.txt"), b"written by bob\n");
    assert!(
        !cl.server().data_dir().join("bob").exists(),
        "the member's changes went into a folder of its own account"
    );
    poll_until(SYNC_TIMEOUT, || {
        let path = cl.path_on(0, DOCS, "from-bob.txt");
        path.is_file()
            .then_some(())
            .ok_or("not at alice yet".to_string())
    })
    .unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::assert_file(&cl.path_on(0, DOCS, "from-bob.txt"), b"written by bob\n");

    // Versions and restore work from the member's device.
    files::write(&dir.join("hello.txt"), b"bob rewrote it\n");
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);
    files::assert_file(&owner_copy(&cl, "hello.txt"), b"bob rewrote it\n");
    assert!(
        !cl.b().versions(SHARED, "hello.txt").is_empty(),
        "the member sees no kept versions"
    );
    cl.b().ctl_ok(["restore", SHARED, "hello.txt"]);
    poll_until(SYNC_TIMEOUT, || {
        let back = std::fs::read(cl.path_on(0, DOCS, "hello.txt")).unwrap_or_default();
        (back == b"hello from alice\n")
            .then_some(())
            .ok_or(format!("alice has {:?}", String::from_utf8_lossy(&back)))
    })
    .unwrap();
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);
    files::assert_file(&dir.join("hello.txt"), b"hello from alice\n");

    // The grant is listed on the owner's device and on the server.
    let mine = grants(&cl.a().ctl_ok(["shares", "--json"]));
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        (
            &mine[0]["owner"],
            &mine[0]["folder"],
            &mine[0]["member"],
            &mine[0]["read_only"]
        ),
        (
            &"alice".into(),
            &"docs".into(),
            &"bob".into(),
            &false.into()
        )
    );
    let all = grants(&cl.server().ctl_ok(["server", "shares", "--json"]));
    assert_eq!(all, mine);
    // The member sees what is shared with it, by the owner's folder or in all.
    assert_eq!(grants(&cl.b().ctl_ok(["shares", "--json", SHARED])), mine);
    assert_eq!(grants(&cl.b().ctl_ok(["shares", "--json"])), mine);
    let human = cl.server().ctl_ok(["server", "shares", SHARED]);
    assert!(
        human.contains("alice/docs  shared with  bob  (read-write"),
        "{human}"
    );
    let devices = cl.server().ctl_ok(["server", "devices"]);
    assert!(devices.contains("account bob"), "{devices}");

    // Only the owner shares, and only with an account that exists.
    let refused = cl.b().ctl(["share", SHARED, "--with", "carol"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only alice can share it"),
        "{}",
        describe(&refused)
    );
    let nobody = cl.a().ctl(["share", DOCS, "--with", "nobody"]);
    assert_eq!(nobody.status.code(), Some(1), "{}", describe(&nobody));
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no account nobody"),
        "{}",
        describe(&nobody)
    );
}

#[test]
fn a_read_only_member_receives_and_the_server_refuses_its_pushes() {
    let (cl, dir) = shared_cluster(&["--read-only"]);
    wait_for(&cl, 1, "receive-only from the server's welcome", |f| {
        f["connected"] == true && f["mode"] == "receive-only"
    });

    // Bob's edit stays local: the device never even offers it.
    files::write(&dir.join("local.txt"), b"bob's local note\n");
    // It is a local change, not pending work: `wait` (which scans first) returns 0, and
    // status lists it with the read-only grant as the reason.
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);
    wait_for(&cl, 1, "bob's file listed as a local change", |f| {
        let changes = &f["local_changes"];
        changes["count"] == 1
            && changes["paths"][0] == "local.txt"
            && changes["reason"]
                .as_str()
                .is_some_and(|r| r.contains("read-only"))
            && f["state"] == "idle"
    });
    files::write(&cl.path_on(0, DOCS, "after.txt"), b"alice again\n");
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    poll_until(SYNC_TIMEOUT, || {
        dir.join("after.txt")
            .is_file()
            .then_some(())
            .ok_or("alice's change has not reached bob".to_string())
    })
    .unwrap();
    files::assert_file(&dir.join("after.txt"), b"alice again\n");
    files::assert_absent(&owner_copy(&cl, "local.txt"));
    files::assert_absent(&cl.path_on(0, DOCS, "local.txt"));
    files::assert_file(&dir.join("local.txt"), b"bob's local note\n");
    assert!(
        !cl.server()
            .log_text()
            .contains("refused a push from a read-only member"),
        "the honest read-only device tried to push"
    );
    let sent = cl.b().counters(SHARED);
    assert_eq!(
        (sent.pushes, sent.content_bytes_sent),
        (0, 0),
        "the read-only device pushed"
    );

    // A hostile device of bob's that ignores the mode: the server refuses its push and
    // writes nothing.
    let token = cl.server().server_invite("bob", None);
    let addr = cl.server().server_addr();
    let (mut dev, welcome) =
        hostile::connect_with_token(&addr, &token, "HOSTILEBOB", SHARED).unwrap();
    assert!(welcome.read_only, "{welcome:?}");
    let evil = b"written by a hostile member\n";
    let outcomes = dev
        .push(1, vec![create(file_entry("evil.txt", evil))], &|r| {
            serve_from(evil, r)
        })
        .unwrap();
    match outcomes.as_slice() {
        [PushOutcome::Failed { reason }] => {
            assert!(reason.contains("read-only"), "{reason}")
        }
        other => panic!("the push was not refused: {other:?}"),
    }
    files::assert_absent(&owner_copy(&cl, "evil.txt"));
    // Nor may it bring back an old version: that would change the folder too.
    let path = RelPath::new("hello.txt").unwrap();
    dev.send(ClientMsg::Restore {
        id: 2,
        path,
        version: None,
    })
    .unwrap();
    let restored = (0..1000)
        .find_map(|_| match dev.recv() {
            Ok(Some(ServerMsg::Restored { id: 2, result })) => Some(result),
            Ok(Some(_)) => None,
            other => panic!("no answer to the restore: {other:?}"),
        })
        .expect("no answer to the restore among 1000 messages");
    match restored {
        Err(why) => assert!(why.contains("read-only"), "{why}"),
        Ok(seq) => panic!("a read-only member restored a version as {seq}"),
    }
    assert!(
        cl.server()
            .log_text()
            .contains("refused a push from a read-only member")
    );
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::assert_absent(&cl.path_on(0, DOCS, "evil.txt"));
    let listed = grants(&cl.a().ctl_ok(["shares", "--json", DOCS]));
    assert_eq!(listed[0]["read_only"], true, "{listed:?}");
}

#[test]
fn unshare_closes_the_members_connection_and_refuses_later_ones() {
    let (cl, dir) = shared_cluster(&[]);
    cl.b().assert_in_sync(SHARED, SYNC_TIMEOUT);

    let left = cl.a().ctl_ok(["unshare", DOCS, "--with", "bob"]);
    assert!(left.contains("no shares"), "{left}");
    wait_for(&cl, 1, "the withdrawn share to show", |f| {
        f["connected"] == false
            && f["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("withdrawn") && e.contains(SHARED))
    });

    // The live connection was told why it ended.
    let events = cl.b().ctl_ok(["events", SHARED]);
    assert!(
        events.contains("access to folder alice/docs was withdrawn by its owner"),
        "{events}"
    );

    // Alice's change no longer reaches bob, whose reconnections are refused.
    files::write(&cl.path_on(0, DOCS, "after-unshare.txt"), b"not for bob\n");
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::assert_file(&owner_copy(&cl, "after-unshare.txt"), b"not for bob\n");
    poll_until(STATUS_TIMEOUT, || {
        let log = cl.server().log_text();
        log.contains("is not shared with account bob")
            .then_some(())
            .ok_or("bob's device has not tried again yet".to_string())
    })
    .unwrap();
    files::assert_absent(&dir.join("after-unshare.txt"));
    assert_eq!(cl.b().folder_status(SHARED)["connected"], false);

    // A new device of bob's is refused too, with what to do; and a member can never
    // create a folder in another account.
    let addr = cl.server().server_addr();
    let token = cl.server().server_invite("bob", None);
    let err = refused(hostile::connect_with_token(&addr, &token, "BOB2", SHARED));
    assert!(
        err.contains("not shared with account bob") && err.contains("filesyncctl share docs"),
        "{err}"
    );
    let token = cl.server().server_invite("bob", None);
    let err = refused(hostile::connect_with_token(
        &addr,
        &token,
        "BOB3",
        "alice/new",
    ));
    assert!(err.contains("not shared with account bob"), "{err}");
    assert!(!cl.server().data_dir().join("alice/new").exists());
    let none = grants(&cl.server().ctl_ok(["server", "shares", "--json"]));
    assert!(none.is_empty(), "{none:?}");
}
