//! Paths from other devices that this device's filesystem cannot hold: on Windows, a
//! name it reserves or forbids ([`windows_names::path_problem`]), and a path that
//! differs only in case from one this device already holds or takes in the same round
//! (Windows would open the one for the other). Such a path is never written here under
//! another name and never replaces what is here: its server entry is set aside like an
//! ignored one (not pulled, not pending, so `wait` can finish), and the path is listed
//! as unsyncable with the reason. Nothing is deleted anywhere: this device never held
//! the path, so its scans never miss it.
//!
//! A symlink this user may not create is set aside the same way once its creation is
//! refused ([`CannotHold`]).
//!
//! Set-aside entries are judged again at start-up, when a new version of one arrives,
//! and after each full scan, so a path syncs once what stood in its way is gone (the
//! other name deleted or renamed).

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::Unsyncable;
use filesync_proto::wire::Entry;

use super::FolderTask;
use crate::fs::beneath::Root;
use crate::fs::stat;
use crate::fs::tree::CannotHold;
use crate::fs::windows_names::{case_key, path_problem};

/// Whether Windows' name rules apply here: on Windows, and in tests on any platform
/// with `FILESYNC_TEST_WINDOWS_NAMES=1`, so that a Linux device behaves as a Windows one
/// towards reserved and forbidden names.
fn names_apply() -> bool {
    static TEST: OnceLock<bool> = OnceLock::new();
    cfg!(windows) || *TEST.get_or_init(|| std::env::var_os("FILESYNC_TEST_WINDOWS_NAMES").is_some())
}

/// Whether this platform's filesystems look names up regardless of case (NTFS as
/// Windows opens it).
const FOLDS_CASE: bool = cfg!(windows);

/// The case keys of the paths one pull round writes, so that two of them differing only
/// in case do not both land.
#[derive(Default)]
pub(super) struct RoundNames {
    taken: HashMap<String, RelPath>,
}

impl FolderTask {
    /// Whether the server's entry `remote`, which this device has no local row for, must
    /// be set aside as one its filesystem cannot hold; if so, it is set aside and listed.
    /// Every other entry of the round is remembered in `round`.
    pub(super) fn set_aside_unholdable(
        &mut self,
        root: &Root,
        remote: &Entry,
        known_here: bool,
        round: &mut RoundNames,
    ) -> Result<bool> {
        if remote.deleted || !(names_apply() || FOLDS_CASE) {
            return Ok(false);
        }
        let reason = if known_here {
            None
        } else {
            self.why_unholdable(root, &remote.path, round)?
        };
        let Some(reason) = reason else {
            round
                .taken
                .entry(case_key(remote.path.as_str()))
                .or_insert_with(|| remote.path.clone());
            return Ok(false);
        };
        self.set_aside(&remote.path, reason)?;
        Ok(true)
    }

    fn set_aside(&mut self, path: &RelPath, reason: String) -> Result<()> {
        self.index().set_remote_ignored(path)?;
        tracing::warn!(folder = %self.cfg.name, %path, "not synced here: {reason}");
        self.retry_delay.remove(path);
        self.unholdable.insert(path.clone(), reason);
        Ok(())
    }

    /// Whether applying `remote` failed with `e` because this device cannot hold it at
    /// all ([`CannotHold`]); if so, it is set aside and listed instead of retried.
    pub(super) fn cannot_hold(&mut self, remote: &Entry, e: &anyhow::Error) -> bool {
        let Some(why) = e.chain().find_map(|c| c.downcast_ref::<CannotHold>()) else {
            return false;
        };
        match self.set_aside(&remote.path, why.to_string()) {
            Ok(()) => true,
            Err(e) => {
                self.error(format!(
                    "cannot record {} as unsyncable: {e:#}",
                    remote.path
                ));
                false
            }
        }
    }

    /// At start, where something can be set aside: every entry set aside before (by
    /// these rules or the ignore rules) is judged again, so that this run lists it.
    pub(super) fn judge_skipped_again(&mut self) {
        if !names_apply() {
            return;
        }
        if let Err(e) = self.index().clear_remote_ignored() {
            self.error(format!("cannot update the index: {e:#}"));
        }
    }

    /// What the status lists as unsyncable: what a scan found here, and the server's
    /// entries set aside.
    pub(super) fn unsyncable_all(&self) -> Vec<Unsyncable> {
        let set_aside = self.unholdable.iter().map(|(path, reason)| Unsyncable {
            path: path.to_string(),
            reason: reason.clone(),
        });
        self.unsyncable.iter().cloned().chain(set_aside).collect()
    }

    fn why_unholdable(
        &self,
        root: &Root,
        path: &RelPath,
        round: &RoundNames,
    ) -> Result<Option<String>> {
        if names_apply()
            && let Some((name, why)) = path_problem(path.as_str())
        {
            return Ok(Some(format!(
                "{name:?}: {why}; rename it on a device that can hold it to sync it here"
            )));
        }
        if !FOLDS_CASE {
            return Ok(None);
        }
        let clash = match round.taken.get(&case_key(path.as_str())) {
            Some(other) if other != path => Some(other.to_string()),
            _ => case_clash(
                path,
                |prefix| {
                    let row = self.index().local(prefix)?;
                    Ok(row.is_some_and(|r| !r.entry.deleted))
                },
                |prefix| held_name(root, prefix),
            )?
            .map(|(_, held)| held),
        };
        Ok(clash.map(|held| {
            format!(
                "differs only in case from {held}, which this device holds; its filesystem \
                 cannot hold both: rename one of them on a device that can"
            )
        }))
    }

