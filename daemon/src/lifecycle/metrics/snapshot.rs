//! The figures the daemon already knows, read at scrape time: the status that
//! `filesyncctl status` shows (each folder's state, files, pending work, conflicts,
//! counters; the server role's folders, connected devices and account usage) and, on the
//! server role, when each device was last seen. A [`Snapshot`] is a prometheus-client
//! custom collector over one such reading.

use std::fmt;

use filesync_proto::control::{
    AccountInfo, DaemonStatus, FolderState, FolderStatus, ServerFolderStatus, ServerStatus,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType::{self, Counter, Gauge};
use prometheus_client::registry::Unit;

use super::recorded::escape;

/// Every state a folder can be in: `filesync_folder_state` has one series per state,
/// 1 for the folder's current one, so that a query needs no knowledge of the others.
const STATES: [FolderState; 7] = [
    FolderState::Scanning,
    FolderState::Syncing,
    FolderState::Idle,
    FolderState::Paused,
    FolderState::Offline,
    FolderState::Error,
    FolderState::Held,
];

/// A family: its name (the unit is appended), help text, unit and type.
type Family = (&'static str, &'static str, Option<Unit>, MetricType);

/// Where a status holds a figure.
type Read<T> = fn(&T) -> u64;

/// The figures every folder of a device has, one sample each, and where its status
/// holds them.
const PER_FOLDER: [(Family, Read<FolderStatus>); 13] = [
    (
        (
            "filesync_folder_in_sync",
            "1 when the folder is connected, scanned, idle and has nothing pending either way",
            None,
            Gauge,
        ),
        |f| u64::from(f.is_in_sync()),
    ),
    (
        (
            "filesync_folder_error",
            "1 while the folder shows an error (filesyncctl status says which)",
            None,
            Gauge,
        ),
        |f| u64::from(f.last_error.is_some()),
    ),
    (
        (
            "filesync_folder_files",
            "Files in the folder, as indexed",
            None,
            Gauge,
        ),
        |f| f.files,
    ),
    (
        (
            "filesync_folder_size",
            "Bytes of the folder's files, as indexed",
            Some(Unit::Bytes),
            Gauge,
        ),
        |f| f.bytes,
    ),
    (
        (
            "filesync_folder_conflicts",
            "Conflict copies in the folder waiting to be resolved",
            None,
            Gauge,
        ),
        |f| f.conflicts,
    ),
    (
        (
            "filesync_folder_unsyncable_paths",
            "Paths the folder cannot sync (filesyncctl status lists them with the reason)",
            None,
            Gauge,
        ),
        |f| f.unsyncable.len() as u64,
    ),
    (
        (
            "filesync_folder_content_sent",
            "File content sent to the server since the daemon started",
            Some(Unit::Bytes),
            Counter,
        ),
        |f| f.counters.content_bytes_sent,
    ),
    (
        (
            "filesync_folder_content_received",
            "File content received from the server since the daemon started",
            Some(Unit::Bytes),
            Counter,
        ),
        |f| f.counters.content_bytes_received,
    ),
    (
        (
            "filesync_folder_wire_sent",
            "Bytes written to the server connection, framing included",
            Some(Unit::Bytes),
            Counter,
        ),
        |f| f.counters.wire_bytes_sent,
    ),
    (
        (
            "filesync_folder_wire_received",
            "Bytes read from the server connection, framing included",
            Some(Unit::Bytes),
            Counter,
        ),
        |f| f.counters.wire_bytes_received,
    ),
    (
        (
            "filesync_folder_files_uploaded",
            "Files sent to the server since the daemon started",
            None,
            Counter,
        ),
        |f| f.counters.files_uploaded,
    ),
    (
        (
            "filesync_folder_files_downloaded",
            "Files received from the server since the daemon started",
            None,
            Counter,
        ),
        |f| f.counters.files_downloaded,
    ),
    (
        (
            "filesync_connection_connected",
            "1 while the folder's connection to its server is up",
            None,
            Gauge,
        ),
        |f| u64::from(f.connected),
    ),
];

/// The figures a folder has one of each way: sent (`direction="up"`) and received
/// (`"down"`).
const PER_DIRECTION: [(Family, [Read<FolderStatus>; 2]); 2] = [
    (
        (
            "filesync_folder_pending_files",
            "Files waiting to be sent (direction up) or received (down)",
            None,
            Gauge,
        ),
        [|f| f.pending_up_files, |f| f.pending_down_files],
    ),
    (
        (
            "filesync_folder_pending",
            "Bytes waiting to be sent (direction up) or received (down)",
            Some(Unit::Bytes),
            Gauge,
        ),
        [|f| f.pending_up_bytes, |f| f.pending_down_bytes],
    ),
];

/// The figures of each folder in the server's copy.
const PER_SERVER_FOLDER: [(Family, Read<ServerFolderStatus>); 2] = [
    (
        (
            "filesync_server_folder_files",
            "Files in the server's copy of the folder",
            None,
            Gauge,
        ),
        |f| f.files,
    ),
    (
        (
            "filesync_server_folder_size",
            "Bytes of the files in the server's copy of the folder",
            Some(Unit::Bytes),
            Gauge,
        ),
        |f| f.bytes,
    ),
];

/// One reading of the daemon's status, and of the server's accounts on the server role.
#[derive(Debug)]
pub struct Snapshot {
    pub status: DaemonStatus,
    pub accounts: Vec<AccountInfo>,
    /// When it was read, Unix seconds.
    pub now: i64,
}

/// Labels, escaped.
type Labels = Vec<(&'static str, String)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, escape(v))).collect()
}

fn folder_labels(f: &FolderStatus) -> Labels {
    labels([("folder", &f.name), ("server", &f.server)])
}

/// A Unix time as a sample's value; none is before 1970 here.
fn time(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

fn value(sample: &mut MetricEncoder, kind: &MetricType, value: u64) -> fmt::Result {
    match kind {
        Counter => sample.encode_counter::<NoLabelSet, u64, u64>(&value, None),
        _ => sample.encode_gauge(&value),
    }
}

/// Writes a family and its samples, those without labels as the bare name; a family
/// without samples is left out.
fn write(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): &Family,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), *kind)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            value(&mut family, kind, v)?;
        } else {
            value(&mut family.encode_family(&labels)?, kind, v)?;
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let build = labels([("version", &self.status.version)]);
        encoder
            .encode_descriptor(
                "filesync_build",
                "The daemon's version",
                None,
                MetricType::Info,
            )?
            .encode_info(&build)?;
        self.folders(&mut encoder)?;
        if let Some(server) = &self.status.server {
            self.server(server, &mut encoder)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// The device role: each folder and its connection.
    fn folders(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let folders = &self.status.folders;
        let states = folders.iter().flat_map(|f| {
            STATES.iter().map(move |s| {
                let mut l = folder_labels(f);
                l.push(("state", s.as_str().to_owned()));
                (l, u64::from(f.state == *s))
            })
        });
        let help = "1 for the state the folder is in (scanning, syncing, idle, paused, offline, error, held), 0 for the others";
        write(
            encoder,
            &("filesync_folder_state", help, None, Gauge),
            states,
        )?;
        for (family, read) in &PER_FOLDER {
            write(
                encoder,
                family,
                folders.iter().map(|f| (folder_labels(f), read(f))),
            )?;
        }
        for (family, [up, down]) in &PER_DIRECTION {
            let samples = folders.iter().flat_map(|f| {
                [("up", up(f)), ("down", down(f))].map(|(direction, n)| {
                    let mut l = folder_labels(f);
                    l.push(("direction", direction.to_owned()));
                    (l, n)
                })
            });
            write(encoder, family, samples)?;
        }
        let synced = folders
            .iter()
            .filter_map(|f| Some((folder_labels(f), time(f.last_sync?))));
        let family = (
            "filesync_folder_last_sync_timestamp",
            "When the folder was last fully in sync, Unix time",
            Some(Unit::Seconds),
            Gauge,
        );
        write(encoder, &family, synced)
    }

    /// The server role: its folders, devices and accounts.
    fn server(&self, server: &ServerStatus, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let one = |n: usize| [(Labels::new(), n as u64)];
        let mut devices: Vec<&str> = server.devices.iter().map(|d| d.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let family = (
            "filesync_server_connected_devices",
            "Devices with at least one connection open",
            None,
            Gauge,
        );
        write(encoder, &family, one(devices.len()))?;
        let family = (
            "filesync_server_connections",
            "Folder connections of devices open now",
            None,
            Gauge,
        );
        write(encoder, &family, one(server.devices.len()))?;
        for (family, read) in &PER_SERVER_FOLDER {
            let samples = server.folders.iter().map(|f| {
                (
                    labels([("account", &f.account), ("folder", &f.name)]),
                    read(f),
                )
            });
            write(encoder, family, samples)?;
        }
        let family = (
            "filesync_server_folder_problems",
            "Folders on disk the server could not open (filesyncctl status says why)",
            None,
            Gauge,
        );
        write(encoder, &family, one(server.folder_problems.len()))?;
        let account = |name: &str| labels([("account", name)]);
        let used = server.usage.iter().map(|u| (account(&u.account), u.used));
        let family = (
            "filesync_server_account_used",
            "Bytes an account stores, with its unfinished uploads and the pushes being received",
            Some(Unit::Bytes),
            Gauge,
        );
        write(encoder, &family, used)?;
        let quotas = (server.usage.iter()).filter_map(|u| Some((account(&u.account), u.quota?)));
        let family = (
            "filesync_server_account_quota",
            "Bytes an account may store; absent for an account without a limit",
            Some(Unit::Bytes),
            Gauge,
        );
        write(encoder, &family, quotas)?;
        let free = server.free_bytes.map(|free| (Labels::new(), free));
        let family = (
            "filesync_server_free",
            "Bytes free on the filesystem of the server's data directory",
            Some(Unit::Bytes),
            Gauge,
        );
        write(encoder, &family, free)?;
        let seen = self.accounts.iter().flat_map(|a| {
            a.devices.iter().filter(|d| !d.revoked).filter_map(|d| {
                let l = labels([
                    ("account", &a.account),
                    ("device", &d.device),
                    ("name", &d.name),
                ]);
                // A login is recorded when a connection opens; one open for days is
                // still the device being seen.
                let seen = if d.connections > 0 {
                    Some(self.now)
                } else {
                    d.last_seen
                };
                Some((l, time(seen?)))
            })
        });
        let family = (
            "filesync_server_device_last_seen_timestamp",
            "When the device was last seen, Unix time: now while it has a connection open, else its last login (recorded at most once a minute); revoked devices are left out",
            Some(Unit::Seconds),
            Gauge,
        );
        write(encoder, &family, seen)
    }
}

#[cfg(test)]
mod tests {
    use filesync_proto::control::{
        AccountUsage, ConnectedDevice, Counters, DeviceInfo, FolderMode, ServerFolderStatus,
        ServerStatus, Unsyncable,
    };

    use std::time::Duration;

    use super::*;
    use crate::lifecycle::metrics::{recorded, render};

    const NOW: i64 = 1_700_000_500;

    fn folder(name: &str, state: FolderState) -> FolderStatus {
        FolderStatus {
            name: name.into(),
            path: format!("/home/a/{name}"),
            server: "files.example:7101".into(),
            mode: FolderMode::TwoWay,
            state,
            connected: true,
            scanned: true,
            files: 3,
            bytes: 12_345,
            pending_up_files: 2,
            pending_up_bytes: 200,
            pending_down_files: 0,
            pending_down_bytes: 0,
            seq: 9,
            last_sync: Some(1_700_000_000),
            conflicts: 1,
            last_error: None,
            unsyncable: vec![Unsyncable {
                path: "fifo".into(),
                reason: "a FIFO".into(),
            }],
            counters: Counters {
                content_bytes_sent: 10,
                wire_bytes_received: 77,
                ..Counters::default()
            },
            rate_up_bps: 0,
            rate_down_bps: 0,
            index_bytes: 4096,
            last_scan: None,
            watch_problem: None,
            account: Some("alice".into()),
            owner: Some("alice".into()),
            local_changes: Default::default(),
        }
    }

    fn status(folders: Vec<FolderStatus>, server: Option<ServerStatus>) -> DaemonStatus {
        DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/etc/filesync/filesyncd.toml".into(),
            folders,
            server,
            servers: Vec::new(),
            config_error: None,
            metrics: None,
            web: None,
        }
    }

    fn connection(device: &str, folder: &str) -> ConnectedDevice {
        ConnectedDevice {
            device: device.into(),
            name: "laptop".into(),
            account: "alice".into(),
            folder: folder.into(),
            address: "127.0.0.1:5000".into(),
        }
    }

    fn device(id: &str, last_seen: Option<i64>, revoked: bool) -> DeviceInfo {
        DeviceInfo {
            account: "alice".into(),
            device: id.into(),
            name: format!("{id} \"home\""),
            enrolled: 1_600_000_000,
            last_seen,
            revoked,
            connections: 0,
        }
    }

    fn server() -> ServerStatus {
        ServerStatus {
            listen: "0.0.0.0:7101".into(),
            public_address: "0.0.0.0:7101".into(),
            data_dir: "/srv".into(),
            fingerprint: "ab".repeat(32),
            registration: "invite".into(),
            folders: Vec::new(),
            // One device with two folders' connections, another with one.
            devices: vec![
                connection("D1", "docs"),
                connection("D1", "photos"),
                connection("D2", "docs"),
            ],
            usage: vec![
                AccountUsage {
                    account: "alice".into(),
                    used: 500,
                    quota: Some(1000),
                },
                AccountUsage {
                    account: "bob".into(),
                    used: 7,
                    quota: None,
                },
            ],
            folder_problems: Vec::new(),
            free_bytes: Some(1 << 30),
            min_free_space: 0,
        }
    }

    fn lines(snapshot: Snapshot) -> Vec<String> {
        let text = render(snapshot).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        text.lines().map(str::to_owned).collect()
    }

    /// Every line of `want` is in `got`.
    fn check(got: &[String], want: &[&str]) {
        for line in want {
            assert!(
                got.iter().any(|l| l == line),
                "no line {line:?} in:\n{}",
                got.join("\n")
            );
        }
    }

    #[test]
    fn a_device_shows_each_folder() {
        let status = status(vec![folder("docs", FolderState::Idle)], None);
        let got = lines(Snapshot {
            status,
            accounts: Vec::new(),
            now: NOW,
        });
        let l = r#"folder="docs",server="files.example:7101""#;
        check(
            &got,
            &[
                r#"filesync_build_info{version="0.1.0"} 1"#,
                "# TYPE filesync_folder_state gauge",
                &format!(r#"filesync_folder_state{{{l},state="idle"}} 1"#),
                &format!(r#"filesync_folder_state{{{l},state="syncing"}} 0"#),
                &format!("filesync_folder_in_sync{{{l}}} 0"),
                &format!("filesync_folder_files{{{l}}} 3"),
                &format!("filesync_folder_size_bytes{{{l}}} 12345"),
                &format!(r#"filesync_folder_pending_files{{{l},direction="up"}} 2"#),
                &format!(r#"filesync_folder_pending_bytes{{{l},direction="up"}} 200"#),
                &format!(r#"filesync_folder_pending_bytes{{{l},direction="down"}} 0"#),
                &format!("filesync_folder_conflicts{{{l}}} 1"),
                &format!("filesync_folder_unsyncable_paths{{{l}}} 1"),
                &format!("filesync_folder_last_sync_timestamp_seconds{{{l}}} 1700000000"),
                "# TYPE filesync_folder_content_sent_bytes counter",
                &format!("filesync_folder_content_sent_bytes_total{{{l}}} 10"),
                &format!("filesync_folder_wire_received_bytes_total{{{l}}} 77"),
                &format!("filesync_connection_connected{{{l}}} 1"),
            ],
        );
        assert_eq!(
            got.iter()
                .filter(|l| l.starts_with("filesync_folder_state{"))
                .count(),
            STATES.len()
        );
        assert!(
            !got.iter().any(|l| l.contains("filesync_server_")),
            "{got:?}"
        );
    }

    #[test]
    fn a_folder_never_synced_has_no_last_sync() {
        let never = FolderStatus {
            last_sync: None,
            ..folder("new", FolderState::Scanning)
        };
        let got = lines(Snapshot {
            status: status(vec![never], None),
            accounts: Vec::new(),
            now: NOW,
        });
        assert!(!got.iter().any(|l| l.contains("last_sync")), "{got:?}");
    }

    #[test]
    fn a_server_shows_devices_and_accounts() {
        let accounts = vec![AccountInfo {
            account: "alice".into(),
            created: 1_600_000_000,
            devices: vec![
                device("D1", Some(1_700_000_100), false),
                device("D2", None, false),
                device("D3", Some(1_700_000_200), true),
                DeviceInfo {
                    connections: 2,
                    ..device("D4", Some(1_600_000_000), false)
                },
            ],
            used: 500,
            quota: Some(1000),
        }];
        let got = lines(Snapshot {
            status: status(Vec::new(), Some(server())),
            accounts,
            now: NOW,
        });
        check(
            &got,
            &[
                "filesync_server_connected_devices 2",
                "filesync_server_connections 3",
                r#"filesync_server_account_used_bytes{account="alice"} 500"#,
                r#"filesync_server_account_used_bytes{account="bob"} 7"#,
                r#"filesync_server_account_quota_bytes{account="alice"} 1000"#,
                "filesync_server_free_bytes 1073741824",
                r#"filesync_server_device_last_seen_timestamp_seconds{account="alice",device="D1",name="D1 \"home\""} 1700000100"#,
                r#"filesync_server_device_last_seen_timestamp_seconds{account="alice",device="D4",name="D4 \"home\""} 1700000500"#,
            ],
        );
        let quota_lines = got
            .iter()
            .filter(|l| l.starts_with("filesync_server_account_quota_bytes{"));
        assert_eq!(quota_lines.count(), 1, "bob has no quota: {got:?}");
        assert!(
            !got.iter().any(|l| l.contains(r#"device="D3""#)),
            "revoked: {got:?}"
        );
        assert!(
            !got.iter().any(|l| l.contains(r#"device="D2""#)),
            "never seen: {got:?}"
        );
    }

    /// The names a family of `kind` gives its samples.
    fn sample_names(family: &str, kind: &str) -> Vec<String> {
        let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
        match kind {
            "counter" => with(&["_total"]),
            "info" => with(&["_info"]),
            "histogram" => with(&["", "_bucket", "_sum", "_count"]),
            _ => with(&[""]),
        }
    }

    /// docs/monitoring.md documents every metric a server with devices exports, and it
    /// and the Grafana dashboard name no other.
    #[test]
    fn the_docs_and_the_dashboard_name_what_is_exported() {
        // The recorded families show once they have a sample.
        recorded::scan_finished("docs-test", "h:1", Duration::from_millis(5));
        recorded::reconnecting("docs-test", "h:1");
        recorded::committed("alice", "docs-test", 1);
        recorded::pushed(Duration::from_millis(5));
        let docs = include_str!("../../../../docs/monitoring.md");
        let dashboard = include_str!("../../../../docs/grafana-dashboard.json");
        let accounts = vec![AccountInfo {
            account: "alice".into(),
            created: 1_600_000_000,
            devices: vec![device("D1", Some(1_700_000_100), false)],
            used: 500,
            quota: Some(1000),
        }];
        let server = ServerStatus {
            folders: vec![ServerFolderStatus {
                account: "alice".into(),
                name: "docs".into(),
                seq: 4,
                files: 3,
                bytes: 12_345,
                index_bytes: 4096,
            }],
            ..server()
        };
        let status = status(vec![folder("docs", FolderState::Idle)], Some(server));
        let text = render(Snapshot {
            status,
            accounts,
            now: NOW,
        })
        .unwrap();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        assert_eq!(families.len(), 32, "{families:?}");
        let mut known = Vec::new();
        for (family, kind) in families {
            let names = sample_names(family, kind);
            // A histogram is documented by its family's name, the others by their samples'.
            let documented = &names[0];
            assert!(
                docs.contains(&format!("| `{documented}` | {kind} |")),
                "docs/monitoring.md has no row for {documented} ({kind})"
            );
            known.extend(names);
        }
        for (file, text) in [
            ("monitoring.md", docs),
            ("grafana-dashboard.json", dashboard),
        ] {
            let mut rest = text;
            while let Some(at) = rest.find("filesync_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(
                    name == "filesync_" || known.contains(&name),
                    "docs/{file} names {name}, which is not exported"
                );
                rest = &rest[at + name.len()..];
            }
        }
    }
}
