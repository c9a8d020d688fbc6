//! `/metrics` for Prometheus, on `[daemon] metrics_listen` (off by default): a small
//! axum server whose one route renders the OpenMetrics text format with
//! prometheus-client. Each scrape asks the supervisor for the status, as `filesyncctl
//! status` does, and turns it into gauges and counters ([`snapshot`]); the few figures
//! that nothing else holds are counted where they happen ([`recorded`]). A port that
//! cannot be bound is logged and shown in status; the daemon runs on without it. Its
//! connections are bounded in number and lifetime ([`http_listener`]).
//!
//! It sits in `lifecycle` because it is about the process, not about sync, and
//! `daemon/src` has no room for another top-level entry (`scripts/layout-check.py`).

pub mod recorded;
mod snapshot;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use filesync_proto::control::{Endpoint, Request, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http_listener::{self, Limited};
use crate::supervisor::ControlCmd;
pub use snapshot::Snapshot;

/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may stay open. A scrape takes milliseconds; a scraper that
/// keeps its connection between scrapes sees it closed while idle and opens another.
const LIFETIME: Duration = Duration::from_secs(60);

/// The media type of the OpenMetrics text format, which Prometheus asks for and reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` for `/metrics`. A failure does not stop the daemon: it is logged, and
/// the returned [`Endpoint`] carries it into status.
pub async fn bind(addr: SocketAddr) -> (Endpoint, Option<TcpListener>) {
    let bound = http_listener::bind(addr, "/metrics", "metrics", "daemon.metrics_listen").await;
    if let (Some(_), endpoint) = (&bound.1, &bound.0) {
        let listen = &endpoint.listen;
        tracing::info!(%listen, "serving Prometheus metrics on http://{listen}/metrics");
    }
    bound
}

/// Serves `/metrics` on `listener` until `cancel`, each scrape answered from what the
/// supervisor says at that moment.
pub async fn serve(
    listener: TcpListener,
    supervisor: mpsc::Sender<ControlCmd>,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(supervisor);
    let listener = Limited::new(listener, MAX_CONNECTIONS, LIFETIME);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!("the metrics endpoint stopped: {e}");
    }
}

async fn scrape(State(supervisor): State<mpsc::Sender<ControlCmd>>) -> HttpResponse {
    let status = match ControlCmd::ask(&supervisor, Request::Status { folder: None }).await {
        Response::Status(status) => *status,
        other => return unavailable(format!("no status from the daemon: {other:?}")),
    };
    let accounts = match status.server {
        None => Vec::new(),
        Some(_) => match ControlCmd::ask(&supervisor, Request::ServerDevices).await {
            Response::Accounts(accounts) => accounts,
            other => return unavailable(format!("no device list from the server: {other:?}")),
        },
    };
    let now = crate::events::unix_secs();
    match render(Snapshot {
        status,
        accounts,
        now,
    }) {
        Ok(text) => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => unavailable(format!("cannot write the metrics: {e}")),
    }
}

fn unavailable(why: String) -> HttpResponse {
    tracing::warn!("metrics scrape failed: {why}");
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

/// The whole exposition: the recorded families, then the snapshot's, then `# EOF`.
pub fn render(snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    recorded::register(&mut registry, snapshot.status.server.is_some());
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}
