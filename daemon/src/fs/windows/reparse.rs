//! The reparse data of a symbolic link (`REPARSE_DATA_BUFFER`): built for a link a
//! server sent (its target in Unix form, `a/b`), and read back from a link or junction
//! on disk as the Unix form of its target. Pure, tested on every platform.

use std::io;

/// `IO_REPARSE_TAG_SYMLINK`.
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// `IO_REPARSE_TAG_MOUNT_POINT`: a junction.
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `SYMLINK_FLAG_RELATIVE`: the target is relative to the link's directory.
const SYMLINK_FLAG_RELATIVE: u32 = 1;
/// The reparse tag, the data length and a reserved field.
const HEADER: usize = 8;
/// The four name offsets and lengths of a symlink's or junction's data.
const NAMES: usize = 8;

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// The reparse data of a relative symbolic link to `target`, given in Unix form. A link
/// whose target Windows cannot take as relative (absolute, or naming a drive or a
/// stream) is refused: it would point somewhere else on this machine.
pub fn symlink_data(target: &str) -> io::Result<Vec<u8>> {
    if target.is_empty() || target.starts_with(['/', '\\']) || target.contains([':', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "link target {target:?} is not a relative path, and Windows links here \
                 keep only relative targets"
            ),
        ));
    }
    let name: Vec<u16> = target.replace('/', "\\").encode_utf16().collect();
    let name_bytes = name.len() * 2;
    let length = u16::try_from(NAMES + 4 + 2 * name_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "link target too long"))?;
    let mut data = Vec::with_capacity(HEADER + usize::from(length));
    data.extend(TAG_SYMLINK.to_le_bytes());
    data.extend(length.to_le_bytes());
    data.extend(0u16.to_le_bytes());
    // The substitute name first, then the same as the print name.
    let n = name_bytes as u16;
    for field in [0, n, n, n] {
        data.extend(field.to_le_bytes());
    }
    data.extend(SYMLINK_FLAG_RELATIVE.to_le_bytes());
    for _ in 0..2 {
        data.extend(name.iter().flat_map(|u| u.to_le_bytes()));
    }
    Ok(data)
}

/// The target of a symbolic link from its reparse data, in Unix form (`/` for `\`): its
/// print name, else its substitute name. An absolute target (`C:\Users`, as every
/// junction has) is refused with `Unsupported`, naming it: it would name another place
/// on every other device, so such a link is listed as unsyncable, as this device makes
/// only relative links ([`symlink_data`]).
pub fn target(data: &[u8]) -> io::Result<String> {
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| invalid("truncated reparse data"))
    };
    let tag = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| invalid("truncated reparse data"))?;
    let (names_at, relative) = match tag {
        TAG_SYMLINK => {
            let flags = data
                .get(HEADER + NAMES..HEADER + NAMES + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| invalid("truncated reparse data"))?;
            (HEADER + NAMES + 4, flags & SYMLINK_FLAG_RELATIVE != 0)
        }
        TAG_MOUNT_POINT => (HEADER + NAMES, false),
        other => return Err(invalid(format!("reparse point {other:#x} is not a link"))),
    };
    let name = |offset_at: usize| -> io::Result<String> {
        let (offset, len) = (u16_at(offset_at)?, u16_at(offset_at + 2)?);
        let bytes = data
            .get(names_at + offset..names_at + offset + len)
            .ok_or_else(|| invalid("reparse data names past its end"))?;
        let wide: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&wide).map_err(|_| invalid("link target is not valid Unicode"))
    };
    let mut target = name(HEADER + 4)?;
    if target.is_empty() {
        target = name(HEADER)?;
        target = target.strip_prefix(r"\??\").unwrap_or(&target).to_string();
    }
    if !relative {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "a link or junction to {target}, a place on this machine only: only links \
                 with a relative target sync"
            ),
        ));
    }
    Ok(target.replace('\\', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_link_round_trips_in_unix_form() {
        for t in ["b.txt", "../up/x", "dir/sub/ünï"] {
            assert_eq!(target(&symlink_data(t).unwrap()).unwrap(), t);
        }
        let data = symlink_data("a/b").unwrap();
        assert_eq!(&data[..4], &TAG_SYMLINK.to_le_bytes());
        let length = u16::from_le_bytes([data[4], data[5]]);
        assert_eq!(usize::from(length), data.len() - HEADER);
    }

    #[test]
    fn targets_windows_cannot_hold_relative_are_refused() {
        for t in ["", "/etc/passwd", r"\x", "C:x", "a:stream"] {
            let e = symlink_data(t).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{t:?}");
        }
    }

    #[test]
    fn a_junction_or_absolute_link_is_refused_naming_its_target() {
        let subst: Vec<u8> = r"\??\C:\Users"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut data = Vec::new();
        data.extend(TAG_MOUNT_POINT.to_le_bytes());
        data.extend(((NAMES + subst.len() + 4) as u16).to_le_bytes());
        data.extend(0u16.to_le_bytes());
        for field in [0, subst.len() as u16, subst.len() as u16 + 2, 0] {
            data.extend(field.to_le_bytes());
        }
        data.extend(&subst);
        data.extend([0; 4]);
        let e = target(&data).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains(r"to C:\Users,"), "{e}");
        assert!(target(&data[..12]).is_err());
        assert!(target(&[0x17, 0, 0, 0x80, 0, 0, 0, 0]).is_err());
    }
}
