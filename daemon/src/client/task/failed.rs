//! Paths that failed. Most failures are retried, each path after twice as long as after
//! its last failure. A server entry this device cannot hold at all (a symbolic link on a
//! Windows device that may not create links) is listed as unsyncable with the reason
//! instead, and is not pending, so that the folder and `filesyncctl wait` go on, and
//! nothing is written under another name nor deleted anywhere. The index skips such an
//! entry like an ignored one until a new version of it arrives, or the daemon starts
//! again, when it is tried once more.

use anyhow::Error;
use filesync_proto::RelPath;
use filesync_proto::control::Unsyncable;
use filesync_proto::wire::Entry;
use tokio::time::Instant;

use super::{FolderTask, RETRY_AFTER, RETRY_MAX};
use crate::fs::tree::CannotHold;

impl FolderTask {
    pub(super) fn retrying(&self, path: &RelPath) -> bool {
        self.retry_at.contains_key(path)
    }

    /// Sets `path` aside after a failure, for twice as long as after its last one
    /// (RETRY_AFTER to RETRY_MAX), and reports `msg`.
    pub(super) fn fail_path(&mut self, path: &RelPath, msg: String) {
        let delay = self
            .retry_delay
            .get(path)
            .map_or(RETRY_AFTER, |last| (*last * 2).min(RETRY_MAX));
        self.retry_delay.insert(path.clone(), delay);
        self.retry_at.insert(path.clone(), Instant::now() + delay);
        self.error(msg);
    }

    /// Whether `e` says this device cannot hold `remote`; if so, it is set aside as
    /// unsyncable (see the module docs).
    pub(super) fn cannot_hold(&mut self, remote: &Entry, e: &Error) -> bool {
        let Some(why) = e.chain().find_map(|c| c.downcast_ref::<CannotHold>()) else {
            return false;
        };
        if let Err(e) = self.index().set_remote_ignored(&remote.path) {
            self.error(format!(
                "cannot record {} as unsyncable: {e:#}",
                remote.path
            ));
            return false;
        }
        tracing::warn!(folder = %self.cfg.name, path = %remote.path, "unsyncable here: {why}");
        self.retry_delay.remove(&remote.path);
        self.unholdable.insert(remote.path.clone(), why.to_string());
        true
    }

    /// At start: the entries set aside before are judged again, and listed again if
    /// they still cannot be held (ignored ones are found ignored again).
    pub(super) fn judge_skipped_again(&mut self) {
        if let Err(e) = self.index().clear_remote_ignored() {
            self.error(format!("cannot update the index: {e:#}"));
        }
    }

    /// What the status lists as unsyncable: what a scan found here, and the server's
    /// entries this device cannot hold.
    pub(super) fn unsyncable_all(&self) -> Vec<Unsyncable> {
        let held = self.unholdable.iter().map(|(path, reason)| Unsyncable {
            path: path.to_string(),
            reason: reason.clone(),
        });
        self.unsyncable.iter().cloned().chain(held).collect()
    }
}
