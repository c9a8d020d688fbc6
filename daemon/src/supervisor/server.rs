//! The supervisor's answers to the server role's control requests: invites, devices,
//! revocation, quotas and shares. Each runs on the blocking pool, since the account
//! store waits on a lock and on fsync.

use std::sync::Arc;

use filesync_proto::control::{QuotaChange, Request, Response};
use filesync_proto::{AccountName, DeviceId};
use futures::future::BoxFuture;

use super::{Supervisor, bad, failed, now, ok};
use crate::server::Server;
use crate::server::accounts::{Cancelled, Maker};

impl Supervisor {
    fn server(&self) -> Result<&Arc<Server>, Response> {
        self.server
            .as_ref()
            .ok_or_else(|| bad("this daemon has no server role: its config has no [server] table"))
    }

    /// Answers with `work`'s response, run on the blocking pool with the server role
    /// (account-store calls wait on a lock and on fsync).
    fn off_runtime(
        &self,
        work: impl FnOnce(&Server) -> Response + Send + 'static,
    ) -> BoxFuture<'static, Response> {
        let server = match self.server() {
            Ok(s) => s.clone(),
            Err(r) => return now(r),
        };
        Box::pin(async move {
            server
                .off_runtime(move |s| Ok(work(s)))
                .await
                .unwrap_or_else(|e| failed(format!("{e:#}")))
        })
    }

    pub(super) fn server_invite(
        &self,
        account: &str,
        expires_secs: Option<u64>,
    ) -> BoxFuture<'static, Response> {
        let account = match AccountName::new(account) {
            Ok(a) => a,
            Err(e) => return now(bad(format!("{e}"))),
        };
        let ttl = expires_secs.map_or(
            crate::server::accounts::DEFAULT_INVITE_TTL,
            std::time::Duration::from_secs,
        );
        self.off_runtime(
            move |server| match server.invite(&account, ttl, &Maker::Admin) {
                Ok(token) => ok(token),
                Err(e) => failed(format!("no invite token: {e:#}")),
            },
        )
    }

    pub(super) fn server_revoke(&self, device: &str) -> BoxFuture<'static, Response> {
        let id = match DeviceId::new(device) {
            Ok(id) => id,
            Err(e) => return now(bad(format!("{e}"))),
        };
        self.off_runtime(move |server| match server.revoke(&id) {
            Ok(Some(tokens)) => ok(format!(
                "device {id} revoked; its connections are closed{}",
                match tokens {
                    0 => String::new(),
                    1 => " and the invite token it made is cancelled".into(),
                    n => format!(" and the {n} invite tokens it made are cancelled"),
                }
            )),
            Ok(None) => bad(format!(
                "no device {id} on this server; `filesyncctl server devices` lists them"
            )),
            Err(e) => failed(format!("cannot revoke {id}: {e:#}")),
        })
    }

    pub(super) fn server_cancel_invite(&self, id: String) -> BoxFuture<'static, Response> {
        self.off_runtime(move |server| match server.cancel_invite(&id) {
            Ok(Cancelled::Done(account)) => ok(format!(
                "invite token {id} (account {account}) is cancelled; it enrols no device"
            )),
            Ok(Cancelled::Unknown) => bad(format!(
                "no invite token {id:?} on this server; `filesyncctl server invites` \
                 lists the pending ones by id"
            )),
            Ok(Cancelled::Used(device)) => bad(format!(
                "invite token {id} was already used, by device {device}; to cut that \
                 device off: `filesyncctl server revoke {device}`"
            )),
            Ok(Cancelled::NotPending) => bad(format!(
                "invite token {id} has expired or was cancelled already; it enrols no device"
            )),
            Err(e) => failed(format!("cannot cancel invite token {id}: {e:#}")),
        })
    }

    pub(super) fn server_devices(&self) -> BoxFuture<'static, Response> {
        self.off_runtime(|server| match server.accounts() {
            Ok(list) => Response::Accounts(list),
            Err(e) => failed(format!("cannot read the account store: {e:#}")),
        })
    }

    pub(super) fn server_invites(&self) -> BoxFuture<'static, Response> {
        self.off_runtime(|server| match server.invites() {
            Ok(list) => Response::Invites(list),
            Err(e) => failed(format!("cannot read the account store: {e:#}")),
        })
    }

    pub(super) fn server_quota(
        &self,
        account: String,
        quota: QuotaChange,
    ) -> BoxFuture<'static, Response> {
        self.off_runtime(move |server| set_quota(server, &account, quota))
    }

    /// `filesyncctl server export`: a cluster folder's tree written into a directory.
    pub(super) fn server_export(
        &self,
        folder: String,
        dir: String,
    ) -> BoxFuture<'static, Response> {
        let server = match self.server() {
            Ok(s) => s.clone(),
            Err(r) => return now(r),
        };
        Box::pin(async move {
            match server.export(&folder, std::path::Path::new(&dir)).await {
                Ok(said) => ok(said),
                Err(e) => failed(format!("{e:#}")),
            }
        })
    }

    /// `filesyncctl server share`, `unshare` and `shares`, answered by
    /// [`crate::server::shares::control`].
    pub(super) fn server_shares(&self, request: Request) -> BoxFuture<'static, Response> {
        self.off_runtime(move |server| crate::server::shares::control(server, request))
    }
}

/// `filesyncctl server quota`: sets `account`'s quota, on the blocking pool (the
/// account store's SQLite).
fn set_quota(server: &Server, account: &str, quota: QuotaChange) -> Response {
    let account = match AccountName::new(account) {
        Ok(a) => a,
        Err(e) => return bad(format!("{e}")),
    };
    match server.set_quota(&account, quota) {
        Ok(true) => {
            let usage = server.quota_of(&account);
            let size = crate::server::quota::size;
            let limit = usage.quota.map_or("no limit".to_string(), |q| {
                format!("a quota of {}", size(q))
            });
            ok(format!(
                "account {account} now has {limit}; it uses {}",
                size(usage.used)
            ))
        }
        Ok(false) => bad(format!(
            "no account {account} on this server; `filesyncctl server devices` lists them \
             (`filesyncctl server invite {account}` makes it)"
        )),
        Err(e) => failed(format!("cannot set the quota of {account}: {e:#}")),
    }
}
