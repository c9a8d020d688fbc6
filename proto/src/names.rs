//! Names that become directory names on the server or identify a device.
//!
//! Account and folder names are used as path components under the server's `data_dir`,
//! so they are restricted to a safe alphabet and may not start with a dot: the server's
//! own metadata lives in `data_dir/.filesync`, which no name can reach.

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

macro_rules! validated_name {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name($what, &name, $max)?;
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
    /// The name of a folder on a server, unique within an account.
    FolderName, "folder name", 64
);
validated_name!(
    /// The name of an account on a server.
    AccountName, "account name", 64
);
validated_name!(
    /// A device's stable identity: random, made once, kept in the state directory.
    DeviceId, "device id", 64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["docs", "Photos-2024", "a.b_c", "x"] {
            assert!(FolderName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".filesync",
            "..",
            "a/b",
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
