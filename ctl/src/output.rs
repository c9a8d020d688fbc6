//! Rendering of the daemon's answers (status, conflicts, kept versions) for people
//! (aligned text blocks and tables) and for scripts (`--json`), and writing to stdout.
//!
//! Rendering is pure: it takes the answer and the current time and returns text.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};

use anyhow::{Context, Result};
use filesync_proto::control::{
    AccountInfo, ConflictInfo, DaemonStatus, Endpoint, Event, FolderState, FolderStatus,
    InviteInfo, ServerStatus, ServerTrust, ShareInfo, VersionEntry,
};

use filesync_proto::names::is_invisible_format;

use crate::format::{ago, bytes, count, thousands, utc_time};

/// How many unsyncable items a folder block lists before summing up the rest.
const UNSYNCABLE_SHOWN: usize = 5;

/// Writes `text` to stdout, [`shown`] as a terminal may take it. A reader that went
/// away (`filesyncctl status | head`) is not an error worth reporting.
pub fn print(text: &str) -> Result<()> {
    let text = shown(text, colour_stdout());
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// The colour codes of [`state_word`], the only escape sequences this program writes.
const OWN_COLOURS: [&str; 5] = ["\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[2m", "\x1b[0m"];

/// `text` made safe for a terminal. Much of what this program prints was chosen by a
/// peer (device names, a server's error texts, file names, event details), and a
/// terminal takes control characters in it as commands: erase a line, set the title,
/// write the clipboard. So every control character but newline and tab, and every
/// invisible format character (a bidi override, a zero-width space, which would make a
/// name look like another), is written as an escape: `\u001b`, `\u202e`. That is also a
/// JSON string's escape for the same character, so `--json` output stays valid and
/// means the same (serde_json already escapes C0; C1, DEL and the rest pass through it
/// raw). Only with `colour` do the colour codes this program uses itself stay as they
/// are.
///
/// Everything printed goes through here ([`print`], and `main`'s error report), so no
/// renderer has to remember which of its strings came from a peer.
pub fn shown(text: &str, colour: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| (c.is_control() && c != '\n' && c != '\t') || is_invisible_format(c);
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(code) = OWN_COLOURS
            .iter()
            .find(|code| colour && rest.starts_with(**code))
        {
            out.push_str(code);
            rest = &rest[code.len()..];
            continue;
        }
        if unsafe_char(c) {
            // Every such character is below U+10000: four digits always suffice.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// One event as one line: `2026-11-21 14:02:11 UTC  docs  uploaded  notes/a.txt`, then
/// the detail in parentheses when there is one.
pub fn event_human(event: &Event) -> String {
    let mut line = format!(
        "{}  {}  {}",
        utc_time(event.time_ms.div_euclid(1000)),
        event.folder,
        event.kind.as_str()
    );
    if let Some(path) = &event.path {
        line.push_str("  ");
        line.push_str(path);
    }
    if let Some(detail) = &event.detail {
        let _ = write!(line, "  ({detail})");
    }
    line.push('\n');
    line
}

/// One event as one line of JSON (`{"time_ms":…,"folder":…,"kind":"uploaded",…}`).
pub fn event_json(event: &Event) -> Result<String> {
    let mut line = serde_json::to_string(event).context("cannot render the event as JSON")?;
    line.push('\n');
    Ok(line)
}

/// The status as pretty JSON, with a final newline.
pub fn status_json(status: &DaemonStatus) -> Result<String> {
    pretty(serde_json::to_string_pretty(status), "the status")
}

/// The conflicts as a pretty JSON array, with a final newline.
pub fn conflicts_json(conflicts: &[ConflictInfo]) -> Result<String> {
    pretty(serde_json::to_string_pretty(conflicts), "the conflicts")
}

/// The kept versions as a pretty JSON array, with a final newline.
pub fn versions_json(versions: &[VersionEntry]) -> Result<String> {
    pretty(serde_json::to_string_pretty(versions), "the versions")
}

/// Rendered JSON with a final newline, or what could not be rendered.
fn pretty(rendered: serde_json::Result<String>, what: &str) -> Result<String> {
    let mut text = rendered.with_context(|| format!("cannot render {what}"))?;
    text.push('\n');
    Ok(text)
}

/// Whether to colour what goes to stdout: only on a terminal, and not when `NO_COLOR`
/// is set.
pub fn colour_stdout() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A folder state, in colour when `colour`: green idle, yellow busy, red trouble.
fn state_word(state: FolderState, colour: bool) -> String {
    let code = match state {
        FolderState::Idle => "32",
        FolderState::Scanning | FolderState::Syncing => "33",
        FolderState::Offline | FolderState::Error | FolderState::Held => "31",
        FolderState::Paused => "2",
    };
    if colour {
        format!("\x1b[{code}m{}\x1b[0m", state.as_str())
    } else {
        state.as_str().to_owned()
    }
}

/// The status as text blocks: a header, then one block per folder, then the server
/// role if it is enabled. `now` is the current Unix time, for the "ago" parts; the
/// states are coloured when `colour`.
pub fn status_human(status: &DaemonStatus, now: i64, colour: bool) -> String {
    let mut out = format!(
        "filesyncd {}  device {}  config {}\n",
        status.version, status.device, status.config
    );
    if let Some(error) = &status.config_error {
        out.push_str(&format!(
            "warning: the config file could not be reloaded; the previous config is still in use: {error}\n"
        ));
    }
    let endpoints = [
        (&status.metrics, "metrics: http://", "/metrics"),
        (
            &status.web,
            "web page: on ",
            " (log in with `filesyncctl web`)",
        ),
    ];
    for (endpoint, before, after) in endpoints {
        match endpoint {
            Some(Endpoint {
                error: Some(error), ..
            }) => out.push_str(&format!("warning: {error}\n")),
            Some(Endpoint {
                listen,
                error: None,
            }) => out.push_str(&format!("{before}{listen}{after}\n")),
            None => {}
        }
    }
    if status.folders.is_empty() {
        out.push_str("\nno folders (add one with `filesyncctl add PATH --server HOST:PORT`)\n");
    }
    for folder in &status.folders {
        out.push('\n');
        folder_block(&mut out, folder, now, colour);
    }
    if !status.servers.is_empty() {
        out.push_str("\nservers this device trusts\n");
        for trust in &status.servers {
            trust_line(&mut out, trust);
        }
    }
    if let Some(server) = &status.server {
        out.push('\n');
        server_block(&mut out, server);
    }
    out
}

fn trust_line(out: &mut String, t: &ServerTrust) {
    let enrolled = match (&t.account, &t.device) {
        (Some(account), Some(device)) => format!("account {account}, device {device}"),
        _ => "not enrolled".into(),
    };
    let _ = writeln!(
        out,
        "  {}  {enrolled}\n    fingerprint {} (pinned by {})",
        t.server, t.fingerprint, t.pinned_by
    );
}

/// The accounts and their devices as a pretty JSON array, with a final newline.
pub fn accounts_json(accounts: &[AccountInfo]) -> Result<String> {
    pretty(serde_json::to_string_pretty(accounts), "the accounts")
}

/// Each account, then its devices: when each was last seen, and whether it is revoked
/// or how many connections it has open.
pub fn accounts_human(accounts: &[AccountInfo], now: i64) -> String {
    if accounts.is_empty() {
        return "no accounts yet (`filesyncctl server invite ACCOUNT` makes one, with a token)\n"
            .into();
    }
    let mut out = String::new();
    for a in accounts {
        let _ = writeln!(
            out,
            "account {}  created {}, {}, {}",
            a.account,
            utc_time(a.created),
            count(a.devices.len() as u64, "device"),
            usage(a.used, a.quota)
        );
        for d in &a.devices {
            let seen = d.last_seen.map_or("never".into(), |t| ago(t, now));
            let state = if d.revoked {
                "revoked".to_string()
            } else {
                format!("{} open", count(u64::from(d.connections), "connection"))
            };
            let _ = writeln!(
                out,
                "  {}  {:<20} last seen {seen}, {state}",
                d.device, d.name
            );
        }
    }
    out
}

pub fn shares_json(shares: &[ShareInfo]) -> Result<String> {
    pretty(serde_json::to_string_pretty(shares), "the shares")
}

pub fn invites_json(invites: &[InviteInfo]) -> Result<String> {
    pretty(serde_json::to_string_pretty(invites), "the invite tokens")
}

/// One line per grant: `OWNER/FOLDER  ->  MEMBER  (read-write|read-only)`.
pub fn shares_human(shares: &[ShareInfo]) -> String {
    if shares.is_empty() {
        return "no shares (`filesyncctl share FOLDER --with ACCOUNT` makes one)\n".into();
    }
    let mut out = String::new();
    for s in shares {
        let mode = if s.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let _ = writeln!(
            out,
            "{}/{}  shared with  {}  ({mode}, since {})",
            s.owner,
            s.folder,
            s.member,
            utc_time(s.granted_at)
        );
    }
    out
}

/// "uses 1.2 MiB of 10.0 GiB", or "uses 1.2 MiB, no quota".
fn usage(used: u64, quota: Option<u64>) -> String {
    match quota {
        Some(q) => format!("uses {} of {}", bytes(used), bytes(q)),
        None => format!("uses {}, no quota", bytes(used)),
    }
}

/// One `label: value` line of a block, values aligned.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "  {:<10} {value}", format!("{label}:"));
}

fn folder_block(out: &mut String, f: &FolderStatus, now: i64, colour: bool) {
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
        format!("{} ({connected}{scan})", state_word(f.state, colour)),
    );
    let account = match (&f.account, &f.owner) {
        (None, _) => "not recorded yet (the device's only credential for the server)".into(),
        (Some(account), Some(owner)) if owner != account => {
            format!("{account}, in a folder of account {owner}")
        }
        (Some(account), _) => account.clone(),
    };
    line(out, "account", account);
    line(
        out,
        "files",
        format!("{}, {}", count(f.files, "file"), bytes(f.bytes)),
    );
    line(out, "pending", pending(f));
    local_changes(out, f);
    if f.rate_up_bps > 0 || f.rate_down_bps > 0 {
        line(
            out,
            "rate",
            format!(
                "up {}/s, down {}/s",
                bytes(f.rate_up_bps),
                bytes(f.rate_down_bps)
            ),
        );
    }
    let last_sync = match f.last_sync {
        Some(t) => format!("{} ({})", utc_time(t), ago(t, now)),
        None => "never".to_owned(),
    };
    line(out, "last sync", last_sync);
    if let Some(scan) = &f.last_scan {
        line(
            out,
            "last scan",
            format!(
                "{} in {:.2} s, {} read ({}), {} ({})",
                count(scan.entries, "path"),
                scan.millis as f64 / 1000.0,
                count(scan.hashed_files, "file"),
                bytes(scan.hashed_bytes),
                scan.reason,
                ago(scan.at_ms.div_euclid(1000), now)
            ),
        );
    }
    line(out, "index", bytes(f.index_bytes));
    line(out, "conflicts", thousands(f.conflicts));
    if let Some(problem) = &f.watch_problem {
        line(out, "watching", problem);
    }
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

/// The local changes a folder keeps (receive-only), with the paths the daemon listed:
///
/// ```text
///   local:     2 changes not uploaded: this folder is receive-only
///     notes.txt
///     new.txt
/// ```
fn local_changes(out: &mut String, f: &FolderStatus) {
    let changes = &f.local_changes;
    if changes.count == 0 {
        return;
    }
    line(
        out,
        "local",
        format!(
            "{} not uploaded: {}",
            count(changes.count, "change"),
            changes.reason
        ),
    );
    for path in &changes.paths {
        let _ = writeln!(out, "    {path}");
    }
    if let Some(rest) = changes.count.checked_sub(changes.paths.len() as u64)
        && rest > 0
    {
        let _ = writeln!(out, "    and {} more", thousands(rest));
    }
    let _ = writeln!(
        out,
        "    (`filesyncctl revert {}` puts the server's version back)",
        f.name
    );
}

/// One block per conflict, blank lines between, in the daemon's order:
///
/// ```text
/// docs: report.txt
///   kept at path:  report.txt  (server version 12 by DEV2)
///   other version: report.sync-conflict-….txt  (by DEV1, 1.2 KiB, modified 2026-11-21 14:02:11 UTC)
///   since:         2026-11-21 14:02:11 UTC (3 minutes ago)
/// ```
pub fn conflicts_human(conflicts: &[ConflictInfo], now: i64) -> String {
    if conflicts.is_empty() {
        return "no conflicts\n".to_owned();
    }
    let mut out = String::new();
    for (i, c) in conflicts.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}: {}", c.folder, c.path);
        conflict_line(
            &mut out,
            "kept at path",
            format!(
                "{}  (server version {} by {})",
                c.path, c.winner_seq, c.winner
            ),
        );
        conflict_line(
            &mut out,
            "other version",
            format!(
                "{}  (by {}, {}, modified {})",
                c.copy,
                c.loser,
                bytes(c.copy_size),
                utc_time(unix_secs(c.copy_mtime_ns))
            ),
        );
        conflict_line(
            &mut out,
            "since",
            format!("{} ({})", utc_time(c.made_at), ago(c.made_at, now)),
        );
    }
    out
}

