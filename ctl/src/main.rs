//! `filesyncctl`: the command-line control for the filesync daemon (`filesyncd`).
//!
//! Each command sends one request over the daemon's local control socket and prints
//! the answer; there is no sync logic here. Modules: `cli` (arguments), `autostart`
//! (starting the daemon at logon, Windows), `generate`
//! (completions and man pages), `commands`
//! (command to request, answer to output), `invites` (`server invites`), `transport`
//! (the socket and its framing),
//! `wait` (the `wait` polling loop), `web` (opening the web page's login URL), `output`
//! and `format` (human and JSON rendering).
//!
//! Exit codes:
//!
//! * 0: success;
//! * 1: the operation failed (the daemon's message, or ours, on stderr);
//! * 2: usage error (bad arguments, reported by clap);
//! * 3: the daemon is not reachable (not running, or no access to its socket).
//!
//! Every error is printed as `filesyncctl: error: …`, then one `  caused by: …` line per
//! underlying cause, then a `hint:` line when there is something to do about it.

mod answer;
mod autostart;
mod cli;
mod commands;
mod format;
mod generate;
mod invites;
mod output;
mod transport;
mod wait;
mod web;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::Cli;
use crate::transport::{Client, Unreachable};

/// The operation failed.
const EXIT_FAILED: u8 = 1;
/// Bad arguments; clap exits with this code for usage errors.
const EXIT_USAGE: u8 = 2;
/// No daemon to talk to.
const EXIT_UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Prints help and version to stdout (exit 0), usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

fn run(cli: Cli) -> Result<()> {
    // One request at a time: a single-threaded runtime is all the CLI needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::new(transport::socket_path(cli.socket));
    runtime.block_on(commands::run(cli.command, &client))
}

/// Prints `err` with its causes and a hint, and picks the exit code for it.
fn report(err: &anyhow::Error) -> ExitCode {
    let mut text = format!("filesyncctl: error: {err}\n");
    for cause in err.chain().skip(1) {
        text.push_str(&format!("  caused by: {cause}\n"));
    }
    let unreachable = err.chain().find_map(|e| e.downcast_ref::<Unreachable>());
    if let Some(hint) = unreachable.and_then(Unreachable::hint) {
        text.push_str(&format!("hint: {hint}\n"));
    }
    // The causes may quote the daemon, and through it a peer.
    let text = output::shown(&text, false);
    // Nothing is left to tell the user if stderr itself is gone.
    let _ = io::stderr().write_all(text.as_bytes());
    ExitCode::from(match unreachable {
        Some(_) => EXIT_UNREACHABLE,
        None => EXIT_FAILED,
    })
}
