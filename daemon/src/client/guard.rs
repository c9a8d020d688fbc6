//! The two checks that keep a loss on one device from spreading to every other: the
//! folder marker (is this directory still the folder we synced?) and the mass-delete
//! guard (did the user really delete most of the folder at once?). The decisions are
//! pure; the folder task does the I/O around them.

use std::path::Path;

use crate::fs::MARKER;

/// What the marker check found before a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The marker is there: scan as usual.
    Present,
    /// No marker yet, and nothing says the folder was lost: write it. `upgrade` when
    /// the folder synced before markers existed.
    Create { upgrade: bool },
    /// The marker is gone from a folder that had one (or that synced and is now empty):
    /// nothing may be scanned or applied until it is back.
    Missing,
}

/// Decides from what the disk and the index say: whether the marker `present`, whether
/// this device wrote one before (`made`), whether the index knows live paths
/// (`synced`), and whether the root is `empty`.
pub fn check_marker(present: bool, made: bool, synced: bool, empty: bool) -> Marker {
    match (present, made, synced, empty) {
        (true, ..) => Marker::Present,
        (false, true, ..) => Marker::Missing,
        (false, false, false, _) => Marker::Create { upgrade: false },
        (false, false, true, false) => Marker::Create { upgrade: true },
        (false, false, true, true) => Marker::Missing,
    }
}

/// The status text of a folder whose marker is missing.
pub fn marker_missing(folder: &str, root: &Path) -> String {
    format!(
        "the folder marker {} is missing: the folder may be unmounted or replaced; nothing \
         is synced until it is back; if this is really the folder {folder}, run \
         `filesyncctl rescan {folder} --recreate-marker`",
        root.join(MARKER).display()
    )
}

/// The status text of a folder whose directory is gone, after the scan's `cause`.
pub fn root_missing(folder: &str, cause: &str) -> String {
    format!(
        "{cause}; no delete is sent meanwhile, and the folder syncs again by itself once \
         the directory is back; if it is gone for good, run `filesyncctl remove {folder}`"
    )
}

/// What the marker file says to someone who finds it.
pub fn marker_text(folder: &str) -> String {
    format!(
        "This file tells filesyncd that this directory is the synced folder {folder}.\n\
         Do not delete it: without it the folder stops syncing, so that an unmounted or \
         replaced directory is never taken for a deleted folder.\n"
    )
}

/// Deletes the guard holds back: `deleted` of the folder's `files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub deleted: u64,
    pub files: u64,
}

impl Hold {
    /// A hold when `deleted` of `files` is more than `percent` % of a folder of at least
    /// `min` files.
    pub fn judge(deleted: u64, files: u64, percent: u32, min: u64) -> Option<Hold> {
        let over = files >= min
            && percent < 100
            && u128::from(deleted) * 100 > u128::from(files) * u128::from(percent);
        over.then_some(Hold { deleted, files })
    }

    /// The status text of a held folder.
    pub fn message(&self, folder: &str) -> String {
        format!(
            "{} of {} files were deleted at once; run `filesyncctl resume {folder} \
             --confirm-deletes` to send the deletes, or restore the files",
            self.deleted, self.files
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_decisions() {
        use Marker::*;
        // (present, made, synced, empty) -> decision
        let cases = [
            ((true, true, true, false), Present),
            ((true, false, false, true), Present),
            ((false, true, true, false), Missing),
            ((false, true, true, true), Missing),
            ((false, true, false, true), Missing),
            ((false, false, false, true), Create { upgrade: false }),
            ((false, false, false, false), Create { upgrade: false }),
            ((false, false, true, false), Create { upgrade: true }),
            ((false, false, true, true), Missing),
        ];
        for ((present, made, synced, empty), want) in cases {
            assert_eq!(
                check_marker(present, made, synced, empty),
                want,
                "present={present} made={made} synced={synced} empty={empty}"
            );
        }
    }

    #[test]
    fn holds_more_than_the_share_of_a_large_enough_folder() {
        // (deleted, files, percent, min) -> held
        let cases = [
            ((150, 200, 50, 100), true),
            ((100, 200, 50, 100), false),
            ((101, 200, 50, 100), true),
            ((20, 20, 50, 100), false),
            ((99, 99, 50, 100), false),
            ((100, 100, 50, 100), true),
            ((200, 200, 100, 0), false),
            ((1, 1, 1, 0), true),
            ((0, 0, 50, 0), false),
            ((u64::MAX, u64::MAX, 99, 1), true),
        ];
        for ((deleted, files, percent, min), held) in cases {
            let want = held.then_some(Hold { deleted, files });
            assert_eq!(
                Hold::judge(deleted, files, percent, min),
                want,
                "{deleted} of {files} at {percent} %, min {min}"
            );
        }
    }

    #[test]
    fn messages_name_the_folder_and_the_command() {
        let m = marker_missing("docs", Path::new("/home/a/Docs"));
        assert!(
            m.contains("/home/a/Docs/.filesync-folder is missing"),
            "{m}"
        );
        assert!(
            m.contains("filesyncctl rescan docs --recreate-marker"),
            "{m}"
        );
        let r = root_missing("docs", "folder root /home/a/Docs is missing");
        assert!(
            r.starts_with("folder root /home/a/Docs is missing; no delete is sent"),
            "{r}"
        );
        assert!(r.contains("filesyncctl remove docs"), "{r}");
        let h = Hold {
            deleted: 150,
            files: 200,
        }
        .message("docs");
        assert!(
            h.starts_with("150 of 200 files were deleted at once"),
            "{h}"
        );
        assert!(
            h.contains("filesyncctl resume docs --confirm-deletes"),
            "{h}"
        );
    }
}
