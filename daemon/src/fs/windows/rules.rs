//! The pure parts of confined access on Windows, built and unit-tested on every
//! platform: which names may be opened relative to a directory handle, how the Unix
//! open flags callers pass map to an NT create disposition, a Win32 path as the NT path
//! a rename or link out of a folder names, and the records of a directory listing.

use std::io;

/// The open flags callers pass to `Dir::open`, with the Unix names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OFlags(u32);

impl OFlags {
    pub const RDONLY: OFlags = OFlags(0);
    pub const RDWR: OFlags = OFlags(1);
    pub const CREATE: OFlags = OFlags(2);
    pub const EXCL: OFlags = OFlags(4);
    pub const DIRECTORY: OFlags = OFlags(8);

    pub fn contains(self, other: OFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for OFlags {
    type Output = OFlags;
    fn bitor(self, other: OFlags) -> OFlags {
        OFlags(self.0 | other.0)
    }
}

/// What `NtCreateFile` does when the name exists or not (its `CreateDisposition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// `FILE_OPEN`: only an existing name (no `O_CREAT`).
    Open,
    /// `FILE_CREATE`: only a new name (`O_CREAT | O_EXCL`).
    Create,
    /// `FILE_OPEN_IF`: either (`O_CREAT`).
    OpenIf,
}

/// How `NtCreateFile` is asked for what `flags` asks of `openat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenAs {
    pub disposition: Disposition,
    pub write: bool,
    /// `FILE_DIRECTORY_FILE`: fail unless it is a directory.
    pub directory: bool,
    /// `FILE_NON_DIRECTORY_FILE`: fail if it is a directory, as a write open of one
    /// does on Unix (`EISDIR`).
    pub non_directory: bool,
}

pub fn open_as(flags: OFlags) -> OpenAs {
    let disposition = match (flags.contains(OFlags::CREATE), flags.contains(OFlags::EXCL)) {
        (false, _) => Disposition::Open,
        (true, true) => Disposition::Create,
        (true, false) => Disposition::OpenIf,
    };
    let write = flags.contains(OFlags::RDWR);
    let directory = flags.contains(OFlags::DIRECTORY);
    OpenAs {
        disposition,
        write,
        directory,
        non_directory: !directory && (write || disposition != Disposition::Open),
    }
}

/// Refuses what is not one plain name to open relative to a directory handle: empty,
/// `.`, `..`, a separator (`\` or `/`, which NT would take as a path below the handle or
/// from the root of the namespace) or `:` (an NTFS alternate data stream, or a device).
pub fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['\\', '/', ':', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain name"),
        ));
    }
    Ok(())
}

/// The NT path (`\??\C:\dir\file`) of an absolute Win32 path, as a rename or hard link to
/// a path outside every folder names its destination; forward slashes become
/// backslashes except in a verbatim (`\\?\`) path, which is taken as it is.
pub fn nt_path(path: &str) -> io::Result<String> {
    if let Some(rest) = path.strip_prefix(r"\\?\") {
        return Ok(format!(r"\??\{rest}"));
    }
    let path = path.replace('/', "\\");
    if let Some(rest) = path.strip_prefix(r"\\") {
        if !rest.is_empty() && !rest.starts_with(['.', '?']) {
            return Ok(format!(r"\??\UNC\{rest}"));
        }
    } else if path.len() >= 3
        && path.as_bytes()[0].is_ascii_alphabetic()
        && &path.as_bytes()[1..3] == b":\\"
    {
        return Ok(format!(r"\??\{path}"));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{path} is not an absolute path of a drive or share"),
    ))
}

/// The layout of `FILE_FULL_DIR_INFO`, the records `GetFileInformationByHandleEx`
/// lists a directory in (checked against `windows-sys` where it is built).
pub mod full_dir_info {
    pub const NEXT_ENTRY_OFFSET: usize = 0;
    pub const FILE_ATTRIBUTES: usize = 56;
    pub const FILE_NAME_LENGTH: usize = 60;
    pub const FILE_NAME: usize = 68;
}

