//! How a commit on one node reaches the devices connected to the others: the
//! committing transaction sends `pg_notify` (delivered when it commits), and every node
//! keeps one connection that `LISTEN`s and moves the open folder's watch channels on,
//! which is what sessions follow. A node that loses that connection reconnects and
//! re-reads every open folder's row, so a notification sent meanwhile is never missed
//! for long.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::server::cluster::admin::{self, AdminEvent};

/// The channel every node listens on.
pub const CHANNEL: &str = "filesync_commits";

/// How long a node waits before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// The notification of a commit: folder id, last number, epoch, live files and bytes.
pub fn payload(folder: i64, last: i64, epoch: i64, files: i64, bytes: i64) -> String {
    format!("{folder} {last} {epoch} {files} {bytes}")
}

fn parse(payload: &str) -> Option<[i64; 5]> {
    let mut parts = payload.split(' ').map(|p| p.parse::<i64>().ok());
    let mut out = [0i64; 5];
    for slot in &mut out {
        *slot = parts.next()??;
    }
    parts.next().is_none().then_some(out)
}

/// Listens until `cancel`, reconnecting after every failure.
pub async fn listen(node: Arc<Node>, cancel: CancellationToken) {
    let mut failing = false;
    loop {
        match listen_once(&node, &cancel, &mut failing).await {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "cluster: not following other nodes' commits: {e:#}; devices on this \
                         node see them once the database is back"
                    );
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn listen_once(
    node: &Arc<Node>,
    cancel: &CancellationToken,
    failing: &mut bool,
) -> Result<()> {
    let (client, mut connection) = node
        .pg_config
        .connect(node.tls.clone())
        .await
        .context("cannot connect to PostgreSQL (config key server.cluster.postgres)")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {}", admin::CHANNEL))
        .await
        .context("cannot LISTEN for commits")?;
    // Whatever was committed while nobody here listened.
    node.refresh_all(&client).await?;
    if *failing {
        tracing::info!("cluster: following other nodes' commits again");
        *failing = false;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            got = rx.recv() => {
                let Some((channel, payload)) = got else {
                    return Err(anyhow!("the listening connection to PostgreSQL ended"));
                };
                if channel == admin::CHANNEL {
                    match AdminEvent::parse(&payload) {
                        Some(event) => {
                            let _ = node.admin.send(event);
                        }
                        None => tracing::warn!(payload, "cluster: an admin notification this node cannot read"),
                    }
                    continue;
                }
                match parse(&payload) {
                    Some([folder, last, epoch, files, bytes]) => node.notified(folder, last, epoch, files, bytes),
                    None => tracing::warn!(payload, "cluster: a notification this node cannot read"),
                }
            }
        }
    }
}

/// Stops the connection's task when the listener is done with it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_and_nothing_else_does() {
        assert_eq!(parse(&payload(3, 99, 7, 2, 10)), Some([3, 99, 7, 2, 10]));
        for bad in ["", "1 2 3 4", "1 2 3 4 5 6", "a 2 3 4 5", "1  2 3 4"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
