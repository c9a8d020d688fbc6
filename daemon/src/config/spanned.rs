//! The span-keeping view of the file that [`parse`](super::parse) walks: tables with the
//! key path and line every error needs, typed getters whose type errors say what was
//! expected and what was found, and `~` expansion for paths.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Item, TableLike};

use super::{ConfigError, Env, normalize};

/// What every error needs: the file's name, its text (to turn byte offsets into lines) and
/// the environment the defaults come from.
pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) env: &'a Env,
}

impl Cx<'_> {
    pub(super) fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(
            self.text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    }

    /// The line of `key` in `table`; the key rather than the value, since a multi-line
    /// value starts on the key's line anyway and the key is what the user looks for.
    pub(super) fn key_line(&self, table: &dyn TableLike, key: &str) -> Option<usize> {
        let (k, item) = table.get_key_value(key)?;
        self.line(k.span().or_else(|| item.span()))
    }

    pub(super) fn err(
        &self,
        line: Option<usize>,
        key: String,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line,
            key: Some(key),
            message: message.into(),
        }
    }

    pub(super) fn section<'d>(
        &self,
        name: &'static str,
        header: &'static str,
        item: &'d Item,
        line: Option<usize>,
    ) -> Result<Section<'d>, ConfigError> {
        let table = item.as_table_like().ok_or_else(|| {
            let found = describe(item);
            let fix = format!("write {header} on a line of its own, with its keys below it");
            self.err(
                line,
                name.into(),
                format!("expected a table, found {found}; {fix}"),
            )
        })?;
        Ok(Section {
            path: name.into(),
            header,
            table,
            line,
        })
    }

    /// The `[[folder]]` tables, or the same written as an inline array `folder = [{…}]`.
    pub(super) fn folders<'d>(
        &self,
        item: &'d Item,
        line: Option<usize>,
    ) -> Result<Vec<Section<'d>>, ConfigError> {
        let folder = |i: usize, table: &'d dyn TableLike, line| Section {
            path: format!("folder[{}]", i + 1),
            header: "[[folder]]",
            table,
            line,
        };
        if let Some(tables) = item.as_array_of_tables() {
            let sections = tables.iter().enumerate();
            return Ok(sections
                .map(|(i, t)| folder(i, t, self.line(t.span()).or(line)))
                .collect());
        }
        let fix = "write [[folder]] (with double brackets) above the keys of each folder";
        let Some(array) = item.as_array() else {
            let message = format!("expected a list of tables, found {}; {fix}", describe(item));
            return Err(self.err(line, "folder".into(), message));
        };
        let mut sections = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let at = self.line(value.span()).or(line);
            match value.as_inline_table() {
                Some(t) => sections.push(folder(i, t, at)),
                None => {
                    let message = format!("expected a table, found {}; {fix}", value.type_name());
                    return Err(self.err(at, format!("folder[{}]", i + 1), message));
                }
            }
        }
        Ok(sections)
    }

    /// Expands `~` and checks that the result is absolute: a relative path would mean
    /// something different depending on where the daemon happened to be started.
    fn expand(&self, text: &str) -> Result<PathBuf, String> {
        if text.is_empty() {
            return Err("the path is empty; write a directory, e.g. \"~/Documents\"".into());
        }
        let path = match text.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home = self.env.home.as_ref().ok_or(
                    "`~` stands for the home directory, which is unknown ($HOME is not set); write \
                     the absolute path instead",
                )?;
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(text),
        };
        if !path.is_absolute() {
            return Err(format!(
                "{text:?} is a relative path; write an absolute path or one that starts with \"~/\""
            ));
        }
        Ok(normalize(&path))
    }
}

/// One table of the file (`[daemon]`, `[server]` or one `[[folder]]`) and what errors about its
/// keys need.
pub(super) struct Section<'a> {
    /// The key of the table in errors, `daemon` or `folder[2]`.
    pub(super) path: String,
    /// The table as written in the file, for messages.
    pub(super) header: &'static str,
    pub(super) table: &'a dyn TableLike,
    /// The header's line, for keys that are missing.
    pub(super) line: Option<usize>,
}

impl<'a> Section<'a> {
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(super) fn check_keys(&self, cx: &Cx, valid: &[&str]) -> Result<(), ConfigError> {
        match self.table.iter().find(|(key, _)| !valid.contains(key)) {
            None => Ok(()),
            Some((key, _)) => {
                let list: Vec<String> = valid.iter().map(|k| format!("`{k}`")).collect();
                let message = format!(
                    "unknown key `{key}` in {}; the valid keys are {}",
                    self.header,
                    list.join(", ")
                );
                let line = cx.key_line(self.table, key).or(self.line);
                Err(cx.err(line, self.key(key), message))
            }
        }
    }

    fn get(&self, cx: &Cx, key: &str) -> Option<(&'a Item, Option<usize>)> {
        let item = self.table.get(key)?;
        Some((item, cx.key_line(self.table, key).or(self.line)))
    }

    pub(super) fn string(
        &self,
        cx: &Cx,
        key: &str,
        example: &str,
    ) -> Result<Option<(&'a str, Option<usize>)>, ConfigError> {
        let Some((item, line)) = self.get(cx, key) else {
            return Ok(None);
        };
        match item.as_str() {
            Some(s) => Ok(Some((s, line))),
            None => {
                let message = format!("expected a string like {example}, found {}", describe(item));
                Err(cx.err(line, self.key(key), message))
            }
        }
    }

    pub(super) fn integer(
        &self,
        cx: &Cx,
        key: &str,
    ) -> Result<Option<(i64, Option<usize>)>, ConfigError> {
        let Some((item, line)) = self.get(cx, key) else {
            return Ok(None);
        };
        match item.as_integer() {
            Some(n) => Ok(Some((n, line))),
            None => {
                let message = format!("expected a whole number, found {}", describe(item));
                Err(cx.err(line, self.key(key), message))
            }
        }
    }

    pub(super) fn bool(&self, cx: &Cx, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some((item, line)) = self.get(cx, key) else {
            return Ok(None);
        };
        match item.as_bool() {
            Some(b) => Ok(Some(b)),
            None => {
                let message = format!("expected true or false, found {}", describe(item));
                Err(cx.err(line, self.key(key), message))
            }
        }
    }

    pub(super) fn path(
        &self,
        cx: &Cx,
        key: &str,
    ) -> Result<Option<(PathBuf, Option<usize>)>, ConfigError> {
        let Some((text, line)) = self.string(cx, key, "\"~/Documents\"")? else {
            return Ok(None);
        };
        match cx.expand(text) {
            Ok(path) => Ok(Some((path, line))),
            Err(message) => Err(cx.err(line, self.key(key), message)),
        }
    }

    pub(super) fn required<T>(
        &self,
        cx: &Cx,
        key: &str,
        value: Option<T>,
        hint: &str,
    ) -> Result<T, ConfigError> {
        value.ok_or_else(|| {
            let message = format!("this {} has no `{key}`; add {hint}", self.header);
            cx.err(self.line, self.key(key), message)
        })
    }
}

/// "integer 5", "inline table { a = 1 }": what the user wrote, for type errors.
fn describe(item: &Item) -> String {
    match item {
        Item::Value(value) => format!("{} {}", value.type_name(), value.to_string().trim()),
        other => other.type_name().to_owned(),
    }
}
