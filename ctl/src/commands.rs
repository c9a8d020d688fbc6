//! One request per command: builds it from the parsed arguments, sends it, and turns
//! the daemon's answer into output or an error.

use std::path::Path;

use anyhow::{Context, Result, bail};
use filesync_proto::FolderName;
use filesync_proto::auth::InviteToken;
use filesync_proto::control::{AddFolder, Request, Response};

use crate::answer::{
    expect_accounts, expect_conflicts, expect_ok, expect_shares, expect_status, expect_versions,
    unexpected,
};
use crate::autostart;
use crate::cli::{
    AddArgs, Command, DeviceCommand, InvitesCommand, ResolveArgs, ServerCommand, Target,
};
use crate::format::unix_now;
use crate::generate;
use crate::invites;
use crate::output;
use crate::transport::{Client, RESPONSE_TIMEOUT};
use crate::wait::wait;
use crate::web;

pub async fn run(command: Command, client: &Client) -> Result<()> {
    match command {
        Command::Add(args) => confirm(client, Request::Add(add_folder(args)?)).await,
        Command::Remove { folder } => {
            let folder = folder_arg(folder)?;
            confirm(client, Request::Remove { folder }).await
        }
        Command::Pause(target) => {
            let folder = target_arg(target)?;
            confirm(client, Request::Pause { folder }).await
        }
        Command::Resume {
            target,
            confirm_deletes,
        } => {
            let folder = target_arg(target)?;
            let request = Request::Resume {
                folder,
                confirm_deletes,
            };
            confirm(client, request).await
        }
        Command::Status { json, folder } => {
            let folder = folder.map(folder_arg).transpose()?;
            status(client, folder, json).await
        }
        Command::Wait { timeout, folder } => {
            let folder = folder.map(folder_arg).transpose()?;
            wait(client, folder, timeout).await
        }
        Command::Rescan {
            folder,
            recreate_marker,
        } => {
            let folder = folder.map(folder_arg).transpose()?;
            let request = Request::Rescan {
                folder,
                recreate_marker,
            };
            confirm(client, request).await
        }
        Command::Reload => confirm(client, Request::Reload).await,
        Command::Conflicts { json, folder } => {
            let folder = folder.map(folder_arg).transpose()?;
            conflicts(client, folder, json).await
        }
        Command::Resolve(args) => confirm(client, resolve(args)?).await,
        Command::Versions { json, folder, path } => {
            let folder = folder_arg(folder)?;
            versions(client, folder, path, json).await
        }
        Command::Restore {
            folder,
            path,
            version,
        } => {
            let folder = folder_arg(folder)?;
            let request = Request::Restore {
                folder,
                path,
                version,
            };
            confirm(client, request).await
        }
        Command::Revert { folder } => {
            let folder = folder_arg(folder)?;
            revert(client, folder).await
        }
        Command::Trust {
            server,
            fingerprint,
        } => {
            let request = Request::Trust {
                server,
                fingerprint,
            };
            confirm(client, request).await
        }
        Command::Server(ServerCommand::Invite { account, expires }) => {
            let request = Request::ServerInvite {
                account,
                expires_secs: expires.map(|d| d.as_secs()),
            };
            confirm(client, request).await
        }
        Command::Server(ServerCommand::Devices { json }) => devices(client, json).await,
        Command::Server(ServerCommand::Revoke { device }) => {
            confirm(client, Request::ServerRevoke { device }).await
        }
        Command::Share {
            folder,
            with,
            read_only,
        } => {
            let folder = folder_arg(folder)?;
            let request = Request::Share {
                folder,
                with,
                read_only,
            };
            shares(client, request, false).await
        }
        Command::Unshare { folder, with } => {
            let folder = folder_arg(folder)?;
            shares(client, Request::Unshare { folder, with }, false).await
        }
        Command::Shares { json, folder } => {
            let folder = folder.map(folder_arg).transpose()?;
            shares(client, Request::Shares { folder }, json).await
        }
        Command::Server(ServerCommand::Share {
            folder,
            with,
            read_only,
        }) => {
            let (owner, folder) = owner_folder(&folder)?;
            let request = Request::ServerShare {
                owner,
                folder,
                with,
                read_only,
            };
            shares(client, request, false).await
        }
        Command::Server(ServerCommand::Unshare { folder, with }) => {
            let (owner, folder) = owner_folder(&folder)?;
            let request = Request::ServerUnshare {
                owner,
                folder,
                with,
            };
            shares(client, request, false).await
        }
        Command::Server(ServerCommand::Shares { json, folder }) => {
            shares(client, Request::ServerShares { folder }, json).await
        }
        Command::Server(ServerCommand::Invites { json, action }) => match action {
            None => invites::list(client, json).await,
            Some(InvitesCommand::Cancel { id }) => {
                confirm(client, Request::ServerCancelInvite { id }).await
            }
        },
        Command::Server(ServerCommand::Quota { account, quota }) => {
            confirm(client, Request::ServerQuota { account, quota }).await
        }
        Command::Server(ServerCommand::Export { folder, dir }) => {
            let request = Request::ServerExport {
                folder,
                dir: absolute(&dir)?,
            };
            // As long as the folder takes to write.
            let message = expect_ok(client.call(&request, None).await?)?;
            output::print(&format!("{message}\n"))
        }
        Command::Device(DeviceCommand::Invite { server, account }) => {
            confirm(client, Request::DeviceInvite { server, account }).await
        }
        Command::Web { open } => {
            let url = expect_ok(
                client
                    .call(&Request::WebLogin, Some(RESPONSE_TIMEOUT))
                    .await?,
            )?;
            output::print(&format!("{url}\n"))?;
            if open {
                web::open(&url)?;
            }
            Ok(())
        }
        Command::Events {
            follow,
            json,
            folder,
        } => {
            let folder = folder.map(folder_arg).transpose()?;
            events(client, folder, follow, json).await
        }
        Command::Completions { shell } => {
            generate::completions(shell);
            Ok(())
        }
        Command::Man { dir } => generate::man_pages(&dir),
        Command::Autostart(action) => autostart::run(action),
    }
}

