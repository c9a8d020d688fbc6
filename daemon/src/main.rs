//! `filesyncd`: parses arguments, loads the config, detaches when asked, and runs
//! [`filesyncd::run`].
//!
//! Exit codes: 0 after a clean stop, 1 when start-up fails (bad config, socket or
//! listener in use), 2 for usage errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use filesyncd::config::Config;
use filesyncd::lifecycle;
use tokio_util::sync::CancellationToken;

/// How long blocking work (a file being hashed or fsynced) may hold the exit once every
/// task has been asked to stop.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "filesyncd",
    version,
    about = "The filesync daemon: keeps folders in sync through a server, and serves them",
    after_help = "Signals: SIGHUP reloads the config file; SIGTERM and SIGINT stop cleanly.\n\
                  Logs go to the journal under systemd, else to stderr; FILESYNC_LOG sets the \
                  level (e.g. FILESYNC_LOG=debug)."
)]
struct Args {
    /// Config file [default: $XDG_CONFIG_HOME/filesync/filesyncd.toml, /etc/filesync/filesyncd.toml for root]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Control socket path, overriding daemon.control_socket in the config.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Detach from the terminal and run in the background (for systems without
    /// systemd; under systemd use the units instead). Returns once the daemon is ready.
    #[arg(long)]
    daemon: bool,
    /// With --daemon: where to write the daemon's pid [default: filesyncd.pid beside the
    /// control socket; in the state directory on Windows].
    #[arg(long, value_name = "PATH", requires = "daemon")]
    pid_file: Option<PathBuf>,
    /// With --daemon: the log file, used when there is no journal [default:
    /// STATE_DIR/filesyncd.log].
    #[arg(long, value_name = "PATH", requires = "daemon")]
    log_file: Option<PathBuf>,
    /// Print this manual page (roff) to stdout; used by the packages.
    #[arg(long, hide = true)]
    man_page: bool,
    #[command(subcommand)]
    command: Option<Admin>,
}

/// One-shot administration of the server role's storage; the daemon does not start.
#[derive(clap::Subcommand)]
enum Admin {
    /// Move this embedded server's data (server.data_dir: accounts, devices, folders
    /// with their history, versions) into the cluster that [server.cluster] names, whose
    /// database must be empty. Stop the server first. See docs/cluster.md.
    MigrateToCluster,
    /// Delete the blocks in the cluster's bucket that no content refers to and that are
    /// older than server.cluster.gc_grace.
    Gc,
    /// Write the current tree of the cluster folder ACCOUNT/FOLDER into DIR (absent or
    /// empty).
    Export {
        #[arg(value_name = "ACCOUNT/FOLDER")]
        folder: String,
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man_page {
        use clap::CommandFactory;
        return match clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("filesyncd: error: cannot write the man page: {e}");
                ExitCode::from(1)
            }
        };
    }
    let file = args.config.unwrap_or_else(Config::default_path);
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("filesyncd: error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(admin) = args.command {
        lifecycle::init_logging(false);
        filesyncd::fs::durable::at_start();
        return one_shot(&config, admin);
    }
    let socket = args
        .socket
        .or_else(|| config.daemon.control_socket.clone())
        .unwrap_or_else(filesyncd::control::default_path);
    if args.daemon {
        let journal = lifecycle::journal_available();
        let pid_file = args
            .pid_file
            .unwrap_or_else(|| lifecycle::default_pid_file(&socket, &config.daemon.state_dir));
        let log_file = args
            .log_file
            .unwrap_or_else(|| config.daemon.state_dir.join("filesyncd.log"));
        if let Err(e) = filesyncd::fs::private::create_dir(&config.daemon.state_dir)
            .and_then(|()| lifecycle::detach(pid_file, (!journal).then_some(&*log_file)))
        {
            eprintln!("filesyncd: error: cannot detach: {e:#}");
            return ExitCode::from(1);
        }
        lifecycle::init_logging(journal);
    } else {
        lifecycle::init_logging(lifecycle::stderr_is_journal());
    }
    lifecycle::limit_malloc_arenas();
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        lifecycle::handle_signals(shutdown.clone(), reload_tx)?;
        filesyncd::run(config, socket, shutdown, reload_rx).await
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    let detached = lifecycle::is_detached();
    lifecycle::stopping();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if detached {
                tracing::error!("cannot start: {e:#}");
            }
            eprintln!("filesyncd: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            eprintln!("  (run with FILESYNC_LOG=debug for details)");
            ExitCode::from(1)
        }
    }
}

/// Runs an [`Admin`] command to its end: what it did on stdout, exit 0; or the error,
/// exit 1.
fn one_shot(config: &Config, admin: Admin) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let done = runtime.block_on(async {
        match admin {
            Admin::MigrateToCluster => filesyncd::server::cluster::migrate_to_cluster(config).await,
            Admin::Gc => filesyncd::server::cluster::collect_garbage(config).await,
            Admin::Export { folder, dir } => {
                filesyncd::server::cluster::export_folder(config, &folder, &dir).await
            }
        }
    });
    match done {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("filesyncd: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

/// The multi-threaded runtime; `None`, said on stderr, when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("filesyncd: error: cannot start the async runtime: {e}");
            None
        }
    }
}
