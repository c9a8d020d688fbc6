//! The server role: a TCP listener, one session per device connection, and one
//! sequencer per folder. Folders live at `DATA_DIR/ACCOUNT/FOLDER/` as real directory
//! trees; their indexes and kept versions live apart, in
//! `DATA_DIR/.filesync/index/ACCOUNT/FOLDER.db` and `DATA_DIR/.filesync/versions/ACCOUNT/FOLDER/`,
//! where no account or folder name can reach (names may not start with a dot).
//!
//! Every connection is TLS ([`crate::conn::tls`]); after the handshake the device proves who it
//! is ([`crate::server::accounts`]) and from then on reaches only folders of its own account: a
//! folder name is always resolved within the authenticated account, except
//! `OWNER/FOLDER`, which reaches another account's folder only through a grant
//! ([`shares`]).
//!
//! Folders are opened on demand (a device's Hello, or the hourly visit that scans
//! closed ones) and closed when nobody uses them, and every push is charged to its
//! account's quota and the free-space reserve first ([`quota`]).

pub mod accounts;
mod backend;
pub mod cluster;
mod decide;
#[cfg(unix)]
mod follow;
mod history;
mod inline;
mod listen;
mod lock;
mod push;
pub mod quota;
pub(crate) mod sequencer;
mod session;
pub mod shares;
pub(crate) mod store;
pub(crate) mod stream;
pub mod versions;
mod visits;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use filesync_proto::auth::InviteToken;
use filesync_proto::control::{
    AccountInfo, ConnectedDevice, FolderProblem, QuotaChange, ServerFolderStatus, ServerStatus,
};
use filesync_proto::wire::Hello;
use filesync_proto::{AccountName, DeviceId, FolderName};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::lock::lock;
use crate::config::{Registration as RegistrationMode, ServerSection};
use crate::conn::Counters;
use crate::conn::tls::ServerIdentity;
use crate::server::accounts::{AccountStore, Cancelled, Maker, OPEN_ACCOUNT, QuotaSetting};
pub use listen::serve;
use quota::Quotas;
use sequencer::ServerFolderHandle;

/// Closed folders the hourly visit opens at once (each for one scan).
const VISITS_AT_ONCE: usize = 4;
/// How long the visitor waits for a visited folder to close before it moves on.
const VISIT_WAIT: Duration = Duration::from_secs(300);
/// How long a folder that no device uses stays open: its sequencer, index and
/// watcher are then closed, until a device's Hello or the next hourly visit.
const FOLDER_IDLE: Duration = Duration::from_secs(600);
/// `FILESYNC_FOLDER_IDLE_SECS=N`, a test and operations knob, replaces [`FOLDER_IDLE`].
pub const FOLDER_IDLE_ENV: &str = "FILESYNC_FOLDER_IDLE_SECS";

fn idle_after() -> Duration {
    std::env::var(FOLDER_IDLE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(FOLDER_IDLE, Duration::from_secs)
}

pub struct Server {
    pub device: DeviceId,
    data_dir: PathBuf,
    listen: String,
    /// What invite tokens carry: `server.public_address`, else `listen`.
    public_address: String,
    keep_versions: std::time::Duration,
    max_connections_per_address: usize,
    identity: ServerIdentity,
    /// Used on the blocking pool only ([`Server::off_runtime`]): its calls wait on a
    /// lock and on fsync, or on the cluster's database.
    accounts: Arc<dyn AccountStore>,
    /// Folders shared across accounts, and the tokens that close a member's
    /// connections when its grant is taken back.
    shares: shares::Shares,
    registration: RegistrationMode,
    folders: Mutex<HashMap<(AccountName, FolderName), ServerFolderHandle>>,
    /// What each account stores and may store, charged before a push is staged.
    quotas: Arc<Quotas>,
    /// `server.max_folders_per_account`.
    max_folders_per_account: usize,
    /// Folders on disk that could not be opened, with why; shown in status until one
    /// opens.
    folder_problems: Mutex<BTreeMap<(AccountName, FolderName), FolderProblem>>,
    /// The last status of each folder closed for being idle, shown in status while it
    /// is closed.
    closed: Mutex<BTreeMap<(AccountName, FolderName), ServerFolderStatus>>,
    /// How long a folder nobody uses stays open.
    idle_after: Duration,
    /// Folders opened since the server started (see [`sequencer::Lifetime::first_open`]).
    opened: Mutex<std::collections::HashSet<(AccountName, FolderName)>>,
    devices: Mutex<HashMap<u64, ConnectedDevice>>,
    /// Set when the folders are served from the cluster (`server.backend = "cluster"`).
    #[cfg(unix)]
    cluster: Option<backend::ClusterNode>,
    /// One token per device that connected: revoking the device cancels it, which
    /// closes every connection of that device at once.
    device_cancels: Mutex<HashMap<DeviceId, CancellationToken>>,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Removes a device from the connected list when its session ends.
pub struct Registration {
    server: Arc<Server>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.server.devices).remove(&self.id);
    }
}

