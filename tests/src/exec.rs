//! Processes and places: where the built binaries are, running a command with a
//! deadline, a free loopback port for a server, and the scratch directory each test owns.

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Set to keep every test's temp dir after the test, for reading configs and logs.
pub const KEEP_DIRS_ENV: &str = "FILESYNC_KEEP_TEST_DIRS";

/// Set to the directory holding `filesyncd` and `filesyncctl` to test other binaries
/// than the ones next to this test executable (a release build, an installed package).
pub const BIN_DIR_ENV: &str = "FILESYNC_BIN_DIR";

/// The directory the binaries are taken from: `FILESYNC_BIN_DIR`, else the Cargo
/// profile directory this test executable was built into.
///
/// Cargo sets `CARGO_BIN_EXE_*` only for tests of the package that owns a binary, so
/// this crate derives the place itself: a test executable lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().expect("cannot find the path of the test executable");
        let mut dir = exe
            .parent()
            .expect("the test executable has no parent directory")
            .to_path_buf();
        if dir.file_name() == Some(OsStr::new("deps")) {
            dir.pop();
        }
        dir
    })
}

/// The path of one of the workspace binaries; panics with what to do when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{name} not found at {}: run `cargo build --workspace` first \
         (with the same profile as the tests), or set {BIN_DIR_ENV} to the directory \
         that holds filesyncd and filesyncctl",
        path.display()
    );
    path
}

/// Runs `cmd` to completion with its output captured, killing it if it takes longer
/// than `timeout`. A hung `filesyncctl` must fail the test, not hang the whole run.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run(cmd.stdin(Stdio::null()), None, timeout)
}

/// [`run_with_timeout`] with `input` on the command's standard input, which is then
/// closed.
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Output {
    run(cmd.stdin(Stdio::piped()), Some(input.to_vec()), timeout)
}

fn run(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits without reading all of it is not this helper's failure.
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    // The helper thread owns the child and drains both pipes, so a chatty command cannot
    // block on a full pipe while we wait; we only keep its pid to kill it on timeout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("waiting for {what} failed: {e}"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("{what} did not finish within {timeout:?} and was killed");
        }
    }
}

/// Lines of a running command's stdout, read on a thread so that waiting is bounded.
pub fn line_reader(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `sig` to the process `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid does not fit in pid_t");
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The lowest port a server of these tests listens on.
const SERVER_PORTS_FROM: u16 = 10_000;

/// A loopback port for a server to listen on: free now, never handed out before by this
/// process, and below the kernel's ephemeral range.
///
/// A server that a test kills and starts again must bind the same port, and while it is
/// down any free ephemeral port may become the local end of some outgoing connection
/// (the suite makes thousands): a port from `bind(0)` lies in that range, one below it
/// does not. Another process can still take the port before the first start;
/// [`crate::Node::start`] moves such a server to a new port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below = ephemeral_low().max(SERVER_PORTS_FROM + 1);
    let span = u32::from(below - SERVER_PORTS_FROM);
    // Different test processes start at different places.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = SERVER_PORTS_FROM + u16::try_from(offset).expect("offset < span <= u16::MAX");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {SERVER_PORTS_FROM}..{below}")
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), 32768 where
/// it cannot be read.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The last `max_bytes` of a file, as text, for failure messages.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("({} does not exist)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max_bytes {
        let _ = file.seek(SeekFrom::Start(len - max_bytes));
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    if len > max_bytes {
        // Drop the partial first line.
        match text.split_once('\n') {
            Some((_, rest)) => format!("[…]\n{rest}"),
            None => text.into_owned(),
        }
    } else {
        text.into_owned()
    }
}

/// A temp dir owned by one test. Removed on drop unless `FILESYNC_KEEP_TEST_DIRS` is
/// set; when a test fails, it says where the dir is (or how to keep it).
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        // A short prefix: the control sockets live in here and a Unix socket path must
        // stay under about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("fse2e-")
            .tempdir()
            .expect("cannot create a temp dir");
        // Canonical, so paths compare equal to what the daemon reports (on macOS
        // /tmp is a symlink).
        let path = dir
            .path()
            .canonicalize()
            .expect("cannot canonicalize the temp dir");
        Scratch {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let keep = std::env::var_os(KEEP_DIRS_ENV).is_some_and(|v| !v.is_empty());
        if let Some(dir) = self.dir.take() {
            if keep {
                let path = dir.keep();
                eprintln!("filesync-tests: kept {}", path.display());
            } else if std::thread::panicking() {
                eprintln!(
                    "filesync-tests: removing {}; set {KEEP_DIRS_ENV}=1 to keep it",
                    self.path.display()
                );
            }
        }
    }
}
