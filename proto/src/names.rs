//! Names that become directory names on the server or identify a device.
//!
//! Account and folder names are used as path components under the server's `data_dir`,
//! so they are restricted to a safe alphabet and may not start with a dot: the server's
//! own metadata lives in `data_dir/.filesync`, which no name can reach.
//!
//! A folder name may also be `OWNER/FOLDER`: a folder that account `OWNER` shared with
//! the device's account. That is the only `/` a name can hold, and the server resolves
//! it to `data_dir/OWNER/FOLDER` only for an account the owner granted access to.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {name:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error("{what} {name:?} may only contain letters, digits, '.', '_' and '-'")]
    BadChar { what: &'static str, name: String },
    #[error("{what} {name:?} may not start with '.' or '-'")]
    BadStart { what: &'static str, name: String },
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            name: name.into(),
            max,
        });
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(NameError::BadChar {
            what,
            name: name.into(),
        });
    }
    if name.starts_with(['.', '-']) {
        return Err(NameError::BadStart {
            what,
            name: name.into(),
        });
    }
    Ok(())
}

/// `FOLDER` or `OWNER/FOLDER`, each part a valid name on its own.
fn check_folder_name(name: &str) -> Result<(), NameError> {
    match name.split_once('/') {
        None => check_name("folder name", name, 64),
        Some((owner, folder)) => {
            check_name("owner account of a shared folder", owner, 64)?;
            check_name("folder name", folder, 64)
        }
    }
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:literal) => {
        validated_name!($(#[$doc])* $ty, |name| check_name($what, name, $max));
    };
    ($(#[$doc:meta])* $ty:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&name)?;
                Ok($ty(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $ty::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// The name of a folder: `FOLDER`, unique within an account, or `OWNER/FOLDER`, a
    /// folder that account `OWNER` shares with the device's account.
    FolderName,
    check_folder_name
);
validated_name!(
    /// The name of an account on a server.
    AccountName, "account name", 64
);
validated_name!(
    /// A device's stable identity: random, made once, kept in the state directory.
    DeviceId, "device id", 64
);

impl FolderName {
    /// The owner's account and the folder's own name, for a shared folder's
    /// `OWNER/FOLDER`; `None` for a plain name.
    pub fn shared(&self) -> Option<(AccountName, FolderName)> {
        let (owner, folder) = self.0.split_once('/')?;
        // Both parts were checked when the name was made.
        Some((
            AccountName(owner.to_string()),
            FolderName(folder.to_string()),
        ))
    }

    /// The owner's part of `OWNER/FOLDER`; `None` for a plain name.
    pub fn owner(&self) -> Option<&str> {
        self.0.split_once('/').map(|(owner, _)| owner)
    }

    /// The name as one path component: `OWNER+FOLDER` for a shared folder (`+` is in no
    /// name), for a device's files that are keyed by folder name.
    pub fn file_stem(&self) -> String {
        self.0.replace('/', "+")
    }
}

/// The longest device name, in characters.
pub const MAX_DEVICE_NAME: usize = 64;

/// Whether `c` changes how the text around it is shown without being seen itself:
/// bidirectional overrides, embeddings, isolates and marks, and zero-width characters.
/// In a name they can make one name look like another, or reorder what follows.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Whether `c` may not appear in a device name: a control character (C0, DEL, C1), which
/// a terminal may take as part of an escape sequence, or an invisible format character.
fn bad_in_name(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Checks a device's human name, as a device chooses it and a server shows it: 1 to
/// [`MAX_DEVICE_NAME`] characters, none of them a control or invisible format character.
pub fn check_device_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 || len > MAX_DEVICE_NAME {
        return Err(format!(
            "a device name must be 1 to {MAX_DEVICE_NAME} characters, not {len}"
        ));
    }
    if let Some(c) = name.chars().find(|&c| bad_in_name(c)) {
        return Err(format!(
            "a device name must not hold control or invisible characters ({c:?} in {name:?})"
        ));
    }
    Ok(())
}

/// A device name that [`check_device_name`] accepts, made from `raw` (a host name):
/// each character it refuses becomes `?`, and the name is cut to [`MAX_DEVICE_NAME`].
pub fn device_name_from(raw: &str) -> String {
    let name: String = (raw.trim().chars())
        .map(|c| if bad_in_name(c) { '?' } else { c })
        .take(MAX_DEVICE_NAME)
        .collect();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked_and_made_safe() {
        for ok in ["laptop", "Anna's PC", "büro-rechner", &"x".repeat(64)] {
            assert_eq!(check_device_name(ok), Ok(()), "{ok}");
            assert_eq!(device_name_from(ok), ok);
        }
        for (bad, safe) in [
            ("\x1b]0;owned\x07pc", "?]0;owned?pc"),
            ("pc\u{202E}txt.exe", "pc?txt.exe"),
            ("a\u{200B}b", "a?b"),
            ("line\r\nforged", "line??forged"),
            ("\u{9b}2J", "?2J"),
            ("", "unknown"),
        ] {
            assert!(check_device_name(bad).is_err(), "{bad:?}");
            assert_eq!(device_name_from(bad), safe, "{bad:?}");
        }
        assert!(check_device_name(&"x".repeat(65)).is_err());
        assert_eq!(device_name_from(&"y".repeat(100)).len(), 64);
    }

    #[test]
    fn names_are_validated() {
        for ok in ["docs", "Photos-2024", "a.b_c", "x", "alice/docs"] {
            assert!(FolderName::new(ok).is_ok(), "{ok}");
        }
        let shared = FolderName::new("alice/docs").unwrap();
        let (owner, folder) = shared.shared().unwrap();
        assert_eq!((owner.as_str(), folder.as_str()), ("alice", "docs"));
        assert_eq!(shared.owner(), Some("alice"));
        assert_eq!(shared.file_stem(), "alice+docs");
        assert_eq!(FolderName::new("docs").unwrap().shared(), None);
        for bad in [
            "",
            ".filesync",
            "..",
            "a/b/c",
            "/b",
            "a/",
            ".x/b",
            "a/.b",
            "a//b",
            "a b",
            "-x",
            "é",
            &"x".repeat(65),
        ] {
            assert!(FolderName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoding_validates() {
        let bytes = postcard::to_stdvec(&"../etc".to_string()).unwrap();
        assert!(postcard::from_bytes::<AccountName>(&bytes).is_err());
    }
}
