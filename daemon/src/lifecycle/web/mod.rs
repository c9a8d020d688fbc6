//! The web page, on `[daemon] web_listen` (`127.0.0.1:7102` unless the config says
//! otherwise or turns it off): a small axum server with the page's assets compiled in
//! ([`assets`]), a JSON view of what `filesyncctl` shows and the actions it offers
//! ([`api`]), and one server-sent-event stream per open page that pushes the status when
//! it changes and every event as it happens ([`live`]).
//!
//! It adds no sync logic: every answer and every action is a control [`Request`] handed
//! to the supervisor exactly as the control socket does, and events come from the same
//! bus as `filesyncctl events`. Who may use it is in [`session`]. A loopback address is
//! served over plain HTTP; any other only over HTTPS, with the certificate of the
//! daemon's own ([`tls`]). A port that cannot be bound is logged and shown in status;
//! the daemon runs on without the page.
//!
//! [`Request`]: filesync_proto::control::Request

mod api;
mod assets;
mod live;
mod session;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use filesync_proto::control::Endpoint;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http_listener::{self, Limited};
use crate::events::Events;
use crate::supervisor::ControlCmd;
pub use session::Sessions;

/// Connections served at once: a browser opens up to six per host, and each open page
/// holds one for its event stream.
const MAX_CONNECTIONS: usize = 32;
/// How long a connection may stay open; a page's event stream reconnects by itself.
const LIFETIME: Duration = Duration::from_secs(10 * 60);

/// What the handlers share.
#[derive(Clone)]
struct Web {
    supervisor: mpsc::Sender<ControlCmd>,
    events: Events,
    sessions: Arc<Sessions>,
    /// Cancelled at shutdown, so that open event streams end.
    cancel: CancellationToken,
    /// Where each event stream's feeding task is spawned, so shutdown waits for it.
    tracker: TaskTracker,
}

/// A bound web page, ready to [`serve`].
pub struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub sessions: Arc<Sessions>,
}

/// Binds `addr` for the web page; a non-loopback address gets TLS with the key and
/// certificate kept in `state_dir`. A failure does not stop the daemon: it is logged,
/// and the returned [`Endpoint`] carries it into status.
pub async fn bind(addr: SocketAddr, state_dir: &Path) -> (Endpoint, Option<Bound>) {
    let tls = if addr.ip().is_loopback() {
        None
    } else {
        match tls::config(state_dir) {
            Ok(config) => Some(config),
            Err(e) => {
                let error = format!(
                    "cannot serve the web page on {addr} over HTTPS: {e:#}; the daemon runs \
                     on without it (fix the file or use a loopback daemon.web_listen)"
                );
                tracing::warn!("{error}");
                let listen = addr.to_string();
                let error = Some(error);
                return (Endpoint { listen, error }, None);
            }
        }
    };
    let (endpoint, listener) =
        http_listener::bind(addr, "the web page", "it", "daemon.web_listen").await;
    let Some(listener) = listener else {
        return (endpoint, None);
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!(
        "{scheme}://{}",
        url_authority(listener.local_addr().unwrap_or(addr))
    );
    if tls.is_some() {
        tracing::info!(
            listen = %endpoint.listen,
            "serving the web page on {base}, over HTTPS because {addr} is not a loopback \
             address (self-signed certificate; `filesyncctl web` prints a login URL)"
        );
    } else {
        tracing::info!(listen = %endpoint.listen, "serving the web page on {base} (`filesyncctl web` prints a login URL)");
    }
    let sessions = Arc::new(Sessions::new(base));
    let bound = Bound {
        listener,
        tls,
        sessions,
    };
    (endpoint, Some(bound))
}

/// The `HOST:PORT` of the login URL: the address listened on, or for every address
/// (`0.0.0.0`, `[::]`) this machine's host name, which other machines can reach.
fn url_authority(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => format!("localhost:{}", listen.port()),
        host => format!("{host}:{}", listen.port()),
    }
}

/// Serves the page until `cancel`.
pub async fn serve(
    bound: Bound,
    supervisor: mpsc::Sender<ControlCmd>,
    events: Events,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let web = Web {
        supervisor,
        events,
        sessions: bound.sessions,
        cancel: cancel.clone(),
        tracker,
    };
    let data = Router::new()
        .route("/api/status", get(api::status))
        .route("/api/conflicts", get(api::conflicts))
        .route("/api/versions", get(api::versions))
        .route("/api/server", get(api::server))
        .route("/api/live", get(live::stream))
        .route("/api/action", post(api::action))
        .route_layer(from_fn_with_state(web.clone(), api::require_session));
    let app = Router::new()
        .route("/", get(assets::page))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/login", get(api::login))
        .merge(data)
        .with_state(web);
    let listener = Limited::new(bound.listener, MAX_CONNECTIONS, LIFETIME);
    let served = match bound.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
        Some(config) => {
            axum::serve(tls::Listener::new(listener, config), app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
    };
    if let Err(e) = served {
        tracing::warn!("the web page stopped: {e}");
    }
}
