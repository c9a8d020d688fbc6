//! `filesyncctl wait`: ask the daemon to scan, then poll its status until every folder
//! it reports is in sync, or the timeout passes; on a terminal, with a progress bar.
//!
//! Every step is bounded by the one deadline, so a daemon that hangs cannot hold `wait`
//! past its `--timeout`. Without a timeout it waits until in sync, however long.

use std::future::Future;
use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::{Result, anyhow};
use filesync_proto::control::{DaemonStatus, FolderStatus, Request};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::{Instant, MissedTickBehavior};

use crate::answer::{expect_ok, expect_status};
use crate::format::count;
use crate::output::pending;
use crate::transport::{Client, RESPONSE_TIMEOUT};

/// Time between two status requests.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Returns once every folder the daemon reports for `folder` (all when `None`) is in
/// sync; fails with the reason per folder when `timeout` passes first.
pub async fn wait(
    client: &Client,
    folder: Option<String>,
    timeout: Option<Duration>,
) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let timed_out = |details: Vec<String>| {
        let after = humantime::format_duration(timeout.unwrap_or_default());
        let mut text = format!("timed out after {after} waiting for sync");
        for line in details {
            text.push_str("\n  ");
            text.push_str(&line);
        }
        anyhow!(text)
    };
    let progress = Progress::new(io::stderr().is_terminal());

    progress.message("waiting for sync: the daemon is scanning");
    // The daemon answers a flush once it has scanned, so every change made before
    // `wait` started is counted in the statuses that follow. Scanning a large tree can
    // take long: only the overall deadline bounds it.
    let flush = Request::Flush {
        folder: folder.clone(),
    };
    match until(deadline, client.call(&flush, None)).await {
        Some(answer) => expect_ok(answer?)?,
        None => {
            return Err(timed_out(vec![
                "the daemon had not finished scanning".to_owned(),
            ]));
        }
    };

    let request = Request::Status { folder };
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut behind = vec!["the daemon had not answered a status request yet".to_owned()];
    loop {
        let poll = async {
            ticks.tick().await;
            client.call(&request, Some(RESPONSE_TIMEOUT)).await
        };
        let status = match until(deadline, poll).await {
            Some(answer) => expect_status(answer?)?,
            None => return Err(timed_out(behind)),
        };
        behind = status
            .folders
            .iter()
            .filter(|f| !f.is_in_sync())
            .map(reason)
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        progress.update(&status);
    }
}

/// Runs `work` to completion, or until `deadline` if there is one (then `None`).
async fn until<T>(deadline: Option<Instant>, work: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

/// Why one folder is not in sync, in the terms of [`FolderStatus::is_in_sync`].
fn reason(f: &FolderStatus) -> String {
    let connected = if f.connected {
        "connected"
    } else {
        "not connected"
    };
    let scanned = if f.scanned {
        "scanned"
    } else {
        "first scan not finished"
    };
    let mut text = format!(
        "{}: {}, {connected}, {scanned}, pending {}",
        f.name,
        f.state.as_str(),
        pending(f)
    );
    if let Some(error) = &f.last_error {
        text.push_str(", last error: ");
        text.push_str(error);
    }
    text
}

/// The one-line progress message: how many folders are in sync, what is left.
fn summary(status: &DaemonStatus) -> String {
    let in_sync = status.folders.iter().filter(|f| f.is_in_sync()).count();
    let up = status.folders.iter().map(|f| f.pending_up_files).sum();
    let down = status.folders.iter().map(|f| f.pending_down_files).sum();
    format!(
        "waiting for sync: {in_sync} of {} in sync, {} to send, {} to receive",
        count(status.folders.len() as u64, "folder"),
        count(up, "file"),
        count(down, "file")
    )
}

/// A progress bar on a terminal's stderr (indicatif): the bytes transferred since
/// `wait` began out of the most that was pending at once, with the summary beside it.
/// Hidden when stderr is not a terminal, so logs and scripts get no noise; erased when
/// dropped.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let bar = if enabled {
            let style = ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes}  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::new(0).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn message(&self, text: &str) {
        self.bar.set_message(text.to_owned());
    }

    fn update(&self, status: &DaemonStatus) {
        let left: u64 = status
            .folders
            .iter()
            .map(|f| f.pending_up_bytes + f.pending_down_bytes)
            .sum();
        let most = self.bar.length().unwrap_or(0).max(left);
        self.bar.set_length(most);
        self.bar.set_position(most - left);
        self.message(&summary(status));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{NOW, folder};
    use filesync_proto::control::FolderState;

    #[test]
    fn reasons_name_what_is_missing() {
        let check = |f: FolderStatus, want: &str| {
            assert!(!f.is_in_sync());
            assert_eq!(reason(&f), want);
        };
        check(
            FolderStatus {
                state: FolderState::Offline,
                connected: false,
                pending_up_files: 2,
                pending_up_bytes: 2048,
                last_error: Some("connection refused".into()),
                ..folder("docs")
            },
            "docs: offline, not connected, scanned, pending up 2 files (2.0 KiB), \
             down 0 files (0 B), last error: connection refused",
        );
        check(
            FolderStatus {
                state: FolderState::Scanning,
                scanned: false,
                ..folder("photos")
            },
            "photos: scanning, connected, first scan not finished, pending up 0 files (0 B), \
             down 0 files (0 B)",
        );
        check(
            FolderStatus {
                state: FolderState::Syncing,
                pending_down_files: 1,
                pending_down_bytes: 10,
                ..folder("music")
            },
            "music: syncing, connected, scanned, pending up 0 files (0 B), down 1 file (10 B)",
        );
    }

    #[test]
    fn summary_counts_folders_and_files() {
        let status = DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/c.toml".into(),
            folders: vec![
                folder("a"),
                FolderStatus {
                    state: FolderState::Syncing,
                    pending_down_files: 3,
                    last_sync: Some(NOW),
                    ..folder("b")
                },
            ],
            server: None,
            servers: Vec::new(),
            config_error: None,
            metrics: None,
            web: None,
        };
        assert_eq!(
            summary(&status),
            "waiting for sync: 1 of 2 folders in sync, 0 files to send, 3 files to receive"
        );
    }

    #[test]
    fn the_bar_counts_bytes_done_out_of_the_most_pending() {
        let status = |up: u64, down: u64| DaemonStatus {
            version: "0.1.0".into(),
            device: "DEV1".into(),
            config: "/c.toml".into(),
            folders: vec![FolderStatus {
                pending_up_bytes: up,
                pending_down_bytes: down,
                ..folder("a")
            }],
            server: None,
            servers: Vec::new(),
            config_error: None,
            metrics: None,
            web: None,
        };
        let progress = Progress::new(false);
        progress.update(&status(60, 40));
        assert_eq!(
            (progress.bar.position(), progress.bar.length()),
            (0, Some(100))
        );
        progress.update(&status(10, 20));
        assert_eq!(
            (progress.bar.position(), progress.bar.length()),
            (70, Some(100))
        );
        progress.update(&status(0, 150));
        assert_eq!(
            (progress.bar.position(), progress.bar.length()),
            (0, Some(150))
        );
    }

    #[tokio::test]
    async fn until_gives_up_at_the_deadline() {
        let passed = Some(Instant::now());
        assert_eq!(until(passed, std::future::pending::<()>()).await, None);
        let far = Some(Instant::now() + Duration::from_secs(3_600));
        assert_eq!(until(far, async { 7 }).await, Some(7));
        assert_eq!(until(None, async { 7 }).await, Some(7));
    }
}
