//! Invite tokens as the server's admin sees them (issue 15, review finding M7): every
//! token records who made it, `server invites` lists the pending ones,
//! `server invites cancel` withdraws one, revoking a device cancels the tokens it made,
//! and a device makes at most 10 tokens an hour.

use std::time::{SystemTime, UNIX_EPOCH};

use filesync_proto::auth::InviteToken;
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::hostile;
use filesync_tests::node::describe;
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, poll_until};
use serde_json::Value;

/// `add` of client `i`'s `folder` with `token`; must succeed.
fn enrol(cl: &Cluster, i: usize, token: &str) {
    cl.client(i).ctl_ok(cl.add_args_with_token(i, DOCS, token));
}

/// `add` of client `i`'s folder with `token` must fail with exit 1 and add nothing;
/// returns what it said.
fn add_refused(cl: &Cluster, i: usize, token: &str) -> String {
    let node = cl.client(i);
    let out = node.ctl(cl.add_args_with_token(i, DOCS, token));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(node.folder_names().is_empty());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `filesyncctl device invite` on client `node`: the token.
fn device_invite(node: &Node, server: &str) -> String {
    node.ctl_ok(["device", "invite", "--server", server])
        .trim()
        .to_owned()
}

/// `filesyncctl server invites --json`, parsed.
fn pending(server: &Node) -> Vec<Value> {
    let stdout = server.ctl_ok(["server", "invites", "--json"]);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("server invites --json is not a list ({e}):\n{stdout}"))
}

/// The id the server gave client `node`, as its `status --json` shows it.
pub(crate) fn device_id(node: &Node, server: &str) -> String {
    let status = node.status_json();
    status["servers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["server"] == server))
        .and_then(|s| s["device"].as_str())
        .unwrap_or_else(|| panic!("{}: not enrolled with {server}: {status}", node.name()))
        .to_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Enrolment by invite: a token from `server invite` (on the last server node) enrols
/// client A through its own node, a token A makes with `device invite` enrols client B
/// through its own; both are devices of the account, and their folders sync.
#[test]
fn devices_enrolled_by_invite_tokens_sync() {
    devices_enrolled_by_invite_tokens_sync_on(&Cluster::without_folders(2, None));
}

/// The body of [`devices_enrolled_by_invite_tokens_sync`], on any backend: on the
/// cluster backend, each token is made on another node than the one it is used on.
pub(crate) fn devices_enrolled_by_invite_tokens_sync_on(cl: &Cluster) {
    let last = cl.servers().last().expect("a server node");
    enrol(cl, 0, &last.server_invite("alice", None));
    let minted = device_invite(cl.a(), &cl.home(0).server_addr());
    enrol(cl, 1, &minted);
    assert!(pending(cl.server()).is_empty(), "both tokens were used");
    let devices = cl.server().server_devices();
    assert_eq!(devices.len(), 2, "{devices:?}");
    files::write(&cl.path_on(0, DOCS, "from-a.txt"), b"written on A\n");
    files::write(&cl.path_on(1, DOCS, "sub/from-b.txt"), b"written on B\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "from-a.txt", b"written on A\n");
    cl.assert_file_everywhere(DOCS, "sub/from-b.txt", b"written on B\n");
}

#[test]
fn revoking_a_device_cancels_the_invite_tokens_it_made() {
    let cl = Cluster::without_folders(3, None);
    let addr = cl.server().server_addr();
    enrol(&cl, 0, &cl.server().server_invite("alice", None));
    let a = device_id(cl.a(), &addr);
    let minted = device_invite(cl.a(), &addr);
    let by_admin = cl.server().server_invite("alice", None);

    let said = cl.server().ctl_ok(["server", "revoke", &a]);
    let refused = add_refused(&cl, 1, &minted);
    assert!(refused.contains("expired or was cancelled"), "{refused}");
    assert!(
        said.contains("the invite token it made is cancelled"),
        "{said}"
    );
    let listed = pending(cl.server());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["made_by"], "admin");
    // Revoking cancels only what the device made: the admin's token still enrols.
    enrol(&cl, 2, &by_admin);
    assert!(pending(cl.server()).is_empty());
    let devices = cl.server().server_devices();
    assert_eq!(devices.len(), 2, "{devices:?}");
}

/// A connection admitted before its device was revoked cannot make a token after: the
/// server checks the connection's cancellation (and the store the device) first.
#[test]
fn a_connection_admitted_before_the_revocation_makes_no_token() {
    let cl = Cluster::without_folders(0, Some("open"));
    let addr = cl.server().server_addr();
    let (mut dev, id) = hostile::registered(&addr, "STOLEN").expect("registered");
    cl.server().ctl_ok(["server", "revoke", id.as_str()]);
    dev.send(ClientMsg::CreateInvite)
        .expect("send CreateInvite");
    match dev.recv() {
        Ok(Some(ServerMsg::Invite(Err(why)))) => {
            assert!(why.contains(&format!("device {id} was revoked")), "{why}");
        }
        other => panic!("a revoked device's connection got {other:?}"),
    }
    assert!(pending(cl.server()).is_empty());
}

#[test]
fn server_invites_lists_pending_tokens_and_cancels_one_by_id() {
    let cl = Cluster::without_folders(2, None);
    let addr = cl.server().server_addr();
    enrol(&cl, 0, &cl.server().server_invite("alice", None));
    let a = device_id(cl.a(), &addr);
    let before = unix_now();
    let for_carol = cl.server().server_invite("carol", Some("2h"));
    device_invite(cl.a(), &addr);

    let listed = pending(cl.server());
    assert_eq!(listed.len(), 2, "{listed:?}");
    let carol = listed.iter().find(|i| i["account"] == "carol").unwrap();
    assert_eq!(carol["made_by"], "admin");
    let expires = carol["expires"].as_i64().unwrap();
    assert!(
        (before + 7_200..=unix_now() + 7_200).contains(&expires),
        "{carol}"
    );
    let alice = listed.iter().find(|i| i["account"] == "alice").unwrap();
    assert_eq!(alice["made_by"], "device");
    assert_eq!(alice["device"], a.as_str());
    let id = carol["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{carol}");
    let human = cl.server().ctl_ok(["server", "invites"]);
    for expected in [
        format!("{id}  account carol  made by admin  expires "),
        format!("account alice  made by device {a}  expires "),
    ] {
        assert!(human.contains(&expected), "want {expected:?} in:\n{human}");
    }

    let said = cl.server().ctl_ok(["server", "invites", "cancel", &id]);
    assert!(said.contains("cancelled"), "{said}");
    let listed = pending(cl.server());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["account"], "alice");
    let refused = add_refused(&cl, 1, &for_carol);
    assert!(refused.contains("expired or was cancelled"), "{refused}");

    // An unknown id, the reserved account, and an expiry past the end of time.
    for (args, expected) in [
        (
            vec!["server", "invites", "cancel", "0000000000000000"],
            "no invite token \"0000000000000000\" on this server",
        ),
        (vec!["server", "invite", "open"], "reserved"),
        (
            vec!["server", "invite", "dave", "--expires", "300000000000years"],
            "choose a shorter --expires",
        ),
    ] {
        let out = cl.server().ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{args:?}: want {expected:?} in: {stderr}"
        );
    }
    assert_eq!(pending(cl.server()).len(), 1);
}

