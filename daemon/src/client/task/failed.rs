//! Paths that failed: each is retried after twice as long as after its last failure.
//! What this device cannot hold at all is set aside instead (`names.rs`).

use filesync_proto::RelPath;
use tokio::time::Instant;

use super::{FolderTask, RETRY_AFTER, RETRY_MAX};

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
}
