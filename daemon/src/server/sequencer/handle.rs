//! What sessions hold to reach a folder's sequencer: a cloneable handle whose methods
//! send it a command with a reply channel, and the watch channels it announces on.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::wire::{Change, Hello, PushOutcome, VersionInfo};
use filesync_proto::{AccountName, DeviceId, FolderName, RelPath};
use tokio::sync::{mpsc, oneshot, watch};

use crate::fs::temp::Prepared;
use crate::server::history::{self, Lineage};
use crate::server::quota::Quotas;
use crate::server::store::{FolderStore, Landed};

/// Where a device's index stream starts, in which epoch: the answer to its hello.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub epoch: u64,
    /// The device gets every version above this.
    pub since: u64,
    /// The folder's highest committed sequence number.
    pub current: u64,
}

impl Joined {
    /// The answer to `hello` when it does not show that the folder went back in time
    /// (sessions answer those themselves, so a busy sequencer does not hold up a
    /// connection); else the number from the lost history that the device saw, which only
    /// the sequencer may act on.
    pub fn without_rollback(hello: &Hello, lineage: &Lineage, last: u64) -> Result<Joined, u64> {
        let since = match history::standing(hello, lineage, last) {
            history::Standing::Follows { since } => since,
            history::Standing::Stranger => 0,
            history::Standing::Ahead { seen } => return Err(seen),
        };
        Ok(Joined {
            epoch: lineage.epoch,
            since,
            current: last,
        })
    }
}

/// What sessions ask of the sequencer, through [`ServerFolderHandle`]'s methods.
pub(super) enum SequencerCmd {
    /// Commit a group of pushed changes in order, in one index transaction, with one
    /// barrier M for the group's directories; a file's content arrives staged and
    /// prepared (verified, durable after the group's barrier D) in a temp file.
    Commit {
        changes: Vec<(Change, Option<Prepared>)>,
        device: DeviceId,
        reply: oneshot::Sender<Vec<PushOutcome>>,
    },
    ListVersions {
        path: RelPath,
        reply: oneshot::Sender<Result<Vec<VersionInfo>, String>>,
    },
    Restore {
        path: RelPath,
        version: Option<u64>,
        device: DeviceId,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A device said hello: where its index stream starts, in which epoch.
    Join {
        hello: Hello,
        reply: oneshot::Sender<Result<Joined, String>>,
    },
}

/// What sessions hold to reach a folder.
#[derive(Clone)]
pub struct ServerFolderHandle {
    pub account: AccountName,
    pub name: FolderName,
    /// Where its changes are committed and read from.
    pub store: FolderStore,
    /// The embedded sequencer's commands; closed for a cluster folder, which has none.
    pub(super) cmd: mpsc::Sender<SequencerCmd>,
    /// The folder's highest committed sequence number.
    pub seq: watch::Receiver<u64>,
    pub lineage: watch::Receiver<Lineage>,
    pub status: watch::Receiver<ServerFolderStatus>,
    /// Where pushes to the folder are charged before they are staged.
    pub quotas: Arc<Quotas>,
    /// One count per clone of the handle: while anyone but the server's own map holds
    /// one (a session, its streams), the folder is in use and stays open.
    pub users: Arc<()>,
}

#[cfg(unix)]
impl ServerFolderHandle {
    /// The handle of a folder served from the cluster: its calls go to the database
    /// and the bucket, and its watch channels follow every node's commits.
    pub fn cluster(
        folder: Arc<crate::server::cluster::serve::ClusterFolder>,
        quotas: Arc<Quotas>,
    ) -> Self {
        // No sequencer: the command channel is closed from the start.
        let (cmd, _) = mpsc::channel(1);
        ServerFolderHandle {
            account: folder.account.clone(),
            name: folder.name.clone(),
            seq: folder.seq(),
            lineage: folder.lineage(),
            status: folder.status(),
            store: FolderStore::Cluster(folder),
            cmd,
            quotas,
            users: Arc::new(()),
        }
    }
}

/// Why a call to the sequencer got no answer.
const CLOSING: &str = "the folder is shutting down";

impl ServerFolderHandle {
    /// Commits pushed changes in order (see [`SequencerCmd::Commit`]).
    pub async fn commit(
        &self,
        changes: Vec<(Change, Option<Landed>)>,
        device: DeviceId,
    ) -> Result<Vec<PushOutcome>> {
        #[cfg(unix)]
        if let FolderStore::Cluster(c) = &self.store {
            let changes = changes
                .into_iter()
                .map(|(change, landed)| {
                    let content = match landed {
                        Some(Landed::Stored(small)) => Some(small),
                        Some(Landed::Prepared(_)) | None => None,
                    };
                    (change, content)
                })
                .collect();
            return Ok(c.commit(changes, &device).await);
        }
        let changes = changes
            .into_iter()
            .map(|(change, landed)| {
                let prepared = match landed {
                    Some(Landed::Prepared(p)) => Some(*p),
                    // Only a cluster's content is stored; the sequencer then says no
                    // content was staged, and the change fails.
                    #[cfg(unix)]
                    Some(Landed::Stored(_)) => None,
                    None => None,
                };
                (change, prepared)
            })
            .collect();
        let call = self.call(|reply| SequencerCmd::Commit {
            changes,
            device,
            reply,
        });
        call.await?.get().await
    }

