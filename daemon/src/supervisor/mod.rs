//! The supervisor: owns the running configuration and the set of folder tasks, and
//! answers control requests. It is the only place that starts, stops or restarts a
//! folder, and the only writer of the config file. Changes to the set of folders are in
//! [`folders`], the server role's answers in [`server`].

use std::sync::Arc;

use filesync_proto::AccountName;
use filesync_proto::auth::Fingerprint;
use filesync_proto::control::{
    ControlErrorKind, DaemonStatus, Endpoint, FolderStatus, Request, Response,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, ClientIdentity, FolderCmd, FolderHandle};
use crate::config::{self, Config, FolderConfig};
use crate::events::Events;
use crate::lifecycle;
use crate::server::Server;

mod folders;
mod server;

/// A folder whose device got into its server, to be saved and started; the answer to
/// its `add` goes back on the sender.
type Enrolled = (FolderConfig, oneshot::Sender<Response>);

/// A control request and where to send its answer. The answer is a future so that a
/// slow request (`Flush`) is awaited by its own connection, not by the supervisor.
pub struct ControlCmd {
    pub request: Request,
    pub reply: oneshot::Sender<BoxFuture<'static, Response>>,
}

impl ControlCmd {
    /// Hands `request` to the supervisor and waits for its answer; one that stopped
    /// answers that the daemon is shutting down.
    pub async fn ask(supervisor: &mpsc::Sender<ControlCmd>, request: Request) -> Response {
        let closing = || failed("the daemon is shutting down");
        let (reply, answer) = oneshot::channel();
        if supervisor
            .send(ControlCmd { request, reply })
            .await
            .is_err()
        {
            return closing();
        }
        match answer.await {
            Ok(answer) => answer.await,
            Err(_) => closing(),
        }
    }
}

pub struct Supervisor {
    config: Config,
    identity: ClientIdentity,
    folders: Vec<FolderHandle>,
    server: Option<Arc<Server>>,
    /// Where folder tasks report what happens, for `filesyncctl events`.
    events: Events,
    tracker: TaskTracker,
    /// Parent of every folder task's token.
    cancel: CancellationToken,
    /// Why the last reload was refused, while the file differs from what runs.
    config_error: Option<String>,
    /// `/metrics`, for status: where it listens or why it cannot.
    metrics: Option<Endpoint>,
    /// The web page, for status: where it listens or why it cannot.
    web: Option<Endpoint>,
    /// `add` enrols outside the supervisor, then hands the folder back here.
    enrolled_tx: mpsc::Sender<Enrolled>,
    enrolled_rx: Option<mpsc::Receiver<Enrolled>>,
}

/// An answer that is ready at once, for [`Supervisor::handle`]'s future.
fn now(response: Response) -> BoxFuture<'static, Response> {
    Box::pin(std::future::ready(response))
}

fn ok(message: impl Into<String>) -> Response {
    Response::Ok {
        message: message.into(),
    }
}

/// A refused request, answered as the control socket answers it.
pub(crate) fn bad(message: impl Into<String>) -> Response {
    Response::Error {
        kind: ControlErrorKind::BadRequest,
        message: message.into(),
    }
}

/// A request that could not be carried out.
pub(crate) fn failed(message: impl Into<String>) -> Response {
    Response::Error {
        kind: ControlErrorKind::Failed,
        message: message.into(),
    }
}

impl Supervisor {
    pub fn new(
        config: Config,
        identity: ClientIdentity,
        server: Option<Arc<Server>>,
        events: Events,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (enrolled_tx, enrolled_rx) = mpsc::channel(8);
        let mut s = Supervisor {
            config,
            identity,
            folders: Vec::new(),
            server,
            events,
            tracker,
            cancel,
            config_error: None,
            metrics: None,
            web: None,
            enrolled_tx,
            enrolled_rx: Some(enrolled_rx),
        };
        bind_accounts(&mut s.config, &s.identity.trust, None);
        for f in s.config.folders.clone() {
            s.start_folder(f);
        }
        s
    }

    /// Shows the endpoints of `/metrics` and of the web page (where each listens, or
    /// why it cannot) in status.
    pub fn with_endpoints(mut self, metrics: Option<Endpoint>, web: Option<Endpoint>) -> Self {
        self.metrics = metrics;
        self.web = web;
        self
    }

