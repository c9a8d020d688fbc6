//! A real headless browser for the web page's tests: Debian's `chromium`, driven over
//! WebDriver through its `chromedriver` (package `chromium-driver`, which
//! `scripts/test-deps.sh` installs), with a few WebDriver HTTP calls of our own
//! ([`crate::http`]). Each [`Browser`] has its own chromedriver, port and fresh
//! profile directory, and starts no network traffic of its own (this machine's network
//! is closed). A test without the two programs says it skipped, except under
//! `FILESYNC_REQUIRE_TOOLS` (see [`crate::wine::REQUIRE_TOOLS_ENV`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::exec::free_port;
use crate::http;
use crate::poll_until;
use crate::wine::REQUIRE_TOOLS_ENV;

/// How long chromedriver may take to answer, and the browser to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where Debian puts the two programs.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless chromium with one WebDriver session; both end on drop.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless chromium whose profile is `profile` (made
    /// fresh); `None`, after saying so, when either program is missing, unless
    /// `FILESYNC_REQUIRE_TOOLS` is set: then the test fails.
    pub fn start_or_skip(profile: &Path) -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).is_file())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{} missing (apt-get install chromium chromium-driver; scripts/test-deps.sh does)",
                missing.join(" and ")
            );
            assert!(
                std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
                "{why}, and {REQUIRE_TOOLS_ENV} says the browser tests must run"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Browser::start(profile))
    }

    fn start(profile: &Path) -> Browser {
        std::fs::create_dir_all(profile).expect("cannot make the browser's profile dir");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let mut browser = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
        };
        poll_until(START_TIMEOUT, || {
            let status = browser.call("GET", "/status", None)?;
            match status["ready"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("chromedriver not ready: {status}")),
            }
        })
        .unwrap_or_else(|why| panic!("chromedriver did not start: {why}"));
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let session = browser
            .call("POST", "/session", Some(capabilities))
            .unwrap_or_else(|why| panic!("cannot start chromium: {why}"));
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        browser
    }

    /// One WebDriver call; its `value`, or the error it names.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = [("Content-Type", "application/json")];
        let reply = http::request(&self.addr, method, path, &headers, body.as_bytes())?;
        let mut answer: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("{method} {path}: not JSON ({e}): {}", reply.text()))?;
        let value = answer["value"].take();
        if reply.status != 200 {
            return Err(format!("{method} {path}: {}: {value}", reply.status));
        }
        Ok(value)
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    /// Loads `url` and waits until the page is loaded.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|why| panic!("cannot open {url}: {why}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn eval(&self, script: &str, args: Value) -> Result<Value, String> {
        let body = json!({ "script": script, "args": args });
        self.session_call("POST", "/execute/sync", Some(body))
    }

    /// Waits until `script` returns something other than `null`/`false`, and returns it.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Value) -> Value {
        poll_until(timeout, || match self.eval(script, args.clone())? {
            Value::Null | Value::Bool(false) => Err(format!("not yet: {what}")),
            value => Ok(value),
        })
        .unwrap_or_else(|why| panic!("{what}: {why}\npage text:\n{}", self.text()))
    }

    /// The page's visible text, for failure messages.
    pub fn text(&self) -> String {
        self.eval(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|e| format!("(cannot read the page: {e})"))
    }

    /// Clicks, as a user would, the first element that the CSS selector `css` finds
    /// whose text contains `label`; looks again when the page redraws it in between.
    pub fn click(&self, css: &str, label: &str) {
        poll_until(Duration::from_secs(30), || {
            let found = self.eval(
                "return [...document.querySelectorAll(arguments[0])]
                     .find(e => e.textContent.includes(arguments[1])) || null",
                json!([css, label]),
            )?;
            let id = element_id(&found).ok_or_else(|| format!("no such element yet: {found}"))?;
            self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})))
                .map(drop)
        })
        .unwrap_or_else(|why| {
            panic!(
                "cannot click {css} {label:?}: {why}\npage text:\n{}",
                self.text()
            )
        });
    }

    /// Types `text` into the element that `css` finds.
    pub fn type_into(&self, css: &str, text: &str) {
        let found = self
            .session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .unwrap_or_else(|why| panic!("no {css}: {why}"));
        let id = element_id(&found).unwrap_or_else(|| panic!("no element reference in {found}"));
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|why| panic!("cannot type into {css}: {why}"));
    }

    /// The cookie `name` as the browser holds it (`httpOnly`, `sameSite`, …).
    pub fn cookie(&self, name: &str) -> Result<Value, String> {
        self.session_call("GET", &format!("/cookie/{name}"), None)
    }

    /// Makes the window `width` × `height` CSS pixels (a phone: 390 × 844).
    pub fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.session_call("POST", "/window/rect", Some(rect))
            .unwrap_or_else(|why| panic!("cannot resize the window: {why}"));
    }

    /// Saves a PNG of the window at `path`, and returns the path.
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        // Two animation frames: what the page last drew has been painted.
        let painted = "const done = arguments[arguments.length - 1];
                       requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({ "script": painted, "args": [] })),
        )
        .unwrap_or_else(|why| panic!("the page does not paint: {why}"));
        let shot = self
            .session_call("GET", "/screenshot", None)
            .unwrap_or_else(|why| panic!("cannot take a screenshot: {why}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap_or_default())
            .expect("the screenshot is not base64");
        std::fs::write(path, png).expect("cannot save the screenshot");
        path.to_owned()
    }
}

/// The WebDriver reference of an element, as a script or a search returns it.
fn element_id(found: &Value) -> Option<String> {
    let id = found.as_object()?.values().next()?.as_str()?;
    Some(id.to_owned())
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
