//! The event bus behind `filesyncctl events`: folder tasks report what happened
//! (scanned, uploaded, downloaded, deleted, conflict, error); the control socket hands
//! the last [`RECENT`] events and then the live ones to whoever asks.
//!
//! Reporting never waits: the broadcast channel drops the oldest events for a reader
//! that falls [`CAPACITY`] behind, and that reader is told how many it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use filesync_proto::control::{Event, EventKind};
use tokio::sync::broadcast;

/// The clock in whole seconds since 1970 (0 before it), as the daemon records and names
/// things by time.
pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The clock in milliseconds since 1970 (0 before it), as events carry it.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How many past events a new reader gets first.
const RECENT: usize = 100;
/// How far a live reader may fall behind before it misses events.
const CAPACITY: usize = 1024;

/// A cheap, cloneable handle on the bus.
#[derive(Clone)]
pub struct Events(Arc<Bus>);

struct Bus {
    live: broadcast::Sender<Event>,
    /// The last [`RECENT`] events, oldest first.
    recent: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events(Arc::new(Bus {
            live: broadcast::channel(CAPACITY).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }))
    }
}

impl Events {
    /// Reports an event of the folder `name` at `root`.
    pub fn emit(
        &self,
        (name, root): (&str, &std::path::Path),
        kind: EventKind,
        path: Option<&str>,
        detail: Option<String>,
    ) {
        let event = Event {
            time_ms: unix_ms(),
            folder: name.to_owned(),
            folder_path: root.display().to_string(),
            kind,
            path: path.map(str::to_owned),
            detail,
        };
        let mut recent = self.0.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // Under the same lock as `subscribe`, so a reader sees each event exactly once.
        let _ = self.0.live.send(event);
    }

    /// The recent events and a receiver for every later one.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.0.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), self.0.live.subscribe())
    }
}

/// Whether `event` belongs to the folder a request named (by name or local path).
pub fn matches(event: &Event, folder: Option<&str>) -> bool {
    folder.is_none_or(|f| event.folder == f || event.folder_path == f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_reader_gets_the_recent_events_then_the_live_ones_once() {
        let bus = Events::default();
        let docs = ("docs", Path::new("/home/a/Docs"));
        for i in 0..RECENT + 5 {
            bus.emit(docs, EventKind::Uploaded, Some(&format!("f{i}")), None);
        }
        let (recent, mut live) = bus.subscribe();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].path.as_deref(), Some("f5"));
        bus.emit(docs, EventKind::Deleted, Some("gone"), None);
        let next = live.try_recv().unwrap();
        assert_eq!(next.kind, EventKind::Deleted);
        assert!(live.try_recv().is_err());
        assert!(matches(&next, Some("docs")));
        assert!(matches(&next, Some("/home/a/Docs")));
        assert!(!matches(&next, Some("photos")));
    }
}
