//! `/metrics` (issue 20): a real server and two devices sync a few files, then each is
//! scraped over loopback TCP and the exposition is parsed strictly and checked against
//! what was written. Off by default; a port already taken is shown in status, and
//! sync goes on without it.
//!
//! prometheus-client writes the OpenMetrics text format but has no parser, so the
//! scrape is read by [`parse`] below, which refuses any line the format does not allow.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::free_port;
use filesync_tests::{Cluster, Node, files, poll_until};

/// How long a scrape may take, and how long the figures may take to settle after
/// `wait` says the folder is in sync.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The suffixes a sample of a family of `kind` may add to the family's name.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        "stateset" | "gauge" | "unknown" => &[""],
        _ => &[],
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `key="value",…` up to the closing brace, with the format's three escapes; the rest of
/// the line after the brace.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if !is_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling backslash")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("unknown escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by a comma".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// A strict reader of the OpenMetrics text format as far as a scrape here uses it:
/// `# HELP`/`# TYPE`/`# UNIT` before a family's samples, each family once, every sample
/// inside the family declared last and named by its type's rules, no sample twice, no
/// timestamp or exemplar, and `# EOF` as the last line.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with \"# EOF\\n\"")?;
    let mut samples: Vec<Sample> = Vec::new();
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for (n, line) in body.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (word, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(word), Some(name)) = (word, name) else {
                return Err(at("a comment that is no HELP, TYPE or UNIT".into()));
            };
            if !is_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match (word, rest) {
                ("TYPE", Some(kind)) => {
                    if suffixes(kind).is_empty() {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if families.insert(name.into(), kind.into()).is_some() {
                        return Err(at(format!("family {name} declared twice")));
                    }
                    current = Some((name.into(), kind.into()));
                }
                ("HELP", Some(_)) | ("UNIT", Some(_)) => {
                    if word == "UNIT" && current.as_ref().is_none_or(|(f, _)| f != name) {
                        return Err(at("UNIT before its family's TYPE".into()));
                    }
                }
                _ => return Err(at("a comment that is no HELP, TYPE or UNIT".into())),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(rest) => parse_labels(rest).map_err(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        if value.contains(' ') {
            return Err(at("a timestamp or exemplar, or stray text".into()));
        }
        let value = parse_value(value).map_err(at)?;
        let Some((family, kind)) = &current else {
            return Err(at("a sample before any TYPE".into()));
        };
        let suffix = name.strip_prefix(family.as_str());
        if !suffix.is_some_and(|s| suffixes(kind).contains(&s)) {
            return Err(at(format!("not a sample of the {kind} family {family}")));
        }
        let sample = Sample {
            name: name.into(),
            labels,
            value,
        };
        if samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("the same sample twice".into()));
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// `GET /metrics` over a plain TCP connection; the body, after checking the status line
/// and the media type.
fn scrape(addr: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("not 200: {response}"));
    }
    let media = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if !media.starts_with("application/openmetrics-text") {
        return Err(format!("media type {media:?}"));
    }
    Ok(body.to_owned())
}

/// Restarts `node` with `[daemon] metrics_listen = "ADDR"`.
fn listen_for_metrics(node: &Node, addr: &str) {
    node.stop();
    let config = fs::read_to_string(node.config_path()).unwrap();
    let line = format!("[daemon]\nmetrics_listen = \"{addr}\"\n");
    fs::write(node.config_path(), config.replacen("[daemon]\n", &line, 1)).unwrap();
    node.start();
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.value),
        _ => Err(format!("{} samples {name}{labels:?}", found.len())),
    }
}

/// A sample's name, the labels it must have, and what its value must pass.
type Check<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a dyn Fn(f64) -> bool);

/// Checks each `(name, labels, test)`, saying which failed and with what value.
fn expect(samples: &[Sample], checks: &[Check]) -> Result<(), String> {
    for (name, labels, ok) in checks {
        let v = value(samples, name, labels)?;
        if !ok(v) {
            return Err(format!("{name}{labels:?} is {v}"));
        }
    }
    Ok(())
}

