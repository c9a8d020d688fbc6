//! `filesyncctl share`, `unshare` and `shares` on a device: the request goes to the
//! server of the folder named, as this device's account there, on a connection of its
//! own (`Sharing` instead of `Hello`; see [`filesync_proto::wire::ShareRequest`]). The
//! server decides everything: only the owning account may share its folders.

use anyhow::{Result, bail};
use filesync_proto::AccountName;
use filesync_proto::control::{ControlErrorKind, Request, Response};
use filesync_proto::wire::{ClientMsg, ServerMsg, ShareGrant, ShareRequest};
use futures::future::BoxFuture;

use super::ClientIdentity;
use crate::config::Config;
use crate::server::shares::infos;

fn error(kind: ControlErrorKind, message: String) -> Response {
    Response::Error { kind, message }
}

/// Answers a `Share`, `Unshare` or `Shares` request: the grants of the folder
/// concerned, or for `shares` without a folder, those of every server this device's
/// folders sync with.
pub fn handle(
    config: &Config,
    identity: &ClientIdentity,
    request: Request,
) -> BoxFuture<'static, Response> {
    let requests = match plan(config, request) {
        Ok(requests) => requests,
        Err(message) => {
            return Box::pin(std::future::ready(error(
                ControlErrorKind::BadRequest,
                message,
            )));
        }
    };
    let identity = identity.clone();
    Box::pin(async move {
        let mut all = Vec::new();
        for (server, account, request) in requests {
            match ask(&identity, &server, account.as_ref(), request).await {
                Ok(grants) => all.extend(infos(grants)),
                Err(e) => return error(ControlErrorKind::Failed, format!("{e:#}")),
            }
        }
        Response::Shares(all)
    })
}

/// A server to ask, as which of this device's accounts there (`None`: the only one),
/// and what.
type Ask = (String, Option<AccountName>, ShareRequest);

/// The servers to ask, and what.
fn plan(config: &Config, request: Request) -> Result<Vec<Ask>, String> {
    let named = |want: &str| {
        config
            .find_folder(want)
            .map(|f| (f.server.clone(), f.account.clone(), f.name.clone()))
            .ok_or_else(|| {
                format!(
                    "no folder named or at {want:?} (or the name is used for two servers: \
                     give the path); `filesyncctl status` lists the folders"
                )
            })
    };
    Ok(match request {
        Request::Share {
            folder,
            with,
            read_only,
        } => {
            let (server, as_account, folder) = named(&folder)?;
            let with = account(&with)?;
            vec![(
                server,
                as_account,
                ShareRequest::Share {
                    folder,
                    with,
                    read_only,
                },
            )]
        }
        Request::Unshare { folder, with } => {
            let (server, as_account, folder) = named(&folder)?;
            let with = account(&with)?;
            vec![(server, as_account, ShareRequest::Unshare { folder, with })]
        }
        Request::Shares { folder: Some(want) } => {
            let (server, as_account, folder) = named(&want)?;
            let folder = Some(folder);
            vec![(server, as_account, ShareRequest::List { folder })]
        }
        Request::Shares { folder: None } => {
            let mut logins: Vec<(&String, &Option<AccountName>)> = config
                .folders
                .iter()
                .map(|f| (&f.server, &f.account))
                .collect();
            logins.sort();
            logins.dedup();
            logins
                .into_iter()
                .map(|(s, a)| (s.clone(), a.clone(), ShareRequest::List { folder: None }))
                .collect()
        }
        other => return Err(format!("{other:?} is not a sharing request")),
    })
}

fn account(name: &str) -> Result<AccountName, String> {
    AccountName::new(name).map_err(|e| format!("--with: {e}"))
}

/// Sends one sharing request to `server` as `account` there (the folder's own account,
/// never another credential of this device).
async fn ask(
    identity: &ClientIdentity,
    server: &str,
    account: Option<&AccountName>,
    request: ShareRequest,
) -> Result<Vec<ShareGrant>> {
    let me = (&identity.device, identity.device_name.as_str());
    let answer = identity
        .trust
        .one_request(server, account, me, ClientMsg::Sharing(request))
        .await?;
    match answer {
        Some(ServerMsg::Sharing(Ok(grants))) => Ok(grants),
        Some(ServerMsg::Sharing(Err(why))) => bail!("server {server} refused: {why}"),
        Some(other) => bail!("protocol error: expected Sharing, got {other:?}"),
        None => bail!(
            "server {server} closed the connection (a server older than protocol version 5 \
             does not know shares)"
        ),
    }
}