    fn start_folder(&mut self, cfg: FolderConfig) {
        tracing::info!(folder = %cfg.name, path = %cfg.path.display(), server = %cfg.server, "starting folder");
        self.folders.push(client::spawn(
            cfg,
            &self.identity,
            &self.events,
            &self.tracker,
            &self.cancel,
        ));
    }

    fn stop_folder(&mut self, at: usize) -> FolderHandle {
        let h = self.folders.remove(at);
        h.cancel.cancel();
        h
    }

    /// Runs until `cancel`: control requests and reload signals, one at a time.
    pub async fn run(
        mut self,
        mut cmds: mpsc::Receiver<ControlCmd>,
        mut reloads: mpsc::Receiver<()>,
    ) {
        let Some(mut enrolled) = self.enrolled_rx.take() else {
            return;
        };
        let mut heartbeat = tokio::time::interval(lifecycle::heartbeat_interval());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut release = lifecycle::ReleaseWhenQuiet::default();
        let mut quiet = tokio::time::interval(lifecycle::RELEASE_EVERY);
        quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = heartbeat.tick() => lifecycle::heartbeat(|| self.summary()),
                _ = quiet.tick() => release.tick(),
                Some((folder, reply)) = enrolled.recv() => {
                    let _ = reply.send(self.finish_add(folder));
                }
                Some(cmd) = cmds.recv() => {
                    let reply = self.handle(cmd.request);
                    let _ = cmd.reply.send(reply);
                }
                Some(()) = reloads.recv() => {
                    let _ = self.reload();
                }
            }
        }
    }

    /// One line for `systemctl status`: how many folders are in which state, the server
    /// role's connected devices, and a refused reload.
    pub fn summary(&self) -> String {
        let mut states: Vec<(&str, usize)> = Vec::new();
        for f in &self.folders {
            let state = f.status.borrow().state.as_str();
            match states.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => states.push((state, 1)),
            }
        }
        let mut line = format!("{} folders", self.folders.len());
        if !states.is_empty() {
            let parts: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        if let Some(server) = &self.server {
            line.push_str(&format!(
                "; server: {} devices connected",
                server.status().devices.len()
            ));
        }
        if self.config_error.is_some() {
            line.push_str("; config reload failed (see filesyncctl status)");
        }
        line
    }

    /// Answers at once, never waiting on a folder task: what takes time is in the
    /// returned future, which the request's own connection awaits.
    fn handle(&mut self, request: Request) -> BoxFuture<'static, Response> {
        match request {
            Request::Status { folder } => now(self.status(folder.as_deref())),
            Request::Add(add) => self.add(add),
            Request::Remove { folder } => now(self.remove(&folder)),
            Request::Pause { folder } => now(self.set_paused(folder.as_deref(), true)),
            Request::Resume {
                folder,
                confirm_deletes,
            } => now(self.resume(folder.as_deref(), confirm_deletes)),
            Request::Rescan {
                folder: Some(folder),
                recreate_marker: true,
            } => self.ask_one(&folder, FolderCmd::RecreateMarker, |m: String| ok(m)),
            Request::Rescan {
                folder: None,
                recreate_marker: true,
            } => now(bad(
                "--recreate-marker needs the FOLDER whose marker to write",
            )),
            Request::Rescan { folder, .. } => match self.select(folder.as_deref()) {
                Err(m) => now(bad(m)),
                Ok(idx) => {
                    for i in idx {
                        if let Err(busy) = self.tell(i, FolderCmd::Rescan) {
                            return now(failed(busy));
                        }
                    }
                    now(ok(""))
                }
            },
            Request::Flush { folder } => match self.ask_each(folder.as_deref(), FolderCmd::Flush) {
                Err(r) => now(*r),
                Ok(waits) => Box::pin(async move {
                    for w in waits {
                        let _ = w.await;
                    }
                    ok("")
                }),
            },
            Request::Reload => now(match self.reload() {
                Ok(msg) => ok(msg),
                Err(msg) => failed(msg),
            }),
            Request::Conflicts { folder } => match self
                .ask_each(folder.as_deref(), FolderCmd::Conflicts)
            {
                Err(r) => now(*r),
                Ok(waits) => Box::pin(async move {
                    let mut all = Vec::new();
                    for w in waits {
                        match w.await {
                            Ok(Ok(list)) => all.extend(list),
                            Ok(Err(e)) => return failed(e),
                            Err(_) => return failed("a folder stopped while listing conflicts"),
                        }
                    }
                    Response::Conflicts(all)
                }),
            },
            Request::Resolve {
                folder,
                pattern,
                keep,
            } => self.ask_one(
                &folder,
                |reply| FolderCmd::Resolve {
                    pattern,
                    keep,
                    reply,
                },
                |m: String| ok(m),
            ),
            Request::Versions { folder, path } => self.ask_one(
                &folder,
                |reply| FolderCmd::Versions { path, reply },
                Response::Versions,
            ),
            // The control socket streams events itself, from the event bus.
            Request::Events { .. } => now(bad("events are not a supervisor request")),
            // The control socket asks the web page for a login URL itself.
            Request::WebLogin => now(bad("a web login is not a supervisor request")),
            Request::Restore {
                folder,
                path,
                version,
            } => self.ask_one(
                &folder,
                |reply| FolderCmd::Restore {
                    path,
                    version,
                    reply,
                },
                |m: String| ok(m),
            ),
            Request::Revert { folder } => {
                self.ask_one(&folder, FolderCmd::Revert, |m: String| ok(m))
            }
            Request::ServerInvite {
                account,
                expires_secs,
            } => self.server_invite(&account, expires_secs),
            Request::ServerDevices => self.server_devices(),
            Request::ServerRevoke { device } => self.server_revoke(&device),
            Request::ServerInvites => self.server_invites(),
            Request::ServerCancelInvite { id } => self.server_cancel_invite(id),
            Request::ServerQuota { account, quota } => self.server_quota(account, quota),
            Request::ServerExport { folder, dir } => self.server_export(folder, dir),
            Request::DeviceInvite { server, account } => {
                let account = match account.map(AccountName::new).transpose() {
                    Ok(a) => a,
                    Err(e) => return now(bad(format!("--account: {e}"))),
                };
                let id = self.identity.clone();
                Box::pin(async move {
                    let me = (&id.device, id.device_name.as_str());
                    match id.trust.device_invite(&server, account.as_ref(), me).await {
                        Ok(token) => ok(token),
                        Err(e) => failed(format!("no invite token: {e:#}")),
                    }
                })
            }
            Request::Trust {
                server,
                fingerprint,
            } => now(self.trust(&server, &fingerprint)),
            Request::Share { .. } | Request::Unshare { .. } | Request::Shares { .. } => {
                client::share::handle(&self.config, &self.identity, request)
            }
            Request::ServerShare { .. }
            | Request::ServerUnshare { .. }
            | Request::ServerShares { .. } => self.server_shares(request),
        }
    }

    fn trust(&self, server: &str, fingerprint: &str) -> Response {
        let Some(fp) = Fingerprint::parse(fingerprint) else {
            return bad(format!(
                "{fingerprint:?} is not a certificate fingerprint (64 hex digits, as the \
                 server's `filesyncctl status` shows it)"
            ));
        };
        match self.identity.trust.pin(server, fp, "manual") {
            Ok(()) => ok(format!(
                "server {server} is now trusted with fingerprint {fp}"
            )),
            Err(e) => failed(format!("cannot record the pin: {e:#}")),
        }
    }

    /// Sends a command with a reply channel to every folder `which` names; the answers
    /// are awaited by the caller, outside the supervisor.
    fn ask_each<T>(
        &self,
        which: Option<&str>,
        make: impl Fn(oneshot::Sender<T>) -> FolderCmd,
    ) -> Result<Vec<oneshot::Receiver<T>>, Box<Response>> {
        let idx = self.select(which).map_err(|m| Box::new(bad(m)))?;
        let mut waits = Vec::new();
        for i in idx {
            let (tx, rx) = oneshot::channel();
            self.tell(i, make(tx)).map_err(|m| Box::new(failed(m)))?;
            waits.push(rx);
        }
        Ok(waits)
    }

    /// Sends a command that names exactly one folder and answers with what it replies.
    fn ask_one<T: Send + 'static>(
        &self,
        folder: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> FolderCmd,
        wrap: fn(T) -> Response,
    ) -> BoxFuture<'static, Response> {
        let idx = match self.select(Some(folder)) {
            Ok(idx) => idx,
            Err(m) => return Box::pin(std::future::ready(bad(m))),
        };
        let (tx, rx) = oneshot::channel();
        if let Err(busy) = self.tell(idx[0], make(tx)) {
            return Box::pin(std::future::ready(failed(busy)));
        }
        Box::pin(async move {
            match rx.await {
                Ok(Ok(v)) => wrap(v),
                Ok(Err(e)) => failed(e),
                Err(_) => failed("the folder stopped before answering"),
            }
        })
    }

    /// Hands a command to a folder task without waiting: a task busy with a long transfer
    /// must not stall every other control request.
    fn tell(&self, i: usize, cmd: FolderCmd) -> Result<(), String> {
        self.folders[i].cmd.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                format!(
                    "folder {} is busy with earlier commands; try again in a moment",
                    self.folders[i].config.name
                )
            }
            mpsc::error::TrySendError::Closed(_) => {
                format!(
                    "folder {} has stopped; see the daemon log",
                    self.folders[i].config.name
                )
            }
        })
    }

    /// Indexes of the folders `name_or_path` names, or all of them for `None`.
    fn select(&self, name_or_path: Option<&str>) -> Result<Vec<usize>, String> {
        let Some(want) = name_or_path else {
            return Ok((0..self.folders.len()).collect());
        };
        // The config owns the matching rules (path normalising, names shared by two
        // servers); the running folder is the one with that path.
        let found: Vec<usize> = match self.config.find_folder(want) {
            Some(f) => (0..self.folders.len())
                .filter(|&i| self.folders[i].config.path == f.path)
                .collect(),
            None => Vec::new(),
        };
        if found.is_empty() {
            return Err(format!(
                "no folder named or at {want:?} (or the name is used for two servers: give \
                 the path); `filesyncctl status` lists the folders"
            ));
        }
        Ok(found)
    }

    fn status(&self, folder: Option<&str>) -> Response {
        let idx = match self.select(folder) {
            Ok(i) => i,
            Err(m) => return bad(m),
        };
        let folders: Vec<FolderStatus> = idx
            .into_iter()
            .map(|i| self.folders[i].status.borrow().clone())
            .collect();
        Response::Status(Box::new(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            device: self.identity.device.to_string(),
            config: self.config.file.display().to_string(),
            folders,
            server: self.server.as_ref().map(|s| s.status()),
            servers: self.identity.trust.list().unwrap_or_else(|e| {
                tracing::warn!("cannot read the pinned servers: {e:#}");
                Vec::new()
            }),
            config_error: self.config_error.clone(),
            metrics: self.metrics.clone(),
            web: self.web.clone(),
        }))
    }
}

