//! Edits of the config file for `filesyncctl add/remove/pause/resume`, made so that the
//! user's file survives them: `toml_edit` keeps every comment, blank line and key order it
//! was not asked to change, the result is parsed with [`Config::parse`] before it is written
//! (a write can never produce a config the daemon would refuse at the next start), and it
//! is replaced atomically. On any error the file is left as it was, byte for byte.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use filesync_proto::AccountName;
use filesync_proto::control::FolderMode;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, Value, value};

use super::atomic::write_atomic;
use super::{Config, ConfigError, DEFAULT_RESCAN_INTERVAL, FolderConfig, normalize};

/// Appends a `[[folder]]` table with `path`, `server`, `name` and `account`, and `mode`,
/// `rescan_interval` and `paused` only where they differ from the defaults. It lands after
/// the last `[[folder]]`, or at the end of the file.
pub fn persist_add_folder(file: &Path, folder: &FolderConfig) -> Result<(), ConfigError> {
    edit(file, |doc, _| {
        let mut table = folder_table(folder)?;
        if let Some(array) = doc.get_mut("folder").and_then(Item::as_array_mut) {
            array.push(table.into_inline_table());
            return Ok(());
        }
        if doc.is_empty() {
            // A file of comments only is, to the parser, text after the last table, which
            // would end up below the new one; keep it on top instead.
            let top = doc.decor().prefix().map(raw).unwrap_or("");
            let comments = format!("{top}{}", raw(doc.trailing()));
            doc.decor_mut().set_prefix(comments);
            doc.set_trailing("");
        }
        // A blank line sets the new table apart, unless it is all the file has.
        if !doc.to_string().trim().is_empty() {
            table.decor_mut().set_prefix("\n");
        }
        let tables = doc
            .entry("folder")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        let tables = tables
            .as_array_of_tables_mut()
            .ok_or("`folder` is not a list of tables")?;
        tables.push(table);
        Ok(())
    })
}

/// Removes the `[[folder]]` whose `path` (after `~` expansion) is `path`, with the comment
/// lines directly above its header, which describe it. Text further up that is separated
/// from them by a blank line, such as the file's opening comment, stays.
pub fn persist_remove_folder(file: &Path, path: &Path) -> Result<(), ConfigError> {
    edit(file, |doc, config| {
        let index = folder_index(config, path)?;
        match doc.get_mut("folder") {
            Some(Item::ArrayOfTables(tables)) => {
                let removed = tables.remove(index);
                if tables.is_empty() {
                    doc.remove("folder");
                }
                keep_text_above(doc, &removed);
            }
            Some(Item::Value(Value::Array(array))) => {
                array.remove(index);
            }
            _ => return Err(no_folder(path)),
        }
        Ok(())
    })
}

/// Writes `paused = true`, or removes `paused` so that a resumed folder reads as the default.
pub fn persist_set_paused(file: &Path, path: &Path, paused: bool) -> Result<(), ConfigError> {
    edit(file, |doc, config| {
        let index = folder_index(config, path)?;
        // Rewriting an unchanged value would drop a comment written after it.
        if config.folders[index].paused == paused {
            return Ok(());
        }
        let table = folder_table_mut(doc, index).ok_or_else(|| no_folder(path))?;
        if paused {
            table.insert("paused", value(true));
        } else {
            table.remove("paused");
        }
        Ok(())
    })
}

/// Writes `account = "NAME"` into the folder with `path`, which has none: a folder of a
/// config from before accounts were recorded, bound to the account it has synced as.
pub fn persist_set_account(
    file: &Path,
    path: &Path,
    account: &AccountName,
) -> Result<(), ConfigError> {
    edit(file, |doc, config| {
        let index = folder_index(config, path)?;
        match &config.folders[index].account {
            Some(written) if written == account => return Ok(()),
            Some(written) => {
                return Err(format!(
                    "folder {} already syncs as account {written}, not {account}",
                    path.display()
                ));
            }
            None => {}
        }
        let table = folder_table_mut(doc, index).ok_or_else(|| no_folder(path))?;
        table.insert("account", value(account.as_str()));
        Ok(())
    })
}

/// The `index`-th folder table of the document, in either of its spellings.
fn folder_table_mut(doc: &mut DocumentMut, index: usize) -> Option<&mut dyn TableLike> {
    match doc.get_mut("folder") {
        Some(Item::ArrayOfTables(tables)) => tables.get_mut(index).map(|t| t as &mut dyn TableLike),
        Some(Item::Value(Value::Array(array))) => array
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    }
}