impl Server {
    /// Binds the listener (so that a bad address fails start-up) and opens existing folders.
    pub async fn bind(
        cfg: &ServerSection,
        device: DeviceId,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(Arc<Server>, TcpListener)> {
        let listener = TcpListener::bind(&cfg.listen).await.with_context(|| {
            format!("cannot listen on {} (config key server.listen)", cfg.listen)
        })?;
        let meta = cfg.data_dir.join(".filesync");
        crate::fs::private::create_dir(&meta).with_context(|| {
            format!(
                "cannot create data directory {} (config key server.data_dir)",
                cfg.data_dir.display()
            )
        })?;
        let backend::Opened {
            identity,
            device,
            accounts,
            shares,
            quotas,
            node,
            admin,
        } = backend::open(cfg, &meta, device, &tracker, &cancel).await?;
        tracing::info!(fingerprint = %identity.fingerprint, "server certificate");
        let bound = listener
            .local_addr()
            .map_or(cfg.listen.clone(), |a| a.to_string());
        let public_address = match &cfg.public_address {
            Some(address) => address.clone(),
            None => {
                if listener.local_addr().is_ok_and(|a| a.ip().is_unspecified()) {
                    tracing::warn!(
                        "server.listen is {bound}, every address, and server.public_address \
                         is not set: invite tokens carry {bound}, which devices on other \
                         machines cannot reach; set server.public_address to the HOST:PORT \
                         they reach this server at"
                    );
                }
                bound.clone()
            }
        };
        let server = Arc::new(Server {
            device,
            data_dir: cfg.data_dir.clone(),
            listen: bound,
            public_address,
            keep_versions: std::time::Duration::from_secs(u64::from(cfg.keep_versions) * 86_400),
            max_connections_per_address: cfg.max_connections_per_address as usize,
            identity,
            accounts,
            shares,
            registration: cfg.registration,
            folders: Mutex::new(HashMap::new()),
            quotas,
            max_folders_per_account: cfg.max_folders_per_account as usize,
            folder_problems: Mutex::default(),
            closed: Mutex::default(),
            idle_after: idle_after(),
            opened: Mutex::default(),
            devices: Mutex::new(HashMap::new()),
            #[cfg(unix)]
            cluster: node.clone(),
            device_cancels: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
            tracker,
            cancel,
        });
        std::fs::read_dir(&cfg.data_dir).with_context(|| {
            format!(
                "cannot read data directory {} (config key server.data_dir)",
                cfg.data_dir.display()
            )
        })?;
        // A cluster folder has no tree in which anything could change meanwhile.
        if node.is_none() {
            server.tracker.spawn(server.clone().visits());
        }
        #[cfg(unix)]
        if let Some(admin) = admin {
            server.tracker.spawn(server.clone().follow_admin(admin));
        }
        #[cfg(not(unix))]
        let _ = admin;
        Ok((server, listener))
    }

    /// The folder's handle as a device's session opens it: from the cluster, or the
    /// embedded folder, opened (and scanned) if it is closed.
    async fn open(
        self: &Arc<Self>,
        account: &AccountName,
        name: &FolderName,
    ) -> Result<ServerFolderHandle> {
        // `OWNER/FOLDER` is resolved to the owner's account first ([`Server::resolve`]);
        // here it would become a directory inside another folder.
        if name.owner().is_some() {
            bail!("folder name {name} is not a name within account {account}");
        }
        #[cfg(unix)]
        if let Some(node) = &self.cluster {
            let key = (account.clone(), name.clone());
            if let Some(h) = lock(&self.folders).get(&key) {
                return Ok(h.clone());
            }
            let folder = node
                .open(account, name, self.max_folders_per_account)
                .await?;
            let handle = ServerFolderHandle::cluster(folder, self.quotas.clone());
            return Ok(lock(&self.folders).entry(key).or_insert(handle).clone());
        }
        self.open_folder(account, name, false)
    }

    /// The folder's handle, starting its sequencer if the folder is closed: for a
    /// `visit`, only to scan it ([`sequencer::Lifetime::visit`]).
    fn open_folder(
        self: &Arc<Self>,
        account: &AccountName,
        name: &FolderName,
        visit: bool,
    ) -> Result<ServerFolderHandle> {
        let mut folders = lock(&self.folders);
        if let Some(h) = folders.get(&(account.clone(), name.clone())) {
            return Ok(h.clone());
        }
        let root = self.data_dir.join(account.as_str()).join(name.as_str());
        if !root.is_dir() {
            self.check_folder_limit(account, name)?;
        }
        let meta = self.data_dir.join(".filesync");
        let place = sequencer::FolderPlace {
            root: self.data_dir.join(account.as_str()).join(name.as_str()),
            index_file: meta
                .join("index")
                .join(account.as_str())
                .join(format!("{name}.db")),
            versions_dir: meta
                .join("versions")
                .join(account.as_str())
                .join(name.as_str()),
            keep_versions: self.keep_versions,
            quotas: self.quotas.clone(),
        };
        let key = (account.clone(), name.clone());
        let server = Arc::downgrade(self);
        let released = key.clone();
        let lifetime = sequencer::Lifetime {
            release: Box::new(move || server.upgrade().is_none_or(|s| s.release(&released))),
            idle_after: self.idle_after,
            visit,
            first_open: !lock(&self.opened).contains(&key),
        };
        let started = sequencer::start(
            account.clone(),
            name.clone(),
            place,
            self.device.clone(),
            &self.tracker,
            self.cancel.child_token(),
            lifetime,
        );
        let handle = match started {
            Ok(handle) => {
                lock(&self.opened).insert(key.clone());
                lock(&self.folder_problems).remove(&key);
                lock(&self.closed).remove(&key);
                handle
            }
            Err(e) => {
                let problem = FolderProblem {
                    account: account.to_string(),
                    name: name.to_string(),
                    path: root.display().to_string(),
                    error: format!("{e:#}"),
                };
                lock(&self.folder_problems).insert(key, problem);
                return Err(e);
            }
        };
        folders.insert((account.clone(), name.clone()), handle.clone());
        if visit {
            tracing::debug!(account = %account, folder = %name, "visiting folder");
        } else {
            tracing::info!(account = %account, folder = %name, "serving folder");
        }
        Ok(handle)
    }

    /// Lets go of the folder `key` if nobody but this map holds it (no session, no
    /// stream): true when it is closed now, or was already.
    fn release(&self, key: &(AccountName, FolderName)) -> bool {
        let mut folders = lock(&self.folders);
        match folders.get(key) {
            Some(h) if Arc::strong_count(&h.users) > 1 => false,
            Some(_) => {
                if let Some(h) = folders.remove(key) {
                    lock(&self.closed).insert(key.clone(), h.status.borrow().clone());
                }
                true
            }
            None => true,
        }
    }

    /// Refuses a new folder for `account` when it has `server.max_folders_per_account`
    /// already: each costs the server an index, a sequencer and a watcher.
    fn check_folder_limit(&self, account: &AccountName, name: &FolderName) -> Result<()> {
        let have = self.folders_of(account).len();
        if have >= self.max_folders_per_account {
            anyhow::bail!(
                "account {account} already has {have} folders on this server, the most its \
                 config key server.max_folders_per_account allows, so folder {name} is not \
                 created; remove a folder of the account on the server, or ask the server's \
                 admin to raise the limit"
            );
        }
        Ok(())
    }

    /// Sets `account`'s quota; `Ok(false)` when there is no such account.
    pub fn set_quota(&self, account: &AccountName, change: QuotaChange) -> Result<bool> {
        let setting = match change {
            QuotaChange::Bytes(n) => Some(QuotaSetting::Bytes(n)),
            QuotaChange::Unlimited => Some(QuotaSetting::Unlimited),
            QuotaChange::Default => None,
        };
        if !self.accounts.set_quota(account, setting)? {
            return Ok(false);
        }
        self.quotas.set(account, setting);
        tracing::info!(account = %account, quota = ?setting, "quota set");
        Ok(true)
    }

    /// `account`'s usage and quota now.
    pub fn quota_of(&self, account: &AccountName) -> filesync_proto::control::AccountUsage {
        let mut usage = self.quotas.usage([account.clone()]);
        usage.remove(0)
    }

    /// `device`'s token: cancelled when it is revoked (or the server stops).
    fn device_token(&self, device: &DeviceId) -> CancellationToken {
        lock(&self.device_cancels)
            .entry(device.clone())
            .or_insert_with(|| self.cancel.child_token())
            .clone()
    }

    /// A token for one connection of `device`, cancelled with the device's.
    fn device_cancel(&self, device: &DeviceId) -> CancellationToken {
        self.device_token(device).child_token()
    }

    /// Runs `work` on the blocking pool and waits for it: account-store calls take a
    /// lock and fsync, which must not hold up the runtime's worker threads that every
    /// session needs.
    pub async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Server) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let server = self.clone();
        tokio::task::spawn_blocking(move || work(&server))
            .await
            .context("the account store's worker thread failed")?
    }

    /// A one-time invite token for `account` (created if new), made by `maker`, as
    /// text. The admin may not invite into the account open registration uses.
    pub fn invite(
        &self,
        account: &AccountName,
        ttl: std::time::Duration,
        maker: &Maker,
    ) -> Result<String> {
        if *maker == Maker::Admin && account.as_str() == OPEN_ACCOUNT {
            anyhow::bail!(
                "the account name {OPEN_ACCOUNT:?} is reserved for devices that enrol without \
                 a token (server.registration = \"open\"); choose another account name"
            );
        }
        let secret = self.accounts.invite(account, ttl, maker)?;
        let made_by = match maker {
            Maker::Admin => "admin".to_owned(),
            Maker::Device(d) => format!("device {d}"),
        };
        tracing::info!(
            account = %account,
            valid_secs = ttl.as_secs(),
            made_by,
            "invite token made"
        );
        Ok(InviteToken {
            server: self.public_address.clone(),
            fingerprint: self.identity.fingerprint,
            secret,
        }
        .to_text())
    }

    /// Every account and its devices, with how many connections each has open now.
    pub fn accounts(&self) -> Result<Vec<AccountInfo>> {
        let mut accounts = self.accounts.accounts()?;
        let connected = lock(&self.devices);
        for d in accounts.iter_mut().flat_map(|a| a.devices.iter_mut()) {
            d.connections = connected.values().filter(|c| c.device == d.device).count() as u32;
        }
        for a in &mut accounts {
            if let Ok(name) = AccountName::new(&a.account) {
                let usage = self.quota_of(&name);
                (a.used, a.quota) = (usage.used, usage.quota);
            }
        }
        Ok(accounts)
    }

    /// Refuses `device` from now on, closes its open connections and cancels the
    /// pending invite tokens it made: how many, or `None` if there is no such device.
    pub fn revoke(&self, device: &DeviceId) -> Result<Option<usize>> {
        let Some(tokens) = self.accounts.revoke(device)? else {
            return Ok(None);
        };
        // The cancelled token stays: a connection admitted just before the revocation
        // gets an already cancelled child and ends at once.
        self.device_token(device).cancel();
        tracing::warn!(
            device = %device,
            tokens,
            "device revoked; its connections are closed and its invite tokens cancelled"
        );
        Ok(Some(tokens))
    }

    /// The invite tokens that can still enrol a device.
    pub fn invites(&self) -> Result<Vec<filesync_proto::control::InviteInfo>> {
        self.accounts.invites()
    }

    /// Cancels the pending invite token `id`.
    pub fn cancel_invite(&self, id: &str) -> Result<Cancelled> {
        let cancelled = self.accounts.cancel_invite(id)?;
        if let Cancelled::Done(account) = &cancelled {
            tracing::warn!(id, account = %account, "invite token cancelled");
        }
        Ok(cancelled)
    }

    /// Lists the device as connected to `folder` as a device of `account` (the folder's
    /// owner, or a member it is shared with, shown as `OWNER/FOLDER`).
    fn register_device(
        self: &Arc<Self>,
        hello: &Hello,
        account: &AccountName,
        folder: &ServerFolderHandle,
        peer: SocketAddr,
    ) -> Registration {
        let id = rand::random();
        let device = ConnectedDevice {
            device: hello.device.to_string(),
            name: hello.device_name.clone(),
            account: account.to_string(),
            folder: if *account == folder.account {
                folder.name.to_string()
            } else {
                format!("{}/{}", folder.account, folder.name)
            },
            address: peer.to_string(),
        };
        lock(&self.devices).insert(id, device);
        Registration {
            server: self.clone(),
            id,
        }
    }

    pub fn status(&self) -> ServerStatus {
        let mut folders: Vec<_> = lock(&self.folders)
            .values()
            .map(|h| h.status.borrow().clone())
            .collect();
        folders.extend(lock(&self.closed).values().cloned());
        folders.sort_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
        let mut devices: Vec<_> = lock(&self.devices).values().cloned().collect();
        devices.sort_by(|a, b| {
            (&a.account, &a.folder, &a.device).cmp(&(&b.account, &b.folder, &b.device))
        });
        ServerStatus {
            usage: self.quotas.known_usage(),
            folder_problems: lock(&self.folder_problems).values().cloned().collect(),
            free_bytes: self.quotas.free_bytes(),
            min_free_space: self.quotas.min_free_space(),
            listen: self.listen.clone(),
            public_address: self.public_address.clone(),
            data_dir: self.data_dir.display().to_string(),
            fingerprint: self.identity.fingerprint.to_hex(),
            registration: match self.registration {
                RegistrationMode::Invite => "invite",
                RegistrationMode::Open => "open",
            }
            .into(),
            folders,
            devices,
        }
    }
}

impl Server {
    /// `filesyncctl server export`: writes a cluster folder (`ACCOUNT/FOLDER`) into `dir`;
    /// what was written, in words.
    pub async fn export(&self, folder: &str, dir: &std::path::Path) -> Result<String> {
        #[cfg(unix)]
        if let Some(node) = &self.cluster {
            return node.export(folder, dir).await;
        }
        bail!(
            "this server keeps every folder as a browsable tree in {} (config key \
             server.data_dir): copy {folder} from there instead of exporting it into {}; \
             `server export` is for cluster nodes, which keep none",
            self.data_dir.display(),
            dir.display()
        )
    }
}