async fn devices(client: &Client, json: bool) -> Result<()> {
    let response = client
        .call(&Request::ServerDevices, Some(RESPONSE_TIMEOUT))
        .await?;
    let accounts = expect_accounts(response)?;
    let text = if json {
        output::accounts_json(&accounts)?
    } else {
        output::accounts_human(&accounts, unix_now())
    };
    output::print(&text)
}

/// Sends a request answered by the grants it concerns, and prints them.
async fn shares(client: &Client, request: Request, json: bool) -> Result<()> {
    let response = client.call(&request, Some(RESPONSE_TIMEOUT)).await?;
    let grants = expect_shares(response)?;
    let text = if json {
        output::shares_json(&grants)?
    } else {
        output::shares_human(&grants)
    };
    output::print(&text)
}

/// `OWNER/FOLDER` of the server's share commands, split.
fn owner_folder(folder: &str) -> Result<(String, String)> {
    match folder.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() => {
            Ok((owner.to_string(), name.to_string()))
        }
        _ => bail!(
            "{folder:?} is not OWNER/FOLDER: give the owner's account and the folder's name, \
             e.g. alice/docs"
        ),
    }
}

/// The daemon answers a revert after scanning the folder, which a folder busy with a
/// long download starts only after it: no time limit, so that the answer (what was
/// moved where) is never lost to a timeout while the revert goes on.
async fn revert(client: &Client, folder: String) -> Result<()> {
    let message = expect_ok(client.call(&Request::Revert { folder }, None).await?)?;
    output::print(&format!("{message}\n"))
}

