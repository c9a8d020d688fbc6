//! Process lifecycle: signals and logging. SIGTERM and SIGINT stop the daemon, SIGHUP
//! reloads its config.

use anyhow::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Turns signals into a cancelled `shutdown` token and reload requests on `reload`.
#[cfg(unix)]
pub fn handle_signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); shutdown.cancel(); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); shutdown.cancel(); break; }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading config"); let _ = reload.try_send(()); }
                _ = shutdown.cancelled() => break,
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn handle_signals(shutdown: CancellationToken, _reload: mpsc::Sender<()>) -> Result<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            shutdown.cancel();
        }
    });
    Ok(())
}

/// Logs to stderr at the level `FILESYNC_LOG` sets (EnvFilter syntax, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FILESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
