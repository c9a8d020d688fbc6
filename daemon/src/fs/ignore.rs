//! The ignore rules of one synced folder: which paths the daemon leaves alone.
//!
//! Rules come from two places: the built-in list ([`BUILTIN_RULES`]: editor swap and
//! lock files, partial downloads, OS litter) and the folder's own `.filesyncignore`, read
//! with gitignore syntax by the `ignore` crate's matcher. The user's lines come after the
//! built-ins, so a `!` line can re-include something a built-in rule ignores. Two things
//! are decided here in code rather than by patterns, so no rule can change them: the
//! daemon's own `.filesync*` names are always ignored, and the root `.filesyncignore`
//! never is (it syncs, so every device applies the same rules).
//!
//! This module only answers "is this path ignored?"; keeping ignored local files from
//! being deleted or overwritten by remote changes is the planner's job.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use ::ignore::gitignore::{Gitignore, GitignoreBuilder};
use filesync_proto::RelPath;
use sha2::{Digest, Sha256};

use crate::fs::{IGNORE_FILE, is_reserved};

/// Largest `.filesyncignore` we read. Far above any hand-written file (1 MB of patterns is
/// a tested case) but low enough that a hostile peer cannot make us load gigabytes.
pub const MAX_IGNORE_FILE_LEN: u64 = 8 << 20;

/// Rules every folder gets, in gitignore syntax. Only names that are unambiguously
/// temporary belong here: an ignored file silently stops syncing, so a pattern that also
/// matches real documents (`*.tmp`, `*.bak`) would lose people's work. Changing this text
/// changes every folder's [`IgnoreRules::fingerprint`], which is what callers want.
pub const BUILTIN_RULES: &str = r"# vim swap files: .NAME.swp, then .swo, .swn … when several sessions edit one file
.*.sw[a-p]
# vim's short-lived .swx swap probe
.*.swx
# vim's probe file, created and removed while saving to test whether the directory is
# writable; only the file: a directory called 4913 is someone's data
4913
!4913/
# backups: vim writebackup/backup NAME~, emacs NAME~ and numbered NAME.~1~
*~
# emacs auto-save files #NAME# (the backslash stops the line being a comment)
\#*#
# emacs lock files .#NAME (dangling symlinks to user@host.pid)
.#*
# JetBrains IDE safe write
*___jb_tmp___
*___jb_old___
# GIO safe save (gedit and other GNOME apps)
.goutputstream-*
# Kate swap files
.*.kate-swp
# Microsoft Office owner files (~$report.docx) and Word save temp files (~WRL0001.tmp)
~$*
~*.tmp
# LibreOffice lock files
.~lock.*#
# partial downloads: Firefox, Chrome
*.part
*.crdownload
# file-manager litter: macOS Finder, Windows Explorer thumbnails
.DS_Store
Thumbs.db
";

/// The ignore rules of one folder: built-ins plus the folder's `.filesyncignore`.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    matcher: Gitignore,
    fingerprint: u64,
}

/// A `.filesyncignore` that cannot be used. The folder should stop syncing rather than
/// sync without it: the rules the user wrote are usually what keeps private or huge
/// files off other devices.
#[derive(Debug, thiserror::Error)]
pub struct IgnoreError {
    /// 1-based line of the offending pattern; `None` when the whole file is at fault.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for IgnoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{IGNORE_FILE}:{line}: {}", self.message),
            None => write!(f, "{IGNORE_FILE}: {}", self.message),
        }
    }
}

impl IgnoreError {
    fn whole_file(message: impl Into<String>) -> IgnoreError {
        IgnoreError {
            line: None,
            message: message.into(),
        }
    }
}

impl IgnoreRules {
    /// Only the built-in rules.
    pub fn builtin() -> IgnoreRules {
        IgnoreRules::parse(b"").expect("the built-in ignore rules are valid")
    }

    /// Built-ins plus `root/.filesyncignore` if it exists. A pattern that does not parse
    /// is an error naming the line and the pattern. The file is opened without following
    /// a symlink: a `.filesyncignore` that is a symlink (or a directory, FIFO, …) is an
    /// error, not silently skipped, because a link can point outside the folder (a peer
    /// could make us read any file, and echo it in error messages), and quietly dropping
    /// rules the user meant to apply would sync files they wanted kept out.
    pub fn load(root: &Path) -> Result<IgnoreRules, IgnoreError> {
        match read_ignore_file(&root.join(IGNORE_FILE))? {
            Some(text) => IgnoreRules::parse(&text),
            None => Ok(IgnoreRules::builtin()),
        }
    }

