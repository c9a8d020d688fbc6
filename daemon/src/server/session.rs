//! One device's connection to the server: TLS, handshake, credentials, hello, then
//! three flows at once —
//! the index stream (every committed version the device has not seen, then each new one
//! as it is committed, [`super::stream`]), its pushes (staged and handed to the
//! sequencer by [`super::push`]), and block requests both ways.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::auth::{AuthReply, AuthRequest, MAX_AUTH_FRAME};
use filesync_proto::wire::{
    BlockRequest, Change, ClientMsg, ErrorKind, Hello, INLINE_BUDGET, MAX_BATCH, PushOutcome,
    ServerMsg, Welcome, WireError,
};
use filesync_proto::{FrameCodec, Handshake, HandshakeReply};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::Server;
use super::sequencer::{Answer, ServerFolderHandle};
use super::store::FolderReader;
use crate::conn::{self, Counted, Link};
use crate::server::accounts::{Admitted, Maker};

/// Serves one connection; `unauthenticated` is its place in the server's budget of
/// connections that have not authenticated yet, given back once it has.
pub async fn serve(
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    unauthenticated: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let stream = Counted::new(tcp, server.counters.clone());
    match run(&server, stream, peer, unauthenticated).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(e) => tracing::info!(%peer, "connection closed: {e:#}"),
    }
}

/// TLS, the frozen handshake, then the device's credentials: the device and account
/// this connection acts for, and the framed stream for the wire messages.
async fn admit(
    server: &Arc<Server>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<(
    Framed<TlsStream<Counted<TcpStream>>, FrameCodec<ClientMsg, ServerMsg>>,
    Admitted,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server.identity.config.clone());
    let tls = by(deadline, "TLS handshake", acceptor.accept(stream))
        .await?
        .context("TLS handshake failed (a client without TLS, or not a filesync client)")?;
    let mut hs = Framed::new(tls, FrameCodec::<Handshake, HandshakeReply>::new(1024));
    let hello = by(deadline, "handshake", hs.next())
        .await?
        .ok_or_else(|| anyhow!("closed before the handshake"))?
        .context("bad handshake")?;
    if let Err(reason) = hello.check() {
        let _ = hs.send(HandshakeReply::refuse(reason.clone())).await;
        bail!("refused: {reason}");
    }
    hs.send(HandshakeReply::accept()).await?;
    let mut auth = hs.map_codec(|_| FrameCodec::<AuthRequest, AuthReply>::new(MAX_AUTH_FRAME));
    let request = by(deadline, "credentials", auth.next())
        .await?
        .ok_or_else(|| anyhow!("closed before sending credentials"))?
        .context("bad credentials message")?;
    let open = server.registration == crate::config::Registration::Open;
    let decided = server
        .off_runtime(move |s| s.accounts.authenticate(&request, open, peer.ip()))
        .await?;
    let admitted = match decided {
        Ok(a) => a,
        Err(refusal) => {
            let _ = auth.send(AuthReply::Refused(refusal)).await;
            bail!("device refused: {refusal:?}");
        }
    };
    auth.send(AuthReply::Accepted {
        account: admitted.account.clone(),
        device: admitted.device.clone(),
        credential: admitted.credential.clone(),
    })
    .await?;
    let framed =
        auth.map_codec(|_| FrameCodec::<ClientMsg, ServerMsg>::new(conn::lists::max_frame()));
    Ok((framed, admitted))
}

/// `step`'s result, or an error naming `what` did not come by `deadline` (which is
/// [`conn::HANDSHAKE_TIMEOUT`] after the connection was accepted).
async fn by<T>(
    deadline: tokio::time::Instant,
    what: &str,
    step: impl Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| anyhow!("no {what} within {}s", conn::HANDSHAKE_TIMEOUT.as_secs()))
}

