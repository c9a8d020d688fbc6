//! Names Windows cannot hold, for the Windows device to list a path from another device
//! as unsyncable, with the reason, instead of writing it under another name: reserved
//! device names, characters Windows forbids, a trailing dot or space, over-long names,
//! and names that differ from another only in case. Pure rules on `/`-separated paths,
//! so they are tested on every platform.

use std::collections::HashMap;
use std::fmt;

/// The device names Windows reserves in every directory, with or without an extension
/// (`aux.txt` is `AUX`), whatever the case.
const RESERVED: [&str; 30] = [
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "COM1", "COM2", "COM3", "COM4", "COM5",
    "COM6", "COM7", "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5",
    "LPT6", "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³",
];

/// Characters no Windows file name may hold, besides control characters.
const FORBIDDEN: [char; 9] = ['<', '>', ':', '"', '/', '\\', '|', '?', '*'];

/// Longest name Windows holds, in UTF-16 units.
const MAX_NAME_UNITS: usize = 255;

/// Why Windows cannot hold a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unholdable {
    /// A reserved device name such as `CON` or `LPT1`, with or without an extension.
    Reserved(String),
    /// One of `< > : " / \ | ? *`.
    Forbidden(char),
    /// A control character (U+0000 to U+001F).
    Control(char),
    /// A name that ends in a dot or a space, which Windows strips.
    Trailing(char),
    /// A name longer than [`MAX_NAME_UNITS`] UTF-16 units.
    TooLong(usize),
}

impl fmt::Display for Unholdable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unholdable::Reserved(device) => {
                write!(f, "{device} is a device name Windows reserves")
            }
            Unholdable::Forbidden(c) => write!(f, "Windows forbids {c:?} in a file name"),
            Unholdable::Control(c) => write!(
                f,
                "Windows forbids control characters (here U+{:04X}) in a file name",
                u32::from(*c)
            ),
            Unholdable::Trailing(' ') => f.write_str("Windows drops a trailing space"),
            Unholdable::Trailing(_) => f.write_str("Windows drops a trailing dot"),
            Unholdable::TooLong(units) => write!(
                f,
                "{units} UTF-16 units long; Windows holds at most {MAX_NAME_UNITS}"
            ),
        }
    }
}

/// Why Windows cannot hold the single name `name`, or `None` if it can.
pub fn name_problem(name: &str) -> Option<Unholdable> {
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Some(Unholdable::Forbidden(c));
    }
    if let Some(c) = name.chars().find(|c| u32::from(*c) < 0x20) {
        return Some(Unholdable::Control(c));
    }
    if let Some(c) = name.chars().last().filter(|c| matches!(c, '.' | ' ')) {
        return Some(Unholdable::Trailing(c));
    }
    let units = name.encode_utf16().count();
    if units > MAX_NAME_UNITS {
        return Some(Unholdable::TooLong(units));
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    RESERVED
        .iter()
        .find(|device| device.eq_ignore_ascii_case(stem))
        .map(|device| Unholdable::Reserved((*device).to_string()))
}

/// The first name of the `/`-separated `path` that Windows cannot hold, and why.
pub fn path_problem(path: &str) -> Option<(&str, Unholdable)> {
    path.split('/')
        .find_map(|name| name_problem(name).map(|why| (name, why)))
}

/// What Windows compares when it looks a name up: the same for names that differ only
/// in case. Unicode lowercase stands in for NTFS's own case table.
pub fn case_key(path: &str) -> String {
    path.to_lowercase()
}

