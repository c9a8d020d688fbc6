//! The web page (issue 20), against real daemons on loopback: in a real headless
//! chromium driven over WebDriver ([`Browser`]) — log in through the URL of
//! `filesyncctl web`, see a folder go from syncing to idle as files arrive, an event
//! appear live, settle a conflict with a button, restore a version, revoke a device on
//! the server's page — and with plain HTTP requests for its security rules: no data
//! without the session cookie, no action from another origin, a login URL that works
//! once, and to the daemon's user only. A PNG of each page is saved in the test's
//! directory (kept with `FILESYNC_KEEP_TEST_DIRS=1`).

use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use filesync_tests::browser::Browser;
use filesync_tests::cluster::DOCS;
use filesync_tests::exec::free_port;
use filesync_tests::http::{self, Reply};
use filesync_tests::proxy::FaultProxy;
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, files, poll_until};
use serde_json::json;

/// How long the page may take to show a change the daemon already knows.
const SHOWN: Duration = Duration::from_secs(30);

/// Restarts `node` with its web page on a free loopback port; returns `HOST:PORT`.
fn serve_web(node: &Node) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    restart_with_web_listen(node, &addr);
    addr
}

/// Restarts `node` with `web_listen = "ADDR"` in place of the fixture's `""`.
fn restart_with_web_listen(node: &Node, addr: &str) {
    node.stop();
    let config = fs::read_to_string(node.config_path()).unwrap();
    let line = format!("web_listen = \"{addr}\"");
    assert!(config.contains("web_listen = \"\""), "{config}");
    let config = config.replacen("web_listen = \"\"", &line, 1);
    fs::write(node.config_path(), config).unwrap();
    node.start();
}

/// `filesyncctl web`: the login URL it prints, checked to point at `addr`.
fn login_url(node: &Node, addr: &str) -> String {
    let url = node.ctl_ok(["web"]).trim().to_owned();
    assert!(
        url.starts_with(&format!("http://{addr}/login?token=")),
        "{url}"
    );
    url
}

