//! A device in several accounts of one server (issue 15, review finding C1, L2, L8): a
//! credential per (server, account), each folder syncing as the account it records and
//! never as another, whatever token is redeemed later and across restarts; `--account`
//! choosing among credentials; a token for another certificate than the pinned one
//! refused; tokens passed on standard input or in `FILESYNC_TOKEN`; and an install of
//! the old layout (no `account` key, one credential per address) going on as before.

use std::fs;
use std::time::Duration;

use filesync_proto::wire::ClientMsg;
use filesync_tests::hostile::{self, FakeIdentity};
use filesync_tests::node::describe;
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, files, poll_until};
use serde_json::Value;

const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// `add` of client 0's `folder` with `extra` arguments; must succeed.
fn add(cl: &Cluster, folder: &str, extra: &[&str]) {
    let mut args = cl.add_args(0, folder);
    args.extend(extra.iter().map(Into::into));
    cl.a().ctl_ok(args);
}

/// `add` of client 0's `folder` with `extra` arguments must fail with exit 1, say every
/// one of `expected`, and leave the config file byte for byte as it was.
fn refused_add(cl: &Cluster, folder: &str, extra: &[&str], expected: &[&str]) {
    let node = cl.a();
    let before = fs::read(node.config_path()).unwrap();
    let mut args = cl.add_args(0, folder);
    args.extend(extra.iter().map(Into::into));
    let out = node.ctl(args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in expected {
        assert!(stderr.contains(part), "want {part:?} in: {stderr}");
    }
    assert_eq!(
        fs::read(node.config_path()).unwrap(),
        before,
        "a failed add changed the config"
    );
}

/// The account and owner `status --json` shows for `folder`.
fn account_of(node: &Node, folder: &str) -> (Value, Value) {
    let status = node.folder_status(folder);
    (status["account"].clone(), status["owner"].clone())
}

fn server_fingerprint(server: &Node) -> String {
    let status = server.status_json();
    status["server"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("server status has no fingerprint: {status}"))
        .to_owned()
}

/// Polls `folder`'s status on `node` until its `last_error` says every one of `parts`.
fn wait_for_error(node: &Node, folder: &str, parts: &[&str]) -> String {
    poll_until(STATUS_TIMEOUT, || {
        let status = node.folder_status(folder);
        let error = status["last_error"].as_str().unwrap_or_default().to_owned();
        if parts.iter().all(|p| error.contains(p)) {
            Ok(error)
        } else {
            Err(format!(
                "{}: want {parts:?} in last_error: {status}",
                node.name()
            ))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"))
}

#[test]
fn a_token_of_another_account_binds_only_the_folder_it_adds_across_a_restart() {
    let cl = Cluster::without_folders(1, None);
    let data = cl.server().data_dir().to_owned();
    files::write(&cl.path_on(0, "private", "secret.txt"), b"home only\n");
    add(
        &cl,
        "private",
        &["--token", &cl.server().server_invite("home", None)],
    );
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    files::assert_file(&data.join("home/private/secret.txt"), b"home only\n");

    let work = cl.server().server_invite("work", None);
    files::write(&cl.path_on(0, "shared", "plan.txt"), b"for work\n");
    add(&cl, "shared", &["--token", &work]);
    cl.a().assert_in_sync("shared", SYNC_TIMEOUT);
    files::assert_file(&data.join("work/shared/plan.txt"), b"for work\n");

    // After a restart every folder logs in again, each with its own account's credential.
    cl.a().stop();
    cl.a().start();
    files::write(
        &cl.path_on(0, "private", "after.txt"),
        b"written after the restart\n",
    );
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    cl.a().assert_in_sync("shared", SYNC_TIMEOUT);
    files::assert_file(
        &data.join("home/private/after.txt"),
        b"written after the restart\n",
    );
    files::assert_absent(&data.join("work/private"));
    files::assert_absent(&data.join("home/shared"));
    assert_eq!(
        account_of(cl.a(), "private"),
        ("home".into(), "home".into())
    );
    assert_eq!(account_of(cl.a(), "shared"), ("work".into(), "work".into()));
    let config = fs::read_to_string(cl.a().config_path()).unwrap();
    assert!(config.contains("account = \"home\""), "{config}");
    assert!(config.contains("account = \"work\""), "{config}");
    // The device holds both credentials, one per account.
    let status = cl.a().status_json();
    let mut accounts: Vec<&str> = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["account"].as_str())
        .collect();
    accounts.sort();
    assert_eq!(accounts, ["home", "work"], "{status}");
}

#[test]
fn add_without_account_is_refused_once_the_device_holds_two_credentials() {
    let cl = Cluster::without_folders(2, None);
    let data = cl.server().data_dir().to_owned();
    add(
        &cl,
        "private",
        &["--token", &cl.server().server_invite("home", None)],
    );
    // One credential: a folder without a token takes its account.
    add(&cl, "notes", &[]);
    assert_eq!(account_of(cl.a(), "notes").0, "home");
    add(
        &cl,
        "shared",
        &["--token", &cl.server().server_invite("work", None)],
    );

    cl.folder_dir(0, "music");
    refused_add(
        &cl,
        "music",
        &[],
        &["more than one account", "(home, work)", "--account NAME"],
    );
    refused_add(
        &cl,
        "music",
        &["--account", "play"],
        &["no credential for account play", "home, work", "--token"],
    );
    add(&cl, "music", &["--account", "work"]);
    files::write(&cl.path_on(0, "music", "song.txt"), b"la\n");
    cl.a().assert_in_sync("music", SYNC_TIMEOUT);
    files::assert_file(&data.join("work/music/song.txt"), b"la\n");
    files::assert_absent(&data.join("home/music"));
    assert_eq!(account_of(cl.a(), "music").0, "work");

    // `device invite` needs the account too, and then invites into that one.
    let addr = cl.server().server_addr();
    let out = cl.a().ctl(["device", "invite", "--server", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(home, work)"));
    let token = cl
        .a()
        .ctl_ok(["device", "invite", "--server", &addr, "--account", "work"]);
    cl.b()
        .ctl_ok(cl.add_args_with_token(1, "music", token.trim()));
    cl.b().assert_in_sync("music", SYNC_TIMEOUT);
    files::assert_file(&cl.path_on(1, "music", "song.txt"), b"la\n");
    assert_eq!(account_of(cl.b(), "music").0, "work");
}

#[test]
fn a_folder_whose_account_has_no_credential_stops_and_names_the_token_it_needs() {
    let cl = Cluster::without_folders(1, None);
    let data = cl.server().data_dir().to_owned();
    add(
        &cl,
        "private",
        &["--token", &cl.server().server_invite("home", None)],
    );
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);

    // A folder written by hand for an account this device was never enrolled in.
    cl.a().stop();
    let notes = cl.folder_dir(0, "notes");
    files::write(&notes.join("n.txt"), b"not for home\n");
    let mut config = fs::read_to_string(cl.a().config_path()).unwrap();
    config.push_str(&format!(
        "\n[[folder]]\npath = {:?}\nserver = \"{}\"\nname = \"notes\"\naccount = \"work\"\n",
        notes.display().to_string(),
        cl.server().server_addr()
    ));
    fs::write(cl.a().config_path(), config).unwrap();
    cl.a().start();

    let addr = cl.server().server_addr();
    let error = wait_for_error(
        cl.a(),
        "notes",
        &[
            "folder notes",
            "account work",
            &format!("server {addr}"),
            "no credential for that account",
            "filesyncctl server invite work",
            "--token TOKEN",
        ],
    );
    assert!(error.contains("credentials for: home"), "{error}");
    let status = cl.a().folder_status("notes");
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["account"], "work", "{status}");
    // Nothing went anywhere: not into home, and work was never even created.
    files::assert_absent(&data.join("home/notes"));
    files::assert_absent(&data.join("work"));
    // The other folder is unaffected.
    files::write(&cl.path_on(0, "private", "still.txt"), b"fine\n");
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    files::assert_file(&data.join("home/private/still.txt"), b"fine\n");
}

#[test]
fn a_login_let_into_another_account_stops_the_folder_before_its_hello() {
    let cl = Cluster::without_folders(1, None);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = FakeIdentity::new().unwrap();
    std::thread::scope(|s| {
        type AfterLogin = Result<Option<ClientMsg>, String>;
        let server = s.spawn(|| -> Result<AfterLogin, String> {
            // The enrolment of `add` and the first session land in `home`; the next
            // login the fake server lets in as `work`.
            let (first, _hello) = hostile::accept_device_as(&fake, &listener, "evil", 0, "home")?;
            drop(first);
            let mut next = fake.admit_one(&listener, "work")?;
            // The client's next message, or how its closing the connection read.
            Ok(next.recv())
        });
        let mut args = cl.add_args(0, "docs");
        let at = args.iter().position(|a| a == "--server").unwrap() + 1;
        args[at] = addr.clone().into();
        cl.a().ctl_ok(args);
        assert_eq!(account_of(cl.a(), "docs").0, "home");
        wait_for_error(
            cl.a(),
            "docs",
            &[
                "folder docs",
                "syncs as account home",
                &format!("server {addr} let this device in as account work"),
            ],
        );
        let after_login = server.join().unwrap().expect("the fake server failed");
        assert!(
            !matches!(after_login, Ok(Some(_))),
            "the client went on after a login into another account: {after_login:?}"
        );
    });
}

#[test]
fn a_token_for_another_certificate_than_the_pin_is_refused_naming_both() {
    let cl = Cluster::without_folders(1, None);
    let addr = cl.server().server_addr();
    add(
        &cl,
        "private",
        &["--token", &cl.server().server_invite("home", None)],
    );
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    let old = server_fingerprint(cl.server());

    // The server gets a new key; its tokens now name the new certificate.
    cl.server().stop();
    fs::remove_dir_all(cl.server().data_dir().join(".filesync/tls")).unwrap();
    cl.server().start();
    let new = server_fingerprint(cl.server());
    assert_ne!(old, new);
    let token = cl.server().server_invite("work", None);
    cl.folder_dir(0, "shared");
    refused_add(
        &cl,
        "shared",
        &["--token", &token],
        &[&old, &new, &format!("filesyncctl trust {addr} {new}")],
    );
    let status = cl.a().status_json();
    let pins: Vec<&Value> = status["servers"].as_array().unwrap().iter().collect();
    assert!(
        pins.iter().all(|p| p["fingerprint"] == old.as_str()),
        "{status}"
    );
    assert!(
        cl.server()
            .server_devices()
            .iter()
            .all(|d| d["account"] == "home")
    );

    // Re-pinning is deliberate; then the same token, unspent, works.
    cl.a().ctl_ok(["trust", &addr, &new]);
    add(&cl, "shared", &["--token", &token]);
    cl.a().assert_in_sync("shared", SYNC_TIMEOUT);
    assert_eq!(account_of(cl.a(), "shared").0, "work");
}

#[test]
fn a_token_is_taken_from_standard_input_or_from_filesync_token() {
    let cl = Cluster::without_folders(2, None);
    let data = cl.server().data_dir().to_owned();
    let alice = cl.server().server_invite("alice", None);
    let bob = cl.server().server_invite("bob", None);

    let mut args = cl.add_args(0, "docs");
    args.extend(["--token".into(), "-".into()]);
    let out = cl
        .a()
        .ctl_with_input(args, format!("{alice}\n").as_bytes(), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cl
        .b()
        .ctl_with_input(cl.add_args(1, "docs"), b"", &[("FILESYNC_TOKEN", &bob)]);
    assert!(out.status.success(), "{}", describe(&out));

    files::write(&cl.path_on(0, "docs", "a.txt"), b"alice\n");
    files::write(&cl.path_on(1, "docs", "b.txt"), b"bob\n");
    cl.a().assert_in_sync("docs", SYNC_TIMEOUT);
    cl.b().assert_in_sync("docs", SYNC_TIMEOUT);
    files::assert_file(&data.join("alice/docs/a.txt"), b"alice\n");
    files::assert_file(&data.join("bob/docs/b.txt"), b"bob\n");
    assert_eq!(account_of(cl.a(), "docs").0, "alice");
    assert_eq!(account_of(cl.b(), "docs").0, "bob");

    // An empty standard input is no token.
    cl.folder_dir(0, "notes");
    let mut args = cl.add_args(0, "notes");
    args.extend(["--token".into(), "-".into()]);
    let out = cl.a().ctl_with_input(args, b"", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input held no token"));
}

#[test]
fn an_install_of_the_old_layout_keeps_syncing_as_its_account() {
    let cl = Cluster::without_folders(1, None);
    let data = cl.server().data_dir().to_owned();
    add(
        &cl,
        "private",
        &["--token", &cl.server().server_invite("home", None)],
    );
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);

    // What an older filesyncd left: no `account` key, and the credential in the one
    // `servers` row of the address.
    cl.a().stop();
    let config = fs::read_to_string(cl.a().config_path()).unwrap();
    let old_config = config.replace("account = \"home\"\n", "");
    assert_ne!(old_config, config);
    fs::write(cl.a().config_path(), &old_config).unwrap();
    let db = rusqlite::Connection::open(cl.a().state_dir().join("servers.db")).unwrap();
    db.execute_batch(
        "UPDATE servers SET (account, device, secret) =
             (SELECT account, device, secret FROM credentials c WHERE c.server = servers.server);
         DROP TABLE credentials;",
    )
    .unwrap();
    drop(db);
    cl.a().start();

    files::write(&cl.path_on(0, "private", "upgraded.txt"), b"still home\n");
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    files::assert_file(&data.join("home/private/upgraded.txt"), b"still home\n");
    assert_eq!(account_of(cl.a(), "private").0, "home");
    let config = fs::read_to_string(cl.a().config_path()).unwrap();
    assert!(
        config.contains("account = \"home\""),
        "not recorded: {config}"
    );

    // From here on it is bound: another account's token changes nothing for it.
    add(
        &cl,
        "shared",
        &["--token", &cl.server().server_invite("work", None)],
    );
    cl.a().stop();
    cl.a().start();
    files::write(&cl.path_on(0, "private", "later.txt"), b"home again\n");
    cl.a().assert_in_sync("private", SYNC_TIMEOUT);
    files::assert_file(&data.join("home/private/later.txt"), b"home again\n");
    files::assert_absent(&data.join("work/private"));
}

#[test]
fn a_folder_of_an_old_config_that_enrolled_by_itself_keeps_its_account_after_a_token() {
    let cl = Cluster::without_folders(1, Some("open"));
    let data = cl.server().data_dir().to_owned();
    // A folder written by hand, without `account`, on a device holding no credential
    // yet: its session enrols by open registration.
    cl.a().stop();
    let docs = cl.folder_dir(0, "docs");
    files::write(&docs.join("mine.txt"), b"open account\n");
    let mut config = fs::read_to_string(cl.a().config_path()).unwrap();
    config.push_str(&format!(
        "\n[[folder]]\npath = {:?}\nserver = \"{}\"\nname = \"docs\"\n",
        docs.display().to_string(),
        cl.server().server_addr()
    ));
    fs::write(cl.a().config_path(), config).unwrap();
    cl.a().start();
    cl.a().assert_in_sync("docs", SYNC_TIMEOUT);
    files::assert_file(&data.join("open/docs/mine.txt"), b"open account\n");

    // A token of another account, for another folder: the first folder is bound to the
    // account it has synced as before the token adds a second credential.
    add(
        &cl,
        "shared",
        &["--token", &cl.server().server_invite("work", None)],
    );
    assert_eq!(account_of(cl.a(), "docs").0, "open");
    assert_eq!(account_of(cl.a(), "shared").0, "work");
    cl.a().stop();
    cl.a().start();
    files::write(&docs.join("later.txt"), b"still open\n");
    cl.a().assert_in_sync("docs", SYNC_TIMEOUT);
    files::assert_file(&data.join("open/docs/later.txt"), b"still open\n");
    files::assert_absent(&data.join("work/docs"));
    let config = fs::read_to_string(cl.a().config_path()).unwrap();
    assert!(config.contains("account = \"open\""), "{config}");
}