async fn run(
    server: &Arc<Server>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    unauthenticated: OwnedSemaphorePermit,
) -> Result<()> {
    // One deadline for everything before Hello, however slowly its bytes arrive.
    let deadline = tokio::time::Instant::now() + conn::HANDSHAKE_TIMEOUT;
    let (mut framed, admitted) = admit(server, stream, peer, deadline).await?;
    drop(unauthenticated);
    // Cancelled at shutdown, and when the device is revoked (already, if that happened
    // since it was admitted).
    let conn_cancel = server.device_cancel(&admitted.device);
    if conn_cancel.is_cancelled() {
        bail!("device {} was revoked", admitted.device);
    }
    let mut hello: Hello = match tokio::time::timeout_at(deadline, framed.next()).await {
        Ok(Some(Ok(ClientMsg::Hello(h)))) => h,
        Ok(Some(Ok(ClientMsg::CreateInvite))) => {
            let (account, maker) = (
                admitted.account.clone(),
                Maker::Device(admitted.device.clone()),
            );
            // Revoked since this connection was admitted: no token. (The store checks
            // again under its lock, against a revocation in between.)
            let answer = if conn_cancel.is_cancelled() {
                Err(format!("device {} was revoked", admitted.device))
            } else {
                server
                    .off_runtime(move |s| {
                        s.invite(
                            &account,
                            crate::server::accounts::DEFAULT_INVITE_TTL,
                            &maker,
                        )
                    })
                    .await
                    .map_err(|e| format!("{e:#}"))
            };
            framed.send(ServerMsg::Invite(answer)).await?;
            return Ok(());
        }
        Ok(Some(Ok(ClientMsg::Sharing(request)))) => {
            let account = admitted.account.clone();
            let answer = server
                .off_runtime(move |s| Ok(s.sharing(&account, request)))
                .await
                .unwrap_or_else(|e| Err(format!("{e:#}")));
            framed.send(ServerMsg::Sharing(answer)).await?;
            return Ok(());
        }
        Ok(Some(Ok(_))) => {
            let _ = framed
                .send(error(
                    ErrorKind::Protocol,
                    "the first message must be Hello",
                ))
                .await;
            bail!("first message was not Hello");
        }
        Ok(Some(Err(e))) => return Err(e).context("bad hello"),
        Ok(None) => bail!("closed before hello"),
        Err(_) => bail!(
            "no hello within {}s of connecting",
            conn::HANDSHAKE_TIMEOUT.as_secs()
        ),
    };
    if let Err(why) = filesync_proto::names::check_device_name(&hello.device_name) {
        let _ = framed.send(error(ErrorKind::Protocol, &why)).await;
        bail!(
            "refused the hello of device {} (name {:?}): {why}",
            admitted.device,
            hello.device_name
        );
    }
    // The device is who it proved to be, whatever its hello says.
    hello.device = admitted.device.clone();
    // A device that followed another history (epoch), or this one further than it goes,
    // gets the whole index.
    // `OWNER/FOLDER` reaches another account's folder only through a grant.
    let (account, folder) = (admitted.account.clone(), hello.folder.clone());
    let resolved = server
        .off_runtime(move |s| Ok(s.resolve(&account, &folder)))
        .await
        .unwrap_or_else(|e| Err(format!("{e:#}")));
    let access = match resolved {
        Ok(access) => access,
        Err(why) => {
            let _ = framed.send(error(ErrorKind::Denied, &why)).await;
            bail!("refused device {}: {why}", admitted.device);
        }
    };
    let placed = async {
        let folder = server.open(&access.owner, &access.folder).await?;
        let joined = folder.join(&hello).await?;
        anyhow::Ok((folder, joined))
    };
    let (folder, joined) = match placed.await {
        Ok(placed) => placed,
        Err(e) => {
            let _ = framed
                .send(error(
                    ErrorKind::Internal,
                    &format!("cannot open folder {}: {e:#}", hello.folder),
                ))
                .await;
            return Err(e);
        }
    };
    let since = joined.since;
    framed
        .send(ServerMsg::Welcome(Welcome {
            server: server.device.clone(),
            epoch: joined.epoch,
            current_seq: joined.current,
            read_only: access.read_only.is_some(),
        }))
        .await?;
    tracing::info!(%peer, device = %hello.device, folder = %hello.folder, since, "device connected");
    let _registration = server.register_device(&hello, &admitted.account, &folder, peer);

    let (sink, stream) = framed.split();
    let store = FolderReader::open(&folder.store)?;
    let served = store.clone();
    let reader: conn::Reader = Arc::new(move |request| served.serve_block(request));
    let mut link = Link::<ClientMsg, ServerMsg>::new(
        sink,
        stream,
        "device".into(),
        conn_cancel.clone(),
        reader,
        None,
    );
    let out_tx = link.sender();
    if let Some(withdrawn) = access.withdrawn.clone() {
        tokio::spawn(close_when_withdrawn(
            withdrawn,
            hello.folder.clone(),
            out_tx.clone(),
            conn_cancel.clone(),
        ));
    }
    let flow = |what: &str| {
        format!(
            "{what} of device {} in folder {}",
            hello.device, hello.folder
        )
    };
    let index_task = tokio::spawn(end_on_error(
        flow("index stream"),
        super::stream::run(
            folder.clone(),
            hello.device.clone(),
            since,
            out_tx.clone(),
            conn_cancel.clone(),
        ),
        conn_cancel.clone(),
    ));
    let (push_tx, push_rx) = mpsc::channel(4);
    let push_task = tokio::spawn(end_on_error(
        flow("pushes"),
        super::push::process_pushes(
            folder.clone(),
            hello.clone(),
            push_rx,
            out_tx.clone(),
            link.pending(),
        ),
        conn_cancel.clone(),
    ));
    let caller = Caller {
        device: hello.device.clone(),
        read_only: access.read_only.clone(),
        store,
    };
    let result = read_loop(&folder, &caller, &mut link, &out_tx, &push_tx).await;
    conn_cancel.cancel();
    index_task.abort();
    push_task.abort();
    if access.withdrawn.is_some_and(|w| w.is_cancelled()) {
        // Let the writer send why the connection ends; it stops once every sender is gone.
        drop(out_tx);
        link.flush(WITHDRAWN_FLUSH).await;
    } else {
        drop(link);
    }
    tracing::info!(%peer, device = %hello.device, folder = %hello.folder, "device disconnected");
    result
}