/// Opens the login URL in `browser` and waits for the page proper; checks the cookie.
fn log_in(browser: &Browser, node: &Node, addr: &str) {
    browser.goto(&login_url(node, addr));
    browser.wait_for(
        "the page after logging in",
        SHOWN,
        "return document.getElementById('folders') !== null",
        json!([]),
    );
    let cookie = browser
        .cookie("filesync_session")
        .expect("no session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
}

/// Turns on `node`'s web page, starts a browser (profile and screenshots in the test's
/// `web/`) and logs it in; `None` when the test skips for want of a browser.
fn open_page(cl: &Cluster, node: &Node) -> Option<Browser> {
    let addr = serve_web(node);
    cl.settle(DOCS);
    let browser = Browser::start_or_skip(&cl.root().join("web/profile"))?;
    cl.expect_entry("web");
    log_in(&browser, node, &addr);
    Some(browser)
}

/// The state the page shows for `folder` (its `data-state`), or null.
const FOLDER_STATE: &str = "const f = document.querySelector(`[data-folder=\"${arguments[0]}\"]`);
     return f ? f.dataset.state : null";

/// A server and two devices syncing `docs`: A directly, B (whose page the test opens)
/// through a proxy that can throttle it.
fn b_behind_proxy() -> (Cluster, FaultProxy) {
    let cl = Cluster::without_folders(2, Some("open"));
    let server: SocketAddr = cl.server().server_addr().parse().unwrap();
    let proxy = FaultProxy::start(server);
    let mut args = cl.add_args(1, DOCS);
    let at = args.iter().position(|a| a == "--server").unwrap() + 1;
    args[at] = OsString::from(proxy.addr().to_string());
    cl.add_folder(0, DOCS);
    cl.client(1).ctl_ok(args);
    (cl, proxy)
}

/// A device's page: log in, watch files arrive (syncing, then idle), an event live, a
/// conflict settled with "Keep mine", a version restored.
#[test]
fn a_device_page_in_a_browser() {
    let (cl, proxy) = b_behind_proxy();
    let b = cl.b();
    let Some(browser) = open_page(&cl, b) else {
        return;
    };
    browser.wait_for(
        "docs idle",
        SHOWN,
        &format!("{FOLDER_STATE} === 'idle'"),
        json!([DOCS]),
    );

    // Files arrive slowly: the page shows the folder syncing, with a progress bar, and
    // then up to date. The page records every state it shows.
    browser
        .eval(
            "window.seen = new Set();
             new MutationObserver(() => {
               const f = document.querySelector('[data-folder=\"docs\"]');
               if (f) window.seen.add(f.dataset.state + (f.querySelector('progress') ? '+bar' : ''));
             }).observe(document.getElementById('folders'), {childList: true, subtree: true});",
            json!([]),
        )
        .unwrap();
    proxy.set_rate(96 * 1024);
    for i in 0..6 {
        let content = files::pseudo_random(i, 128 * 1024);
        files::write(&cl.path_on(0, DOCS, &format!("arrive/{i}.bin")), content);
    }
    browser.wait_for(
        "docs syncing with a progress bar",
        SYNC_TIMEOUT,
        "return [...window.seen].includes('syncing+bar')",
        json!([]),
    );
    browser.wait_for(
        "docs idle again",
        SYNC_TIMEOUT,
        &format!("{FOLDER_STATE} === 'idle'"),
        json!([DOCS]),
    );
    proxy.set_rate(0);
    cl.settle(DOCS);

    // An event appears as it happens.
    files::write(
        &cl.path_on(1, DOCS, "live.txt"),
        b"written while the page is open\n",
    );
    browser.wait_for(
        "the upload of live.txt in the events",
        SHOWN,
        "return [...document.querySelectorAll('#events li')]
             .some(li => li.textContent.includes('uploaded') && li.textContent.includes('live.txt'))",
        json!([]),
    );

    // A conflict, made while B is paused from the page, settled with "Keep mine".
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"the original\n");
    cl.settle(DOCS);
    browser.click("button", "Pause docs");
    browser.wait_for(
        "docs paused",
        SHOWN,
        &format!("{FOLDER_STATE} === 'paused'"),
        json!([DOCS]),
    );
    files::write(&cl.path_on(0, DOCS, "notes.txt"), b"A wins the race\n");
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    let mine = b"B's version, to be kept\n";
    files::write(&cl.path_on(1, DOCS, "notes.txt"), mine);
    browser.click("button", "Resume docs");
    browser.wait_for(
        "the conflict of notes.txt listed",
        SYNC_TIMEOUT,
        "return document.querySelector('[data-conflict=\"notes.txt\"]') !== null",
        json!([]),
    );
    // The notice of the resume would hide part of the picture (docs/web-page.png).
    browser
        .eval(
            "document.getElementById('toast').classList.remove('show')",
            json!([]),
        )
        .unwrap();
    browser.screenshot(&cl.root().join("web/device-conflict.png"));
    browser.click("[data-conflict=\"notes.txt\"] button", "Keep mine");
    browser.wait_for(
        "no conflict left on the page",
        SYNC_TIMEOUT,
        "return document.querySelector('[data-conflict]') === null",
        json!([]),
    );
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", mine);
    assert!(b.conflicts(DOCS).is_empty());

    // The first version of notes.txt, restored from the page.
    let original = b
        .versions(DOCS, "notes.txt")
        .into_iter()
        .find(|v| v.size == b"the original\n".len() as u64)
        .expect("the server keeps the first version of notes.txt");
    browser.type_into("#versions-path", "notes.txt");
    browser.click("#versions-form button", "Show versions");
    let row = format!("[data-version=\"{}\"] button", original.version);
    browser.click(&row, "Restore");
    poll_until(SYNC_TIMEOUT, || {
        let now = fs::read(cl.path_on(0, DOCS, "notes.txt")).map_err(|e| e.to_string())?;
        (now == b"the original\n")
            .then_some(())
            .ok_or_else(|| format!("notes.txt on A holds {:?}", String::from_utf8_lossy(&now)))
    })
    .unwrap();
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", b"the original\n");
    browser.screenshot(&cl.root().join("web/device.png"));
    // On a phone's width nothing is wider than the window: tables scroll in their box.
    browser.resize(390, 844);
    let overflow = browser
        .eval(
            "return document.documentElement.scrollWidth - window.innerWidth",
            json!([]),
        )
        .unwrap();
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "wider than a phone by {overflow} px"
    );
    browser.screenshot(&cl.root().join("web/device-phone.png"));
    cl.check_oracle(DOCS, &[0, 1]);
}