    /// Where `hello`'s device stands in the folder's history; a Hello that shows the
    /// folder went back in time goes to the sequencer, which changes the epoch.
    pub async fn join(&self, hello: &Hello) -> Result<Joined> {
        let current = *self.seq.borrow();
        let lineage = self.lineage.borrow().clone();
        let seen = match Joined::without_rollback(hello, &lineage, current) {
            Ok(joined) => return Ok(joined),
            Err(seen) => seen,
        };
        #[cfg(unix)]
        if let FolderStore::Cluster(c) = &self.store {
            c.rolled_back(&hello.device, seen).await?;
            return Ok(Joined {
                epoch: self.lineage.borrow().epoch,
                since: 0,
                current: *self.seq.borrow(),
            });
        }
        #[cfg(not(unix))]
        let _ = seen;
        // The sequencer places the device again: it alone may change the epoch.
        let hello = hello.clone();
        let call = self.call(|reply| SequencerCmd::Join { hello, reply });
        call.await?.get().await?.map_err(|e| anyhow!(e))
    }

    /// Asks for the versions kept of `path`; the answer comes later, so that a session
    /// reads on meanwhile.
    pub async fn versions(
        &self,
        path: RelPath,
    ) -> Result<Answer<Result<Vec<VersionInfo>, String>>> {
        #[cfg(unix)]
        if let FolderStore::Cluster(c) = &self.store {
            let c = c.clone();
            return Ok(Answer::later(async move { c.versions(&path).await }));
        }
        self.call(|reply| SequencerCmd::ListVersions { path, reply })
            .await
    }

    /// Asks to bring a kept version back as a change by `device`; the answer comes later.
    pub async fn restore(
        &self,
        path: RelPath,
        version: Option<u64>,
        device: DeviceId,
    ) -> Result<Answer<Result<u64, String>>> {
        #[cfg(unix)]
        if let FolderStore::Cluster(c) = &self.store {
            let c = c.clone();
            return Ok(Answer::later(async move {
                let restored = c.restore(&path, version, device).await;
                if let Err(e) = &restored {
                    tracing::warn!(folder = %c.label(), path = %path, "restore failed: {e:#}");
                }
                restored
            }));
        }
        self.call(|reply| SequencerCmd::Restore {
            path,
            version,
            device,
            reply,
        })
        .await
    }

    /// Resolves once the sequencer has ended (the folder closed), without holding the
    /// folder open meanwhile.
    pub fn closed(&self) -> impl Future<Output = ()> + use<> {
        let cmd = self.cmd.clone();
        async move { cmd.closed().await }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> SequencerCmd,
    ) -> Result<Answer<T>> {
        let (reply, answer) = oneshot::channel();
        self.cmd
            .send(make(reply))
            .await
            .map_err(|_| anyhow!(CLOSING))?;
        Ok(Answer(answer))
    }
}

/// The sequencer's answer to a call it has taken.
pub struct Answer<T>(oneshot::Receiver<T>);

impl<T> Answer<T> {
    pub async fn get(self) -> Result<T> {
        self.0.await.map_err(|_| anyhow!(CLOSING))
    }
}

impl<T: Send + 'static> Answer<Result<T, String>> {
    /// The answer of `work`, run in its own task (a cluster folder's calls, which no
    /// sequencer queues).
    #[cfg(unix)]
    fn later(work: impl Future<Output = Result<T>> + Send + 'static) -> Self {
        let (reply, answer) = oneshot::channel();
        tokio::spawn(async move {
            let _ = reply.send(work.await.map_err(|e| format!("{e:#}")));
        });
        Answer(answer)
    }
}
