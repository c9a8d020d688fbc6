//! Reading files to hash them: on every core, retrying a file that changes while read,
//! with a small file's bytes kept from the same read ([`chunk::hash_file`]).

use filesync_proto::RelPath;

use crate::fs::beneath::Root;
use crate::fs::chunk;
use crate::fs::stat::{self, Stat};

/// What hashing one file gives: its hashes, and its bytes when it is small enough to
/// travel inline ([`chunk::hash_file`]).
pub(super) type HashResult = Result<(chunk::Hashed, Option<Vec<u8>>), String>;

/// Hashes `files` with one thread per core (fewer for few files), results in order.
pub(super) fn hash_all(root: &Root, files: &[(RelPath, Stat)]) -> Vec<HashResult> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if workers <= 1 {
        return files
            .iter()
            .map(|(path, st)| hash_stable(root, path, st))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<Vec<(usize, HashResult)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((path, st)) = files.get(i) else {
                            return mine;
                        };
                        mine.push((i, hash_stable(root, path, st)));
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let mut results: Vec<Option<HashResult>> = (0..files.len()).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("the hashing thread failed; will retry".into())))
        .collect()
}

/// Hashes a file, retrying when it changes while being read, so that no mix of two
/// versions is ever reported: a read counts only when the stat before it (`before`, then
/// the one after the last try) and the one after it are equal, and no write that was
/// under way at the first of them is still copying its bytes (see [`stat::writes_done`]). A
/// small file's bytes come with it ([`chunk::hash_file`]), the very bytes hashed.
pub(super) fn hash_stable(root: &Root, path: &RelPath, before: &Stat) -> HashResult {
    let (dir, name) = stat::parent(root, path).map_err(|e| format!("cannot read: {e:#}"))?;
    let mut expected = *before;
    for _ in 0..3 {
        let file = dir
            .open_regular(name)
            .map_err(|e| format!("cannot read: {e}"))?;
        stat::writes_done(&file).map_err(|e| format!("cannot read: {e}"))?;
        let (hashed, data) =
            chunk::hash_file(&file, expected.size).map_err(|e| format!("cannot read: {e}"))?;
        let after = file.metadata().ok().and_then(|m| stat::stat_of(&m));
        match after {
            Some(a) if a == expected && hashed.size == a.size => return Ok((hashed, data)),
            Some(a) => expected = a,
            None => return Err("vanished while being read".into()),
        }
    }
    Err("keeps changing while being read; will retry on the next scan".into())
}