/// A mass delete held back by the guard is shown with why, and sent from the page once
/// the user confirms it there.
#[test]
fn held_deletes_are_sent_from_the_page() {
    let cl = Cluster::new(2);
    for k in 0..120 {
        files::write(
            &cl.path_on(0, DOCS, &format!("f{k:03}.txt")),
            format!("file {k}\n"),
        );
    }
    cl.settle(DOCS);
    let a = cl.a();
    let Some(browser) = open_page(&cl, a) else {
        return;
    };
    for k in 0..110 {
        fs::remove_file(cl.path_on(0, DOCS, &format!("f{k:03}.txt"))).unwrap();
    }
    // The deletes come in more than one scan, and between them status may say `idle`
    // for a moment: wait until `held` lasts, then for the page to show it.
    let mut held_for = 0;
    poll_until(SYNC_TIMEOUT, || {
        let state = a.folder_status(DOCS)["state"].clone();
        held_for = if state == "held" { held_for + 1 } else { 0 };
        (held_for >= 40)
            .then_some(())
            .ok_or(format!("state {state}"))
    })
    .unwrap();
    browser.wait_for(
        "docs held",
        SHOWN,
        &format!("{FOLDER_STATE} === 'held'"),
        json!([DOCS]),
    );
    browser.screenshot(&cl.root().join("web/device-held.png"));
    assert!(
        cl.path_on(1, DOCS, "f000.txt").exists(),
        "a held delete reached B"
    );
    browser.click("[data-folder=\"docs\"] button", "Send the deletes of docs");
    browser.click("[data-folder=\"docs\"] button", "Really delete them");
    browser.wait_for(
        "docs idle",
        SYNC_TIMEOUT,
        &format!("{FOLDER_STATE} === 'idle'"),
        json!([DOCS]),
    );
    let tree = cl.settle(DOCS);
    assert_eq!(tree.len(), 10, "{tree:?}");
}

/// The server's page lists the accounts and their devices; "Revoke" refuses one.
#[test]
fn the_server_page_revokes_a_device() {
    let cl = Cluster::new(2);
    cl.settle(DOCS);
    let server = cl.server();
    let Some(browser) = open_page(&cl, server) else {
        return;
    };
    let b_device = cl.b().device();
    let row = format!("[data-device=\"{b_device}\"]");
    browser.wait_for(
        "b's device on the server page",
        SHOWN,
        "return document.querySelector(arguments[0]) !== null",
        json!([row]),
    );

    // An invite made from the page, then cancelled there.
    browser.type_into("#invite-account", "carol");
    browser.click("#invite-form button", "Create an invite");
    browser.wait_for(
        "the new invite token",
        SHOWN,
        "return document.querySelector('#new-invite code') !== null",
        json!([]),
    );
    browser.click("#invites button", "Cancel invite");
    browser.wait_for(
        "no pending invite",
        SHOWN,
        "return document.querySelector('#invites button') === null",
        json!([]),
    );
    assert!(server.ctl_ok(["server", "invites", "--json"]).trim() == "[]");

    browser.screenshot(&cl.root().join("web/server.png"));
    let button = format!("{row} button");
    browser.click(&button, "Revoke");
    browser.click(&button, "Really revoke");
    browser.wait_for(
        "b shown revoked",
        SHOWN,
        "const r = document.querySelector(arguments[0]); return r && r.textContent.includes('revoked')",
        json!([row]),
    );
    let revoked = server
        .server_devices()
        .into_iter()
        .find(|d| d["device"] == b_device.as_str())
        .expect("b is listed");
    assert_eq!(revoked["revoked"], true, "{revoked}");
}

fn get(addr: &str, path: &str, cookie: Option<&str>) -> Reply {
    let cookie = cookie.map(|c| format!("filesync_session={c}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
    http::request(addr, "GET", path, &headers, b"").unwrap()
}

/// Without the cookie every data URL answers 401 and the page only says how to get in;
/// the login URL works once; an action from another origin is refused.
#[test]
fn the_page_needs_its_session_and_its_own_origin() {
    let cl = Cluster::new(1);
    let a = cl.a();
    let addr = serve_web(a);
    cl.settle(DOCS);

    let data = [
        "/api/status",
        "/api/conflicts",
        "/api/versions?folder=docs&path=x",
        "/api/server",
        "/api/live",
    ];
    for path in data {
        assert_eq!(get(&addr, path, None).status, 401, "{path}");
        assert_eq!(get(&addr, path, Some("forged")).status, 401, "{path}");
    }
    let pause = br#"{"do":"pause","folder":"docs"}"#;
    let json = ("Content-Type", "application/json");
    let unauth = http::request(&addr, "POST", "/api/action", &[json], pause).unwrap();
    assert_eq!(unauth.status, 401);
    let page = get(&addr, "/", None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("filesyncctl web"), "{}", page.text());
    assert!(!page.text().contains("app.js"), "{}", page.text());

    another_user_gets_no_login_url(a);
    open_runs_the_desktop_opener(&cl, a);
    let url = login_url(a, &addr);
    let path = url.split_once(addr.as_str()).unwrap().1;
    let first = get(&addr, path, None);
    assert_eq!(first.status, 303, "{first:?}");
    let cookie = first.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie
        .strip_prefix("filesync_session=")
        .and_then(|c| c.split(';').next())
        .unwrap();
    assert_eq!(get(&addr, path, None).status, 403, "a login URL works once");
    let status = get(&addr, "/api/status", Some(session));
    assert_eq!(status.status, 200);
    assert!(status.text().contains("\"docs\""), "{}", status.text());

    let with = format!("filesync_session={session}");
    let cookie = ("Cookie", with.as_str());
    let origin = format!("http://{addr}");
    let refused: [&[(&str, &str)]; 4] = [
        &[cookie, json, ("Origin", "http://evil.example")],
        &[
            cookie,
            json,
            ("Sec-Fetch-Site", "cross-site"),
            ("Origin", &origin),
        ],
        &[cookie, json, ("Origin", "null")],
        &[cookie, json],
    ];
    for headers in refused {
        let reply = http::request(&addr, "POST", "/api/action", headers, pause).unwrap();
        assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
    }
    assert_eq!(a.folder_status(DOCS)["state"], "idle");
    let same = [cookie, json, ("Origin", origin.as_str())];
    let reply = http::request(&addr, "POST", "/api/action", &same, pause).unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(a.folder_status(DOCS)["state"], "paused");
}

/// `filesyncctl web` run by another user (nobody, when the tests run as root) gets no
/// URL: the control socket that makes them is the daemon's user's alone.
fn another_user_gets_no_login_url(node: &Node) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("another user's `filesyncctl web` not tried: the tests do not run as root");
        return;
    }
    let socket = node.config_path().with_file_name("ctl.sock");
    let out = filesync_tests::exec::run_with_timeout(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(filesync_tests::exec::bin("filesyncctl"))
            .arg("--socket")
            .arg(&socket)
            .arg("web"),
        SHOWN,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("token=") && stderr.contains("Permission denied"),
        "another user's filesyncctl web: {stdout}{stderr}"
    );
}

