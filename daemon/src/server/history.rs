//! How a server folder's sequence numbers stay unique across restarts, and how the
//! server notices that its history went back in time (restored from a backup).
//!
//! Each time a folder's sequencer starts, it numbers from the clock (microseconds since
//! 1970) when that is past the highest number in its index, and records the skipped
//! numbers as a gap. Run after run, numbers therefore keep growing with time whatever the
//! index says, so a server restored from an older copy never hands out again a number it
//! gave before the restore (as long as its clock did not go back and no run committed
//! more than one change per microsecond of its life). A device that comes back with a
//! number from the lost history names a number this history skipped (or has not reached):
//! that is how the rollback is seen, even after other devices pushed since the restore.

use std::sync::Arc;

use filesync_proto::wire::Hello;

/// Numbers skipped past the highest one a device reports from a lost history, in case
/// other devices saw further than it did.
pub const MARGIN: u64 = 1 << 32;

/// No sequence number goes beyond this (SQLite stores them as `i64`); a device's claim of
/// a higher one is not a number any server gave.
pub const MAX_SEQ: u64 = 1 << 62;

/// The first number a sequencer hands out when its index's highest is `max` and the clock
/// reads `now_us`.
pub fn first_seq(max: u64, now_us: u64) -> u64 {
    (max + 1).max(now_us.min(MAX_SEQ))
}

/// The clock in microseconds since 1970 (0 before it).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A folder's history as sessions need it to place a device: its epoch and the ranges of
/// numbers it skipped, published by the sequencer on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub epoch: u64,
    /// `(after, start)`: the numbers strictly between were never given in this history.
    pub gaps: Arc<[(u64, u64)]>,
}

impl Lineage {
    pub fn skipped(&self, seq: u64) -> bool {
        self.gaps
            .iter()
            .any(|&(after, start)| seq > after && seq < start)
    }
}

/// What a device's Hello says about its place in the folder's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It followed this history up to `since`: it gets what came after.
    Follows { since: u64 },
    /// It followed another history (another epoch, or none yet): it gets everything and
    /// merges on its own side.
    Stranger,
    /// It followed this epoch further than this history goes: the folder went back in
    /// time (restored from a backup). The epoch must change so that every device merges
    /// conservatively, and numbering must move past `seen`.
    Ahead { seen: u64 },
}

/// Judges `hello` against the folder's `lineage` and its highest committed number `last`.
pub fn standing(hello: &Hello, lineage: &Lineage, last: u64) -> Standing {
    if hello.epoch != lineage.epoch {
        Standing::Stranger
    } else if hello.since_seq > last || lineage.skipped(hello.since_seq) {
        Standing::Ahead {
            seen: hello.since_seq,
        }
    } else {
        Standing::Follows {
            since: hello.since_seq,
        }
    }
}

/// Where numbering goes on after a device was seen `seen` far in a lost history, given
/// the next number otherwise: past `seen` by [`MARGIN`], unless `seen` is beyond anything
/// a server could have given.
pub fn next_after_rollback(next: u64, seen: u64) -> u64 {
    match seen.checked_add(MARGIN) {
        Some(past) if past <= MAX_SEQ => next.max(past),
        _ => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::{DeviceId, FolderName};

    fn hello(epoch: u64, since_seq: u64) -> Hello {
        Hello {
            device: DeviceId::new("dev").unwrap(),
            device_name: "dev".into(),
            folder: FolderName::new("docs").unwrap(),
            since_seq,
            epoch,
        }
    }

    #[test]
    fn standing_of_hellos() {
        let lineage = Lineage {
            epoch: 7,
            gaps: Arc::new([(10, 40), (60, 90)]),
        };
        let check = |h: Hello, want: Standing| {
            assert_eq!(standing(&h, &lineage, 100), want, "{h:?}");
        };
        check(hello(7, 0), Standing::Follows { since: 0 });
        check(hello(7, 10), Standing::Follows { since: 10 });
        check(hello(7, 40), Standing::Follows { since: 40 });
        check(hello(7, 100), Standing::Follows { since: 100 });
        check(hello(7, 11), Standing::Ahead { seen: 11 });
        check(hello(7, 89), Standing::Ahead { seen: 89 });
        check(hello(7, 101), Standing::Ahead { seen: 101 });
        check(hello(7, u64::MAX), Standing::Ahead { seen: u64::MAX });
        check(hello(8, 50), Standing::Stranger);
        check(hello(0, 500), Standing::Stranger);
    }

    #[test]
    fn numbering_moves_past_what_was_seen() {
        assert_eq!(first_seq(0, 0), 1);
        assert_eq!(first_seq(10, 5), 11);
        assert_eq!(first_seq(10, 1_000), 1_000);
        assert_eq!(first_seq(10, u64::MAX), MAX_SEQ);
        assert_eq!(next_after_rollback(11, 500), 500 + MARGIN);
        assert_eq!(next_after_rollback(u64::MAX / 2, 500), u64::MAX / 2);
        assert_eq!(next_after_rollback(11, MAX_SEQ), 11);
        assert_eq!(next_after_rollback(11, u64::MAX), 11);
    }
}
