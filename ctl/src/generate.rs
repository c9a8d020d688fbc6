//! Shell completions and man pages, generated from the clap definition in `cli` so they
//! never drift from the real arguments. Used by `packaging/build.sh`.

use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "filesyncctl", &mut io::stdout());
}

/// Writes `filesyncctl.1` and one page per subcommand (`filesyncctl-add.1`, …) into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("filesyncctl.1")).unwrap();
        assert!(main.contains("wait"), "{main}");
        for sub in ["add", "status", "wait", "events", "resolve"] {
            assert!(
                dir.path().join(format!("filesyncctl-{sub}.1")).is_file(),
                "no page for {sub}"
            );
        }
    }
}