/// `filesyncctl web --open` hands the URL it prints to `xdg-open`; without one it says
/// so and succeeds.
fn open_runs_the_desktop_opener(cl: &Cluster, node: &Node) {
    use std::os::unix::fs::PermissionsExt;

    let bin = cl.root().join("opener");
    cl.expect_entry("opener");
    let opened = bin.join("opened");
    let script = format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display());
    files::write(&bin.join("xdg-open"), script);
    fs::set_permissions(bin.join("xdg-open"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = bin.to_str().unwrap();
    let out = node.ctl_with_input(["web", "--open"], b"", &[("PATH", path)]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(printed.contains("/login?token="), "{printed}");
    assert_eq!(fs::read_to_string(&opened).unwrap(), printed);

    let out = node.ctl_with_input(["web", "--open"], b"", &[("PATH", "/nonexistent")]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no xdg-open"),
        "{out:?}"
    );
}

/// A port already taken is shown in status and the daemon runs on; `web_listen = ""`
/// turns the page off and `filesyncctl web` says so.
#[test]
fn a_taken_port_is_shown_and_an_empty_address_turns_the_page_off() {
    let cl = Cluster::new(1);
    let a = cl.a();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    restart_with_web_listen(a, &taken);
    let status = a.status_json();
    let error = status["web"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("cannot listen on {taken}")),
        "{status}"
    );
    assert!(error.contains("daemon.web_listen"), "{error}");
    files::write(&cl.path_on(0, DOCS, "still.txt"), b"syncs\n");
    cl.settle(DOCS);

    let b_status = cl.server().status_json();
    assert!(b_status["web"].is_null(), "{b_status}");
    let out = cl.server().ctl(["web"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("serves no web page"), "{stderr}");
    drop(holder);
}

/// On an address other than loopback the page is served over HTTPS only, with the
/// daemon's own certificate, and the login URL says `https`.
#[test]
fn off_loopback_the_page_is_served_over_https() {
    use std::io::{Read, Write};

    let cl = Cluster::new(1);
    let a = cl.a();
    let port = free_port();
    restart_with_web_listen(a, &format!("0.0.0.0:{port}"));
    let url = a.ctl_ok(["web"]);
    assert!(url.starts_with("https://"), "{url}");
    assert!(url.contains(&format!(":{port}/login?token=")), "{url}");
    let local = format!("127.0.0.1:{port}");
    assert!(
        http::request(&local, "GET", "/", &[], b"").is_err_and(|e| !e.contains("connect")),
        "plain HTTP was answered"
    );

    // A client that connects and says nothing holds up no other's handshake.
    let _silent = std::net::TcpStream::connect(&local).unwrap();
    let started = std::time::Instant::now();
    let (tls, _) = filesyncd::conn::tls::client_config(None).unwrap();
    let conn = rustls::ClientConnection::new(tls, filesyncd::conn::tls::server_name()).unwrap();
    let tcp = std::net::TcpStream::connect(&local).unwrap();
    tcp.set_read_timeout(Some(SHOWN)).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET /api/status HTTP/1.1\r\nHost: {local}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the request waited {:?} behind a silent connection",
        started.elapsed()
    );
    let log = a.log_text();
    assert!(log.contains("over HTTPS because 0.0.0.0"), "{log}");
}