/// TCP sockets in LISTEN state that process `pid` holds (from /proc).
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            cols.get(3) == Some(&"0A") && cols.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
        })
        .count()
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    let good = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\\\"\"} 1\n# EOF\n";
    assert_eq!(parse(good).unwrap()[0].labels["k"], "v\"");
    for bad in [
        "# TYPE a gauge\na 1\n",
        "# TYPE a gauge\na 1\n# EOF\nb 2\n",
        "a 1\n# EOF\n",
        "# TYPE a gauge\nb 1\n# EOF\n",
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a gauge\na{k=\"v} 1\n# EOF\n",
        "# TYPE a gauge\na{k=v} 1\n# EOF\n",
        "# TYPE a gauge\na{k=\"v\"} one\n# EOF\n",
        "# TYPE a gauge\na 1 1700000000\n# EOF\n",
        "# TYPE a gauge\na 1\na 2\n# EOF\n",
        "# TYPE a gauge\n# TYPE a gauge\n# EOF\n",
        "# TYPE a colour\n# EOF\n",
        "# a comment\n# EOF\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// After a sync of three files from `a` to `b`, each device's scrape holds the folder's
/// figures (files and bytes as written, nothing pending, idle, bytes sent on `a` and
/// received on `b`) and the server's holds two connected devices, commits, the fan-out
/// latency and the account's bytes.
#[test]
fn a_scrape_holds_the_figures_after_a_sync() {
    let cl = Cluster::without_folders(2, Some("open"));
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let nodes = [cl.a(), cl.b(), cl.server()];
    for (node, addr) in nodes.iter().zip(&addrs) {
        listen_for_metrics(node, addr);
    }
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    let sizes = [5_000usize, 70_000, 300_000];
    for (i, size) in sizes.iter().enumerate() {
        let path = cl.path_on(0, DOCS, &format!("f{i}.bin"));
        files::write(&path, files::pseudo_random(i as u64, *size));
    }
    let total: usize = sizes.iter().sum();
    cl.settle(DOCS);

    let folder = [("folder", DOCS)];
    let is = |want: f64| move |v: f64| v == want;
    let positive = |v: f64| v > 0.0;
    for (node, addr, moved) in [
        (
            cl.a(),
            &addrs[0],
            "filesync_folder_content_sent_bytes_total",
        ),
        (
            cl.b(),
            &addrs[1],
            "filesync_folder_content_received_bytes_total",
        ),
    ] {
        let up = [("folder", DOCS), ("direction", "up")];
        let down = [("folder", DOCS), ("direction", "down")];
        let idle = [("folder", DOCS), ("state", "idle")];
        poll_until(SCRAPE_TIMEOUT, || {
            let samples = parse(&scrape(addr)?)?;
            expect(
                &samples,
                &[
                    ("filesync_folder_files", &folder, &is(3.0)),
                    ("filesync_folder_size_bytes", &folder, &is(total as f64)),
                    ("filesync_folder_pending_files", &up, &is(0.0)),
                    ("filesync_folder_pending_files", &down, &is(0.0)),
                    ("filesync_folder_pending_bytes", &up, &is(0.0)),
                    ("filesync_folder_pending_bytes", &down, &is(0.0)),
                    ("filesync_folder_state", &idle, &is(1.0)),
                    ("filesync_folder_in_sync", &folder, &is(1.0)),
                    ("filesync_folder_conflicts", &folder, &is(0.0)),
                    ("filesync_connection_connected", &folder, &is(1.0)),
                    (moved, &folder, &positive),
                    ("filesync_folder_wire_sent_bytes_total", &folder, &positive),
                    (
                        "filesync_folder_wire_received_bytes_total",
                        &folder,
                        &positive,
                    ),
                    (
                        "filesync_folder_last_sync_timestamp_seconds",
                        &folder,
                        &positive,
                    ),
                    (
                        "filesync_folder_scan_duration_seconds_count",
                        &folder,
                        &positive,
                    ),
                ],
            )
        })
        .unwrap_or_else(|e| panic!("{}: {e}", node.name()));
    }
    let samples = parse(&scrape(&addrs[0]).unwrap()).unwrap();
    assert!(
        !samples
            .iter()
            .any(|s| s.name.starts_with("filesync_server_")),
        "a device-only daemon shows server metrics"
    );

    let account = [("account", "open")];
    let server_folder = [("account", "open"), ("folder", DOCS)];
    poll_until(SCRAPE_TIMEOUT, || {
        let samples = parse(&scrape(&addrs[2])?)?;
        expect(
            &samples,
            &[
                ("filesync_server_connected_devices", &[], &is(2.0)),
                ("filesync_server_commits_total", &server_folder, &positive),
                (
                    "filesync_server_committed_changes_total",
                    &server_folder,
                    &|v| v >= 3.0,
                ),
                ("filesync_server_push_fan_out_seconds_count", &[], &positive),
                ("filesync_server_folder_files", &server_folder, &is(3.0)),
                (
                    "filesync_server_folder_size_bytes",
                    &server_folder,
                    &is(total as f64),
                ),
                ("filesync_server_account_used_bytes", &account, &|v| {
                    v >= total as f64
                }),
            ],
        )?;
        let seen = samples
            .iter()
            .filter(|s| s.name == "filesync_server_device_last_seen_timestamp_seconds")
            .count();
        if seen != 2 {
            return Err(format!("{seen} devices with a last-seen time"));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        listening_sockets(cl.a().pid().unwrap()),
        1,
        "a's /metrics socket"
    );
    let status = cl.a().status_json();
    assert_eq!(status["metrics"]["listen"], addrs[0].as_str());
    assert!(status["metrics"]["error"].is_null(), "{status}");
    cl.check_oracle(DOCS, &[0, 1]);
}

/// Without `metrics_listen` a device listens on no TCP port at all; with a port another
/// process holds, the daemon starts, says so in status, and syncs as usual.
#[test]
fn metrics_are_off_by_default_and_a_taken_port_does_not_stop_sync() {
    let cl = Cluster::without_folders(2, Some("open"));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    listen_for_metrics(cl.b(), &addr);
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    files::write(&cl.path_on(0, DOCS, "a.txt"), b"still syncs\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "a.txt", b"still syncs\n");

    assert_eq!(
        listening_sockets(cl.a().pid().unwrap()),
        0,
        "a listens on a port"
    );
    assert!(cl.a().status_json()["metrics"].is_null());

    let status = cl.b().status_json();
    let error = status["metrics"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("cannot listen on {addr}")),
        "{status}"
    );
    assert!(error.contains("daemon.metrics_listen"), "{error}");
    let human = cl.b().ctl_ok(["status"]);
    assert!(
        human.contains(&format!("warning: cannot listen on {addr}")),
        "{human}"
    );
    assert!(
        cl.b()
            .log_text()
            .contains(&format!("cannot listen on {addr} for /metrics"))
    );
    drop(taken);
}
