//! The Windows binaries (`filesyncd.exe`, `filesyncctl.exe`) run under Wine: finding
//! them and the Wine tools, a fresh `WINEPREFIX` per test, and the `ProcessPrng` shim
//! that Debian's Wine 8 lacks. The daemon itself is a [`WinNode`] (`wine/node.rs`).
//!
//! Rust's standard library since 1.78 asks `bcryptprimitives.dll` for `ProcessPrng`,
//! which Wine 8 does not export, so even a hello-world exits with status 53 there. Each
//! prefix gets a small DLL of that name, built here with mingw, whose `ProcessPrng`
//! calls `RtlGenRandom` (exported by `advapi32` as `SystemFunction036`).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::exec::{bin_dir, run_with_timeout};
use crate::node::describe;
use crate::poll_until;

mod node;

pub use node::WinNode;

/// Set to the directory holding `filesyncd.exe` and `filesyncctl.exe` to test other
/// Windows binaries than the debug build of this workspace.
pub const WIN_BIN_DIR_ENV: &str = "FILESYNC_WIN_BIN_DIR";

/// Set by `.ci/run`: a tool that `scripts/test-deps.sh` installs must be there, so a
/// test that would skip without it fails instead.
pub const REQUIRE_TOOLS_ENV: &str = "FILESYNC_REQUIRE_TOOLS";

/// The Rust target the Windows binaries are built for (`.ci/run`).
const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// The mingw C compiler that builds the shim.
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// How long making a prefix (`wineboot -i`) may take on a loaded 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long building the shim or stopping the prefix's wineserver may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long building the Windows binaries may take from nothing on two loaded cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// `ProcessPrng` as Windows 10 documents it, filled by `RtlGenRandom` in pieces that fit
/// its `ULONG` length.
const SHIM_C: &str = r#"#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE out, SIZE_T len)
{
    while (len > 0) {
        ULONG piece = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(out, piece))
            return FALSE;
        out += piece;
        len -= piece;
    }
    return TRUE;
}
"#;

/// Exports the function under its own name, undecorated.
const SHIM_DEF: &str = "LIBRARY bcryptprimitives\nEXPORTS\n    ProcessPrng\n";

/// The programs a Wine test runs, found on this machine.
pub struct Tools {
    wine: PathBuf,
    wineserver: PathBuf,
    gcc: PathBuf,
    exes: PathBuf,
}

impl Tools {
    /// The Wine tools, the mingw compiler and the Windows binaries; `None` (the test
    /// says it skipped) when one is missing, except when `FILESYNC_REQUIRE_TOOLS` is set:
    /// then the test fails, since a skip under `.ci/run` would hide a missing install.
    pub fn find_or_skip() -> Option<Tools> {
        match Tools::find() {
            Ok(tools) => Some(tools),
            Err(missing) => {
                assert!(
                    std::env::var_os(REQUIRE_TOOLS_ENV).is_none(),
                    "{missing}, and {REQUIRE_TOOLS_ENV} says the Wine tests must run: \
                     scripts/test-deps.sh installs Wine and mingw, and .ci/run builds \
                     the Windows binaries"
                );
                eprintln!("skipped: {missing}");
                None
            }
        }
    }

    fn find() -> Result<Tools, String> {
        let wine = on_path(&["wine", "wine64"])
            .ok_or("Wine is not installed (apt-get install wine wine64)")?;
        let wineserver = on_path(&["wineserver", "wineserver64"])
            .or_else(|| Some(PathBuf::from("/usr/lib/wine/wineserver64")).filter(|p| p.is_file()))
            .ok_or("wineserver is not installed (apt-get install wine64)")?;
        let gcc = on_path(&[MINGW_GCC])
            .ok_or("mingw is not installed (apt-get install gcc-mingw-w64-x86-64)")?;
        let exes = win_bin_dir();
        if std::env::var_os(WIN_BIN_DIR_ENV).is_none()
            && std::env::var_os(crate::exec::BIN_DIR_ENV).is_none()
        {
            build_windows_binaries()?;
        }
        for exe in ["filesyncd.exe", "filesyncctl.exe"] {
            if !exes.join(exe).is_file() {
                return Err(format!(
                    "{exe} is not in {} (cargo build --target {WINDOWS_TARGET} \
                     -p filesyncd -p filesyncctl, or set {WIN_BIN_DIR_ENV})",
                    exes.display()
                ));
            }
        }
        Ok(Tools {
            wine,
            wineserver,
            gcc,
            exes,
        })
    }

    /// The path of `NAME.exe` among the Windows binaries.
    pub fn exe(&self, name: &str) -> PathBuf {
        self.exes.join(format!("{name}.exe"))
    }
}

/// `FILESYNC_WIN_BIN_DIR`, else the Windows target's directory of the same profile as
/// the Linux binaries: `target/x86_64-pc-windows-gnu/<profile>/` beside
/// `target/<profile>/`.
fn win_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(WIN_BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let linux = bin_dir();
    let profile = linux.file_name().unwrap_or(OsStr::new("debug"));
    linux
        .parent()
        .unwrap_or(linux)
        .join(WINDOWS_TARGET)
        .join(profile)
}

/// Builds this workspace's Windows binaries with the cargo that runs the tests, once
/// per test process, so that the Wine tests never run stale ones and `cargo test`
/// alone runs them on a machine with the target (a no-op of seconds when they are up
/// to date, as under `.ci/run`, which builds them first).
fn build_windows_binaries() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--target",
                WINDOWS_TARGET,
                "-p",
                "filesyncd",
                "-p",
                "filesyncctl",
            ]);
            if bin_dir().file_name() == Some(OsStr::new("release")) {
                cmd.arg("--release");
            }
            let out = run_with_timeout(&mut cmd, BUILD_TIMEOUT);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "the Windows binaries do not build (rustup target add {WINDOWS_TARGET}, \
                     apt-get install gcc-mingw-w64-x86-64): {}",
                    describe(&out)
                ))
            }
        })
        .clone()
}

