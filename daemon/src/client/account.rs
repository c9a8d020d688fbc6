//! Which account a device syncs a folder as. A device may hold credentials for several
//! accounts of one server (one per invite token it redeemed); each folder records its
//! account (`account` in its `[[folder]]`) and logs in with that account's credential
//! only. These are the ways choosing a credential can fail, and how each is told to the
//! user of a folder.

use std::fmt;
use std::path::Path;

use filesync_proto::auth::Fingerprint;
use filesync_proto::{AccountName, FolderName};

/// Accounts as a list for a message: `home, work`.
struct Accounts<'a>(&'a [AccountName]);

impl fmt::Display for Accounts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(AccountName::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// The device holds no credential for the account asked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "this device holds no credential for account {account} on server {server}{}; enrol it \
     with an invite token of that account (`filesyncctl server invite {account}` on the \
     server, or `filesyncctl device invite --server {server}` on a device of {account}): \
     `filesyncctl add PATH --server {server} --token TOKEN`",
    held_note(held)
)]
pub struct NoCredential {
    pub server: String,
    pub account: AccountName,
    /// The accounts it does hold credentials for there.
    pub held: Vec<AccountName>,
}

fn held_note(held: &[AccountName]) -> String {
    if held.is_empty() {
        String::new()
    } else {
        format!(" (it holds credentials for: {})", Accounts(held))
    }
}

/// No account was named and the device holds credentials for several there.
#[derive(Debug, thiserror::Error)]
#[error(
    "this device holds credentials for more than one account on server {server} ({}); \
     say which one with --account NAME",
    Accounts(held)
)]
pub struct WhichAccount {
    pub server: String,
    pub held: Vec<AccountName>,
}

/// The server let the device in as another account than the one asked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "server {server} let this device in as account {accepted}, not {expected}; nothing was \
     synced"
)]
pub struct OtherAccount {
    pub server: String,
    pub expected: AccountName,
    pub accepted: AccountName,
}

/// An invite token names another certificate than the one pinned for its address (L8):
/// redeeming it would silently re-pin. `filesyncctl trust` is the deliberate way.
#[derive(Debug, thiserror::Error)]
#[error(
    "the invite token is for a server with certificate fingerprint {token}, but this device \
     has pinned fingerprint {pinned} for {server}; nothing was sent. If the server's key was \
     replaced on purpose, check the new fingerprint with its admin and run `filesyncctl \
     trust {server} {token}` first; otherwise the token belongs to another server"
)]
pub struct TokenForAnotherKey {
    pub server: String,
    pub pinned: Fingerprint,
    pub token: Fingerprint,
}

/// Rewrites a login error of folder `name` (at `path`) into what its user must do; other
/// errors pass through unchanged.
pub fn explain(e: anyhow::Error, name: &FolderName, path: &Path) -> anyhow::Error {
    let path = path.display();
    if let Some(NoCredential {
        server,
        account,
        held,
    }) = e.downcast_ref()
    {
        return anyhow::anyhow!(
            "folder {name} ({path}) syncs as account {account} on server {server}, but this \
             device holds no credential for that account{}; it never syncs as another \
             account. Get an invite token of {account} (`filesyncctl server invite {account}` \
             on the server) and run `filesyncctl remove {name}`, then `filesyncctl add {path} \
             --server {server} --name {name} --token TOKEN`",
            held_note(held)
        );
    }
    if let Some(WhichAccount { server, held }) = e.downcast_ref() {
        return anyhow::anyhow!(
            "folder {name} ({path}) does not record its account and this device holds \
             credentials for more than one account on server {server} ({}); write the right \
             one as `account = \"NAME\"` in the folder's [[folder]] table of the config file \
             (`filesyncctl status` names the file) and run `filesyncctl reload`",
            Accounts(held)
        );
    }
    if let Some(OtherAccount {
        server,
        expected,
        accepted,
    }) = e.downcast_ref()
    {
        return anyhow::anyhow!(
            "folder {name} ({path}) syncs as account {expected}, but server {server} let this \
             device in as account {accepted}; the folder was not opened there. Check the \
             device's credentials (`filesyncctl status` lists them) with the server's admin"
        );
    }
    e
}

/// The account that owns a folder: the `OWNER` of a shared folder's `OWNER/FOLDER` name,
/// else the account it syncs as.
pub fn owner(name: &FolderName, account: Option<&AccountName>) -> Option<String> {
    name.owner()
        .map(str::to_owned)
        .or_else(|| account.map(AccountName::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> AccountName {
        AccountName::new(name).unwrap()
    }

    #[test]
    fn folder_errors_name_the_folder_server_account_and_command() {
        let (name, path) = (FolderName::new("private").unwrap(), Path::new("/h/p"));
        let missing = NoCredential {
            server: "s:1".into(),
            account: account("home"),
            held: vec![account("work")],
        };
        let text = explain(missing.into(), &name, path).to_string();
        for part in [
            "folder private (/h/p)",
            "account home",
            "server s:1",
            "credentials for: work",
            "filesyncctl server invite home",
            "filesyncctl add /h/p --server s:1 --name private --token TOKEN",
        ] {
            assert!(text.contains(part), "{part:?} not in: {text}");
        }
        let which = WhichAccount {
            server: "s:1".into(),
            held: vec![account("home"), account("work")],
        };
        let text = explain(which.into(), &name, path).to_string();
        assert!(text.contains("(home, work)"), "{text}");
        assert!(text.contains("account = \"NAME\""), "{text}");
        let other = anyhow::anyhow!("cannot connect");
        assert_eq!(explain(other, &name, path).to_string(), "cannot connect");
    }

    #[test]
    fn the_owner_is_the_prefix_of_a_shared_name_else_the_account() {
        let home = account("home");
        let docs = FolderName::new("docs").unwrap();
        assert_eq!(owner(&docs, Some(&home)).as_deref(), Some("home"));
        assert_eq!(owner(&docs, None), None);
        let shared = FolderName::new("alice/docs").unwrap();
        assert_eq!(owner(&shared, Some(&home)).as_deref(), Some("alice"));
        assert_eq!(owner(&shared, None).as_deref(), Some("alice"));
    }
}