fn no_folder(path: &Path) -> String {
    format!("there is no [[folder]] with path {}", path.display())
}

/// Where the folder with `path` sits among the file's folders, which are in file order in
/// both the parsed config and the document.
fn folder_index(config: &Config, path: &Path) -> Result<usize, String> {
    let path = normalize(path);
    let index = config.folders.iter().position(|f| f.path == path);
    index.ok_or_else(|| no_folder(&path))
}

fn folder_table(folder: &FolderConfig) -> Result<Table, String> {
    let path = normalize(&folder.path);
    let path = path.to_str().ok_or_else(|| {
        let path = path.display();
        format!("{path} is not valid UTF-8, so it cannot be written to the config file")
    })?;
    let mut table = Table::new();
    table.insert("path", value(path));
    table.insert("server", value(&folder.server));
    table.insert("name", value(folder.name.as_str()));
    if let Some(account) = &folder.account {
        table.insert("account", value(account.as_str()));
    }
    if folder.mode != FolderMode::TwoWay {
        table.insert("mode", value(folder.mode.as_str()));
    }
    if folder.rescan_interval != DEFAULT_RESCAN_INTERVAL {
        let interval = humantime::format_duration(folder.rescan_interval).to_string();
        table.insert("rescan_interval", value(interval));
    }
    if folder.paused {
        table.insert("paused", value(true));
    }
    Ok(table)
}

/// The parser keeps the lines above a table header with the table. Of those, the comment
/// lines right above the header and one blank line above them (the one an added table
/// gets) are the table's own; anything further up belongs to the file and is handed to
/// whatever now follows: the next table, or the end of the file.
fn keep_text_above(doc: &mut DocumentMut, removed: &Table) {
    let above = removed.decor().prefix().map(raw).unwrap_or("");
    let mut lines: Vec<&str> = above.split_inclusive('\n').collect();
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        lines.pop(); // the header's own indentation
    }
    while lines
        .last()
        .is_some_and(|l| l.trim_start().starts_with('#'))
    {
        lines.pop();
    }
    if lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let kept = lines.concat();
    if kept.is_empty() {
        return;
    }
    let after = removed.position().unwrap_or(isize::MAX);
    let next = tables_mut(doc)
        .filter(|t| t.position().is_some_and(|p| p > after))
        .min_by_key(|t| t.position());
    match next {
        Some(next) => {
            let own = next.decor().prefix().map(raw).unwrap_or("").to_owned();
            next.decor_mut().set_prefix(kept + &own);
        }
        None => {
            let trailing = raw(doc.trailing()).to_owned();
            doc.set_trailing(kept + &trailing);
        }
    }
}

/// The top-level tables, `[[folder]]` ones included: all a valid config has.
fn tables_mut(doc: &mut DocumentMut) -> impl Iterator<Item = &mut Table> {
    doc.iter_mut().flat_map(|(_, item)| match item {
        Item::Table(table) => vec![table],
        Item::ArrayOfTables(tables) => tables.iter_mut().collect(),
        _ => Vec::new(),
    })
}

/// The text of a piece of whitespace and comments; after parsing into a `DocumentMut` it
/// is always held as text, never as a span of the input.
fn raw(text: &toml_edit::RawString) -> &str {
    text.as_str().unwrap_or("")
}

/// Reads the file (a missing one is empty), lets `change` edit it, checks the result and
/// writes it if it differs. `change` gets the parsed current config to find folders in.
fn edit(
    file: &Path,
    change: impl FnOnce(&mut DocumentMut, &Config) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let error = |message: String| ConfigError {
        file: file.to_owned(),
        line: None,
        key: None,
        message,
    };
    let target = write_target(file);
    let old = match fs::read_to_string(&target) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ConfigError::io(file, "cannot read the config file", &e)),
    };
    // An invalid file is reported as it stands, with its own line numbers, rather than as
    // the edit's fault.
    let config = Config::parse(file, &old)?;
    let mut doc: DocumentMut = old
        .parse()
        .map_err(|e| error(format!("this is not valid TOML: {e}")))?;
    change(&mut doc, &config).map_err(error)?;
    let new = doc.to_string();
    if new == old {
        return Ok(());
    }
    // The lines of a file that was never written mean nothing to the user; the key and
    // the reason do.
    Config::parse(file, &new).map_err(|e| ConfigError {
        line: None,
        message: format!("{}; the file was left unchanged", e.message),
        ..e
    })?;
    write_atomic(&target, new.as_bytes())
        .map_err(|e| ConfigError::io(file, "cannot write the config file", &e))
}