/// Sends a request answered by a confirmation, and prints its message if it has one.
async fn confirm(client: &Client, request: Request) -> Result<()> {
    let message = expect_ok(client.call(&request, Some(RESPONSE_TIMEOUT)).await?)?;
    if message.is_empty() {
        return Ok(());
    }
    output::print(&format!("{message}\n"))
}

async fn status(client: &Client, folder: Option<String>, json: bool) -> Result<()> {
    let request = Request::Status { folder };
    let status = expect_status(client.call(&request, Some(RESPONSE_TIMEOUT)).await?)?;
    let text = if json {
        output::status_json(&status)?
    } else {
        output::status_human(&status, unix_now(), output::colour_stdout())
    };
    output::print(&text)
}

/// Prints each event as it arrives; ends at the daemon's `Ok` (without `--follow`).
async fn events(client: &Client, folder: Option<String>, follow: bool, json: bool) -> Result<()> {
    let request = Request::Events { folder, follow };
    let limit = (!follow).then_some(RESPONSE_TIMEOUT);
    client
        .stream(&request, limit, |response| match response {
            Response::Event(event) => {
                let line = if json {
                    output::event_json(&event)?
                } else {
                    output::event_human(&event)
                };
                output::print(&line)?;
                Ok(true)
            }
            Response::Ok { .. } => Ok(false),
            other => Err(unexpected(other, "an event")),
        })
        .await
}

async fn conflicts(client: &Client, folder: Option<String>, json: bool) -> Result<()> {
    let request = Request::Conflicts { folder };
    let conflicts = expect_conflicts(client.call(&request, Some(RESPONSE_TIMEOUT)).await?)?;
    let text = if json {
        output::conflicts_json(&conflicts)?
    } else {
        output::conflicts_human(&conflicts, unix_now())
    };
    output::print(&text)
}

/// PATH is relative to the folder's root and goes as given: making it absolute against
/// our working directory would name a different file.
async fn versions(client: &Client, folder: String, path: String, json: bool) -> Result<()> {
    let request = Request::Versions {
        folder,
        path: path.clone(),
    };
    let versions = expect_versions(client.call(&request, Some(RESPONSE_TIMEOUT)).await?)?;
    let text = if json {
        output::versions_json(&versions)?
    } else {
        output::versions_human(&versions, &path, unix_now())
    };
    output::print(&text)
}

/// The pattern is relative to the folder's root, and may be a glob: it goes as given.
fn resolve(args: ResolveArgs) -> Result<Request> {
    Ok(Request::Resolve {
        folder: folder_arg(args.folder)?,
        pattern: args.pattern,
        keep: args.keep.into(),
    })
}

/// A token that cannot be one is refused here, before the daemon or the config is
/// touched.
fn add_folder(args: AddArgs) -> Result<AddFolder> {
    let token = match args.token.as_deref() {
        Some("-") => Some(token_from(std::io::stdin().lock())?),
        _ => args.token,
    };
    let carried = match &token {
        Some(token) => {
            Some(InviteToken::parse(token).context("--token is not a usable invite token")?)
        }
        None => None,
    };
    let server = match (args.server, carried) {
        (Some(server), _) => server,
        (None, Some(token)) => token.server,
        (None, None) => bail!("give the server to sync with: --server HOST:PORT"),
    };
    Ok(AddFolder {
        path: absolute(&args.path)?,
        server,
        name: args.name,
        token,
        mode: args.mode.map(Into::into),
        account: args.account,
    })
}

/// The token of `--token -`: the first line of `input`, without surrounding blanks. Reads
/// at most a little more than any token, so a wrong file piped in is refused quickly.
fn token_from(input: impl std::io::Read) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    input
        .take(64 * 1024)
        .read_to_string(&mut text)
        .context("--token -: cannot read the token from standard input")?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        bail!(
            "--token -: standard input held no token; pipe it in, e.g. \
             `filesyncctl add PATH --server HOST:PORT --token - < token.txt`"
        );
    }
    Ok(token.to_owned())
}