/// How long a connection whose share was taken back waits to send the reason.
const WITHDRAWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// The device a session serves, and why it may not change the folder, if it may not.
struct Caller {
    device: filesync_proto::DeviceId,
    /// Set for a read-only member: the reason its pushes and restores are refused.
    read_only: Option<String>,
    /// The folder, as the session reads it to serve content.
    store: FolderReader,
}

/// Ends the connection of a member when its grant is taken back, telling the device why.
async fn close_when_withdrawn(
    withdrawn: CancellationToken,
    folder: filesync_proto::FolderName,
    out: mpsc::Sender<ServerMsg>,
    conn: CancellationToken,
) {
    tokio::select! {
        _ = conn.cancelled() => {}
        _ = withdrawn.cancelled() => {
            let why = format!(
                "access to folder {folder} was withdrawn by its owner; the folder stops \
                 syncing here until it is shared with this account again"
            );
            tracing::info!(%folder, "closing a member's connection: its share was taken back");
            let _ = out.try_send(error(ErrorKind::Denied, &why));
            conn.cancel();
        }
    }
}

/// Runs one of a session's flows; if it fails, the whole connection ends (the device
/// reconnects and starts over) rather than live on without that flow.
async fn end_on_error(
    flow: String,
    run: impl Future<Output = Result<()>>,
    conn: CancellationToken,
) {
    if let Err(e) = run.await {
        tracing::warn!("closing the connection: its {flow} failed: {e:#}");
        conn.cancel();
    }
}