    /// Built-ins plus `text`, the content of a `.filesyncignore`.
    pub fn parse(text: &[u8]) -> Result<IgnoreRules, IgnoreError> {
        // Paths are matched as given, relative to the folder root: with root "." the
        // matcher strips nothing, which is exactly right for a `RelPath`.
        let mut builder = GitignoreBuilder::new(".");
        // git reads an unclosed `[` as a pattern that matches nothing; a typo that
        // silently ignores nothing would sync what the user meant to keep out, so we
        // refuse it instead.
        builder.allow_unclosed_class(false);
        for line in BUILTIN_RULES.lines() {
            builder
                .add_line(None, line)
                .expect("the built-in ignore rules are valid");
        }
        // Windows editors may start the file with a byte-order mark; git skips it too.
        let user = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        for (index, raw) in user.split(|&b| b == b'\n').enumerate() {
            add_user_line(&mut builder, index + 1, raw)?;
        }
        let matcher = builder.build().map_err(|err| {
            IgnoreError::whole_file(format!(
                "the patterns cannot be combined into one matcher ({err}); use fewer patterns"
            ))
        })?;
        Ok(IgnoreRules {
            matcher,
            fingerprint: fingerprint_of(user),
        })
    }

    /// Whether `path` (a file or, with `is_dir`, a directory) is ignored. As in git, a
    /// path inside an ignored directory is ignored whatever later lines say about it:
    /// ancestors are checked from the top down, so this agrees with a scan that does not
    /// descend into ignored directories (the `ignore` crate's
    /// `matched_path_or_any_parents` stops at the nearest match and would let
    /// `!build/keep` re-include a file the scan never sees).
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        let path = path.as_str();
        if path == IGNORE_FILE {
            return false;
        }
        path.match_indices('/')
            .any(|(end, _)| self.ignores(&path[..end], true))
            || self.ignores(path, is_dir)
    }

    /// A fingerprint of the rule text (built-ins and the user's file), so callers can tell
    /// when the rules changed and a rescan must look at paths it skipped before. Stable
    /// across runs and builds, so it may be stored.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// One path on its own, its ancestors already found not ignored.
    fn ignores(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        is_reserved(name) || self.matcher.matched(path, is_dir).is_ignore()
    }
}

fn add_user_line(
    builder: &mut GitignoreBuilder,
    number: usize,
    raw: &[u8],
) -> Result<(), IgnoreError> {
    let at = |message: String| IgnoreError {
        line: Some(number),
        message,
    };
    let line = std::str::from_utf8(raw)
        .map_err(|_| at("this line is not valid UTF-8; save the file as UTF-8".to_string()))?;
    // Files written on Windows end lines with CRLF; the CR is not part of the pattern.
    let line = line.strip_suffix('\r').unwrap_or(line);
    builder.add_line(None, line).map_err(|err| {
        let reason = match &err {
            ::ignore::Error::Glob { err, .. } => err.clone(),
            other => other.to_string(),
        };
        at(format!(
            "pattern {line:?} is not valid: {reason}; fix or delete this line \
             (to match one of [ ] {{ }} * ? literally, put a backslash before it)"
        ))
    })?;
    Ok(())
}

/// The content of the ignore file, `None` if there is none.
fn read_ignore_file(path: &Path) -> Result<Option<Vec<u8>>, IgnoreError> {
    // O_NOFOLLOW makes the no-symlink rule race-free; O_NONBLOCK keeps a FIFO planted at
    // the name from blocking the open (it is then refused as not a regular file).
    #[cfg(unix)]
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    #[cfg(windows)]
    let opened = crate::fs::windows::open_no_follow(path);
    let file = match opened {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) if crate::fs::beneath::is_symlink(&err) => {
            return Err(IgnoreError::whole_file(
                "is a symbolic link, and ignore rules are read only from a regular file \
                 (links are never followed out of a folder); replace the link with a copy \
                 of the file it points to",
            ));
        }
        Err(err) => return Err(cannot_read(path, &err)),
    };
    let meta = file.metadata().map_err(|err| cannot_read(path, &err))?;
    if !meta.is_file() {
        return Err(IgnoreError::whole_file(
            "is not a regular file; remove it or replace it with a text file of patterns",
        ));
    }
    let mut text = Vec::new();
    // Read one byte past the limit so a file that grew after the stat is still caught.
    file.take(MAX_IGNORE_FILE_LEN + 1)
        .read_to_end(&mut text)
        .map_err(|err| cannot_read(path, &err))?;
    if text.len() as u64 > MAX_IGNORE_FILE_LEN {
        return Err(IgnoreError::whole_file(format!(
            "is larger than {} MiB; use fewer, broader patterns",
            MAX_IGNORE_FILE_LEN >> 20
        )));
    }
    Ok(Some(text))
}

