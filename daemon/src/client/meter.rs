//! A folder's transfer rate, and its counters while a transfer runs.
//!
//! The folder task publishes its status between steps, and one step may be a download
//! of several gigabytes. So a small task of its own samples the folder's counters every
//! quarter second and writes them, with the rate of file content over the last five
//! seconds, into the published status: `filesyncctl status` moves during a transfer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use filesync_proto::control::FolderStatus;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::conn::Counters;

/// How often the counters are sampled: a transfer shows in `status` this soon.
const TICK: Duration = Duration::from_millis(250);
/// How many samples back the rate looks: with [`TICK`], the last five seconds.
const WINDOW: usize = 20;

/// Bytes moved up and down over a sliding window of samples.
#[derive(Debug, Default)]
struct Rate {
    /// (when, content bytes sent, content bytes received), oldest first.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Rate {
    /// Records the counters at `now`; returns (up, down) in bytes per second since the
    /// oldest sample kept.
    fn sample(&mut self, now: Instant, sent: u64, received: u64) -> (u64, u64) {
        self.samples.push_back((now, sent, received));
        while self.samples.len() > WINDOW + 1 {
            self.samples.pop_front();
        }
        let (then, sent0, received0) = self.samples[0];
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return (0, 0);
        }
        let per_sec = |from: u64, to: u64| (to.saturating_sub(from) as f64 / secs) as u64;
        (per_sec(sent0, sent), per_sec(received0, received))
    }
}

/// Samples `counters` into `status` until `cancel`.
pub(super) async fn run(
    counters: Arc<Counters>,
    status: watch::Sender<FolderStatus>,
    cancel: CancellationToken,
) {
    let mut rate = Rate::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = counters.snapshot();
        let (up, down) = rate.sample(
            Instant::now(),
            now.content_bytes_sent,
            now.content_bytes_received,
        );
        status.send_if_modified(|s| {
            let changed = s.counters != now || s.rate_up_bps != up || s.rate_down_bps != down;
            s.counters = now;
            s.rate_up_bps = up;
            s.rate_down_bps = down;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_over_the_window_and_falls_to_zero() {
        let start = Instant::now();
        let at = |tick: u32| start + TICK * tick;
        let mut rate = Rate::default();
        assert_eq!(rate.sample(at(0), 0, 0), (0, 0));
        assert_eq!(rate.sample(at(4), 100, 1000), (100, 1000));
        assert_eq!(rate.sample(at(8), 100, 3000), (50, 1500));
        for tick in 9..=28 {
            rate.sample(at(tick), 100, 3000);
        }
        // The last change is now more than the window ago.
        assert_eq!(rate.sample(at(29), 100, 3000), (0, 0));
        assert!(rate.samples.len() <= WINDOW + 1);
    }
}
