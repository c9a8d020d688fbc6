//! The partial downloads a folder may hold: noted when a transfer fails or at start-up,
//! and removed once the folder is in sync, since nothing will resume them then.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use crate::fs::beneath::Root;
use crate::fs::partial::Partial;

/// The partial downloads that may be on disk: left by a transfer that failed, or found
/// at start-up. Once the folder is in sync nothing will resume them, so they go.
#[derive(Default)]
pub(super) struct Partials {
    // Behind a mutex only so that a shared borrow can note one during a pull.
    paths: Mutex<HashSet<Partial>>,
}

impl Partials {
    pub(super) fn note(&self, partial: Partial) {
        self.lock().insert(partial);
    }

    /// Removes every partial download noted so far from the folder at `root`.
    pub(super) fn sweep(&self, root: &Path) {
        let partials: Vec<Partial> = self.lock().drain().collect();
        if partials.is_empty() {
            return;
        }
        let root = match Root::open(root) {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(
                    root = %root.display(),
                    "cannot open the folder to remove {} partial downloads: {e}",
                    partials.len()
                );
                return;
            }
        };
        for partial in partials {
            match partial.remove(&root) {
                Ok(true) => {
                    tracing::debug!(path = %partial, "removed a partial download nobody resumed")
                }
                // Each large file notes two places its partial may be; most are empty.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %partial, "cannot remove a partial download: {e}")
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Partial>> {
        // A panic while holding this lock cannot leave the set inconsistent.
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }
}