    /// Forgets the set-aside paths the server no longer has: renamed or deleted on
    /// the device that made them, they are nothing this device lacks.
    pub(super) fn forget_gone_unholdable(&mut self) -> Result<()> {
        if self.unholdable.is_empty() {
            return Ok(());
        }
        let mut gone = Vec::new();
        for path in self.unholdable.keys() {
            if self.index().remote(path)?.is_none_or(|e| e.deleted) {
                gone.push(path.clone());
            }
        }
        for path in gone {
            self.unholdable.remove(&path);
        }
        Ok(())
    }

    /// Sets the set-aside entries free to be judged again (see the module's note); at
    /// start-up every one is (`judge_skipped_again`).
    pub(super) fn judge_names_again(&mut self) -> Result<()> {
        let paths: Vec<RelPath> = std::mem::take(&mut self.unholdable).into_keys().collect();
        self.index().clear_remote_ignored_at(&paths)
    }

    /// Forgets every set-aside path, when all of the index's ignored entries are to be
    /// judged again.
    pub(super) fn forget_unholdable(&mut self) {
        self.unholdable.clear();
    }
}

/// The first of `path`'s prefixes (its directories from the top, then itself) that this
/// device holds under a name differing only in case, and the path it holds there.
/// `known(prefix)` says whether the index has a row at exactly `prefix` (then the disk
/// holds it by that name); `held(prefix)` what the disk holds at `prefix` looked up
/// regardless of case, by its own name, or `None` when nothing is there (and so nothing
/// below it either).
fn case_clash(
    path: &RelPath,
    known: impl Fn(&RelPath) -> Result<bool>,
    held: impl Fn(&RelPath) -> Result<Option<String>>,
) -> Result<Option<(RelPath, String)>> {
    let mut prefix = String::new();
    for name in path.components() {
        let parent_len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(name);
        let at = RelPath::new(&prefix)?;
        if known(&at)? {
            continue;
        }
        match held(&at)? {
            None => return Ok(None),
            Some(own) if own == name => {}
            Some(own) => {
                let held_path = if parent_len == 0 {
                    own
                } else {
                    format!("{}/{own}", &prefix[..parent_len])
                };
                return Ok(Some((at, held_path)));
            }
        }
    }
    Ok(None)
}

/// What the disk holds at `path` looked up regardless of case, by its own name.
fn held_name(root: &Root, path: &RelPath) -> Result<Option<String>> {
    if stat::stat(root, path)?.is_none() {
        return Ok(None);
    }
    let (dir, name) = stat::parent(root, path)?;
    let key = case_key(name);
    let names = dir.names()?;
    let names: Vec<&str> = names.iter().filter_map(|(n, _)| n.to_str()).collect();
    let own = if names.contains(&name) {
        name
    } else {
        names
            .into_iter()
            .find(|n| case_key(n) == key)
            .unwrap_or(name)
    };
    Ok(Some(own.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A disk that folds case and holds `held` (by their own names); the index knows
    /// `known`.
    fn clash(path: &str, known: &[&str], held: &[&str]) -> Option<(String, String)> {
        case_clash(
            &p(path),
            |at| Ok(known.contains(&at.as_str())),
            |at| {
                Ok(held
                    .iter()
                    .find(|h| case_key(h) == case_key(at.as_str()))
                    .map(|h| h.rsplit('/').next().unwrap().to_string()))
            },
        )
        .unwrap()
        .map(|(at, held)| (at.to_string(), held))
    }

    #[test]
    fn a_name_differing_only_in_case_from_a_held_one_clashes() {
        assert_eq!(
            clash("A.txt", &["a.txt"], &["a.txt"]),
            Some(("A.txt".into(), "a.txt".into()))
        );
    }

    #[test]
    fn a_directory_differing_in_case_clashes_for_everything_below_it() {
        assert_eq!(
            clash("Docs/x/new.txt", &["docs"], &["docs", "docs/x"]),
            Some(("Docs".into(), "docs".into()))
        );
        assert_eq!(
            clash("top/Sub/new.txt", &["top", "top/sub"], &["top", "top/sub"]),
            Some(("top/Sub".into(), "top/sub".into()))
        );
    }

    #[test]
    fn known_or_absent_or_same_names_do_not_clash() {
        assert_eq!(clash("a.txt", &[], &[]), None);
        assert_eq!(clash("a.txt", &["a.txt"], &["a.txt"]), None);
        assert_eq!(clash("docs/new.txt", &["docs"], &["docs"]), None);
        // On the disk by the same name but not indexed yet: the scan's to judge.
        assert_eq!(clash("docs/a.txt", &[], &["docs", "docs/a.txt"]), None);
    }
}
