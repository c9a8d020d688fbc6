//! What another node of the cluster changed that this node must act on at once
//! ([`crate::server::cluster::admin`]): a revoked device's connections close here too,
//! a quota applies here too, a share taken back or changed closes the member's
//! connections here too.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Server;
use super::cluster::admin::AdminEvent;

impl Server {
    /// Acts on every event until the node stops.
    pub(super) async fn follow_admin(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<AdminEvent>,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                AdminEvent::Revoked { device } => {
                    tracing::info!(device = %device, "device revoked on the cluster; its connections here close");
                    self.device_token(&device).cancel();
                }
                AdminEvent::Quota { account } => {
                    let read = self.off_runtime(|s| s.accounts.quotas()).await;
                    match read {
                        Ok(quotas) => self.quotas.set(&account, quotas.get(&account).copied()),
                        Err(e) => {
                            tracing::warn!(account = %account, "cannot read a quota set on another node: {e:#}")
                        }
                    }
                }
                AdminEvent::Share {
                    owner,
                    folder,
                    member,
                } => self.shares.withdraw(&(owner, folder, member)),
            }
        }
    }
}
