//! Connecting a node to the cluster's database and bucket.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio_postgres::Client;
use tokio_postgres::config::Host;

use super::chunks::Chunks;
use super::schema;
use crate::config::ClusterSection;

/// How long reaching PostgreSQL may take before start-up gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One node's handles on the shared storage.
pub struct Store {
    pub db: Client,
    pub chunks: Chunks,
}

/// `HOST:PORT` of the database, never its password, for messages.
pub(super) fn where_db(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => format!("{host}:{port}"),
        Some(Host::Unix(dir)) => format!("the socket in {}", dir.display()),
        None => "the default host".to_owned(),
    }
}

/// The connection settings of `server.cluster.postgres`, or an error naming the key.
pub(super) fn postgres_config(cluster: &ClusterSection) -> Result<tokio_postgres::Config> {
    cluster.postgres.0.parse().map_err(|e| {
        anyhow!(
            "config key server.cluster.postgres is not a PostgreSQL connection string \
             ({e}); write e.g. \"postgresql://filesync@db.example.com/filesync\""
        )
    })
}

impl Store {
    /// Connects to the database and lays out its tables, then checks that the bucket
    /// takes and gives back an object. Every error names the config key to look at.
    pub async fn connect(cluster: &ClusterSection) -> Result<Store> {
        let config = postgres_config(cluster)?;
        let tls = super::pgtls::connector(cluster.postgres_ca_file.as_deref())?;
        let place = where_db(&config);
        let (mut db, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls))
            .await
            .map_err(|_| {
                anyhow!(
                    "PostgreSQL at {place} did not answer within {}s (config key \
                     server.cluster.postgres); check that it runs and that this node may \
                     reach it",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| {
                let e = anyhow::Error::from(e);
                let hint = super::pgtls::hint(&e);
                e.context(format!(
                    "cannot connect to PostgreSQL at {place} (config key \
                     server.cluster.postgres); check that it runs, and that the role and \
                     the database exist{hint}"
                ))
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %place, "the connection to PostgreSQL ended: {e}");
            }
        });
        schema::migrate(&mut db)
            .await
            .context("the cluster's database (config key server.cluster.postgres)")?;
        let chunks = Chunks::new(cluster)?;
        chunks.probe(&cluster.node_name).await?;
        Ok(Store { db, chunks })
    }
}
