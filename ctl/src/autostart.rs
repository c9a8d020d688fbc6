//! `filesyncctl autostart enable|disable|status`: starting the daemon when the user
//! logs on, without a console, so it logs to its file (README "Windows").
//!
//! On Windows the current user's `Run` key (`HKCU\Software\Microsoft\Windows\
//! CurrentVersion\Run`) gets a value `filesync` holding `"…\filesyncd.exe" --daemon`,
//! the `filesyncd.exe` beside this `filesyncctl.exe`. It is written, read and removed
//! with `reg.exe`, which every Windows (and Wine) has. Unlike a scheduled task with a
//! logon trigger, it needs no administrator rights. On Linux the user unit does this job,
//! and the command says so.

use std::path::Path;

use anyhow::Result;

use crate::cli::AutostartCommand;

// The `reg.exe` arguments and the reading of its answer are plain text, unit-tested on
// every platform but used on Windows alone.

/// The per-user key whose values Windows runs at logon.
#[cfg_attr(not(windows), allow(dead_code))]
const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
/// Our value in [`RUN_KEY`].
#[cfg_attr(not(windows), allow(dead_code))]
const VALUE: &str = "filesync";

/// The command line that starts the daemon at logon.
#[cfg_attr(not(windows), allow(dead_code))]
fn command_line(daemon: &Path) -> String {
    format!("\"{}\" --daemon", daemon.display())
}

/// The `reg.exe` arguments that carry out `action` for the daemon at `daemon`.
#[cfg_attr(not(windows), allow(dead_code))]
fn reg_args(action: &AutostartCommand, daemon: &Path) -> Vec<String> {
    let args: &[&str] = match action {
        AutostartCommand::Enable => &["add", RUN_KEY, "/v", VALUE, "/t", "REG_SZ", "/f", "/d"],
        AutostartCommand::Disable => &["delete", RUN_KEY, "/v", VALUE, "/f"],
        AutostartCommand::Status => &["query", RUN_KEY, "/v", VALUE],
    };
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if matches!(action, AutostartCommand::Enable) {
        args.push(command_line(daemon));
    }
    args
}

/// The command line registered in `reg query`'s output, if our value is there.
#[cfg_attr(not(windows), allow(dead_code))]
fn registered(query_output: &str) -> Option<&str> {
    query_output.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(VALUE)?;
        let (_, value) = rest.split_once("REG_SZ")?;
        Some(value.trim())
    })
}

#[cfg(windows)]
pub fn run(action: AutostartCommand) -> Result<()> {
    use anyhow::{Context, bail};

    let daemon = std::env::current_exe()
        .context("cannot find where filesyncctl.exe is")?
        .with_file_name("filesyncd.exe");
    let reg = |action: &AutostartCommand| {
        let out = std::process::Command::new("reg")
            .args(reg_args(action, &daemon))
            .output()
            .context("cannot run reg.exe")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::Ok((out.status.success(), text, out.stderr))
    };
    let (present, query, _) = reg(&AutostartCommand::Status)?;
    let current = present.then(|| registered(&query)).flatten();
    match action {
        AutostartCommand::Status => match current {
            Some(line) => println!("enabled: {line} runs at logon ({RUN_KEY}\\{VALUE})"),
            None => println!("disabled (enable with `filesyncctl autostart enable`)"),
        },
        AutostartCommand::Enable => {
            if !daemon.is_file() {
                bail!(
                    "{} not found: keep filesyncd.exe beside filesyncctl.exe and run this again",
                    daemon.display()
                );
            }
            let (ok, _, stderr) = reg(&action)?;
            if !ok {
                bail!(
                    "reg.exe could not write {RUN_KEY}\\{VALUE}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
            println!("enabled: {} runs at logon", command_line(&daemon));
        }
        AutostartCommand::Disable => {
            if current.is_none() {
                println!("autostart was not enabled");
                return Ok(());
            }
            let (ok, _, stderr) = reg(&action)?;
            if !ok {
                bail!(
                    "reg.exe could not remove {RUN_KEY}\\{VALUE}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
            println!("disabled: filesyncd no longer starts at logon");
        }
    }
    Ok(())
}

#[cfg(not(windows))]
pub fn run(_action: AutostartCommand) -> Result<()> {
    anyhow::bail!(
        "autostart is for Windows; here the user unit starts the daemon at login: \
         systemctl --user enable --now filesyncd"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_writes_the_daemon_with_daemon_flag_into_the_users_run_key() {
        let daemon = Path::new(r"C:\Programs\filesync\filesyncd.exe");
        assert_eq!(
            reg_args(&AutostartCommand::Enable, daemon),
            [
                "add",
                r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
                "/v",
                "filesync",
                "/t",
                "REG_SZ",
                "/f",
                "/d",
                r#""C:\Programs\filesync\filesyncd.exe" --daemon"#,
            ]
        );
        assert_eq!(
            reg_args(&AutostartCommand::Disable, daemon),
            [
                "delete",
                r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
                "/v",
                "filesync",
                "/f"
            ]
        );
        assert_eq!(reg_args(&AutostartCommand::Status, daemon)[0], "query");
    }

    #[test]
    fn the_registered_command_line_is_read_from_reg_query() {
        let out = "\r\nHKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\r\n    \
                   filesync    REG_SZ    \"C:\\p\\filesyncd.exe\" --daemon\r\n\r\n";
        assert_eq!(registered(out), Some(r#""C:\p\filesyncd.exe" --daemon"#));
        assert_eq!(registered("ERROR: not found\r\n"), None);
        assert_eq!(registered("    filesyncx    REG_DWORD    0x1\r\n"), None);
    }
}
