//! What a server role serves from: the embedded stores under `DATA_DIR/.filesync`, or
//! the cluster's database and bucket ([`super::cluster::serve`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
#[cfg(not(unix))]
use anyhow::bail;
use filesync_proto::DeviceId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::accounts::{AccountStore, Accounts};
#[cfg(unix)]
use super::cluster;
use super::quota::Quotas;
use super::shares::Shares;
use crate::config::{Backend, ServerSection};
use crate::conn::tls::ServerIdentity;

/// This node's handles on the cluster, when it serves from one (Linux only).
#[cfg(unix)]
pub(super) type ClusterNode = Arc<cluster::serve::Node>;
#[cfg(not(unix))]
pub(super) type ClusterNode = std::convert::Infallible;
/// What other nodes changed ([`cluster::admin`]).
#[cfg(unix)]
pub(super) type AdminEvents = tokio::sync::mpsc::UnboundedReceiver<cluster::admin::AdminEvent>;
#[cfg(not(unix))]
pub(super) type AdminEvents = std::convert::Infallible;

/// The stores and identity a server opened.
pub(super) struct Opened {
    pub identity: ServerIdentity,
    /// The server's device id: this daemon's, or the cluster's.
    pub device: DeviceId,
    pub accounts: Arc<dyn AccountStore>,
    pub shares: Shares,
    pub quotas: Arc<Quotas>,
    pub node: Option<ClusterNode>,
    pub admin: Option<AdminEvents>,
}

/// Opens what `cfg.backend` names; `meta` is `DATA_DIR/.filesync`.
pub(super) async fn open(
    cfg: &ServerSection,
    meta: &Path,
    device: DeviceId,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<Opened> {
    match &cfg.backend {
        Backend::Embedded => {
            let accounts: Arc<dyn AccountStore> =
                Arc::new(Accounts::open(&meta.join("accounts.db"))?);
            let shares = Shares::open(&meta.join("accounts.db"), &cfg.data_dir)?;
            let quotas = Arc::new(Quotas::new(cfg, accounts.quotas()?));
            Ok(Opened {
                identity: ServerIdentity::load_or_create(&meta.join("tls"))?,
                device,
                accounts,
                shares,
                quotas,
                node: None,
                admin: None,
            })
        }
        #[cfg(unix)]
        Backend::Cluster(cluster) => {
            let started =
                cluster::serve::Node::start(cfg, cluster, &device, tracker, cancel.clone()).await?;
            let node = started.node;
            let table = cluster::shares::PgShares::new(node.pool());
            Ok(Opened {
                identity: started.identity,
                device: node.server_device.clone(),
                accounts: started.accounts,
                shares: Shares::new(Box::new(table)),
                quotas: node.quotas.clone(),
                node: Some(node),
                admin: Some(started.admin),
            })
        }
        #[cfg(not(unix))]
        Backend::Cluster(_) => {
            let _ = (tracker, cancel);
            bail!("server.backend = \"cluster\": the cluster backend runs on Linux nodes only")
        }
    }
}
