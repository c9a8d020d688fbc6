//! What each account may store on the server, what it stores now, and the space the
//! server keeps free on its data filesystem.
//!
//! A push of new content is charged here at its declared size before a byte of it is
//! written ([`Quotas::reserve`]), so a file that repeats one block a million times
//! counts its full size, and pushes staged at the same time cannot together pass a
//! limit that each fits alone. The charge is held until the sequencer has committed
//! the file (then the folder's index counts it) or the push failed.
//!
//! An account is charged for the files of every folder under `DATA_DIR/ACCOUNT/` (a
//! folder shared with other accounts counts against its owner, whose directory holds
//! it) and for the unfinished uploads (`.filesync-partial-*`) left in them, which the
//! folders' sweeps measure. Kept versions are not charged: they expire by themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytesize::ByteSize;
use filesync_proto::control::AccountUsage;
use filesync_proto::{AccountName, FolderName, RelPath};

use super::lock::lock;
use crate::config::ServerSection;
use crate::fs::space;
use crate::server::accounts::QuotaSetting;

pub struct Quotas {
    data_dir: PathBuf,
    /// `server.default_quota`: for accounts without a setting of their own.
    default_quota: Option<u64>,
    /// `server.min_free_space`.
    min_free_space: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What the admin set with `filesyncctl server quota`, a copy of the account store's.
    settings: HashMap<AccountName, QuotaSetting>,
    accounts: HashMap<AccountName, Charged>,
    /// Declared bytes of every push being staged now, all accounts together: space the
    /// filesystem still shows free but that is promised.
    staged_disk: u64,
}

/// What one account is charged for.
#[derive(Default)]
struct Charged {
    /// Per folder: the bytes of its files (as its index counts them) and of its
    /// unfinished uploads. Kept while the folder is closed, since its data stays.
    folders: HashMap<FolderName, Stored>,
    /// Bytes of the pushes being staged now, beyond the files they replace.
    staged: u64,
}

#[derive(Default, Clone, Copy)]
struct Stored {
    files: u64,
    partials: u64,
}

impl Charged {
    fn used(&self) -> u64 {
        self.folders
            .values()
            .map(|s| s.files.saturating_add(s.partials))
            .fold(self.staged, u64::saturating_add)
    }
}

/// A push's charge, given back when dropped: by then its file is committed (and its
/// folder's index counts it) or the push failed.
pub struct Reservation {
    quotas: Arc<Quotas>,
    account: AccountName,
    quota_bytes: u64,
    disk_bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.quotas.lock();
        state.staged_disk = state.staged_disk.saturating_sub(self.disk_bytes);
        if let Some(charged) = state.accounts.get_mut(&self.account) {
            charged.staged = charged.staged.saturating_sub(self.quota_bytes);
        }
    }
}

pub(crate) fn size(n: u64) -> String {
    ByteSize::b(n).display().iec().to_string()
}

