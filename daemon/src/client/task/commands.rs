//! The task's answers to the supervisor's commands ([`FolderCmd`]): pause and resume,
//! rescan and flush, the loss guards' confirmations, conflicts, revert, and the calls
//! that go to the server (versions, restore) on their own task.

use anyhow::Result;
use filesync_proto::RelPath;

use super::FolderTask;
use crate::client::session::SessionHandle;
use crate::client::{FolderCmd, conflicts};
use filesync_proto::control::VersionEntry;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

impl FolderTask {
    pub(super) fn on_cmd(&mut self, cmd: FolderCmd, cancel: &CancellationToken) {
        match cmd {
            FolderCmd::Pause => {
                self.paused = true;
                if let Some(c) = self.session_cancel.take() {
                    c.cancel();
                }
                // Whatever the stopped session still sends is stale from now on.
                self.session_gen += 1;
                self.disconnected();
            }
            FolderCmd::Resume => {
                if self.paused {
                    self.paused = false;
                    self.full_scan("resumed");
                    self.start_session(cancel);
                }
            }
            FolderCmd::ConfirmDeletes => self.confirm_deletes(),
            FolderCmd::Rescan => self.full_scan("requested"),
            FolderCmd::RecreateMarker(reply) => {
                let _ = reply.send(self.recreate_marker());
            }
            FolderCmd::Flush(reply) => {
                self.full_scan("requested by wait");
                self.flush_waiters.push(reply);
            }
            FolderCmd::Revert(reply) => self.ask_revert(reply),
            FolderCmd::Conflicts(reply) => {
                let list = conflicts::list(self.index(), self.cfg.name.as_str())
                    .map_err(|e| format!("{e:#}"));
                let _ = reply.send(list);
            }
            FolderCmd::Resolve {
                pattern,
                keep,
                reply,
            } => {
                let result = self.root().and_then(|root| {
                    conflicts::resolve(&root, self.index(), &self.rules, &pattern, keep)
                });
                let _ = reply.send(match result {
                    Ok((0, _)) => Err(format!(
                        "no conflict in folder {} matches {pattern:?}",
                        self.cfg.name
                    )),
                    Ok((n, touched)) => {
                        self.scan_paths.extend(touched);
                        Ok(format!(
                            "resolved {n} conflict{} in folder {}",
                            if n == 1 { "" } else { "s" },
                            self.cfg.name
                        ))
                    }
                    Err(e) => Err(format!("{e:#}")),
                });
            }
            FolderCmd::Versions { path, reply } => {
                self.call_server(reply, path, |session, path| async move {
                    let list = session.list_versions(path).await?;
                    Ok(list
                        .into_iter()
                        .map(|v| VersionEntry {
                            version: v.version,
                            size: v.size,
                            mtime_ns: v.mtime_ns,
                            kept_at: v.kept_at,
                        })
                        .collect())
                })
            }
            FolderCmd::Restore {
                path,
                version,
                reply,
            } => self.call_server(reply, path, move |session, path| async move {
                let shown = path.to_string();
                let seq = session.restore(path, version).await?;
                Ok(format!(
                    "restored {shown} as version {seq}; it syncs to every device"
                ))
            }),
        }
    }

    /// Runs a call to the server on its own task, so the folder keeps working meanwhile.
    fn call_server<T, F, Fut>(
        &self,
        reply: oneshot::Sender<Result<T, String>>,
        path: String,
        call: F,
    ) where
        T: Send + 'static,
        F: FnOnce(SessionHandle, RelPath) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let Some(session) = self.session.clone() else {
            let _ = reply.send(Err(format!(
                "folder {} is not connected to its server {}; see `filesyncctl status`",
                self.cfg.name, self.cfg.server
            )));
            return;
        };
        let path = match RelPath::new(path.trim_matches('/').to_string()) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(format!(
                    "{e}; give the path relative to the folder root"
                )));
                return;
            }
        };
        tokio::spawn(async move {
            let _ = reply.send(call(session, path).await.map_err(|e| format!("{e:#}")));
        });
    }
}
