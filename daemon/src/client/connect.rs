//! Reaching a server as a device: TCP, TLS with the pinned certificate, the frozen
//! handshake, then credentials. [`connect`] is the whole way in and returns the framed
//! stream that wire messages go through; sessions and enrolment both use it.
//!
//! Nothing is sent before the server proved it holds the pinned certificate's key: a
//! failed pin ends the connection inside the TLS handshake.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use filesync_proto::auth::{AuthReply, AuthRequest, Fingerprint, MAX_AUTH_FRAME, Refusal, Secret};
use filesync_proto::wire::{ClientMsg, ServerMsg};
use filesync_proto::{AccountName, DeviceId, FrameCodec, Handshake, HandshakeReply};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

use crate::conn::tls;
use crate::conn::{self, Counted, Counters};

/// The framed wire stream of an authenticated connection.
pub type WireStream = Framed<TlsStream<Counted<TcpStream>>, FrameCodec<ServerMsg, ClientMsg>>;

/// A connection the server let in.
pub struct Authenticated {
    pub framed: WireStream,
    pub account: AccountName,
    pub device: DeviceId,
    /// The new credential, when this connection enrolled the device.
    pub credential: Option<Secret>,
    /// The server's certificate fingerprint.
    pub fingerprint: Fingerprint,
}

/// The server presented a certificate other than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error(
    "server identity changed: {server} presented certificate fingerprint {presented}, but \
     this device expected {pinned} (its pin, or the invite token's); nothing was sent. If \
     the server's key was replaced on purpose, check the new fingerprint with its admin \
     (`filesyncctl status` on the server) and run `filesyncctl trust {server} {presented}`"
)]
pub struct IdentityChanged {
    pub server: String,
    pub pinned: Fingerprint,
    pub presented: Fingerprint,
}

/// The server would not let this device in.
#[derive(Debug, thiserror::Error)]
#[error("server {server} refused this device: {refusal}")]
pub struct Refused {
    pub server: String,
    pub refusal: Refusal,
}

/// Connects to `server` (`HOST:PORT`), accepting only the certificate `pin` (any, when
/// `None`: the caller then pins [`Authenticated::fingerprint`]), and authenticates with
/// `request`. Errors are [`IdentityChanged`] or [`Refused`] when that is what happened.
pub async fn connect(
    server: &str,
    pin: Option<Fingerprint>,
    request: AuthRequest,
    counters: Arc<Counters>,
) -> Result<Authenticated> {
    let tcp = tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| anyhow!("timed out connecting to server {server}"))?
        .with_context(|| {
            format!("cannot connect to server {server}; is filesyncd running there?")
        })?;
    tcp.set_nodelay(true)?;
    let (config, seen) = tls::client_config(pin)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(tls::server_name(), Counted::new(tcp, counters));
    let tls = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => {
            return Err(anyhow!(
                "server {server} did not complete the TLS handshake"
            ));
        }
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let presented = *seen.lock().unwrap_or_else(|e| e.into_inner());
            return Err(match (pin, presented) {
                (Some(pinned), Some(presented)) if pinned != presented => IdentityChanged {
                    server: server.to_string(),
                    pinned,
                    presented,
                }
                .into(),
                _ => anyhow::Error::new(e)
                    .context(format!("TLS handshake with server {server} failed")),
            });
        }
    };
    let presented = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or_else(|| anyhow!("server {server} presented no certificate"))?;
    let mut hs = Framed::new(tls, FrameCodec::<HandshakeReply, Handshake>::new(1024));
    hs.send(Handshake::current()).await?;
    let reply = tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, hs.next())
        .await
        .map_err(|_| anyhow!("server {server} did not answer the handshake"))?
        .ok_or_else(|| anyhow!("server {server} closed the connection during the handshake"))??;
    reply.check().map_err(|e| anyhow!("{e}"))?;
    let mut auth = hs.map_codec(|_| FrameCodec::<AuthReply, AuthRequest>::new(MAX_AUTH_FRAME));
    auth.send(request).await?;
    let reply = tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, auth.next())
        .await
        .map_err(|_| anyhow!("server {server} did not answer the credentials"))?
        .ok_or_else(|| anyhow!("server {server} closed the connection after the credentials"))??;
    match reply {
        AuthReply::Accepted {
            account,
            device,
            credential,
        } => Ok(Authenticated {
            framed: auth.map_codec(|_| {
                FrameCodec::<ServerMsg, ClientMsg>::new(crate::conn::lists::max_frame())
            }),
            account,
            device,
            credential,
            fingerprint: presented,
        }),
        AuthReply::Refused(refusal) => Err(Refused {
            server: server.to_string(),
            refusal,
        }
        .into()),
    }
}
