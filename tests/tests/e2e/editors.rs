//! How editors save: a temp file renamed over the original, vim's probe-and-backup
//! dance, writes in place in several flushed chunks, and many saves in a row. The other
//! replicas end with the final content, never keep a temp name, and never lose the file
//! during the save window (test-matrix L4): an observer thread looks at B's copy and the
//! server's the whole time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use filesync_tests::Cluster;
use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};

use crate::paths;

/// Time between two looks of an [`Observer`]: short enough to catch a file missing
/// for a few milliseconds, long enough not to starve the daemons on two cores.
const LOOK_EVERY: Duration = Duration::from_millis(2);

/// What an [`Observer`] saw of one file.
#[derive(Debug, Default)]
struct Seen {
    looks: u64,
    /// Looks at which the file was missing after it had been seen, with the time since
    /// the observer started.
    missing: Vec<(u64, Duration)>,
    /// Contents seen that were none of the allowed ones (their length and first bytes).
    unexpected: Vec<String>,
    /// Names seen in the file's directory that the test said must never appear.
    forbidden: Vec<String>,
}

/// A thread that keeps looking at `path` until [`Observer::finish`], or until the
/// observer is dropped (a test that fails earlier leaves no thread looking on).
struct Observer {
    what: String,
    stop: Arc<AtomicBool>,
    /// `None` once joined.
    thread: Option<JoinHandle<Seen>>,
}

