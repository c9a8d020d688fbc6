//! Rendering of the daemon's status for people (aligned text blocks) and for scripts
//! (`--json`), and writing to stdout.
//!
//! Rendering is pure: it takes the status and the current time and returns text.

use std::fmt::Write as _;
use std::io::{self, Write as _};

use anyhow::{Context, Result};
use filesync_proto::control::{DaemonStatus, FolderStatus, ServerStatus};

use crate::format::{ago, bytes, count, thousands, utc_time};

/// How many unsyncable items a folder block lists before summing up the rest.
const UNSYNCABLE_SHOWN: usize = 5;

/// Writes `text` to stdout. A reader that went away (`filesyncctl status | head`) is
/// not an error worth reporting.
pub fn print(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// The status as pretty JSON, with a final newline.
pub fn status_json(status: &DaemonStatus) -> Result<String> {
    let mut text = serde_json::to_string_pretty(status).context("cannot render the status")?;
    text.push('\n');
    Ok(text)
}

/// The status as text blocks: a header, then one block per folder, then the server
/// role if it is enabled. `now` is the current Unix time, for the "ago" parts.
pub fn status_human(status: &DaemonStatus, now: i64) -> String {
    let mut out = format!(
        "filesyncd {}  device {}  config {}\n",
        status.version, status.device, status.config
    );
    if let Some(error) = &status.config_error {
        out.push_str(&format!(
            "warning: the config file could not be reloaded; the previous config is still in use: {error}\n"
        ));
    }
    if status.folders.is_empty() {
        out.push_str("\nno folders (add one with `filesyncctl add PATH --server HOST:PORT`)\n");
    }
    for folder in &status.folders {
        out.push('\n');
        folder_block(&mut out, folder, now);
    }
    if let Some(server) = &status.server {
        out.push('\n');
        server_block(&mut out, server);
    }
    out
}

/// One `label: value` line of a block, values aligned.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "  {:<10} {value}", format!("{label}:"));
}

fn folder_block(out: &mut String, f: &FolderStatus, now: i64) {
    let _ = writeln!(
        out,
        "{}  {}  ->  {}  ({})",
        f.name,
        f.path,
        f.server,
        f.mode.as_str()
    );
    let connected = if f.connected {
        "connected"
    } else {
        "not connected"
    };
    let scan = if f.scanned {
        ""
    } else {
        ", first scan not finished"
    };
    line(
        out,
        "state",
        format!("{} ({connected}{scan})", f.state.as_str()),
    );
    line(
        out,
        "files",
        format!("{}, {}", count(f.files, "file"), bytes(f.bytes)),
    );
    line(out, "pending", pending(f));
    let last_sync = match f.last_sync {
        Some(t) => format!("{} ({})", utc_time(t), ago(t, now)),
        None => "never".to_owned(),
    };
    line(out, "last sync", last_sync);
    line(out, "conflicts", thousands(f.conflicts));
    if let Some(error) = &f.last_error {
        line(out, "error", error);
    }
    if !f.unsyncable.is_empty() {
        line(out, "unsyncable", count(f.unsyncable.len() as u64, "item"));
        for item in f.unsyncable.iter().take(UNSYNCABLE_SHOWN) {
            let _ = writeln!(out, "    {}: {}", item.path, item.reason);
        }
        if let Some(rest) = f.unsyncable.len().checked_sub(UNSYNCABLE_SHOWN)
            && rest > 0
        {
            let _ = writeln!(out, "    and {} more", thousands(rest as u64));
        }
    }
}

/// `up 0 files (0 B), down 3 files (1.2 MiB)`.
pub fn pending(f: &FolderStatus) -> String {
    format!(
        "up {} ({}), down {} ({})",
        count(f.pending_up_files, "file"),
        bytes(f.pending_up_bytes),
        count(f.pending_down_files, "file"),
        bytes(f.pending_down_bytes)
    )
}

