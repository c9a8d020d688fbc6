//! `/api/live`: one server-sent-event stream per open page, so the page never polls.
//! It carries `status` (the whole status, as `/api/status` gives it) at once and then
//! whenever it changes, looked at every [`STATUS_EVERY`]; and `event` for each of the
//! recent events and then each new one, from the bus behind `filesyncctl events`.
//! A task per stream does the looking; it ends when the page goes away or the daemon
//! stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use filesync_proto::control::{Request, Response};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use super::Web;
use crate::supervisor::ControlCmd;

/// How often the status is compared with what the page last got.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Messages a stream may hold for a page that is slow to read them.
const QUEUE: usize = 64;

pub async fn stream(
    State(web): State<Web>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    web.tracker.clone().spawn(feed(web, tx));
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|m| m.map(Ok)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Sends what the page should see into `tx` until the page or the daemon goes.
async fn feed(web: Web, tx: mpsc::Sender<SseEvent>) {
    let (recent, mut live) = web.events.subscribe();
    for event in recent {
        if !send(&tx, "event", &event).await {
            return;
        }
    }
    let mut last_status = String::new();
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = web.cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = tick.tick() => {
                let Response::Status(status) =
                    ControlCmd::ask(&web.supervisor, Request::Status { folder: None }).await
                else {
                    continue;
                };
                let Ok(text) = serde_json::to_string(&status) else { continue };
                if text != last_status {
                    if tx.send(SseEvent::default().event("status").data(&text)).await.is_err() {
                        return;
                    }
                    last_status = text;
                }
            }
            event = live.recv() => match event {
                Ok(event) => {
                    if !send(&tx, "event", &event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let missed = format!("{n} events were missed: they came faster than the page read them");
                    if !send(&tx, "missed", &missed).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Sends `value` as JSON in an event named `name`; false once the page is gone.
async fn send(tx: &mpsc::Sender<SseEvent>, name: &str, value: &impl serde::Serialize) -> bool {
    match serde_json::to_string(value) {
        Ok(text) => tx
            .send(SseEvent::default().event(name).data(text))
            .await
            .is_ok(),
        Err(_) => true,
    }
}
