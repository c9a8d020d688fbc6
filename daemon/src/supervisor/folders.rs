//! The supervisor's changes to the set of folders: adding one (after its device got
//! into its server), removing, pausing and resuming, and reloading the config file. Each
//! change is written into the config file before it takes effect.

use std::path::PathBuf;
use std::sync::Arc;

use filesync_proto::AccountName;
use filesync_proto::auth::InviteToken;
use filesync_proto::control::{AddFolder, Response};
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Supervisor, bad, bind_accounts, failed, now, ok};
use crate::client::FolderCmd;
use crate::config::{self, Config, FolderConfig};

impl Supervisor {
    /// Checks the new folder, then gets the device into its server (pinning, redeeming a
    /// token or registering) outside the supervisor; only then is the folder saved and
    /// started, by [`Supervisor::finish_add`]. A failed `add` changes no file.
    pub(super) fn add(&mut self, add: AddFolder) -> BoxFuture<'static, Response> {
        let token = match add.token.as_deref().map(InviteToken::parse).transpose() {
            Ok(t) => t,
            Err(e) => return now(bad(format!("{e}"))),
        };
        let path = PathBuf::from(&add.path);
        let name = match add.name {
            Some(n) => match filesync_proto::FolderName::new(n) {
                Ok(n) => n,
                Err(e) => return now(bad(format!("{e}"))),
            },
            None => match config::default_folder_name(&path) {
                Ok(n) => n,
                Err(e) => return now(bad(e)),
            },
        };
        let account = match add.account.map(AccountName::new).transpose() {
            Ok(a) => a,
            Err(e) => return now(bad(format!("--account: {e}"))),
        };
        let mut folder = FolderConfig::new(path, add.server, name);
        if let Some(mode) = add.mode {
            folder.mode = mode;
        }
        if let Err(e) = self.config.check_new_folder(&folder) {
            return now(bad(e));
        }
        if token.is_some() {
            // The token enrols one more credential for this server: from then on, a
            // folder that does not record its account could no longer tell which is
            // its own. Record it now, while the device holds only that one.
            self.bind_running(&folder.server);
            if let Some(unbound) = self
                .config
                .folders
                .iter()
                .find(|f| f.server == folder.server && f.account.is_none())
            {
                return now(failed(format!(
                    "folder not added: folder {} ({}) of server {} does not record its \
                     account and this device holds no credential there yet, so a token \
                     would decide its account; write `account = \"NAME\"` in its \
                     [[folder]] table of {} and run `filesyncctl reload` first",
                    unbound.name,
                    unbound.path.display(),
                    folder.server,
                    self.config.file.display()
                )));
            }
        }
        let (id, enrolled) = (self.identity.clone(), self.enrolled_tx.clone());
        Box::pin(async move {
            let me = (&id.device, id.device_name.as_str());
            let login = id.trust.login(
                &folder.server,
                token.as_ref(),
                account.as_ref(),
                me,
                Arc::default(),
            );
            match login.await {
                Ok(auth) => folder.account = Some(auth.account),
                Err(e) => return failed(format!("folder not added: {e:#}")),
            }
            let (tx, rx) = oneshot::channel();
            if enrolled.send((folder, tx)).await.is_err() {
                return failed("folder not added: the daemon is stopping");
            }
            rx.await
                .unwrap_or_else(|_| failed("folder not added: the daemon is stopping"))
        })
    }

    /// [`bind_accounts`] for the folders of `server`, restarting each running folder that
    /// gets its account, so that its session logs in as that account from then on.
    fn bind_running(&mut self, server: &str) {
        bind_accounts(&mut self.config, &self.identity.trust, Some(server));
        let rebound: Vec<FolderConfig> = self
            .config
            .folders
            .iter()
            .filter(|f| {
                self.folders
                    .iter()
                    .any(|h| h.config.path == f.path && h.config.account != f.account)
            })
            .cloned()
            .collect();
        for cfg in rebound {
            if let Some(i) = self.folders.iter().position(|h| h.config.path == cfg.path) {
                tracing::info!(folder = %cfg.name, "restarting the folder to sync as its recorded account");
                self.stop_folder(i);
                self.start_folder(cfg);
            }
        }
    }

    pub(super) fn finish_add(&mut self, folder: FolderConfig) -> Response {
        if let Err(e) = self.config.check_new_folder(&folder) {
            return bad(e);
        }
        if let Err(e) = config::persist_add_folder(&self.config.file, &folder) {
            return failed(format!("folder not added: {e}"));
        }
        let msg = format!(
            "added folder {} ({}) syncing with {} as account {}",
            folder.name,
            folder.path.display(),
            folder.server,
            folder.account.as_ref().map_or("?", AccountName::as_str)
        );
        self.config.folders.push(folder.clone());
        self.start_folder(folder);
        ok(msg)
    }

    pub(super) fn remove(&mut self, which: &str) -> Response {
        let idx = match self.select(Some(which)) {
            Ok(i) => i,
            Err(m) => return bad(m),
        };
        let path = self.folders[idx[0]].config.path.clone();
        if let Err(e) = config::persist_remove_folder(&self.config.file, &path) {
            return failed(format!("folder not removed: {e}"));
        }
        let h = self.stop_folder(idx[0]);
        self.config.folders.retain(|f| f.path != path);
        ok(format!(
            "removed folder {} ({}); its files are left in place",
            h.config.name,
            path.display()
        ))
    }

    /// Resumes, and with `confirm_deletes` releases the deletes the guard holds back.
    pub(super) fn resume(&mut self, which: Option<&str>, confirm_deletes: bool) -> Response {
        let response = self.set_paused(which, false);
        if !confirm_deletes || !matches!(response, Response::Ok { .. }) {
            return response;
        }
        let idx = match self.select(which) {
            Ok(i) => i,
            Err(m) => return bad(m),
        };
        for i in idx {
            if let Err(busy) = self.tell(i, FolderCmd::ConfirmDeletes) {
                return failed(busy);
            }
        }
        response
    }

    pub(super) fn set_paused(&mut self, which: Option<&str>, paused: bool) -> Response {
        let idx = match self.select(which) {
            Ok(i) => i,
            Err(m) => return bad(m),
        };
        for i in idx {
            let path = self.folders[i].config.path.clone();
            if let Err(e) = config::persist_set_paused(&self.config.file, &path, paused) {
                return failed(format!("cannot record the change in the config: {e}"));
            }
            self.folders[i].config.paused = paused;
            if let Some(f) = self.config.folders.iter_mut().find(|f| f.path == path) {
                f.paused = paused;
            }
            let cmd = if paused {
                FolderCmd::Pause
            } else {
                FolderCmd::Resume
            };
            if let Err(busy) = self.tell(i, cmd) {
                return failed(busy);
            }
        }
        ok("")
    }

    /// Re-reads the config file and applies folder changes; a bad file keeps the old config.
    pub fn reload(&mut self) -> Result<String, String> {
        let mut new = match Config::load(&self.config.file) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("config not reloaded, the running config stays: {e}");
                tracing::error!("{msg}");
                self.config_error = Some(msg.clone());
                return Err(msg);
            }
        };
        self.config_error = None;
        bind_accounts(&mut new, &self.identity.trust, None);
        if new.server != self.config.server || new.daemon != self.config.daemon {
            tracing::warn!("changes to [daemon] or [server] take effect after a restart");
        }
        let mut i = 0;
        while i < self.folders.len() {
            let cur = &self.folders[i].config;
            if new.folders.iter().any(|f| f == cur) {
                i += 1;
            } else {
                tracing::info!(folder = %cur.name, "folder removed or changed by reload");
                self.stop_folder(i);
            }
        }
        let mut added = 0;
        for f in &new.folders {
            if !self.folders.iter().any(|h| &h.config == f) {
                self.start_folder(f.clone());
                added += 1;
            }
        }
        self.config = new;
        Ok(format!(
            "config reloaded; {} folders ({added} started)",
            self.folders.len()
        ))
    }
}