/// One `label: value` line of a conflict block, values aligned.
fn conflict_line(out: &mut String, label: &str, value: String) {
    let _ = writeln!(out, "  {:<14} {value}", format!("{label}:"));
}

/// A table of the versions of `path` the server keeps, in the daemon's order (newest
/// kept first, which is not always the highest version: sequence numbers restart when the
/// server's index is recreated), or a line saying there are none:
///
/// ```text
/// VERSION     SIZE  MODIFIED                 REPLACED
///       7  1.2 KiB  2026-11-21 13:50:00 UTC  2026-11-21 13:59:11 UTC (3 minutes ago)
/// ```
pub fn versions_human(versions: &[VersionEntry], path: &str, now: i64) -> String {
    if versions.is_empty() {
        return format!("no kept versions of {path}\n");
    }
    let rows: Vec<[String; 4]> = versions
        .iter()
        .map(|v| {
            [
                v.version.to_string(),
                bytes(v.size),
                utc_time(unix_secs(v.mtime_ns)),
                format!("{} ({})", utc_time(v.kept_at), ago(v.kept_at, now)),
            ]
        })
        .collect();
    let header = ["VERSION", "SIZE", "MODIFIED", "REPLACED"];
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([header[column].len()])
            .max()
            .unwrap_or(0)
    };
    let (version_w, size_w, modified_w) = (width(0), width(1), width(2));
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        // Numbers right-aligned, dates left-aligned; the last column is not padded.
        let _ = writeln!(
            out,
            "{:>version_w$}  {:>size_w$}  {:<modified_w$}  {}",
            row[0], row[1], row[2], row[3]
        );
    }
    out
}