/// The first of `names` found in a directory of `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A `WINEPREFIX` of one test, made fresh with the shim in its `system32`. Dropping it
/// stops every Windows process of the prefix (`wineserver -k`), also when the test
/// panicked: drop it before the directory it lives in is removed.
pub struct Wine {
    tools: Tools,
    prefix: PathBuf,
}

impl Wine {
    /// Makes the prefix `dir/wine` (`wineboot -i`) and installs the shim into it.
    pub fn boot(tools: Tools, dir: &Path) -> Wine {
        let wine = Wine {
            tools,
            prefix: dir.join("wine"),
        };
        let out = run_to_end(wine.command("wineboot").arg("-i"), BOOT_TIMEOUT);
        let system32 = wine.prefix.join("drive_c/windows/system32");
        assert!(
            out.status.success() && system32.is_dir(),
            "wineboot -i did not make the prefix {}: {}",
            wine.prefix.display(),
            describe(&out)
        );
        wine.install_shim(dir, &system32);
        wine
    }

    /// Builds `bcryptprimitives.dll` in `dir/shim` and copies it into `system32`.
    fn install_shim(&self, dir: &Path, system32: &Path) {
        let src = dir.join("shim");
        fs::create_dir_all(&src).expect("cannot create the shim's dir");
        fs::write(src.join("prng.c"), SHIM_C).expect("cannot write prng.c");
        fs::write(src.join("prng.def"), SHIM_DEF).expect("cannot write prng.def");
        let dll = src.join("bcryptprimitives.dll");
        let out = run_to_end(
            Command::new(&self.tools.gcc)
                .current_dir(&src)
                .args(["-shared", "-O2", "-o"])
                .arg(&dll)
                .args(["prng.c", "prng.def", "-ladvapi32"]),
            TOOL_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{MINGW_GCC} could not build the ProcessPrng shim: {}",
            describe(&out)
        );
        fs::copy(&dll, system32.join("bcryptprimitives.dll"))
            .expect("cannot copy the shim into the prefix's system32");
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// `wine PROGRAM` in this prefix, quiet, with the shim preferred over Wine's own
    /// `bcryptprimitives`; not started.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.tools.wine);
        cmd.arg(program);
        self.environment(&mut cmd);
        cmd
    }

    /// What a Wine program of this prefix runs with.
    fn environment(&self, cmd: &mut Command) {
        cmd.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "bcryptprimitives=n,b;mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("FILESYNC_SOCKET")
            .env_remove("FILESYNC_TOKEN");
    }

    /// Builds the daemon's unit tests for Windows and runs those whose names contain one
    /// of `filters` in this prefix (Wine as cargo's runner for the target), to the end.
    pub fn daemon_unit_tests(&self, filters: &[&str]) -> Output {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "test",
                "--target",
                WINDOWS_TARGET,
                "-p",
                "filesyncd",
                "--lib",
                "--",
            ])
            .args(filters)
            .env(
                "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER",
                &self.tools.wine,
            );
        self.environment(&mut cmd);
        run_to_end(&mut cmd, BUILD_TIMEOUT)
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let stopped = Command::new(&self.tools.wineserver)
            .arg("-k")
            .env("WINEPREFIX", &self.prefix)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(|child| wait_or_kill(child, TOOL_TIMEOUT));
        if let Err(e) = stopped {
            eprintln!(
                "cannot stop the wineserver of {}: {e}",
                self.prefix.display()
            );
        }
    }
}

/// Runs `cmd` until it exits, its output captured, killing it and failing the test if
/// it takes longer than `timeout`.
///
/// The output goes to files, not pipes, and the wait is for the process, not for the
/// end of its output: the first Wine program of a prefix starts its wineserver and
/// service processes, which inherit the program's standard output and outlive it, so a
/// pipe would stay open as long as the prefix runs.
pub fn run_to_end(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let file = || tempfile::tempfile().expect("cannot make a file for a command's output");
    let (stdout, stderr) = (file(), file());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("cannot clone a file handle"))
        .stderr(stderr.try_clone().expect("cannot clone a file handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let status = poll_until(timeout, || {
        child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    })
    .unwrap_or_else(|why| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {timeout:?} and was killed: {why}")
    });
    Output {
        status,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
    }
}

/// Everything written to `file`, from its start.
fn read_all(mut file: File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .expect("cannot read a command's output back");
    bytes
}

/// Waits for `child` at most `timeout`, then kills it; never panics (it runs in Drop).
fn wait_or_kill(mut child: std::process::Child, timeout: Duration) {
    let ended = poll_until(timeout, || match child.try_wait() {
        Ok(Some(_)) | Err(_) => Ok(()),
        Ok(None) => Err("still running".to_owned()),
    });
    if ended.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How a Windows program under Wine names the Linux path `path`: drive `Z:` is `/`.
pub fn windows_path(path: &Path) -> String {
    let text = path.to_str().expect("test paths are UTF-8");
    format!("Z:{}", text.replace('/', "\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_paths_are_seen_on_drive_z() {
        assert_eq!(
            windows_path(Path::new("/tmp/fse2e-x/w-docs")),
            r"Z:\tmp\fse2e-x\w-docs"
        );
    }
}