fn cannot_read(path: &Path, err: &io::Error) -> IgnoreError {
    IgnoreError::whole_file(format!(
        "cannot be read ({err}); check the permissions of {}",
        path.display()
    ))
}

/// SHA-256 rather than std's hasher, whose output may change between Rust releases.
fn fingerprint_of(user: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(BUILTIN_RULES.as_bytes());
    // The separator keeps "built-ins + user text" unambiguous.
    hasher.update([0u8]);
    hasher.update(user);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `path` is ignored under the built-ins plus `rules`.
    fn check(rules: &str, path: &str, is_dir: bool, expected: bool) {
        let ignore = IgnoreRules::parse(rules.as_bytes()).unwrap();
        let rel = RelPath::new(path).unwrap();
        let kind = if is_dir { "dir" } else { "file" };
        assert_eq!(
            ignore.is_ignored(&rel, is_dir),
            expected,
            "{kind} {path:?} under rules {rules:?}"
        );
    }

    fn check_all(rules: &str, cases: &[(&str, bool, bool)]) {
        for &(path, is_dir, expected) in cases {
            check(rules, path, is_dir, expected);
        }
    }

    const FILE: bool = false;
    const DIR: bool = true;

    #[test]
    fn builtins_ignore_temporary_files() {
        check_all(
            "",
            &[
                (".notes.txt.swp", FILE, true),
                ("sub/.notes.txt.swo", FILE, true),
                (".notes.txt.swn", FILE, true),
                (".notes.txt.swx", FILE, true),
                (".vimrc.swp", FILE, true),
                ("4913", FILE, true),
                ("deep/dir/4913", FILE, true),
                ("notes.txt~", FILE, true),
                ("notes.txt.~1~", FILE, true),
                ("#notes.txt#", FILE, true),
                ("sub/#notes.txt#", FILE, true),
                (".#notes.txt", FILE, true),
                ("Main.java___jb_tmp___", FILE, true),
                ("Main.java___jb_old___", FILE, true),
                (".goutputstream-AB12CD", FILE, true),
                (".notes.txt.kate-swp", FILE, true),
                ("~$report.docx", FILE, true),
                ("docs/~$budget.xlsx", FILE, true),
                ("~WRL0001.tmp", FILE, true),
                (".~lock.report.odt#", FILE, true),
                ("movie.mkv.part", FILE, true),
                ("setup.exe.crdownload", FILE, true),
                (".DS_Store", FILE, true),
                ("photos/Thumbs.db", FILE, true),
            ],
        );
    }

    #[test]
    fn builtins_leave_look_alikes_alone() {
        check_all(
            "",
            &[
                ("report.docx", FILE, false),
                ("notes.txt", FILE, false),
                ("notes.swp", FILE, false),
                ("a#b", FILE, false),
                ("#notes", FILE, false),
                ("partial.py", FILE, false),
                ("part", FILE, false),
                ("a.part.txt", FILE, false),
                ("data.tmp", FILE, false),
                ("a~b", FILE, false),
                ("~notes.txt", FILE, false),
                ("49130", FILE, false),
                ("4913", DIR, false),
                ("4913/invoice.pdf", FILE, false),
                ("report_jb_tmp", FILE, false),
                ("DS_Store", FILE, false),
                ("thumbs.db.txt", FILE, false),
                (".lock.report.odt#", FILE, false),
            ],
        );
    }

    #[test]
    fn daemon_metadata_is_always_ignored_but_the_ignore_file_syncs() {
        check_all(
            "",
            &[
                (".filesync-tmp-1234", FILE, true),
                ("sub/.filesync-tmp-1234", FILE, true),
                (".filesync", DIR, true),
                (".filesync/index.db", FILE, true),
                (IGNORE_FILE, FILE, false),
                // Only the root file holds rules, but a nested one is still a user file.
                ("sub/.filesyncignore", FILE, false),
            ],
        );
        // Not even a negation brings the daemon's files back.
        check("!.filesync*\n!*", ".filesync-tmp-1", FILE, true);
    }

    #[test]
    fn user_patterns_follow_gitignore() {
        check_all(
            "*.log\n!keep.log",
            &[
                ("debug.log", FILE, true),
                ("sub/debug.log", FILE, true),
                ("keep.log", FILE, false),
                ("sub/keep.log", FILE, false),
            ],
        );
        check_all(
            "build/",
            &[
                ("build", DIR, true),
                ("build/x/y", FILE, true),
                ("src/build/out.o", FILE, true),
                ("build", FILE, false),
                ("builder/x", FILE, false),
            ],
        );
        check_all(
            "/top.txt",
            &[("top.txt", FILE, true), ("sub/top.txt", FILE, false)],
        );
        check_all(
            "nested.txt",
            &[("nested.txt", FILE, true), ("a/b/nested.txt", FILE, true)],
        );
        check_all(
            "docs/*.pdf",
            &[
                ("docs/a.pdf", FILE, true),
                ("docs/sub/a.pdf", FILE, false),
                ("a.pdf", FILE, false),
            ],
        );
        check_all(
            "cache/**",
            &[("cache", DIR, false), ("cache/a/b", FILE, true)],
        );
        check_all(
            "# a comment\n\n   \n\\#literal\nspaced\\ ",
            &[
                ("# a comment", FILE, false),
                ("#literal", FILE, true),
                ("spaced ", FILE, true),
                ("spaced", FILE, false),
            ],
        );
    }

    #[test]
    fn a_file_inside_an_ignored_directory_cannot_be_re_included() {
        // As in git; the scan never descends into `build`, so it must not be synced.
        check("build/\n!build/keep.txt", "build/keep.txt", FILE, true);
        // The usual idiom to keep one kind of file: re-include directories first.
        check_all(
            "*\n!*/\n!*.txt",
            &[
                ("a/b/c.txt", FILE, false),
                ("a/b/c.bin", FILE, true),
                ("a", DIR, false),
            ],
        );
    }

    #[test]
    fn user_negation_can_re_include_a_builtin() {
        check_all(
            "!*.part",
            &[("chapter.part", FILE, false), ("notes.txt~", FILE, true)],
        );
    }

    #[test]
    fn a_pattern_ignoring_everything_keeps_the_ignore_file() {
        check_all(
            "*",
            &[
                (IGNORE_FILE, FILE, false),
                ("a.txt", FILE, true),
                ("dir", DIR, true),
                ("dir/.filesyncignore", FILE, true),
            ],
        );
        check("**", IGNORE_FILE, FILE, false);
        check("/*", "x/y", FILE, true);
    }

    #[test]
    fn windows_line_endings_and_bom_are_tolerated() {
        let rules = IgnoreRules::parse(b"\xEF\xBB\xBF*.log\r\nsecret.txt\r\n").unwrap();
        for path in ["a.log", "secret.txt"] {
            assert!(
                rules.is_ignored(&RelPath::new(path).unwrap(), false),
                "{path}"
            );
        }
    }

    /// The error for `text`, which must be refused.
    fn error(text: &[u8]) -> IgnoreError {
        IgnoreRules::parse(text).expect_err("rules must be refused")
    }

    #[test]
    fn bad_patterns_are_reported_with_their_line() {
        let err = error(b"*.log\n# fine\na[\nb\n");
        assert_eq!(err.line, Some(3));
        let shown = err.to_string();
        assert!(shown.starts_with(".filesyncignore:3: "), "{shown}");
        assert!(shown.contains("\"a[\""), "{shown}");
        assert!(shown.contains("fix or delete this line"), "{shown}");

        for (text, line) in [
            (&b"x{\n"[..], 1),
            (b"ok\n[z-a]\n", 2),
            (b"ok\r\nok2\r\nb}\r\n", 3),
            (b"a\n\xff\xfe\n", 2),
        ] {
            assert_eq!(
                error(text).line,
                Some(line),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn a_megabyte_of_patterns_loads_and_matches() {
        // Every kind of line the matcher treats differently: anchored literal paths,
        // extensions, directory names, negations and wildcards inside a path (the
        // expensive kind, kept to a fifth so the debug-build test stays quick).
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&match i % 5 {
                0 => format!("/projects/p{i:05}/logs/archive/nightly-build-output-{i}.txt\n"),
                1 => format!("*.generated-by-the-code-generator-number-{i:05}\n"),
                2 => format!("intermediate-build-output-directory-{i:05}/\n"),
                3 => format!("!projects/p{i:05}/logs/archive/nightly-build-output-{i}.txt\n"),
                _ => format!("projects/p{i:05}/logs/*/nightly-build-output-{i}-*.txt\n"),
            });
        }
        text.push_str("!projects/p00000/logs/archive/nightly-build-output-0.txt\n");
        assert!(text.len() >= 1_000_000, "{} bytes", text.len());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IGNORE_FILE), &text).unwrap();
        let rules = IgnoreRules::load(dir.path()).unwrap();
        let is = |path: &str| rules.is_ignored(&RelPath::new(path).unwrap(), false);
        assert!(is(
            "projects/p00005/logs/archive/nightly-build-output-5.txt"
        ));
        assert!(!is(
            "x/projects/p00005/logs/archive/nightly-build-output-5.txt"
        ));
        assert!(is("a/b.generated-by-the-code-generator-number-19996"));
        assert!(is("src/intermediate-build-output-directory-00002/main.o"));
        assert!(is("projects/p00004/logs/old/nightly-build-output-4-a.txt"));
        assert!(is(
            "projects/p19999/logs/new/nightly-build-output-19999-b.txt"
        ));
        assert!(!is("projects/p00004/logs/old/nightly-build-output-9-a.txt"));
        // The last line re-includes what the first one ignored.
        assert!(!is(
            "projects/p00000/logs/archive/nightly-build-output-0.txt"
        ));
        assert!(!is("projects/p00005/notes.txt"));
        assert!(is("projects/p00005/.notes.txt.swp"));
    }

    #[test]
    fn load_reads_the_folder_file_or_falls_back_to_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let missing = IgnoreRules::load(dir.path()).unwrap();
        assert_eq!(missing.fingerprint(), IgnoreRules::builtin().fingerprint());
        let secret = RelPath::new("secret.txt").unwrap();
        assert!(!missing.is_ignored(&secret, false));

        std::fs::write(dir.path().join(IGNORE_FILE), "secret.txt\n").unwrap();
        let loaded = IgnoreRules::load(dir.path()).unwrap();
        assert!(loaded.is_ignored(&secret, false));
        assert_ne!(loaded.fingerprint(), missing.fingerprint());
        assert_eq!(
            loaded.fingerprint(),
            IgnoreRules::load(dir.path()).unwrap().fingerprint()
        );

        std::fs::write(dir.path().join(IGNORE_FILE), "secret.txt\nother\n").unwrap();
        let changed = IgnoreRules::load(dir.path()).unwrap();
        assert_ne!(changed.fingerprint(), loaded.fingerprint());

        std::fs::write(dir.path().join(IGNORE_FILE), "ok\n\na[\n").unwrap();
        let err = IgnoreRules::load(dir.path()).unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    // Makes a symlink, a FIFO or a mode with Unix calls.
    #[cfg(unix)]
    #[test]
    fn load_refuses_a_symlink_or_a_non_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "secret.txt\n").unwrap();
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::os::unix::fs::symlink(&outside, folder.join(IGNORE_FILE)).unwrap();
        let err = IgnoreRules::load(&folder).unwrap_err();
        assert_eq!(err.line, None);
        assert!(err.to_string().contains("symbolic link"), "{err}");

        std::fs::remove_file(folder.join(IGNORE_FILE)).unwrap();
        std::fs::create_dir(folder.join(IGNORE_FILE)).unwrap();
        let err = IgnoreRules::load(&folder).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join(IGNORE_FILE)).unwrap();
        file.set_len(MAX_IGNORE_FILE_LEN + 1).unwrap();
        let err = IgnoreRules::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
