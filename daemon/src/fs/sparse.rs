//! Sparse files: reading a file without reading its holes, and leaving holes where
//! received content is all zeros, the way `cp --sparse=auto` and `rsync --sparse` do.
//! A 64 GiB disk image that holds a few GiB of data then costs a few GiB to hash and to
//! store, at both ends.
//!
//! Holes are found with `SEEK_DATA`/`SEEK_HOLE`: a hole reads as zeros, so skipping it
//! reads the same bytes. A filesystem without them reports the whole file as data, and
//! everything is read as before.

use std::fs::File;
use std::io;

use crate::fs::FileExt;

/// Zeros to hash or write without allocating them each time.
pub static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// An open file read by offset, its holes filled with zeros without a read.
pub struct Extents<'a> {
    file: &'a File,
    /// Its length when first looked at: nothing beyond it is read, so content that grew
    /// meanwhile is not mixed in (the caller's stat check sees the growth).
    size: u64,
    /// The last answer of [`Extents::data_after`]: the data from `.1` to `.2` is the
    /// first that ends after `.0`.
    known: (u64, u64, u64),
}

impl<'a> Extents<'a> {
    pub fn new(file: &'a File) -> io::Result<Extents<'a>> {
        let size = file.metadata()?.len();
        Ok(Extents {
            file,
            size,
            known: (1, 0, 0),
        })
    }

    /// The file's length, or where it ended when a read found it shorter.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the first data from `at` on starts and ends (`size`, `size` when only a
    /// hole follows).
    fn data_after(&mut self, at: u64) -> io::Result<(u64, u64)> {
        let (from, start, end) = self.known;
        if from <= at && at < end {
            return Ok((start.max(at), end));
        }
        let (start, end) = seek_data(self.file, at, self.size);
        self.known = (at, start, end);
        Ok((start.max(at), end))
    }

    /// Whether the `len` bytes at `at` are all inside the file and in a hole.
    pub fn is_hole(&mut self, at: u64, len: u64) -> io::Result<bool> {
        Ok(at + len <= self.size && self.data_after(at)?.0 >= at + len)
    }

    /// Appends to `window`, which holds the bytes at `at`, the bytes after them up to
    /// `max` in all or the end of the file: holes as zeros, data read. A file found
    /// shorter than its length said ends there ([`Extents::size`]).
    pub fn fill(&mut self, window: &mut Vec<u8>, at: u64, max: usize) -> io::Result<()> {
        loop {
            let from = at + window.len() as u64;
            let until = (at + max as u64).min(self.size);
            if from >= until {
                return Ok(());
            }
            let (start, end) = self.data_after(from)?;
            let have = window.len();
            if start > from {
                window.resize(have + (start.min(until) - from) as usize, 0);
                continue;
            }
            window.resize(have + (end.min(until) - from) as usize, 0);
            let got = read_full(self.file, &mut window[have..], from)?;
            if have + got < window.len() {
                window.truncate(have + got);
                self.size = from + got as u64;
                return Ok(());
            }
        }
    }
}

/// Where the first data from `at` on starts and ends in `file` of length `size`.
#[cfg(unix)]
fn seek_data(file: &File, at: u64, size: u64) -> (u64, u64) {
    use rustix::fs::SeekFrom;
    let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
        Ok(start) => start,
        Err(rustix::io::Errno::NXIO) => size,
        // Holes cannot be found here: all of it is data.
        Err(_) => at,
    };
    let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
        Ok(end) if start < size => end.min(size),
        _ => size,
    };
    (start, end)
}

/// Holes are not looked for on Windows yet: all of a file is data.
#[cfg(windows)]
fn seek_data(_file: &File, at: u64, size: u64) -> (u64, u64) {
    (at, size)
}

/// Reads into all of `buf` from `offset`, fewer bytes only at the end of the file.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Makes the `len` bytes at `offset` of `file` read as zeros without changing its
/// length: a hole where the filesystem can punch one, zeros written where it cannot.
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::fs::FallocateFlags;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(file, flags, offset, len).is_ok() {
            return Ok(());
        }
    }
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Bytes `file` takes on disk (`st_blocks` × 512): far below its length when sparse.
#[cfg(all(test, unix))]
pub fn allocated(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.blocks() * 512)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file of `size` bytes, a hole but for `data` written at each offset.
    pub(crate) fn sparse_file(dir: &std::path::Path, size: u64, data: &[(u64, &[u8])]) -> File {
        let path = dir.join("sparse");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(size).unwrap();
        for (at, bytes) in data {
            file.write_all_at(bytes, *at).unwrap();
        }
        file
    }

    /// Filling reads the data and gives zeros for the holes, whatever the window's
    /// bounds; a hole is recognised as one only where nothing was written.
    // Measures allocated blocks (`st_blocks`), a Unix stat field.
    #[cfg(unix)]
    #[test]
    fn holes_read_as_zeros_and_data_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8 << 20;
        let file = sparse_file(dir.path(), size, &[(3 << 20, b"abc"), (size - 2, b"yz")]);
        let dense = {
            let mut d = vec![0; size as usize];
            d[3 << 20..(3 << 20) + 3].copy_from_slice(b"abc");
            d[size as usize - 2..].copy_from_slice(b"yz");
            d
        };
        let mut extents = Extents::new(&file).unwrap();
        assert!(extents.is_hole(0, 1 << 20).unwrap());
        assert!(!extents.is_hole(3 << 20, 4096).unwrap());
        assert!(!extents.is_hole(size - 4096, 8192).unwrap(), "past the end");
        for (at, max) in [
            (0, 100),
            ((3 << 20) - 5, 10),
            (3 << 20, 1 << 20),
            (size - 3, 99),
        ] {
            let mut window = vec![];
            extents.fill(&mut window, at, max).unwrap();
            let end = (at as usize + max).min(size as usize);
            assert_eq!(window, &dense[at as usize..end], "at {at}");
        }
        assert!(allocated(&file).unwrap() < 1 << 20);
    }

    #[test]
    fn a_zeroed_range_reads_as_zeros_and_keeps_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path(), 0, &[(0, &[7; 300_000])]);
        zero_range(&file, 4096, 200_000).unwrap();
        let got = std::fs::read(dir.path().join("sparse")).unwrap();
        assert_eq!(got.len(), 300_000);
        assert!(got[4096..204_096].iter().all(|&b| b == 0));
        assert!(got[..4096].iter().chain(&got[204_096..]).all(|&b| b == 7));
    }
}