impl Quotas {
    pub fn new(cfg: &ServerSection, settings: HashMap<AccountName, QuotaSetting>) -> Quotas {
        Quotas {
            data_dir: cfg.data_dir.clone(),
            default_quota: cfg.default_quota,
            min_free_space: cfg.min_free_space,
            state: Mutex::new(State {
                settings,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn quota_in(&self, state: &State, account: &AccountName) -> Option<u64> {
        match state.settings.get(account) {
            Some(QuotaSetting::Bytes(n)) => Some(*n),
            Some(QuotaSetting::Unlimited) => None,
            None => self.default_quota,
        }
    }

    /// Takes a change the admin made in the account store (`None`: back to the default).
    pub fn set(&self, account: &AccountName, setting: Option<QuotaSetting>) {
        let mut state = self.lock();
        match setting {
            Some(s) => state.settings.insert(account.clone(), s),
            None => state.settings.remove(account),
        };
    }

    /// The bytes of `folder`'s files, as its index counts them now.
    pub fn set_files(&self, account: &AccountName, folder: &FolderName, bytes: u64) {
        let mut state = self.lock();
        let charged = state.accounts.entry(account.clone()).or_default();
        charged.folders.entry(folder.clone()).or_default().files = bytes;
    }

    /// The bytes of `folder`'s unfinished uploads, as its last sweep found them.
    pub fn set_partials(&self, account: &AccountName, folder: &FolderName, bytes: u64) {
        let mut state = self.lock();
        let charged = state.accounts.entry(account.clone()).or_default();
        charged.folders.entry(folder.clone()).or_default().partials = bytes;
    }

    /// The usage and quota of each of `accounts`.
    pub fn usage(&self, accounts: impl IntoIterator<Item = AccountName>) -> Vec<AccountUsage> {
        let state = self.lock();
        accounts
            .into_iter()
            .map(|a| AccountUsage {
                used: state.accounts.get(&a).map_or(0, Charged::used),
                quota: self.quota_in(&state, &a),
                account: a.to_string(),
            })
            .collect()
    }

    /// The usage and quota of every account that has a folder or a quota of its own,
    /// by name.
    pub fn known_usage(&self) -> Vec<AccountUsage> {
        let mut names: Vec<AccountName> = {
            let state = self.lock();
            state
                .accounts
                .keys()
                .chain(state.settings.keys())
                .cloned()
                .collect()
        };
        names.sort();
        names.dedup();
        self.usage(names)
    }

    /// Bytes available to the daemon on the data filesystem, or `None` when the
    /// filesystem does not say.
    pub fn free_bytes(&self) -> Option<u64> {
        space::available(&self.data_dir)
    }

    pub fn min_free_space(&self) -> u64 {
        self.min_free_space
    }

    /// Charges a push of `declared` bytes of new content for `path` in `account`'s
    /// `folder`, replacing a file of `replaced` bytes, before anything of it is
    /// written; or why it is refused, in words for the device's status. The quota counts
    /// `declared`; the free-space check counts `on_disk`, what it takes once written
    /// (less for a sparse file, whose zero blocks stay holes).
    pub fn reserve(
        self: &Arc<Self>,
        account: &AccountName,
        folder: &FolderName,
        path: &RelPath,
        declared: u64,
        on_disk: u64,
        replaced: u64,
    ) -> Result<Reservation, String> {
        // Read before the lock: statvfs may be slow on a busy filesystem, and a push
        // that passes with a slightly stale figure is still charged below.
        let free = self.free_bytes();
        let mut state = self.lock();
        if let Some(free) = free {
            let left = free.saturating_sub(state.staged_disk);
            if left < on_disk.saturating_add(self.min_free_space) {
                tracing::warn!(
                    account = %account, folder = %folder, path = %path, on_disk, free = left,
                    data_dir = %self.data_dir.display(),
                    "push refused: it would leave less than server.min_free_space free"
                );
                return Err(format!(
                    "server low on disk space ({} free, {} is kept free by its config key \
                     server.min_free_space): {path} ({}) in folder {folder} of account \
                     {account} is not taken; the server's admin must free space on it, and \
                     the change is sent again later",
                    size(left),
                    size(self.min_free_space),
                    size(on_disk),
                ));
            }
        }
        let quota = self.quota_in(&state, account);
        let charged = state.accounts.entry(account.clone()).or_default();
        let need = declared.saturating_sub(replaced);
        let used = charged.used();
        if let Some(quota) = quota
            && used.saturating_add(need) > quota
        {
            tracing::info!(account = %account, folder = %folder, path = %path, declared, used, quota, "push refused: over the account's quota");
            return Err(format!(
                "quota exceeded (used {} of {}): {path} ({}) does not fit in account \
                 {account}'s quota, so folder {folder} cannot take it; free space in the \
                 account's folders, or ask the server's admin to raise the quota \
                 (`filesyncctl server quota {account} SIZE`), and it is sent again later",
                size(used),
                size(quota),
                size(declared),
            ));
        }
        charged.staged = charged.staged.saturating_add(need);
        state.staged_disk = state.staged_disk.saturating_add(on_disk);
        Ok(Reservation {
            quotas: self.clone(),
            account: account.clone(),
            quota_bytes: need,
            disk_bytes: on_disk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(default_quota: Option<u64>, min_free_space: u64) -> Arc<Quotas> {
        let dir = std::env::temp_dir();
        Arc::new(Quotas {
            data_dir: dir,
            default_quota,
            min_free_space,
            state: Mutex::default(),
        })
    }

    fn names() -> (AccountName, FolderName, RelPath) {
        (
            AccountName::new("home").unwrap(),
            FolderName::new("docs").unwrap(),
            RelPath::new("big.bin").unwrap(),
        )
    }

    #[test]
    fn the_declared_size_counts_until_the_push_ends() {
        let q = quotas(Some(1000), 0);
        let (a, f, p) = names();
        q.set_files(&a, &f, 300);
        let first = q
            .reserve(&a, &f, &p, 600, 600, 0)
            .expect("300 + 600 fits in 1000");
        let refused = q
            .reserve(&a, &f, &p, 200, 200, 0)
            .err()
            .expect("900 + 200 does not");
        assert!(
            refused.starts_with("quota exceeded (used 900 B of 1000 B)"),
            "{refused}"
        );
        assert!(refused.contains("filesyncctl server quota home SIZE"));
        // Replacing a 150-byte file with a 200-byte one needs 50 more.
        drop(
            q.reserve(&a, &f, &p, 200, 200, 150)
                .expect("only the growth counts"),
        );
        drop(first);
        assert_eq!(
            q.usage([a.clone()])[0].used,
            300,
            "the charge is given back"
        );
        q.reserve(&a, &f, &p, 700, 700, 0).expect("room again");
    }

    #[test]
    fn settings_override_the_default_and_unlimited_has_no_limit() {
        let q = quotas(Some(10), 0);
        let (a, f, p) = names();
        assert!(
            q.reserve(&a, &f, &p, 11, 11, 0).is_err(),
            "the default applies"
        );
        q.set(&a, Some(QuotaSetting::Unlimited));
        assert!(q.reserve(&a, &f, &p, 1000, 1000, 0).is_ok());
        q.set(&a, Some(QuotaSetting::Bytes(20)));
        assert!(q.reserve(&a, &f, &p, 20, 20, 0).is_ok());
        q.set(&a, None);
        assert_eq!(q.usage([a])[0].quota, Some(10), "back to the default");
    }

    #[test]
    fn partial_uploads_count_against_the_account() {
        let q = quotas(Some(100), 0);
        let (a, f, p) = names();
        q.set_partials(&a, &f, 90);
        assert!(q.reserve(&a, &f, &p, 20, 20, 0).is_err());
        q.set_partials(&a, &f, 0);
        assert!(q.reserve(&a, &f, &p, 20, 20, 0).is_ok());
    }

    #[test]
    fn the_free_space_reserve_refuses_what_would_go_below_it() {
        let q = quotas(None, u64::MAX / 2);
        let (a, f, p) = names();
        let refused = q
            .reserve(&a, &f, &p, 1, 1, 0)
            .err()
            .expect("nothing is that free");
        assert!(
            refused.starts_with("server low on disk space ("),
            "{refused}"
        );
        assert!(refused.contains("server.min_free_space"), "{refused}");
        let q = quotas(None, 0);
        assert!(q.reserve(&a, &f, &p, 1, 1, 0).is_ok());
    }
}