/// The paths of `paths` that Windows would take for an earlier one of them, since they
/// differ from it only in case, each with the earlier path it clashes with. The first of
/// each group syncs; the others are reported. A directory's own path clashes like a
/// file's.
pub fn case_clashes<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    let mut first: HashMap<String, &'a str> = HashMap::new();
    let mut clashes = Vec::new();
    for path in paths {
        match first.get(&case_key(path)) {
            Some(&kept) => clashes.push((path, kept)),
            None => {
                first.insert(case_key(path), path);
            }
        }
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Option<Unholdable>) {
        assert_eq!(name_problem(name), expected, "{name:?}");
    }

    fn reserved(device: &str) -> Option<Unholdable> {
        Some(Unholdable::Reserved(device.to_string()))
    }

    #[test]
    fn reserved_device_names_with_or_without_an_extension() {
        for (name, device) in [
            ("CON", "CON"),
            ("con", "CON"),
            ("Prn.txt", "PRN"),
            ("aux.txt", "AUX"),
            ("nul.tar.gz", "NUL"),
            ("COM1", "COM1"),
            ("com9.log", "COM9"),
            ("LPT1", "LPT1"),
            ("lpt9.", "LPT9"),
            ("CON .txt", "CON"),
            ("conout$", "CONOUT$"),
            ("COM¹.txt", "COM¹"),
        ] {
            let expected = if name.ends_with('.') {
                Some(Unholdable::Trailing('.'))
            } else {
                reserved(device)
            };
            check(name, expected);
        }
    }

    #[test]
    fn names_that_only_look_reserved_are_held() {
        for name in [
            "CONS",
            "console.txt",
            "COM0",
            "COM10",
            "LPT0",
            "lpt10.txt",
            "auxiliary",
            "a.con",
            "nul_",
            "my aux.txt",
            ".aux",
        ] {
            check(name, None);
        }
    }

    #[test]
    fn forbidden_and_control_characters() {
        for c in FORBIDDEN {
            check(&format!("a{c}b.txt"), Some(Unholdable::Forbidden(c)));
        }
        check("a:b.txt", Some(Unholdable::Forbidden(':')));
        check("tab\there", Some(Unholdable::Control('\t')));
        check("nul\0", Some(Unholdable::Control('\0')));
        check("esc\u{1f}", Some(Unholdable::Control('\u{1f}')));
        check("del\u{7f}", None);
        check("ünïcødé – ok", None);
    }

    #[test]
    fn a_trailing_dot_or_space_is_refused_elsewhere_they_are_fine() {
        check("name.", Some(Unholdable::Trailing('.')));
        check("name ", Some(Unholdable::Trailing(' ')));
        check("..", Some(Unholdable::Trailing('.')));
        check(".hidden", None);
        check(" leading space", None);
        check("a. b .c", None);
    }

    #[test]
    fn names_are_measured_in_utf16_units() {
        check(&"a".repeat(255), None);
        check(&"a".repeat(256), Some(Unholdable::TooLong(256)));
        // One UTF-16 unit for 'é' (two UTF-8 bytes), two for '😀' (four bytes).
        check(&"é".repeat(255), None);
        check(&"😀".repeat(128), Some(Unholdable::TooLong(256)));
    }

    #[test]
    fn a_path_is_refused_for_its_first_bad_name() {
        assert_eq!(path_problem("docs/notes/a.txt"), None);
        assert_eq!(
            path_problem("docs/aux/a:b.txt"),
            Some(("aux", Unholdable::Reserved("AUX".into())))
        );
        assert_eq!(
            path_problem("docs/a:b.txt"),
            Some(("a:b.txt", Unholdable::Forbidden(':')))
        );
    }

    #[test]
    fn the_reasons_read_as_sentences() {
        let said = |name: &str| name_problem(name).unwrap().to_string();
        assert_eq!(said("aux.txt"), "AUX is a device name Windows reserves");
        assert_eq!(said("a:b.txt"), "Windows forbids ':' in a file name");
        assert_eq!(
            said("a\u{1}"),
            "Windows forbids control characters (here U+0001) in a file name"
        );
        assert_eq!(said("a."), "Windows drops a trailing dot");
        assert_eq!(said("a "), "Windows drops a trailing space");
    }

    #[test]
    fn names_differing_only_in_case_clash_and_the_first_one_syncs() {
        let paths = [
            "a.txt", "A.txt", "b.txt", "dir/X", "DIR/x", "dir/y", "a.TXT",
        ];
        assert_eq!(
            case_clashes(paths),
            vec![("A.txt", "a.txt"), ("DIR/x", "dir/X"), ("a.TXT", "a.txt")]
        );
        assert_eq!(
            case_clashes(["straße", "STRASSE", "Straße"]),
            vec![("Straße", "straße")]
        );
        assert!(case_clashes(["a", "b", "a/b"]).is_empty());
    }
}
