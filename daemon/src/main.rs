//! `filesyncd`: parses arguments, loads the config, and runs [`filesyncd::run`].
//!
//! Exit codes: 0 after a clean stop, 1 when start-up fails (bad config, socket or
//! listener in use), 2 for usage errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use filesyncd::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "filesyncd",
    version,
    about = "The filesync daemon: keeps folders in sync through a server, and serves them"
)]
struct Args {
    /// Config file [default: $XDG_CONFIG_HOME/filesync/filesyncd.toml, /etc/filesync/filesyncd.toml for root]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Control socket path, overriding daemon.control_socket in the config.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    filesyncd::lifecycle::init_logging();
    let file = args.config.unwrap_or_else(Config::default_path);
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("filesyncd: error: {e}");
            return ExitCode::from(1);
        }
    };
    let socket = args
        .socket
        .or_else(|| config.daemon.control_socket.clone())
        .unwrap_or_else(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            filesync_proto::control::default_socket_path(
                std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
                uid,
            )
        });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("filesyncd: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        filesyncd::lifecycle::handle_signals(shutdown.clone(), reload_tx)?;
        filesyncd::run(config, socket, shutdown, reload_rx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("filesyncd: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            eprintln!("  (run with FILESYNC_LOG=debug for details)");
            ExitCode::from(1)
        }
    }
}