fn error(kind: ErrorKind, message: &str) -> ServerMsg {
    ServerMsg::Error(WireError {
        kind,
        message: message.to_string(),
    })
}

/// Sends the sequencer's answer to a call when it comes, without holding up the reading
/// of further messages.
fn answer<T: Send + 'static>(
    answer: Answer<Result<T, String>>,
    out: &mpsc::Sender<ServerMsg>,
    wrap: impl FnOnce(Result<T, String>) -> ServerMsg + Send + 'static,
) {
    let out = out.clone();
    tokio::spawn(async move {
        let result = answer.get().await.unwrap_or_else(|e| Err(format!("{e:#}")));
        let _ = out.send(wrap(result)).await;
    });
}

async fn read_loop(
    folder: &ServerFolderHandle,
    caller: &Caller,
    link: &mut Link<ClientMsg, ServerMsg>,
    out: &mpsc::Sender<ServerMsg>,
    pushes: &mpsc::Sender<(u64, Vec<Change>)>,
) -> Result<()> {
    // The server serves any live file's block (see `serve_listed_block`).
    let check = |_: &BlockRequest| Ok(());
    while let Some(msg) = link.next(&check).await? {
        match msg {
            ClientMsg::Push { id, changes } => {
                if changes.len() > MAX_BATCH {
                    bail!(
                        "protocol error: a push of {} changes is over the limit of {MAX_BATCH}",
                        changes.len()
                    );
                }
                let inline: usize = (changes.iter().filter_map(|c| c.data.as_ref()))
                    .map(Vec::len)
                    .sum();
                if inline > INLINE_BUDGET {
                    bail!(
                        "protocol error: a push with {inline} bytes of inline content is over the limit of {INLINE_BUDGET}"
                    );
                }
                if let Some(reason) = &caller.read_only {
                    // Refused before anything is staged: a read-only member writes nothing.
                    tracing::warn!(folder = %folder.name, device = %caller.device, changes = changes.len(), "refused a push from a read-only member");
                    let outcomes = vec![
                        PushOutcome::Failed {
                            reason: reason.clone()
                        };
                        changes.len()
                    ];
                    let _ = out.send(ServerMsg::PushResult { id, outcomes }).await;
                    continue;
                }
                pushes
                    .send((id, changes))
                    .await
                    .map_err(|_| anyhow!("push processing stopped"))?;
            }
            ClientMsg::ListVersions { id, path } => {
                let versions = folder.versions(path).await?;
                answer(versions, out, move |result| ServerMsg::Versions {
                    id,
                    result,
                });
            }
            ClientMsg::Restore { id, .. } if caller.read_only.is_some() => {
                let result = Err(caller.read_only.clone().unwrap_or_default());
                let _ = out.send(ServerMsg::Restored { id, result }).await;
            }
            ClientMsg::Restore { id, path, version } => {
                let restored = folder.restore(path, version, caller.device.clone()).await?;
                answer(restored, out, move |result| ServerMsg::Restored {
                    id,
                    result,
                });
            }
            ClientMsg::Hello(_) => bail!("protocol error: second Hello"),
            ClientMsg::CreateInvite => bail!("protocol error: CreateInvite after Hello"),
            ClientMsg::Sharing(_) => bail!("protocol error: Sharing after Hello"),
            ClientMsg::Fetch { id, files } => {
                super::inline::check_fetch(&files)?;
                caller.store.answer_fetch(id, files, out.clone());
            }
            // Handled by the link.
            ClientMsg::Ping { .. }
            | ClientMsg::Pong { .. }
            | ClientMsg::BlockRequest { .. }
            | ClientMsg::BlockResponse { .. }
            | ClientMsg::BlockList(_) => {}
        }
    }
    Ok(())
}