#[test]
fn a_device_makes_at_most_ten_invite_tokens_an_hour() {
    let cl = Cluster::without_folders(2, None);
    let addr = cl.server().server_addr();
    enrol(&cl, 0, &cl.server().server_invite("alice", None));
    let tokens: Vec<String> = (0..10).map(|_| device_invite(cl.a(), &addr)).collect();
    let out = cl.a().ctl(["device", "invite", "--server", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "made 10 invite tokens within the last hour",
        "it can make the next one in",
        "filesyncctl server invite alice",
    ] {
        assert!(stderr.contains(expected), "want {expected:?} in: {stderr}");
    }
    assert_eq!(pending(cl.server()).len(), 10);
    // The ten it made still work.
    enrol(&cl, 1, &tokens[9]);
}

/// The address a token carries (issue 19): the server's `listen` address by default, its
/// `server.public_address` when set; and `add --token` without `--server` reaches the
/// server there.
#[test]
fn a_token_carries_the_public_address_and_add_reaches_it_without_server() {
    let cl = Cluster::without_folders(1, None);
    let listen = cl.server().server_addr();
    let carried = |token: &str| InviteToken::parse(token).expect("a token").server;
    assert_eq!(carried(&cl.server().server_invite("alice", None)), listen);

    let port = listen.rsplit_once(':').expect("HOST:PORT").1;
    let public = format!("localhost:{port}");
    cl.server()
        .restart_with_server_lines(&format!("public_address = \"{public}\"\n"));
    let token = cl.server().server_invite("alice", None);
    assert_eq!(carried(&token), public);
    let status = cl.server().status_json();
    assert_eq!(
        status["server"]["public_address"],
        public.as_str(),
        "{status}"
    );

    let dir = cl.folder_dir(0, DOCS);
    let dir = dir.to_str().expect("a UTF-8 temp dir");
    cl.a()
        .ctl_ok(["add", dir, "--name", DOCS, "--token", &token]);
    let status = cl.a().folder_status(DOCS);
    assert_eq!(status["server"], public.as_str(), "{status}");
    std::fs::write(cl.path_on(0, DOCS, "hello.txt"), b"hello").unwrap();
    poll_until(SYNC_TIMEOUT, || {
        let copy = cl.server_dir(DOCS).map(|d| d.join("hello.txt"));
        match copy.map(std::fs::read) {
            Some(Ok(bytes)) if bytes == b"hello" => Ok(()),
            other => Err(format!("hello.txt on the server: {other:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}\nserver log:\n{}", cl.server().log_text()));

    // Neither --server nor a token: filesyncctl says what to give.
    let out = cl.a().ctl(["add", dir, "--name", "other"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--server <HOST:PORT>"), "{said}");
}
