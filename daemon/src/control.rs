//! The local control socket: one framed request in, one framed response out.
//!
//! All platform-specific socket code is here. On Unix the socket's directory is made
//! 0700 and the socket 0600, so only the daemon's user can reach it; a live socket at
//! the path means another daemon is running, a dead one is stale and replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use filesync_proto::MAX_CONTROL_REQUEST;
use filesync_proto::control::{self, ControlErrorKind, Request, Response};
use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::supervisor::ControlCmd;

/// A client that has not sent its whole request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket at `path`, refusing to start if another daemon answers there.
pub async fn bind(path: &Path) -> Result<Listener> {
    let dir = path
        .parent()
        .context("control socket path has no directory")?;
    make_private_dir(dir)?;
    if path.exists() {
        let name = path.to_fs_name::<GenericFilePath>()?;
        if Stream::connect(name).await.is_ok() {
            bail!(
                "another filesyncd is already running (its control socket {} answers)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale control socket {}", path.display()))?;
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .with_context(|| {
            format!(
                "cannot create control socket {} (config key daemon.control_socket)",
                path.display()
            )
        })?;
    restrict(path, 0o600)?;
    Ok(listener)
}

#[cfg(unix)]
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create control socket directory {}", dir.display()))?;
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        bail!(
            "control socket directory {} is not a directory owned by this user; remove it or choose another control_socket",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn make_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

/// Serves connections until `cancel`, each request handed to the supervisor.
pub async fn serve(
    listener: Listener,
    path: PathBuf,
    supervisor: mpsc::Sender<ControlCmd>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    continue;
                }
            },
        };
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, supervisor).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(mut stream: Stream, supervisor: mpsc::Sender<ControlCmd>) -> Result<()> {
    let payload = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => bail!("no complete request within {}s", REQUEST_TIMEOUT.as_secs()),
    };
    let response = match control::decode::<Request>(&payload) {
        Err(e) => Response::Error {
            kind: ControlErrorKind::BadRequest,
            message: e.to_string(),
        },
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if supervisor
                .send(ControlCmd { request, reply: tx })
                .await
                .is_err()
            {
                Response::Error {
                    kind: ControlErrorKind::Failed,
                    message: "the daemon is shutting down".into(),
                }
            } else {
                match rx.await {
                    Ok(reply) => reply.await,
                    Err(_) => Response::Error {
                        kind: ControlErrorKind::Failed,
                        message: "the daemon is shutting down".into(),
                    },
                }
            }
        }
    };
    let body = control::encode(&response);
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_frame(stream: &mut Stream) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_REQUEST {
        bail!("request of {len} bytes is over the limit of {MAX_CONTROL_REQUEST}");
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