impl Observer {
    /// Watches `path`: it must exist at every look once it has been seen; when
    /// `allowed` is not empty, its content must be one of them at every look; no name
    /// `forbidden` accepts may appear in its directory.
    fn start(
        what: &str,
        path: PathBuf,
        allowed: Vec<Vec<u8>>,
        forbidden: fn(&str) -> bool,
    ) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let dir = path.parent().expect("a file has a parent").to_owned();
            let mut seen = Seen::default();
            let mut appeared = false;
            // At least one look after the stop request, so the last state counts.
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                seen.looks += 1;
                look(&path, &allowed, &mut appeared, &mut seen, started);
                for name in list_names(&dir) {
                    if forbidden(&name) && !seen.forbidden.contains(&name) {
                        seen.forbidden.push(name);
                    }
                }
                if stopping {
                    return seen;
                }
                std::thread::sleep(LOOK_EVERY);
            }
        });
        Observer {
            what: what.to_owned(),
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and checks what it saw.
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("an observer is finished once");
        let seen = thread.join().expect("the observer thread panicked");
        let what = &self.what;
        assert!(seen.looks >= 10, "{what}: only {} looks", seen.looks);
        assert!(
            seen.missing.is_empty(),
            "{what} disappeared during the saves: missing at {} of {} looks, first at {:?}",
            seen.missing.len(),
            seen.looks,
            &seen.missing[..seen.missing.len().min(5)]
        );
        assert!(
            seen.unexpected.is_empty(),
            "{what} held content that was never saved: {:?}",
            seen.unexpected
        );
        assert!(
            seen.forbidden.is_empty(),
            "temp names appeared next to {what}: {:?}",
            seen.forbidden
        );
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn look(path: &Path, allowed: &[Vec<u8>], appeared: &mut bool, seen: &mut Seen, t0: Instant) {
    match fs::read(path) {
        Ok(bytes) => {
            *appeared = true;
            if !allowed.is_empty() && !allowed.contains(&bytes) {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
                let text = format!("{} bytes: {head:?}", bytes.len());
                if !seen.unexpected.contains(&text) {
                    seen.unexpected.push(text);
                }
            }
        }
        // Only a missing file counts; a read racing a rename into place sees either
        // version, never an error, so any other error is a finding too.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if *appeared {
                seen.missing.push((seen.looks, t0.elapsed()));
            }
        }
        Err(e) => {
            let text = format!("read error: {e}");
            if !seen.unexpected.contains(&text) {
                seen.unexpected.push(text);
            }
        }
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .map(|i| i.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Observers on B's and the server's copy of `rel`.
fn observe(
    cl: &Cluster,
    rel: &str,
    allowed: &[Vec<u8>],
    forbidden: fn(&str) -> bool,
) -> [Observer; 2] {
    [
        Observer::start(
            &format!("B's {rel}"),
            cl.path_on(1, DOCS, rel),
            allowed.to_vec(),
            forbidden,
        ),
        Observer::start(
            &format!("the server's {rel}"),
            cl.server_path(DOCS, rel),
            allowed.to_vec(),
            forbidden,
        ),
    ]
}

fn finish(observers: [Observer; 2]) {
    for o in observers {
        o.finish();
    }
}

/// No name the test created for the save's temp files: the ones no rule ignores may
/// legitimately never reach a peer only because they live for microseconds, so they
/// are checked only in the settled manifests.
fn no_names(_: &str) -> bool {
    false
}

/// One version of the document.
fn version(n: u64) -> Vec<u8> {
    let mut v = format!("version {n} of notes.txt\n").into_bytes();
    v.extend(pseudo_random(300 + n, 2_000 + n as usize * 100));
    v
}

/// Creates notes.txt with version 0 on A and settles.
fn start_document(cl: &Cluster) -> PathBuf {
    let path = cl.path_on(0, DOCS, "notes.txt");
    files::write(&path, version(0));
    cl.settle(DOCS);
    path
}

/// Writes `bytes` to a new file and fsyncs it, as an editor does before a rename.
fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Save via temp file + rename (most editors, "atomic save"): 5 saves in a row. B and
/// the server only ever hold a complete saved version, never lose the file, and end
/// with the last one; the temp names are nowhere after settling.
#[test]
fn save_via_temp_file_and_rename() {
    let cl = Cluster::new(2);
    let path = start_document(&cl);
    let allowed: Vec<Vec<u8>> = (0..=5).map(version).collect();
    let observers = observe(&cl, "notes.txt", &allowed, no_names);
    for n in 1..=5 {
        let tmp = cl.path_on(0, DOCS, &format!("notes.txt.tmp{n}23"));
        write_synced(&tmp, &version(n));
        fs::rename(&tmp, &path).unwrap();
    }
    let common = cl.settle(DOCS);
    finish(observers);
    assert_eq!(paths(&common), ["notes.txt"], "a temp name was synced");
    cl.assert_file_everywhere(DOCS, "notes.txt", &version(5));
}

/// vim's save with `backupcopy=no` (the Linux default when it can): a `4913` probe,
/// the original renamed to `notes.txt~`, the new content written to `notes.txt`, the
/// backup deleted; a `.notes.txt.swp` exists all along. Three saves. The file never
/// disappears on B or the server; the probe, backup and swap names, ignored by
/// built-in rules, never appear there.
#[test]
fn vim_style_save() {
    let cl = Cluster::new(2);
    let path = start_document(&cl);
    let swap = cl.path_on(0, DOCS, ".notes.txt.swp");
    files::write(&swap, pseudo_random(399, 4096));
    let vim_names = |name: &str| matches!(name, "4913" | "notes.txt~" | ".notes.txt.swp");
    let observers = observe(&cl, "notes.txt", &[], vim_names);
    let backup = cl.path_on(0, DOCS, "notes.txt~");
    let probe = cl.path_on(0, DOCS, "4913");
    for n in 1..=3 {
        fs::File::create(&probe).unwrap();
        fs::remove_file(&probe).unwrap();
        fs::rename(&path, &backup).unwrap();
        write_synced(&path, &version(n));
        fs::remove_file(&backup).unwrap();
        // vim rewrites the swap file as you type.
        files::write(&swap, pseudo_random(400 + n, 4096));
    }
    let common = cl.settle_excluding(DOCS, &|rel| rel == ".notes.txt.swp");
    fs::remove_file(&swap).unwrap();
    let common_after = cl.settle(DOCS);
    finish(observers);
    assert_eq!(paths(&common), ["notes.txt"], "a vim temp name was synced");
    assert_eq!(common_after, common);
    cl.assert_file_everywhere(DOCS, "notes.txt", &version(3));
}

/// A save that rewrites the file in place (truncate, then 8 chunks of 64 KiB, each
/// flushed and fsynced), then a patch in the middle without truncating. The file is
/// never missing elsewhere and ends with the final bytes everywhere.
#[test]
fn write_in_place_in_flushed_chunks() {
    let cl = Cluster::new(2);
    let path = start_document(&cl);
    let observers = observe(&cl, "notes.txt", &[], no_names);
    let mut expected = Vec::new();
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        for chunk in 0..8u64 {
            let bytes = pseudo_random(500 + chunk, 64 * 1024);
            f.write_all(&bytes).unwrap();
            f.flush().unwrap();
            f.sync_data().unwrap();
            expected.extend(bytes);
        }
    }
    {
        use std::io::{Seek, SeekFrom};
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(200_000)).unwrap();
        let patch = b"patched in place, in the middle";
        f.write_all(patch).unwrap();
        f.sync_data().unwrap();
        expected[200_000..200_000 + patch.len()].copy_from_slice(patch);
    }
    let common = cl.settle(DOCS);
    finish(observers);
    assert_eq!(paths(&common), ["notes.txt"]);
    cl.assert_file_everywhere(DOCS, "notes.txt", &expected);
}

/// 20 saves as fast as the test can make them, alternating a rewrite in place and a
/// temp file renamed over the original. Every replica ends with the 20th; the file is
/// never missing on B or the server meanwhile.
#[test]
fn twenty_fast_saves() {
    let cl = Cluster::new(2);
    let path = start_document(&cl);
    let observers = observe(&cl, "notes.txt", &[], no_names);
    for n in 1..=20 {
        if n % 2 == 0 {
            let tmp = cl.path_on(0, DOCS, &format!(".notes.txt.{n}.new"));
            fs::write(&tmp, version(n)).unwrap();
            fs::rename(&tmp, &path).unwrap();
        } else {
            fs::write(&path, version(n)).unwrap();
        }
    }
    let common = cl.settle(DOCS);
    finish(observers);
    assert_eq!(paths(&common), ["notes.txt"], "a temp name was synced");
    cl.assert_file_everywhere(DOCS, "notes.txt", &version(20));
}
