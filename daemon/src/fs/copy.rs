//! Copying a byte range from one open file into another without passing it through
//! the process: `copy_file_range`, which shares the extents (a reflink) where the
//! filesystem can (btrfs, XFS, NFS 4.2) and copies inside the kernel elsewhere; a plain
//! read and write where the kernel refuses (another filesystem on old kernels, a
//! filesystem without it).

use std::fs::File;
use std::io;

use crate::fs::FileExt;

/// Copies `len` bytes at `from` in `src` to `to` in `dst`. The ranges may be in the
/// same file as long as they do not overlap. A source that ends before the range does
/// is an error ([`io::ErrorKind::UnexpectedEof`]).
#[cfg(unix)]
pub fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: u64) -> io::Result<()> {
    let (mut from, mut to, mut left) = (from, to, len);
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), chunk) {
            Ok(0) => return Err(short()),
            Ok(n) => left -= n as u64,
            Err(e) if in_kernel_refused(e) => return copy_by_hand(src, from, dst, to, left),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The errors that say this kernel or filesystem cannot copy this pair, not that the
/// files are bad: copy through the process instead.
#[cfg(unix)]
fn in_kernel_refused(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    [
        Errno::XDEV,
        Errno::NOSYS,
        Errno::OPNOTSUPP,
        Errno::INVAL,
        Errno::PERM,
    ]
    .contains(&e)
}

/// [`copy_range`] on Windows: through the process.
#[cfg(windows)]
pub fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: u64) -> io::Result<()> {
    copy_by_hand(src, from, dst, to, len)
}

fn copy_by_hand(src: &File, from: u64, dst: &File, to: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], from + done).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                short()
            } else {
                e
            }
        })?;
        dst.write_all_at(&buf[..n], to + done)?;
        done += n as u64;
    }
    Ok(())
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the source ended before the range to copy",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_between_files_and_within_one() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("src"), &content).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        copy_range(&src, 1000, &dst, 0, 200_000).unwrap();
        copy_range(&dst, 0, &dst, 200_000, 5).unwrap();
        let got = std::fs::read(dir.path().join("dst")).unwrap();
        assert_eq!(&got[..200_000], &content[1000..201_000]);
        assert_eq!(&got[200_000..], &content[1000..1005]);
        let err = copy_range(&src, 299_000, &dst, 0, 2000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        copy_by_hand(&src, 10, &dst, 0, 100).unwrap();
        assert_eq!(
            &std::fs::read(dir.path().join("dst")).unwrap()[..100],
            &content[10..110]
        );
    }
}