/// `None` for `--all`; clap makes sure exactly one of the two is given.
fn target_arg(target: Target) -> Result<Option<String>> {
    if target.all {
        return Ok(None);
    }
    target.folder.map(folder_arg).transpose()
}

/// A FOLDER argument: a path is sent in its absolute form, so it means the same to the
/// daemon whatever our working directory; anything else is a folder name and is sent
/// as given. A path is what no folder name can be (absolute, or with a separator or a
/// leading dot), so `remove ./Docs` works, also after `Docs` was deleted.
fn folder_arg(folder: String) -> Result<String> {
    let path = Path::new(&folder);
    // A bare word is a folder name, even if a directory of that name happens to be in
    // the working directory (`filesyncctl pause docs` run inside a project with a docs/
    // subdirectory must mean the folder named docs); write `./docs` for the path.
    // `OWNER/FOLDER` (two names and one `/`) is a shared folder's name; write
    // `./OWNER/FOLDER` for a relative path of that shape.
    let shared_name = folder.contains('/') && FolderName::new(folder.as_str()).is_ok();
    let unlike_a_name = !shared_name
        && (folder.starts_with('.') || path.components().nth(1).is_some() || path.is_absolute());
    if unlike_a_name {
        absolute(path)
    } else {
        Ok(folder)
    }
}

/// `path` made absolute against the working directory without touching the disk, as
/// UTF-8, which is how paths cross the control socket.
fn absolute(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make {} an absolute path", path.display()))?;
    match absolute.into_os_string().into_string() {
        Ok(text) => Ok(text),
        Err(raw) => bail!(
            "the path {} is not valid UTF-8; filesync folders need UTF-8 paths",
            Path::new(&raw).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().to_str().unwrap().to_owned();
        assert_eq!(folder_arg(existing.clone()).unwrap(), existing);
        let missing = dir.path().join("not-here").to_str().unwrap().to_owned();
        assert_eq!(folder_arg(missing.clone()).unwrap(), missing);
        assert_eq!(folder_arg("docs-by-name".into()).unwrap(), "docs-by-name");
        // A bare word stays a name even when a directory of that name is here (Cargo
        // runs the tests in the package root, which holds `src/`).
        assert!(Path::new("src").is_dir());
        assert_eq!(folder_arg("src".into()).unwrap(), "src");
        let here = std::env::current_dir().unwrap();
        assert_eq!(Path::new(&folder_arg(".".into()).unwrap()), here);
        // Relative paths that cannot be names are made absolute even when missing.
        assert_eq!(folder_arg("alice/docs".into()).unwrap(), "alice/docs");
        for relative in ["./gone", "gone/sub/deeper", ".gone", "./alice/docs"] {
            let got = folder_arg(relative.into()).unwrap();
            assert_eq!(Path::new(&got), here.join(relative), "{relative}");
        }
    }

    #[test]
    fn a_token_on_standard_input_is_its_first_line_trimmed() {
        assert_eq!(token_from(&b"  fs1-abc \nrest\n"[..]).unwrap(), "fs1-abc");
        assert_eq!(token_from(&b"fs1-abc"[..]).unwrap(), "fs1-abc");
        for empty in [&b""[..], b"\n", b"   \n"] {
            let err = token_from(empty).unwrap_err().to_string();
            assert!(err.contains("standard input held no token"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/bad\xff"));
        let err = absolute(path).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn resolve_sends_the_pattern_as_given() {
        let args = ResolveArgs {
            folder: "docs-by-name".into(),
            pattern: "notes/*.txt".into(),
            keep: crate::cli::KeepSide::Remote,
        };
        assert_eq!(
            resolve(args).unwrap(),
            Request::Resolve {
                folder: "docs-by-name".into(),
                pattern: "notes/*.txt".into(),
                keep: filesync_proto::control::Keep::Remote,
            }
        );
    }
}
