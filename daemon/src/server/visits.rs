//! The hourly visit of closed folders: changes made in the server's copy of a folder
//! while nobody used it (or while the server was down) are taken in even before a
//! device connects.

use std::sync::Arc;

use filesync_proto::{AccountName, FolderName};
use futures::StreamExt;

use super::lock::lock;
use super::{Server, VISIT_WAIT, VISITS_AT_ONCE, sequencer};

impl Server {
    /// Visits every folder on disk that is not open, at start and then every hour, so
    /// that changes made in the server's copy while it was closed (or the server was
    /// down) are taken in even before a device connects: each is opened, scanned and
    /// closed again, a few at a time, so that the folders open at once stay few.
    pub(super) async fn visits(self: Arc<Self>) {
        let mut every = tokio::time::interval(sequencer::RESCAN_EVERY);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            let closed: Vec<_> = {
                let open = lock(&self.folders);
                self.folders_on_disk()
                    .into_iter()
                    .filter(|key| !open.contains_key(key))
                    .collect()
            };
            let visits = futures::stream::iter(closed).for_each_concurrent(VISITS_AT_ONCE, |key| {
                let server = self.clone();
                async move { server.visit(&key.0, &key.1).await }
            });
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                () = visits => {}
            }
        }
    }

    /// Opens a closed folder to scan it, and waits (a while at most) until it is closed
    /// again. A folder that cannot be opened is logged and shown in status.
    async fn visit(self: &Arc<Self>, account: &AccountName, name: &FolderName) {
        let closed = match self.open_folder(account, name, true) {
            Ok(handle) => handle.closed(),
            Err(e) => {
                tracing::error!(account = %account, folder = %name, path = %self.data_dir.join(account.as_str()).join(name.as_str()).display(), "cannot open the folder; it is not served until this is fixed and a device connects to it again: {e:#}");
                return;
            }
        };
        // A device that connects meanwhile keeps the folder open: then this visit is
        // over as far as the visitor is concerned.
        let _ = tokio::time::timeout(VISIT_WAIT, closed).await;
    }

    /// Every (account, folder) that has a directory under the data dir.
    fn folders_on_disk(&self) -> Vec<(AccountName, FolderName)> {
        let mut found = Vec::new();
        let Ok(accounts) = std::fs::read_dir(&self.data_dir) else {
            return found;
        };
        for account in accounts.flatten() {
            let Some(account) = account
                .file_name()
                .to_str()
                .and_then(|n| AccountName::new(n).ok())
            else {
                continue;
            };
            let folders = self.folders_of(&account);
            found.extend(folders.into_iter().map(|name| (account.clone(), name)));
        }
        found
    }

    /// The folders of `account` on disk: its directories with a folder's name.
    pub(super) fn folders_of(&self, account: &AccountName) -> Vec<FolderName> {
        let Ok(dir) = std::fs::read_dir(self.data_dir.join(account.as_str())) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|f| f.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|f| f.file_name().to_str().and_then(|n| FolderName::new(n).ok()))
            .collect()
    }
}