fn server_block(out: &mut String, s: &ServerStatus) {
    let _ = writeln!(out, "server  listening on {}", s.listen);
    line(out, "data dir", &s.data_dir);
    line(out, "folders", thousands(s.folders.len() as u64));
    for f in &s.folders {
        let _ = writeln!(
            out,
            "    {}/{}  seq {}, {}, {}",
            f.account,
            f.name,
            f.seq,
            count(f.files, "file"),
            bytes(f.bytes)
        );
    }
    line(out, "devices", format!("{} connected", s.devices.len()));
    for d in &s.devices {
        let _ = writeln!(
            out,
            "    {} ({})  {}/{}  from {}",
            d.name, d.device, d.account, d.folder, d.address
        );
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use filesync_proto::control::{
        ConnectedDevice, Counters, FolderMode, FolderState, ServerFolderStatus, Unsyncable,
    };

    pub const NOW: i64 = 1_795_269_731;

    /// A folder that is in sync; tests change what they need.
    pub fn folder(name: &str) -> FolderStatus {
        FolderStatus {
            name: name.into(),
            path: format!("/home/a/{name}"),
            server: "server.example:7101".into(),
            mode: FolderMode::TwoWay,
            state: FolderState::Idle,
            connected: true,
            scanned: true,
            files: 1_204,
            bytes: 36_909_875,
            pending_up_files: 0,
            pending_up_bytes: 0,
            pending_down_files: 0,
            pending_down_bytes: 0,
            seq: 42,
            last_sync: Some(NOW - 180),
            conflicts: 0,
            last_error: None,
            unsyncable: Vec::new(),
            counters: Counters::default(),
        }
    }

    fn sample() -> DaemonStatus {
        let broken = FolderStatus {
            mode: FolderMode::SendOnly,
            state: FolderState::Offline,
            connected: false,
            scanned: false,
            pending_down_files: 3,
            pending_down_bytes: 1_258_291,
            last_sync: None,
            conflicts: 2,
            last_error: Some("connection refused".into()),
            unsyncable: (0..7)
                .map(|i| Unsyncable {
                    path: format!("bad{i}"),
                    reason: "permission denied".into(),
                })
                .collect(),
            ..folder("photos")
        };
        DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/home/a/.config/filesync/filesyncd.toml".into(),
            folders: vec![folder("docs"), broken],
            server: Some(ServerStatus {
                listen: "0.0.0.0:7101".into(),
                data_dir: "/var/lib/filesync".into(),
                folders: vec![ServerFolderStatus {
                    account: "alice".into(),
                    name: "docs".into(),
                    seq: 42,
                    files: 1,
                    bytes: 512,
                }],
                devices: vec![ConnectedDevice {
                    device: "DEV2".into(),
                    name: "laptop".into(),
                    account: "alice".into(),
                    folder: "docs".into(),
                    address: "10.0.0.5:51234".into(),
                }],
            }),
            config_error: Some("line 3: unknown key `foo`".into()),
        }
    }

    #[test]
    fn human_status() {
        let want = "\
filesyncd 0.1.0  device DEV1  config /home/a/.config/filesync/filesyncd.toml
warning: the config file could not be reloaded; the previous config is still in use: line 3: unknown key `foo`

docs  /home/a/docs  ->  server.example:7101  (two-way)
  state:     idle (connected)
  files:     1,204 files, 35.2 MiB
  pending:   up 0 files (0 B), down 0 files (0 B)
  last sync: 2026-11-21 13:59:11 UTC (3 minutes ago)
  conflicts: 0

photos  /home/a/photos  ->  server.example:7101  (send-only)
  state:     offline (not connected, first scan not finished)
  files:     1,204 files, 35.2 MiB
  pending:   up 0 files (0 B), down 3 files (1.2 MiB)
  last sync: never
  conflicts: 2
  error:     connection refused
  unsyncable: 7 items
    bad0: permission denied
    bad1: permission denied
    bad2: permission denied
    bad3: permission denied
    bad4: permission denied
    and 2 more

server  listening on 0.0.0.0:7101
  data dir:  /var/lib/filesync
  folders:   1
    alice/docs  seq 42, 1 file, 512 B
  devices:   1 connected
    laptop (DEV2)  alice/docs  from 10.0.0.5:51234
";
        let got = status_human(&sample(), NOW);
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn human_status_without_folders() {
        let status = DaemonStatus {
            folders: Vec::new(),
            server: None,
            config_error: None,
            ..sample()
        };
        let got = status_human(&status, NOW);
        assert!(
            got.ends_with(
                "\nno folders (add one with `filesyncctl add PATH --server HOST:PORT`)\n"
            ),
            "{got}"
        );
    }

    #[test]
    fn json_status_is_the_protocol_type() {
        let text = status_json(&sample()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["folders"][1]["state"], "offline");
        assert_eq!(value["folders"][1]["mode"], "send-only");
        assert_eq!(value["server"]["devices"][0]["name"], "laptop");
    }
}