/// Nanoseconds since the Unix epoch to whole seconds, rounding down.
fn unix_secs(nanos: i64) -> i64 {
    nanos.div_euclid(1_000_000_000)
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
    line(out, "invites", format!("carry {}", s.public_address));
    line(out, "data dir", &s.data_dir);
    line(out, "cert", format!("fingerprint {}", s.fingerprint));
    line(out, "enrolment", &s.registration);
    line(out, "folders", thousands(s.folders.len() as u64));
    for f in &s.folders {
        let _ = writeln!(
            out,
            "    {}/{}  seq {}, {}, {}, index {}",
            f.account,
            f.name,
            f.seq,
            count(f.files, "file"),
            bytes(f.bytes),
            bytes(f.index_bytes)
        );
    }
    for p in &s.folder_problems {
        let _ = writeln!(
            out,
            "    {}/{}  NOT SERVED: cannot open {}: {}",
            p.account, p.name, p.path, p.error
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
    let free = s.free_bytes.map_or("unknown".into(), bytes);
    line(
        out,
        "disk",
        format!(
            "{free} free, {} kept free (server.min_free_space)",
            bytes(s.min_free_space)
        ),
    );
    line(out, "accounts", thousands(s.usage.len() as u64));
    for u in &s.usage {
        let _ = writeln!(out, "    {}  {}", u.account, usage(u.used, u.quota));
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use filesync_proto::control::{
        AccountUsage, ConnectedDevice, Counters, DeviceInfo, FolderMode, FolderProblem,
        FolderState, LocalChanges, ScanReport, ServerFolderStatus, Unsyncable,
    };

    /// Nanoseconds in a second, for modification times.
    const NS: i64 = 1_000_000_000;

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
            rate_up_bps: 0,
            rate_down_bps: 0,
            index_bytes: 1_843_200,
            last_scan: Some(ScanReport {
                at_ms: (NOW - 60) * 1000,
                reason: "periodic".into(),
                entries: 1_300,
                hashed_files: 2,
                hashed_bytes: 4096,
                millis: 125,
            }),
            watch_problem: None,
            account: Some("alice".into()),
            owner: Some("alice".into()),
            local_changes: Default::default(),
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
            last_scan: None,
            watch_problem: Some(
                "watching incomplete: the system allows 8192 inotify watches; \
                 rescanning every 60 s meanwhile"
                    .into(),
            ),
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
                public_address: "sync.example.com:7101".into(),
                data_dir: "/var/lib/filesync".into(),
                fingerprint: "ab".repeat(32),
                registration: "invite".into(),
                folders: vec![ServerFolderStatus {
                    account: "alice".into(),
                    name: "docs".into(),
                    seq: 42,
                    files: 1,
                    bytes: 512,
                    index_bytes: 40_960,
                }],
                devices: vec![ConnectedDevice {
                    device: "DEV2".into(),
                    name: "laptop".into(),
                    account: "alice".into(),
                    folder: "docs".into(),
                    address: "10.0.0.5:51234".into(),
                }],
                usage: vec![AccountUsage {
                    account: "alice".into(),
                    used: 512,
                    quota: Some(10 << 30),
                }],
                folder_problems: vec![FolderProblem {
                    account: "alice".into(),
                    name: "old".into(),
                    path: "/var/lib/filesync/alice/old".into(),
                    error: "cannot open index".into(),
                }],
                free_bytes: Some(3 << 30),
                min_free_space: 1 << 30,
            }),
            servers: vec![ServerTrust {
                server: "server.example:7101".into(),
                fingerprint: "cd".repeat(32),
                pinned_by: "token".into(),
                account: Some("alice".into()),
                device: Some("DEV1".into()),
            }],
            config_error: Some("line 3: unknown key `foo`".into()),
            metrics: Some(Endpoint {
                listen: "127.0.0.1:7103".into(),
                error: Some("cannot listen on 127.0.0.1:7103 for /metrics: address in use".into()),
            }),
            web: None,
        }
    }

    #[test]
    fn human_status() {
        let want = "\
filesyncd 0.1.0  device DEV1  config /home/a/.config/filesync/filesyncd.toml
warning: the config file could not be reloaded; the previous config is still in use: line 3: unknown key `foo`
warning: cannot listen on 127.0.0.1:7103 for /metrics: address in use

docs  /home/a/docs  ->  server.example:7101  (two-way)
  state:     idle (connected)
  account:   alice
  files:     1,204 files, 35.2 MiB
  pending:   up 0 files (0 B), down 0 files (0 B)
  last sync: 2026-11-21 13:59:11 UTC (3 minutes ago)
  last scan: 1,300 paths in 0.12 s, 2 files read (4.0 KiB), periodic (1 minute ago)
  index:     1.8 MiB
  conflicts: 0

photos  /home/a/photos  ->  server.example:7101  (send-only)
  state:     offline (not connected, first scan not finished)
  account:   alice
  files:     1,204 files, 35.2 MiB
  pending:   up 0 files (0 B), down 3 files (1.2 MiB)
  last sync: never
  index:     1.8 MiB
  conflicts: 2
  watching:  watching incomplete: the system allows 8192 inotify watches; rescanning every 60 s meanwhile
  error:     connection refused
  unsyncable: 7 items
    bad0: permission denied
    bad1: permission denied
    bad2: permission denied
    bad3: permission denied
    bad4: permission denied
    and 2 more

servers this device trusts
  server.example:7101  account alice, device DEV1
    fingerprint cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd (pinned by token)

server  listening on 0.0.0.0:7101
  invites:   carry sync.example.com:7101
  data dir:  /var/lib/filesync
  cert:      fingerprint abababababababababababababababababababababababababababababababab
  enrolment: invite
  folders:   1
    alice/docs  seq 42, 1 file, 512 B, index 40.0 KiB
    alice/old  NOT SERVED: cannot open /var/lib/filesync/alice/old: cannot open index
  devices:   1 connected
    laptop (DEV2)  alice/docs  from 10.0.0.5:51234
  disk:      3.0 GiB free, 1.0 GiB kept free (server.min_free_space)
  accounts:  1
    alice  uses 512 B of 10.0 GiB
";
        let got = status_human(&sample(), NOW, false);
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn accounts_list_their_devices() {
        let device = |id: &str, revoked| DeviceInfo {
            account: "alice".into(),
            device: id.into(),
            name: "laptop".into(),
            enrolled: NOW - 86_400,
            last_seen: Some(NOW - 120),
            revoked,
            connections: 2,
        };
        let account = |name: &str, devices, quota| AccountInfo {
            account: name.into(),
            created: NOW - 86_400,
            devices,
            used: 2048,
            quota,
        };
        let got = accounts_human(
            &[
                account(
                    "alice",
                    vec![device("D1", false), device("D2", true)],
                    Some(1 << 20),
                ),
                account("bob", Vec::new(), None),
            ],
            NOW,
        );
        let want = "\
account alice  created 2026-11-20 14:02:11 UTC, 2 devices, uses 2.0 KiB of 1.0 MiB
  D1  laptop               last seen 2 minutes ago, 2 connections open
  D2  laptop               last seen 2 minutes ago, revoked
account bob  created 2026-11-20 14:02:11 UTC, 0 devices, uses 2.0 KiB, no quota
";
        assert_eq!(got, want, "got:\n{got}");
        assert!(accounts_human(&[], NOW).starts_with("no accounts yet"));
    }

    #[test]
    fn states_are_coloured_only_when_asked() {
        let plain = status_human(&sample(), NOW, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = status_human(&sample(), NOW, true);
        assert!(coloured.contains("\x1b[32midle\x1b[0m"), "{coloured}");
        assert_eq!(state_word(FolderState::Error, true), "\x1b[31merror\x1b[0m");
    }

    /// Peer text reaches the terminal with its control characters escaped and its
    /// invisible ones marked; this program's own colours stay only when asked for.
    #[test]
    fn peer_text_is_shown_escaped() {
        let check = |text: &str, colour: bool, want: &str| {
            assert_eq!(shown(text, colour), want, "{text:?}");
        };
        check("plain\tname\n", false, "plain\tname\n");
        check(
            "pc\x1b]52;c;b3duZWQ=\x07",
            false,
            "pc\\u001b]52;c;b3duZWQ=\\u0007",
        );
        check(
            "a\rforged\x7f\u{9b}2J",
            false,
            "a\\u000dforged\\u007f\\u009b2J",
        );
        check("pc\u{202E}exe.txt", false, "pc\\u202eexe.txt");
        check("\x1b[31merror\x1b[0m", true, "\x1b[31merror\x1b[0m");
        check("\x1b[31merror\x1b[0m", false, "\\u001b[31merror\\u001b[0m");
        check("\x1b[2J", true, "\\u001b[2J");

        // In JSON the escapes are JSON's own: the text reads back unchanged.
        let name = "pc\u{9b}2J\u{202e}\x7f\x1b";
        let json = serde_json::to_string(name).unwrap();
        let back: String = serde_json::from_str(&shown(&json, false)).unwrap();
        assert_eq!(back, name);

        let mut status = sample();
        if let Some(server) = &mut status.server {
            for d in &mut server.devices {
                d.name = "evil\x1b[2K\x1b]0;title\x07".into();
            }
        }
        let text = status_human(&status, 1_700_000_000, true);
        assert!(!shown(&text, true).contains("\x1b[2K"));
        assert!(!shown(&text, false).contains('\x1b'));
    }

    #[test]
    fn events_render_as_lines() {
        let event = Event {
            time_ms: NOW * 1000 + 250,
            folder: "docs".into(),
            folder_path: "/home/a/Docs".into(),
            kind: filesync_proto::control::EventKind::Deleted,
            path: Some("old.txt".into()),
            detail: Some("by the server".into()),
        };
        assert_eq!(
            event_human(&event),
            format!(
                "{}  docs  deleted  old.txt  (by the server)\n",
                utc_time(NOW)
            )
        );
        let json: serde_json::Value = serde_json::from_str(&event_json(&event).unwrap()).unwrap();
        assert_eq!(json["kind"], "deleted");
        assert_eq!(json["path"], "old.txt");
    }

    #[test]
    fn human_status_shows_where_metrics_and_the_web_page_are_served() {
        let status = DaemonStatus {
            metrics: Some(Endpoint {
                listen: "127.0.0.1:7103".into(),
                error: None,
            }),
            web: Some(Endpoint {
                listen: "127.0.0.1:7102".into(),
                error: None,
            }),
            config_error: None,
            ..sample()
        };
        let got = status_human(&status, NOW, false);
        assert!(
            got.contains("\nmetrics: http://127.0.0.1:7103/metrics\n"),
            "{got}"
        );
        assert!(
            got.contains("\nweb page: on 127.0.0.1:7102 (log in with `filesyncctl web`)\n"),
            "{got}"
        );
        let off = DaemonStatus {
            metrics: None,
            ..sample()
        };
        assert!(!status_human(&off, NOW, false).contains("metrics"));
    }

    #[test]
    fn human_status_without_folders() {
        let status = DaemonStatus {
            folders: Vec::new(),
            server: None,
            servers: Vec::new(),
            config_error: None,
            ..sample()
        };
        let got = status_human(&status, NOW, false);
        assert!(
            got.ends_with(
                "\nno folders (add one with `filesyncctl add PATH --server HOST:PORT`)\n"
            ),
            "{got}"
        );
    }

    #[test]
    fn human_status_shows_the_rate_while_content_moves() {
        let status = DaemonStatus {
            folders: vec![FolderStatus {
                state: FolderState::Syncing,
                pending_down_files: 1,
                pending_down_bytes: 4 << 30,
                rate_down_bps: 12 << 20,
                ..folder("docs")
            }],
            server: None,
            servers: Vec::new(),
            config_error: None,
            ..sample()
        };
        let got = status_human(&status, NOW, false);
        assert!(
            got.contains(
                "  pending:   up 0 files (0 B), down 1 file (4.0 GiB)\n  rate:      up 0 B/s, down 12.0 MiB/s\n"
            ),
            "got:\n{got}"
        );
    }

    #[test]
    fn human_status_lists_local_changes() {
        let status = DaemonStatus {
            folders: vec![FolderStatus {
                mode: FolderMode::ReceiveOnly,
                local_changes: LocalChanges {
                    count: 3,
                    paths: vec!["new.txt".into(), "notes/todo.txt".into()],
                    reason: "this folder is receive-only".into(),
                },
                ..folder("docs")
            }],
            server: None,
            servers: Vec::new(),
            config_error: None,
            ..sample()
        };
        let got = status_human(&status, NOW, false);
        assert!(
            got.contains(
                "  pending:   up 0 files (0 B), down 0 files (0 B)\n  \
                 local:     3 changes not uploaded: this folder is receive-only\n    \
                 new.txt\n    notes/todo.txt\n    and 1 more\n    \
                 (`filesyncctl revert docs` puts the server's version back)\n"
            ),
            "got:\n{got}"
        );
        assert!(!status_human(&sample(), NOW, false).contains("local:"));
    }

    #[test]
    fn json_status_without_rates_still_reads() {
        // What a daemon from before the rates printed: scripts may hold such JSON.
        let mut value: serde_json::Value =
            serde_json::from_str(&status_json(&sample()).unwrap()).unwrap();
        for folder in value["folders"].as_array_mut().unwrap() {
            let folder = folder.as_object_mut().unwrap();
            folder.remove("rate_up_bps").unwrap();
            folder.remove("rate_down_bps").unwrap();
        }
        let back: DaemonStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn json_status_is_the_protocol_type() {
        let text = status_json(&sample()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["folders"][1]["state"], "offline");
        assert_eq!(value["folders"][1]["mode"], "send-only");
        assert_eq!(value["server"]["devices"][0]["name"], "laptop");
    }

    fn conflict(folder: &str, path: &str, copy: &str) -> ConflictInfo {
        ConflictInfo {
            folder: folder.into(),
            path: path.into(),
            copy: copy.into(),
            winner: "DEV2".into(),
            winner_seq: 12,
            loser: "ABCDEFG".into(),
            made_at: NOW,
            copy_size: 1_229,
            copy_mtime_ns: NOW * NS + 999_999_999,
        }
    }

    #[test]
    fn human_conflicts() {
        let conflicts = [
            conflict(
                "docs",
                "report.txt",
                "report.sync-conflict-20261121-140211-ABCDEFG.txt",
            ),
            ConflictInfo {
                winner: "DEV3".into(),
                winner_seq: 40_001,
                made_at: NOW - 2 * 86_400,
                copy_size: 0,
                copy_mtime_ns: (NOW - 2 * 86_400 - 60) * NS,
                ..conflict(
                    "photos",
                    "2026/cat.jpg",
                    "2026/cat.sync-conflict-20261119-140111-ABCDEFG.jpg",
                )
            },
        ];
        let want = "\
docs: report.txt
  kept at path:  report.txt  (server version 12 by DEV2)
  other version: report.sync-conflict-20261121-140211-ABCDEFG.txt  (by ABCDEFG, 1.2 KiB, modified 2026-11-21 14:02:11 UTC)
  since:         2026-11-21 14:02:11 UTC (3 minutes ago)

photos: 2026/cat.jpg
  kept at path:  2026/cat.jpg  (server version 40001 by DEV3)
  other version: 2026/cat.sync-conflict-20261119-140111-ABCDEFG.jpg  (by ABCDEFG, 0 B, modified 2026-11-19 14:01:11 UTC)
  since:         2026-11-19 14:02:11 UTC (2 days ago)
";
        let got = conflicts_human(&conflicts, NOW + 180);
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn no_conflicts() {
        assert_eq!(conflicts_human(&[], NOW), "no conflicts\n");
        assert_eq!(conflicts_json(&[]).unwrap(), "[]\n");
    }

    #[test]
    fn json_conflicts_are_the_protocol_type() {
        let sample = conflict("docs", "report.txt", "report.sync-conflict.txt");
        let text = conflicts_json(std::slice::from_ref(&sample)).unwrap();
        assert!(text.ends_with("}\n]\n"), "{text}");
        let back: Vec<ConflictInfo> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [sample]);
    }

    #[test]
    fn human_versions_in_the_daemons_order() {
        let version = |version: u64, size: u64, kept_ago: i64| VersionEntry {
            version,
            size,
            mtime_ns: (NOW - kept_ago - 600) * NS,
            kept_at: NOW - kept_ago,
        };
        // Newest kept first, as the server lists them; version 3 was kept after the
        // server's index was recreated, so its number is lower than older ones'.
        let versions = [
            version(3, 512, 180),
            version(12, 36_909_875, 3_600),
            version(9, 1_536, 7_200),
        ];
        let want = "\
VERSION      SIZE  MODIFIED                 REPLACED
      3     512 B  2026-11-21 13:49:11 UTC  2026-11-21 13:59:11 UTC (3 minutes ago)
     12  35.2 MiB  2026-11-21 12:52:11 UTC  2026-11-21 13:02:11 UTC (1 hour ago)
      9   1.5 KiB  2026-11-21 11:52:11 UTC  2026-11-21 12:02:11 UTC (2 hours ago)
";
        let got = versions_human(&versions, "notes/todo.txt", NOW);
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn no_versions() {
        assert_eq!(
            versions_human(&[], "notes/todo.txt", NOW),
            "no kept versions of notes/todo.txt\n"
        );
        assert_eq!(versions_json(&[]).unwrap(), "[]\n");
    }

    #[test]
    fn json_versions_are_the_protocol_type() {
        let entry = VersionEntry {
            version: 3,
            size: 10,
            mtime_ns: -1,
            kept_at: NOW,
        };
        let text = versions_json(std::slice::from_ref(&entry)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["version"], 3);
        assert_eq!(value[0]["mtime_ns"], -1);
        assert_eq!(value[0]["kept_at"], NOW);
    }
}
