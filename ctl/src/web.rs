//! `filesyncctl web --open`: hands the login URL to the desktop's opener.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// The program that opens a URL in the user's browser.
#[cfg(windows)]
const OPENER: (&str, &[&str]) = ("cmd", &["/C", "start", ""]);
#[cfg(target_os = "macos")]
const OPENER: (&str, &[&str]) = ("open", &[]);
#[cfg(not(any(windows, target_os = "macos")))]
const OPENER: (&str, &[&str]) = ("xdg-open", &[]);

/// Opens `url` with the desktop's browser. Without an opener (a server, a bare
/// terminal) it says so and succeeds: the URL is printed already.
pub fn open(url: &str) -> Result<()> {
    let (program, args) = OPENER;
    let status = match Command::new(program)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .status()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "filesyncctl: no {program} here to open a browser; open the URL above in one"
            );
            return Ok(());
        }
        other => other.with_context(|| {
            format!("cannot run {program} to open the page; open the URL above in a browser")
        })?,
    };
    anyhow::ensure!(
        status.success(),
        "{program} could not open the page ({status}); open the URL above in a browser"
    );
    Ok(())
}