/// The records of a `FILE_FULL_DIR_INFO` listing in `buf`: each name (UTF-16) and its
/// attributes, without `.` and `..`. A record that does not fit ends the list with an
/// error rather than a read past the buffer.
pub fn parse_full_dir_info(buf: &[u8]) -> io::Result<Vec<(Vec<u16>, u32)>> {
    use full_dir_info::*;
    let u32_at = |at: usize| -> io::Result<u32> {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "truncated listing"))
    };
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let next = u32_at(at + NEXT_ENTRY_OFFSET)? as usize;
        let attributes = u32_at(at + FILE_ATTRIBUTES)?;
        let len = u32_at(at + FILE_NAME_LENGTH)? as usize;
        let bytes = buf
            .get(at + FILE_NAME..at + FILE_NAME + len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "truncated listing"))?;
        let name: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let dots = [&[u16::from(b'.')][..], &[u16::from(b'.'); 2]];
        if !dots.contains(&name.as_slice()) {
            out.push((name, attributes));
        }
        if next == 0 {
            return Ok(out);
        }
        at += next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_opened() {
        for ok in ["a", "a.txt", ".filesync-tmp-1", "with space", "…ünï"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            r"a\b",
            "a/b",
            "a:b",
            "a:stream:$DATA",
            "C:",
            "a\0",
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn open_flags_map_to_dispositions() {
        let read = open_as(OFlags::RDONLY);
        assert_eq!(read.disposition, Disposition::Open);
        assert!(!read.write && !read.directory && !read.non_directory);
        let temp = open_as(OFlags::RDWR | OFlags::CREATE | OFlags::EXCL);
        assert_eq!(temp.disposition, Disposition::Create);
        assert!(temp.write && temp.non_directory && !temp.directory);
        let partial = open_as(OFlags::RDWR | OFlags::CREATE);
        assert_eq!(partial.disposition, Disposition::OpenIf);
        let dir = open_as(OFlags::RDONLY | OFlags::DIRECTORY);
        assert!(dir.directory && !dir.non_directory && !dir.write);
    }

    #[test]
    fn win32_paths_become_nt_paths() {
        let cases = [
            (r"C:\state\v1", r"\??\C:\state\v1"),
            ("z:/tmp/x", r"\??\z:\tmp\x"),
            (r"\\?\C:\long\path", r"\??\C:\long\path"),
            (r"\\server\share\v", r"\??\UNC\server\share\v"),
        ];
        for (win32, nt) in cases {
            assert_eq!(nt_path(win32).unwrap(), nt, "{win32}");
        }
        for bad in [
            r"relative\x",
            r"\rooted",
            "C:",
            "C:rel",
            r"\\",
            r"\\.\pipe\x",
        ] {
            assert!(nt_path(bad).is_err(), "{bad}");
        }
    }

    /// One `FILE_FULL_DIR_INFO` record, padded to 8 bytes unless it is the last.
    fn record(name: &str, attributes: u32, last: bool) -> Vec<u8> {
        let wide: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut r = vec![0; full_dir_info::FILE_NAME];
        r[56..60].copy_from_slice(&attributes.to_le_bytes());
        r[60..64].copy_from_slice(&(wide.len() as u32).to_le_bytes());
        r.extend(&wide);
        if !last {
            r.resize(r.len().next_multiple_of(8), 0);
            let next = r.len() as u32;
            r[0..4].copy_from_slice(&next.to_le_bytes());
        }
        r
    }

    #[test]
    fn a_listing_is_parsed_without_dots_and_never_past_its_end() {
        let mut buf = record(".", 16, false);
        buf.extend(record("..", 16, false));
        buf.extend(record("dir", 16, false));
        buf.extend(record("fïle.txt", 32, true));
        let names = parse_full_dir_info(&buf).unwrap();
        let want: Vec<(Vec<u16>, u32)> = vec![
            ("dir".encode_utf16().collect(), 16),
            ("fïle.txt".encode_utf16().collect(), 32),
        ];
        assert_eq!(names, want);
        let cut = &buf[..buf.len() - 2];
        assert_eq!(
            parse_full_dir_info(cut).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
