//! A pool of connections to the cluster's database, for the stores whose calls are not
//! async (the accounts and the shares: their callers are on the blocking pool,
//! [`crate::server::Server::off_runtime`]).
//!
//! Each call takes a connection from the pool; one that PostgreSQL closed (a restart, a
//! lost network) is dropped and a new one made at the next call, so a node recovers by
//! itself once the database is back. Until then every call fails with an error naming
//! PostgreSQL and the config key `server.cluster.postgres`.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema;
use super::store::where_db;

/// Connections one node keeps open at most: several sessions authenticate at once, but
/// each call holds one only for a few statements.
const MAX_CONNECTIONS: usize = 16;
/// How long making a connection, or waiting for a free one, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take in all, unless [`Db::call_timeout`] says otherwise: a
/// database behind a silent network would otherwise hold the calling thread (and a
/// device's session) until TCP gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool, where it leads (for messages), the runtime its connections live on, and
/// how long a call may take.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    place: String,
    runtime: Handle,
    call_timeout: Duration,
}

impl Db {
    /// A pool on `config`, after one connection was made and the tables are laid out.
    /// Must run on the tokio runtime that then serves the pool's connections.
    /// `tls` is [`super::pgtls::connector`].
    pub async fn open(config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Result<Db> {
        let db = Db::new(config, tls)?;
        let mut client = db.client().await.with_context(|| db.failed("connect"))?;
        schema::migrate(&mut client)
            .await
            .with_context(|| db.failed("lay out the cluster's tables"))?;
        Ok(db)
    }

    /// A pool on `config` that connects at its first call, for a node that connected
    /// and laid out the tables already ([`super::Store::connect`]). Must be made on the
    /// tokio runtime that then serves the pool's connections.
    pub fn new(mut config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Result<Db> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let place = where_db(&config);
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("cannot set up the pool of PostgreSQL connections")?;
        let runtime = Handle::try_current()
            .context("the PostgreSQL pool must be opened on the tokio runtime")?;
        Ok(Db {
            pool,
            place,
            runtime,
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// The same pool, with calls that give up after `limit`.
    pub fn call_timeout(mut self, limit: Duration) -> Db {
        self.call_timeout = limit;
        self
    }

    /// A connection from the pool, made now if none is free.
    pub async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// Runs `work` to its end from synchronous code, with an error that names what
    /// failed, the database and its config key. Blocks the calling thread: from a
    /// worker of the multi-threaded runtime (which the daemon runs) only after handing
    /// the worker's other tasks to another thread.
    pub fn wait<T>(&self, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        let run = || {
            self.runtime.block_on(async {
                let limit = self.call_timeout;
                tokio::time::timeout(limit, work)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("no answer within {limit:?}")))
            })
        };
        let done = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => run(),
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            // Blocking there would stop the very thread that runs the connections.
            Ok(flavor) => bail!(
                "cannot {what}: the cluster's database is reached from a multi-threaded \
                 runtime only, not {flavor:?}"
            ),
        };
        done.with_context(|| self.failed(what))
    }

    /// What a failed call says.
    pub(super) fn failed(&self, what: &str) -> String {
        format!(
            "PostgreSQL at {} (config key server.cluster.postgres) could not {what}; \
             check that it runs and that this node reaches it: the node connects again \
             at its next call",
            self.place
        )
    }
}
