//! The cluster backend's storage: metadata in PostgreSQL ([`schema`]), content as
//! blocks in an S3-compatible bucket ([`chunks`]), shared by every node.
//!
//! What is built: connecting with errors that name the config key at fault, the tables,
//! the block store, moving an embedded server's data in ([`import`],
//! `filesyncd migrate-to-cluster`) and writing a folder's tree back out of it
//! ([`export`]), the account side: accounts, devices, invites and quotas
//! ([`accounts`]) and share grants ([`shares`]) over a pool of connections ([`pool`]),
//! and serving devices from it ([`serve`]): every node with `backend = "cluster"`
//! serves any device of any account.

#[cfg(unix)]
pub mod accounts;
#[cfg(unix)]
pub mod admin;
#[cfg(unix)]
pub mod chunks;
#[cfg(unix)]
mod embedded;
#[cfg(unix)]
pub mod export;
#[cfg(unix)]
pub mod gc;
#[cfg(unix)]
pub mod import;
#[cfg(unix)]
pub mod pgtls;
#[cfg(unix)]
pub mod pool;
#[cfg(unix)]
pub mod schema;
#[cfg(unix)]
pub mod serve;
#[cfg(unix)]
pub mod shares;
#[cfg(unix)]
mod store;

use std::path::Path;

use anyhow::{Result, bail};

use crate::config::{Backend, ClusterSection, Config, ServerSection};
#[cfg(unix)]
pub use store::Store;

/// The `[server]` table and its `[server.cluster]`, for the admin commands.
fn cluster_of(config: &Config) -> Result<(&ServerSection, &ClusterSection)> {
    match &config.server {
        Some(server) => match &server.backend {
            Backend::Cluster(cluster) => Ok((server, cluster)),
            Backend::Embedded => bail!(
                "{} says server.backend = \"embedded\": write backend = \"cluster\" and a \
                 [server.cluster] table naming the database and the bucket (docs/cluster.md)",
                config.file.display()
            ),
        },
        None => bail!(
            "{} has no [server] table; the cluster commands need one with backend = \"cluster\"",
            config.file.display()
        ),
    }
}

/// `filesyncd migrate-to-cluster`: what was moved, in words.
#[cfg(unix)]
pub async fn migrate_to_cluster(config: &Config) -> Result<String> {
    let (server, cluster) = cluster_of(config)?;
    let device = crate::device_id(&config.daemon.state_dir)?;
    let done = import::import(server, cluster, &device).await?;
    Ok(format!(
        "moved into the cluster: {} accounts, {} devices, {} folders with {} entries, {} \
         versions; {} blocks ({} bytes) stored in the bucket. Start the nodes with this \
         [server] table; devices go on where they were.",
        done.accounts,
        done.devices,
        done.folders,
        done.entries,
        done.versions,
        done.blocks,
        done.bytes
    ))
}

/// `filesyncd export ACCOUNT/FOLDER DIR`: what was written, in words.
#[cfg(unix)]
pub async fn export_folder(config: &Config, folder: &str, dir: &Path) -> Result<String> {
    let (_, cluster) = cluster_of(config)?;
    let store = Store::connect(cluster).await?;
    export::export_into(&store.db, &store.chunks, folder, dir).await
}

/// `filesyncd gc`: what the collection did, in words. `FILESYNC_GC_GRACE_SECS`, a test
/// knob, replaces `gc_grace`.
#[cfg(unix)]
pub async fn collect_garbage(config: &Config) -> Result<String> {
    let (_, cluster) = cluster_of(config)?;
    let grace = std::env::var("FILESYNC_GC_GRACE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(cluster.gc_grace, std::time::Duration::from_secs);
    let mut store = Store::connect(cluster).await?;
    let done = gc::collect(&mut store, grace).await?;
    Ok(format!(
        "garbage collection (grace {}): deleted {} blocks ({} bytes) that no content \
         refers to; kept {} in use; left {} younger than the grace",
        humantime::format_duration(grace),
        done.deleted,
        done.bytes,
        done.kept,
        done.young
    ))
}

#[cfg(not(unix))]
pub async fn collect_garbage(config: &Config) -> Result<String> {
    cluster_of(config)?;
    bail!("the cluster backend runs on Linux nodes only")
}

#[cfg(not(unix))]
pub async fn migrate_to_cluster(config: &Config) -> Result<String> {
    cluster_of(config)?;
    bail!("the cluster backend runs on Linux nodes only")
}

#[cfg(not(unix))]
pub async fn export_folder(config: &Config, _: &str, _: &Path) -> Result<String> {
    cluster_of(config)?;
    bail!("the cluster backend runs on Linux nodes only")
}