/// The file to replace: through a symlink, its target, so that a config kept in a
/// dotfiles repository stays a link instead of being replaced by a copy.
fn write_target(file: &Path) -> PathBuf {
    match fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(file).unwrap_or_else(|_| file.to_owned())
        }
        _ => file.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use filesync_proto::FolderName;

    use super::*;

    /// A user's file with comments, blank lines and an end-of-line comment, with its
    /// directories under `dir`.
    fn user_file(dir: &Path) -> String {
        let root = dir.display();
        format!(
            "# My filesync config.\n\
             \n\
             [daemon]\n\
             state_dir = \"{root}/state\"   # kept apart\n\
             \n\
             # Work folders\n\
             [[folder]]\n\
             path = \"{root}/work\"\n\
             server = \"h:7101\"\n\
             \n\
             \n\
             [server]\n\
             listen = \"127.0.0.1:7101\" # local only\n"
        )
    }

    fn folder(path: PathBuf, name: &str) -> FolderConfig {
        FolderConfig::new(path, "h:7101".into(), FolderName::new(name).unwrap())
    }

    /// The names in `dir`, to see that no temp file was left behind.
    use super::super::atomic::tests::names as entries;

    #[test]
    fn add_then_remove_restores_the_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let original = user_file(dir.path());
        fs::write(&file, &original).unwrap();

        let music = FolderConfig {
            mode: FolderMode::SendOnly,
            rescan_interval: Duration::from_secs(90 * 60),
            paused: true,
            account: Some(AccountName::new("home").unwrap()),
            ..folder(dir.path().join("music"), "tunes")
        };
        persist_add_folder(&file, &music).unwrap();
        let added = fs::read_to_string(&file).unwrap();
        let table = format!(
            "server = \"h:7101\"\n\
             \n\
             [[folder]]\n\
             path = \"{}\"\n\
             server = \"h:7101\"\n\
             name = \"tunes\"\n\
             account = \"home\"\n\
             mode = \"send-only\"\n\
             rescan_interval = \"1h 30m\"\n\
             paused = true\n\
             \n\
             \n\
             [server]\n",
            music.path.display()
        );
        assert!(added.contains(&table), "{added}");
        assert!(added.starts_with(&original[..original.find("[[folder]]").unwrap()]));
        assert_eq!(Config::load(&file).unwrap().folders[1], music);

        persist_remove_folder(&file, &music.path).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), original);
        assert_eq!(entries(dir.path()), ["filesyncd.toml"]);
    }

    #[test]
    fn add_to_a_missing_file_creates_it_and_remove_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/dir/filesyncd.toml");
        let docs = folder(dir.path().join("docs"), "docs");
        persist_add_folder(&file, &docs).unwrap();
        let expected = format!(
            "[[folder]]\npath = \"{}\"\nserver = \"h:7101\"\nname = \"docs\"\n",
            docs.path.display()
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), expected);
        persist_remove_folder(&file, &docs.path).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "");
        assert_eq!(entries(&dir.path().join("new/dir")), ["filesyncd.toml"]);
    }

    #[test]
    fn pause_and_resume_touch_only_paused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let original = user_file(dir.path());
        fs::write(&file, &original).unwrap();
        let work = dir.path().join("work");

        persist_set_paused(&file, &work, true).unwrap();
        let paused = fs::read_to_string(&file).unwrap();
        let expected = original.replace("h:7101\"\n", "h:7101\"\npaused = true\n");
        assert_eq!(paused, expected);
        assert!(Config::load(&file).unwrap().folders[0].paused);

        // A second pause keeps the user's comment on the line.
        let commented = paused.replace("paused = true", "paused = true # until Monday");
        fs::write(&file, &commented).unwrap();
        persist_set_paused(&file, &work, true).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), commented);

        persist_set_paused(&file, &work.join("."), false).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), original);
        assert_eq!(entries(dir.path()), ["filesyncd.toml"]);
    }

    #[test]
    fn an_old_folder_gets_its_account_written_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let original = user_file(dir.path());
        fs::write(&file, &original).unwrap();
        let work = dir.path().join("work");
        let home = AccountName::new("home").unwrap();

        persist_set_account(&file, &work, &home).unwrap();
        let expected = original.replace("h:7101\"\n", "h:7101\"\naccount = \"home\"\n");
        assert_eq!(fs::read_to_string(&file).unwrap(), expected);
        assert_eq!(
            Config::load(&file).unwrap().folders[0].account,
            Some(home.clone())
        );
        // Once written, the same account is no change and another one is refused.
        persist_set_account(&file, &work, &home).unwrap();
        let other = AccountName::new("work").unwrap();
        let err = persist_set_account(&file, &work, &other).unwrap_err();
        assert!(
            err.message.contains("already syncs as account home"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), expected);
    }

    #[test]
    fn inline_folder_lists_are_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        fs::write(&file, "folder = [] # none yet\n").unwrap();
        let docs = folder(dir.path().join("docs"), "docs");
        persist_add_folder(&file, &docs).unwrap();
        persist_set_paused(&file, &docs.path, true).unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.folders.len(), 1);
        assert!(config.folders[0].paused);
        persist_remove_folder(&file, &docs.path).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("folder = [") && text.ends_with("# none yet\n"),
            "{text}"
        );
        assert!(Config::load(&file).unwrap().folders.is_empty());
    }

    #[test]
    fn refused_edits_leave_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let original = user_file(dir.path());
        fs::write(&file, &original).unwrap();
        let work = dir.path().join("work");

        let refusals = [
            (
                persist_add_folder(&file, &folder(work.join("sub"), "sub")),
                "is inside",
            ),
            (
                persist_add_folder(&file, &folder(work.clone(), "w")),
                "already synced",
            ),
            (
                persist_add_folder(&file, &folder(dir.path().join("state/x"), "x")),
                "state directory",
            ),
            (
                persist_remove_folder(&file, &dir.path().join("other")),
                "no [[folder]] with path",
            ),
            (
                persist_set_paused(&file, &dir.path().join("other"), true),
                "no [[folder]] with path",
            ),
        ];
        for (result, said) in refusals {
            let err = result.unwrap_err();
            assert!(err.message.contains(said), "{err}");
            assert_eq!(err.line, None, "{err}");
            assert_eq!(fs::read(&file).unwrap(), original.as_bytes());
        }

        // A file that is already wrong is reported where it is wrong, and left alone.
        let broken = original.replace("listen = ", "lissen = ");
        fs::write(&file, &broken).unwrap();
        let err = persist_set_paused(&file, &work, true).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(13), Some("server.lissen"))
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), broken);
        assert_eq!(entries(dir.path()), ["filesyncd.toml"]);
    }

    #[test]
    fn comments_above_a_removed_folder_stay_unless_they_describe_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let folder_at = |name: &str| {
            let path = dir.path().join(name).display().to_string();
            format!("[[folder]]\npath = \"{path}\"\nserver = \"h:7101\"\n")
        };
        let state = format!("[daemon]\nstate_dir = \"{}/state\"\n", dir.path().display());
        let text = format!(
            "# Laptop config\n\n{a}\n# music, see NAS\n{b}\n{state}",
            a = folder_at("a"),
            b = folder_at("b")
        );
        fs::write(&file, &text).unwrap();

        persist_remove_folder(&file, &dir.path().join("a")).unwrap();
        let expected = format!("\n# music, see NAS\n{}\n{state}", folder_at("b"));
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("# Laptop config\n{expected}")
        );

        persist_remove_folder(&file, &dir.path().join("b")).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("# Laptop config\n\n{state}")
        );
    }

    #[test]
    fn a_file_of_comments_keeps_them_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filesyncd.toml");
        let original = "# Written by hand.\n# Folders below.\n";
        fs::write(&file, original).unwrap();
        let docs = folder(dir.path().join("docs"), "docs");
        persist_add_folder(&file, &docs).unwrap();
        let added = fs::read_to_string(&file).unwrap();
        assert!(
            added.starts_with(&format!("{original}\n[[folder]]\n")),
            "{added}"
        );
        persist_remove_folder(&file, &docs.path).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), original);
    }

    #[cfg(unix)]
    #[test]
    fn writes_through_a_symlink() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/filesyncd.toml");
        fs::create_dir(dir.path().join("dotfiles")).unwrap();
        fs::write(&real, user_file(dir.path())).unwrap();
        let link = dir.path().join("filesyncd.toml");
        symlink(&real, &link).unwrap();

        persist_set_paused(&link, &dir.path().join("work"), true).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(Config::load(&real).unwrap().folders[0].paused);
        assert_eq!(entries(&dir.path().join("dotfiles")), ["filesyncd.toml"]);
    }
}