/// Gives each folder of `config` (of `server` only, when given) that does not record its
/// account, as in a config from before accounts were recorded, the one account this
/// device holds a credential for on its server, and writes it into the file. A folder
/// whose server has none or several stays without: its session then registers (none) or
/// says which account to write (several), and never picks one of several.
fn bind_accounts(config: &mut Config, trust: &client::trust::TrustStore, server: Option<&str>) {
    for folder in &mut config.folders {
        if folder.account.is_some() || server.is_some_and(|s| s != folder.server) {
            continue;
        }
        let accounts = match trust.accounts(&folder.server) {
            Ok(accounts) => accounts,
            Err(e) => {
                tracing::warn!(folder = %folder.name, "cannot read this device's credentials: {e:#}");
                continue;
            }
        };
        let [account] = accounts.as_slice() else {
            continue;
        };
        folder.account = Some(account.clone());
        match config::persist_set_account(&config.file, &folder.path, account) {
            Ok(()) => tracing::info!(
                folder = %folder.name,
                account = %account,
                config = %config.file.display(),
                "the folder syncs as the account of this device's credential for its server; recorded in the config"
            ),
            Err(e) => tracing::warn!(
                folder = %folder.name,
                account = %account,
                "the folder syncs as the account of this device's credential for its server, but it could not be recorded in the config: {e}"
            ),
        }
    }
}
