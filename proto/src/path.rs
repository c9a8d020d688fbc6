//! `RelPath`: a path relative to a folder root that cannot name anything outside it.
//!
//! Always `/`-separated UTF-8, whatever the platform. A value exists only if it passed
//! [`RelPath::new`]; deserialising goes through the same check, so a hostile peer cannot
//! hand us `..`, an absolute path, a drive letter, a backslash or a NUL.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest path we accept, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; only paths inside the folder are allowed")]
    Absolute(String),
    #[error("path {0:?} has an empty, '.' or '..' component")]
    BadComponent(String),
    #[error("path {0:?} contains a backslash, NUL or control character")]
    BadChar(String),
    #[error(
        "path {0:?} starts with a drive letter (one letter and a colon), which Windows reads \
         as a drive; rename it to sync it"
    )]
    Drive(String),
    #[error("path of {0} bytes is longer than {MAX_PATH_LEN}")]
    TooLong(usize),
    #[error("path {0:?} has a component longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong(String),
    #[error("file name {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    pub fn new(s: impl Into<String>) -> Result<RelPath, PathError> {
        let s = s.into();
        validate(&s)?;
        Ok(RelPath(s))
    }

    /// The path of `full` relative to `root`, for files found on local disk.
    pub fn from_local(root: &Path, full: &Path) -> Result<RelPath, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::Absolute(full.display().to_string()))?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(os) => match os.to_str() {
                    Some(s) => parts.push(s),
                    None => return Err(PathError::NotUtf8(os.to_string_lossy().into_owned())),
                },
                _ => return Err(PathError::BadComponent(rel.display().to_string())),
            }
        }
        RelPath::new(parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent directory, or `None` for a path directly under the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_string()))
    }

    /// `self` followed by one more validated component.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(format!("{}/{}", self.0, name))
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Where `self` lands when the directory `from` is renamed to `to`: `None` if `self`
    /// is not `from` or below it.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        self.starts_with(from)
            .then(|| RelPath(format!("{}{}", to.0, &self.0[from.0.len()..])))
    }

    /// Number of components: `a` is 1, `a/b` is 2.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    pub fn to_path(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(self.components());
        p
    }
}

