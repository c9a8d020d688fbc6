//! The figures nothing else in the daemon holds, counted where they happen: full scans'
//! durations and reconnects of a device's folders, commits and push-to-fan-out latency
//! of the server role. Everything else `/metrics` shows is read from the status at
//! scrape time ([`super::snapshot`]).
//!
//! The families are process-wide, like the log: the places that count them (a folder
//! task, a session, the server's push pipeline) are far apart and short-lived, and a
//! count is one atomic add whether or not anything serves `/metrics`. This file imports
//! nothing from the crate, so any module may count here without an import cycle.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A device's folder: its name and the server it syncs with (one name may be synced
/// with two servers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FolderLabels {
    pub folder: String,
    pub server: String,
}

/// A folder on the server role: its account and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerFolderLabels {
    pub account: String,
    pub folder: String,
}

/// A label value as the text format wants it: prometheus-client writes label values as
/// they are, and a device's name may hold a quote or a backslash.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Recorded {
    scan_seconds: Histograms<FolderLabels>,
    reconnects: Family<FolderLabels, Counter>,
    commits: Family<ServerFolderLabels, Counter>,
    committed_changes: Family<ServerFolderLabels, Counter>,
    fan_out_seconds: Histogram,
}

/// Full scans take from milliseconds (a few files) to an hour (millions on a slow
/// disk).
const SCAN_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A push is answered in milliseconds when small, in minutes when it carries large
/// files.
const FAN_OUT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn scan_buckets() -> Histogram {
    Histogram::new(SCAN_BUCKETS)
}

static RECORDED: LazyLock<Recorded> = LazyLock::new(|| Recorded {
    scan_seconds: Family::new_with_constructor(scan_buckets),
    reconnects: Family::default(),
    commits: Family::default(),
    committed_changes: Family::default(),
    fan_out_seconds: Histogram::new(FAN_OUT_BUCKETS),
});

fn folder(folder: &str, server: &str) -> FolderLabels {
    FolderLabels {
        folder: escape(folder),
        server: escape(server),
    }
}

/// A device's full scan of `folder` took `took`.
pub fn scan_finished(name: &str, server: &str, took: Duration) {
    (RECORDED.scan_seconds.get_or_create(&folder(name, server))).observe(took.as_secs_f64());
}

/// A device's connection for `folder` ended or could not be opened; another attempt
/// follows.
pub fn reconnecting(name: &str, server: &str) {
    RECORDED
        .reconnects
        .get_or_create(&folder(name, server))
        .inc();
}

/// The server's sequencer committed one group of pushed changes, `accepted` of them
/// accepted, and woke the sessions that fan them out.
pub fn committed(account: &str, name: &str, accepted: u64) {
    let labels = ServerFolderLabels {
        account: escape(account),
        folder: escape(name),
    };
    RECORDED.commits.get_or_create(&labels).inc();
    RECORDED
        .committed_changes
        .get_or_create(&labels)
        .inc_by(accepted);
}

/// A push was answered `took` after it arrived: staged, durable, committed and
/// announced to every session of the folder.
pub fn pushed(took: Duration) {
    RECORDED.fan_out_seconds.observe(took.as_secs_f64());
}

/// Adds the recorded families to a scrape's registry: the device role's always, the
/// server role's only on a daemon that has it.
pub(super) fn register(registry: &mut Registry, server_role: bool) {
    let r = &*RECORDED;
    registry.register_with_unit(
        "filesync_folder_scan_duration",
        "Duration of a device's full scans of the folder",
        Unit::Seconds,
        r.scan_seconds.clone(),
    );
    registry.register(
        "filesync_connection_reconnects",
        "Times the folder's connection to its server ended or failed to open and was tried again",
        r.reconnects.clone(),
    );
    if !server_role {
        return;
    }
    registry.register(
        "filesync_server_commits",
        "Groups of pushed changes the server committed (one index transaction each)",
        r.commits.clone(),
    );
    registry.register(
        "filesync_server_committed_changes",
        "Pushed changes the server accepted and committed",
        r.committed_changes.clone(),
    );
    registry.register_with_unit(
        "filesync_server_push_fan_out",
        "Time from a push's arrival on the server to its answer, once its changes are durable, committed and announced to the folder's other sessions",
        Unit::Seconds,
        r.fan_out_seconds.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let check = |raw: &str, want: &str| assert_eq!(escape(raw), want, "{raw:?}");
        check("docs", "docs");
        check(r#"Bob's "laptop""#, r#"Bob's \"laptop\""#);
        check(r"C:\Users", r"C:\\Users");
        check("two\nlines", r"two\nlines");
    }

    fn scrape(server_role: bool) -> String {
        let mut registry = Registry::default();
        register(&mut registry, server_role);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn what_is_counted_shows_in_a_scrape() {
        scan_finished("recorded-test", "h:1", Duration::from_millis(70));
        reconnecting("recorded-test", "h:1");
        reconnecting("recorded-test", "h:1");
        committed("alice", "recorded-test", 3);
        pushed(Duration::from_millis(20));
        let l = r#"folder="recorded-test",server="h:1""#;
        let device = scrape(false);
        for line in [
            format!("filesync_folder_scan_duration_seconds_count{{{l}}} 1"),
            format!(r#"filesync_folder_scan_duration_seconds_bucket{{le="0.1",{l}}} 1"#),
            format!(r#"filesync_folder_scan_duration_seconds_bucket{{le="0.05",{l}}} 0"#),
            format!("filesync_connection_reconnects_total{{{l}}} 2"),
        ] {
            assert!(
                device.lines().any(|x| x == line),
                "no {line:?} in\n{device}"
            );
        }
        assert!(!device.contains("filesync_server_"), "{device}");
        let server = scrape(true);
        let l = r#"account="alice",folder="recorded-test""#;
        for line in [
            format!("filesync_server_commits_total{{{l}}} 1"),
            format!("filesync_server_committed_changes_total{{{l}}} 3"),
        ] {
            assert!(
                server.lines().any(|x| x == line),
                "no {line:?} in\n{server}"
            );
        }
        assert!(
            server.contains("filesync_server_push_fan_out_seconds_count "),
            "{server}"
        );
    }
}