fn validate(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(s.len()));
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute(s.into()));
    }
    if s.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(PathError::BadChar(s.into()));
    }
    let first = s.split('/').next().unwrap_or("");
    if first.len() >= 2 && first.as_bytes()[1] == b':' && first.as_bytes()[0].is_ascii_alphabetic()
    {
        return Err(PathError::Drive(s.into()));
    }
    for c in s.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(PathError::BadComponent(s.into()));
        }
        if c.len() > MAX_COMPONENT_LEN {
            return Err(PathError::ComponentTooLong(c.into()));
        }
    }
    Ok(())
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_moves_a_path_and_its_subtree_only() {
        let p = |s: &str| RelPath::new(s).unwrap();
        assert_eq!(p("a/b").rebase(&p("a/b"), &p("c")), Some(p("c")));
        assert_eq!(p("a/b/x/y").rebase(&p("a/b"), &p("c")), Some(p("c/x/y")));
        assert_eq!(p("a/bc").rebase(&p("a/b"), &p("c")), None);
        assert_eq!(p("a").rebase(&p("a/b"), &p("c")), None);
    }

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "a",
            "a/b",
            "a b/c.txt",
            "日本/ファイル",
            "ab:c",
            "x/c:d",
            "...",
            ".hidden",
            "x/.y",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?}");
        }
    }

    /// Every escape of test-matrix A1, with the error it must get.
    #[test]
    fn refuses_every_escape() {
        use PathError as E;
        let long_component = "x".repeat(MAX_COMPONENT_LEN + 1);
        // 17 components of 240 bytes and 16 slashes make 4096 bytes; one more is too long.
        let at_limit = vec!["x".repeat(240); 17].join("/");
        assert_eq!(at_limit.len(), MAX_PATH_LEN);
        let long_path = format!("{at_limit}y");
        assert_eq!(long_path.len(), MAX_PATH_LEN + 1);
        type Want = fn(&PathError) -> bool;
        let table: &[(&str, Want)] = &[
            ("", |e| matches!(e, E::Empty)),
            (".", |e| matches!(e, E::BadComponent(_))),
            ("..", |e| matches!(e, E::BadComponent(_))),
            ("../x", |e| matches!(e, E::BadComponent(_))),
            ("a/../../x", |e| matches!(e, E::BadComponent(_))),
            ("bar/../../foo/bar", |e| matches!(e, E::BadComponent(_))),
            ("a/./../..", |e| matches!(e, E::BadComponent(_))),
            ("a/..", |e| matches!(e, E::BadComponent(_))),
            ("a//b", |e| matches!(e, E::BadComponent(_))),
            ("a/", |e| matches!(e, E::BadComponent(_))),
            ("/etc/passwd", |e| matches!(e, E::Absolute(_))),
            ("//x", |e| matches!(e, E::Absolute(_))),
            ("/", |e| matches!(e, E::Absolute(_))),
            ("\\x", |e| matches!(e, E::BadChar(_))),
            ("a\\..\\..\\x", |e| matches!(e, E::BadChar(_))),
            ("C:\\x", |e| matches!(e, E::BadChar(_))),
            ("\\\\?\\C:\\x", |e| matches!(e, E::BadChar(_))),
            ("\\\\server\\share", |e| matches!(e, E::BadChar(_))),
            ("C:x", |e| matches!(e, E::Drive(_))),
            ("c:", |e| matches!(e, E::Drive(_))),
            ("C:/x", |e| matches!(e, E::Drive(_))),
            ("a\0b", |e| matches!(e, E::BadChar(_))),
            ("a\nb", |e| matches!(e, E::BadChar(_))),
            ("a\u{7f}b", |e| matches!(e, E::BadChar(_))),
            (&long_component, |e| matches!(e, E::ComponentTooLong(_))),
            (&long_path, |e| matches!(e, E::TooLong(4097))),
        ];
        for (bad, want) in table {
            let err = RelPath::new(*bad).expect_err(&format!("{bad:?} must be refused"));
            assert!(want(&err), "{bad:?} gave {err:?}");
            assert!(err.to_string().contains("path"), "{err} names the field");
            let encoded = postcard::to_stdvec(&bad.to_string()).unwrap();
            assert!(
                postcard::from_bytes::<RelPath>(&encoded).is_err(),
                "{bad:?}"
            );
        }
        // The longest path and component are still accepted.
        assert!(RelPath::new(at_limit).is_ok());
        assert!(RelPath::new("x".repeat(MAX_COMPONENT_LEN)).is_ok());
    }

    /// NFC and NFD spellings are different byte strings and so different names, as on
    /// Linux file systems: both are accepted and neither is rewritten into the other.
    #[test]
    fn unicode_twins_stay_distinct() {
        let nfc = RelPath::new("caf\u{e9}").unwrap();
        let nfd = RelPath::new("cafe\u{301}").unwrap();
        assert_ne!(nfc, nfd);
        assert_eq!(nfd.as_str(), "cafe\u{301}");
    }

    #[test]
    fn decoding_goes_through_validation() {
        let bytes = postcard::to_stdvec(&"a/../../x".to_string()).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&"a/b".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<RelPath>(&bytes).unwrap().as_str(),
            "a/b"
        );
    }

    #[test]
    fn relations() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.depth(), 3);
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(
            !RelPath::new("a/bc")
                .unwrap()
                .starts_with(&RelPath::new("a/b").unwrap())
        );
        assert!(RelPath::new("a").unwrap().parent().is_none());
    }

    #[test]
    fn from_local_refuses_outside_and_non_utf8() {
        let root = Path::new("/r");
        assert_eq!(
            RelPath::from_local(root, Path::new("/r/a/b"))
                .unwrap()
                .as_str(),
            "a/b"
        );
        assert!(RelPath::from_local(root, Path::new("/other/a")).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = Path::new("/r").join(std::ffi::OsStr::from_bytes(b"\xff"));
            assert!(matches!(
                RelPath::from_local(root, &bad),
                Err(PathError::NotUtf8(_))
            ));
        }
    }
}
