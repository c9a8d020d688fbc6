#!/usr/bin/env python3
"""The benchmarks' shared parts: child processes that die with the benchmark, bounded
waits, test data, the counting relay (bench/relay.py), filesync daemons driven through
filesyncctl, a one-shot rsync daemon, and the `Bench` base class that pairs a folder
between clients A and B of one server and prints the results.

Used by bench/goals.py (issue 17: filesync next to rsync), bench/stbench.py (issue 7:
next to Syncthing), bench/many.py and bench/scale.py. Python 3.9+ standard library only.

    client A ──────────────► server ◄── relay ── client B        (filesync)
    rsync client ── relay ──► rsync --daemon                      (rsync)

The relay counts every byte each way. Client A reaches the server directly; its bytes
come from its own counters (`filesyncctl status --json`), which the benchmark checks
against the relay on client B's link.
"""

import ctypes
import hashlib
import json
import os
import platform
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1 << 20
KiB = 1 << 10
HERE = Path(__file__).resolve().parent
T0 = time.monotonic()


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- child processes

_children = []
_parent_pid = os.getpid()


def _die_with_parent():
    # PR_SET_PDEATHSIG: a child gets SIGTERM if this process dies, even by SIGKILL.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != _parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def spawn(args, **kw):
    p = subprocess.Popen([str(a) for a in args], preexec_fn=_die_with_parent, **kw)
    _children.append(p)
    return p


def stop(p, grace=15.0):
    """TERM, wait up to `grace` seconds, then KILL."""
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if p in _children:
        _children.remove(p)


def stop_all():
    for p in reversed(list(_children)):
        try:
            stop(p)
        except Exception as e:  # keep stopping the others
            print(f"bench: cannot stop pid {p.pid}: {e}", file=sys.stderr)


def run(args, timeout, check=True, **kw):
    """Runs a command to its end, bounded by `timeout` (killed after it)."""
    try:
        r = subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_die_with_parent,
            **kw,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{args[0]} did not finish within {timeout}s: {' '.join(map(str, args))}")
    if check and r.returncode != 0:
        raise BenchError(
            f"command failed ({r.returncode}): {' '.join(map(str, args))}\n{r.stderr.strip()}"
        )
    return r


def memory(pid):
    """(VmRSS, VmHWM) of a process in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * KiB
    return out["VmRSS"], out["VmHWM"]


def cpu_seconds(pid, children=False):
    """User + system CPU time of a process (and of its reaped children) from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def poll_until(cond, timeout, interval, what):
    """Calls `cond` every `interval` seconds until it returns something true; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- files and data


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def write_file(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def signature(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def wait_content(path, size, digest, old_sig, timeout, interval):
    """Polls `path` until it holds `size` bytes hashing to `digest`; returns the monotonic
    time the new content was first seen. A file is only hashed when its (inode, mtime,
    size) differs from the last one looked at and its size is right."""
    deadline = time.monotonic() + timeout
    seen = old_sig
    while True:
        sig = signature(path)
        if sig is not None and sig != seen and sig[2] == size:
            at = time.monotonic()
            if sha256_file(path) == digest:
                return at
            seen = sig
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {path} to get its new content")
        time.sleep(interval)


def wait_tree(root, expected, timeout, interval):
    """Polls until every file of `expected` ({relpath: (size, digest)}) is at `root` with
    its size (files arrive by an atomic rename, after the daemon verified them); returns
    that monotonic time. Each round stops at the first file still missing, so a round is
    cheap; the contents are verified afterwards, outside the timing."""
    order = sorted(expected)
    i = 0
    deadline = time.monotonic() + timeout
    while True:
        while i < len(order):
            sig = signature(root / order[i])
            if sig is None or sig[2] != expected[order[i]][0]:
                break
            i += 1
        if i == len(order):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(
                f"timed out after {timeout:.0f}s: {len(order) - i} of {len(order)} files "
                f"not yet complete in {root} (first: {order[i]})"
            )
        time.sleep(interval)


def verify_tree(root, expected):
    bad = [p for p, (size, digest) in expected.items() if sha256_file(root / p) != digest]
    if bad:
        raise BenchError(f"{len(bad)} files in {root} have the wrong content, e.g. {bad[0]}")


def random_bytes(rng, n):
    """`n` pseudo-random bytes (reproducible from the seed); randbytes takes < 256 MiB."""
    step = 16 * MiB
    return b"".join(rng.randbytes(min(step, n - at)) for at in range(0, n, step))


# ---------------------------------------------------------------- the relay


class Relay:
    def __init__(self, work, name, target_port):
        self.name = name
        self.log = open(work / f"relay-{name}.log", "w")
        self.p = spawn(
            [sys.executable, HERE / "relay.py", "--target", f"127.0.0.1:{target_port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self._line(10)
        if not line.startswith("PORT "):
            raise BenchError(f"relay {name} did not start: {line!r}")
        self.port = int(line.split()[1])

    def _line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            raise BenchError(f"relay {self.name} did not answer within {timeout}s")
        line = self.p.stdout.readline()
        if not line:
            raise BenchError(f"relay {self.name} exited (see its log)")
        return line.strip()

    def stats(self):
        self.p.stdin.write("stats\n")
        self.p.stdin.flush()
        return json.loads(self._line(10))

    def total(self):
        s = self.stats()
        return s["c2s"] + s["s2c"]

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop(self.p)
        self.log.close()


# ---------------------------------------------------------------- filesync daemons


class Node:
    def __init__(self, bench, name, extra_toml=""):
        self.bench = bench
        self.name = name
        self.dir = bench.work / name
        self.dir.mkdir(parents=True)
        self.sock = self.dir / "ctl.sock"
        self.config = self.dir / "filesyncd.toml"
        self.config.write_text(
            f'[daemon]\nstate_dir = "{self.dir / "state"}"\ncontrol_socket = "{self.sock}"\n'
            + extra_toml
        )
        env = dict(os.environ)
        if bench.args.log:
            env["FILESYNC_LOG"] = bench.args.log
        self.logfile = open(self.dir / "daemon.log", "w")
        self.p = spawn(
            [bench.bin / "filesyncd", "--config", self.config],
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            env=env,
        )

        def up():
            if self.p.poll() is not None:
                raise BenchError(
                    f"filesyncd {name} exited with {self.p.returncode}; see {self.dir / 'daemon.log'}"
                )
            return self.ctl("status", check=False, timeout=10).returncode == 0

        poll_until(up, 30, 0.05, f"filesyncd {name} to answer on its control socket")

    def ctl(self, *args, check=True, timeout=60):
        return run([self.bench.bin / "filesyncctl", "--socket", self.sock, *args], timeout, check)

    def folder(self, name):
        status = json.loads(self.ctl("status", "--json").stdout)
        for f in status["folders"]:
            if f["name"] == name:
                return f
        raise BenchError(f"{self.name} has no folder {name}")

    def wire(self, folder):
        c = self.folder(folder)["counters"]
        return c["wire_bytes_sent"], c["wire_bytes_received"]

    def wait(self, folder, timeout):
        self.ctl("wait", "--timeout", f"{int(timeout)}s", folder, timeout=timeout + 30)


# ---------------------------------------------------------------- rsync side


class RsyncDaemon:
    def __init__(self, work):
        self.dir = work / "rsyncd"
        self.dst = self.dir / "dst"
        self.dst.mkdir(parents=True)
        self.port = free_port()
        conf = self.dir / "rsyncd.conf"
        conf.write_text(
            "use chroot = false\n"
            f"pid file = {self.dir / 'rsyncd.pid'}\n"
            f"log file = {self.dir / 'rsyncd.log'}\n"
            "[bench]\n"
            f"    path = {self.dst}\n"
            "    read only = false\n"
            f"    uid = {os.getuid()}\n"
            f"    gid = {os.getgid()}\n"
        )
        self.out = open(self.dir / "stderr.log", "w")
        self.p = spawn(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
             f"--port={self.port}"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

        def up():
            if self.p.poll() is not None:
                raise BenchError(f"the rsync daemon exited; see {self.dir}/*.log")
            return port_open(self.port)

        poll_until(up, 20, 0.05, "the rsync daemon to listen")


def descendants(pid):
    """The PIDs of every live descendant of `pid`."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


class PeakSampler:
    """Samples the peak RSS (VmHWM) of the processes `pids()` names every 20 ms on a
    thread, from start to close; `close()` returns the sum of each process's last-seen
    peak. The last one, not the largest: a forked child's first samples may be those of
    its parent's copy, before its exec starts a fresh count."""

    def __init__(self, pids):
        self.pids = pids
        self.peaks = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            for pid in self.pids():
                try:
                    self.peaks[pid] = memory(pid)[1]
                except (OSError, KeyError):
                    pass  # gone, or a zombie without memory lines
            if self.done.wait(0.02):
                return

    def close(self):
        self.done.set()
        self.thread.join(5)
        return sum(self.peaks.values())


def rsync_copy(src, relay_port, sub, timeout, daemon_pid, changed=False):
    """rsync -a src/ to the daemon's module through the relay. Returns (seconds, stats,
    client peak RSS, daemon side peak RSS), both sampled, the daemon's the sum of the
    processes it forked for the copy. `changed`: the files were changed since the last
    copy, maybe within the same second and keeping their size, which rsync's quick check
    (size and whole-second mtime) would take for unchanged; --ignore-times makes it
    compare them as it does a changed file."""
    args = ["rsync", "-a", "--stats", *(["--ignore-times"] if changed else []),
            f"{src}/", f"rsync://127.0.0.1:{relay_port}/bench/{sub}/"]
    with tempfile.TemporaryFile("w+") as out:
        daemon = PeakSampler(lambda: descendants(daemon_pid))
        t = time.monotonic()
        p = spawn(args, stdout=out, stderr=subprocess.STDOUT)
        client = PeakSampler(lambda: [p.pid])
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"rsync did not finish within {timeout:.0f}s: {' '.join(args)}")
        finally:
            secs = time.monotonic() - t
            client_peak, daemon_peak = client.close(), daemon.close()
            stop(p)
        out.seek(0)
        text = out.read()
    if p.returncode != 0:
        raise BenchError(f"command failed ({p.returncode}): {' '.join(args)}\n{text.strip()}")
    stats = {}
    for key in ("Total bytes sent", "Total bytes received"):
        m = re.search(key + r":\s*([\d,.]+)", text)
        if m:
            stats[key] = int(re.sub(r"[,.]", "", m.group(1)))
    return secs, stats, client_peak, daemon_peak


def wait_quiet(pid, quiet=1.0, timeout=600, allowance=0.02):
    """Waits until process `pid` has used at most `allowance` CPU seconds (the clock
    ticks in 1/100 s) over the last `quiet` seconds; returns the monotonic time its CPU
    time last moved by more than that."""
    samples = [(time.monotonic(), cpu_seconds(pid))]
    moved = samples[0][0]
    deadline = moved + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = (time.monotonic(), cpu_seconds(pid))
        samples.append(now)
        while len(samples) > 2 and now[0] - samples[1][0] >= quiet:
            samples.pop(0)
        if now[1] - samples[-2][1] > 0:
            moved = now[0]
        if now[0] - samples[0][0] >= quiet and now[1] - samples[0][1] <= allowance:
            return moved
    raise BenchError(f"process {pid} kept using CPU for {timeout:.0f}s")


# ---------------------------------------------------------------- formatting


def fmt_bytes(n):
    if n is None:
        return "–"
    if n >= MiB:
        return f"{n / MiB:.2f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{n} B"


def fmt_mib(n):
    return "–" if n is None else f"{n / MiB:.1f} MiB"


def fmt_secs(s):
    return "–" if s is None else f"{s:.2f} s"


def fmt_ms(s):
    return "–" if s is None else f"{s * 1000:.1f} ms"


def percentile(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


class Row:
    """One line of a results table: one cell per column of the benchmark's `head()`."""

    def __init__(self, *cells):
        self.cells = list(cells)


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args, work=None):
        self.args = args
        self.bin = Path(args.bin)
        self.work = Path(work or args.work)
        self.rows = []
        self.notes = []
        self.cross_checks = []
        self.cpu_rows = []
        self.rng = random.Random(args.seed)
        self.size = args.size_mb * MiB
        self.timeout = args.timeout
        self.load_start = f"{os.getloadavg()[0]:.2f}"

    # -- set-up

    # What the other column holds, in the tables.
    THEIRS = "rsync / lsyncd"

    def head(self):
        """The columns of the results table."""
        return ["scenario", "measure", "filesync", self.THEIRS, "ratio", "goal", "verdict"]

    def start(self):
        self.start_filesync()
        self.rsyncd = RsyncDaemon(self.work)
        self.src = self.work / "rsync-src"
        log(f"server on 127.0.0.1:{self.server_port}, rsync daemon on 127.0.0.1:{self.rsyncd.port}")

    def start_filesync(self):
        """The filesync server (open registration) and clients A and B."""
        self.server_port = None
        for attempt in range(3):
            port = free_port()
            try:
                self.server = Node(
                    self,
                    "server" if attempt == 0 else f"server{attempt}",
                    f'[server]\nlisten = "127.0.0.1:{port}"\n'
                    f'data_dir = "{self.work / "server-data"}"\nregistration = "open"\n',
                )
            except BenchError as e:
                log(f"server did not start on port {port} ({e}); trying another port")
                continue
            self.server_port = port
            break
        if self.server_port is None:
            raise BenchError("the filesync server did not start (see the server*/daemon.log)")
        poll_until(lambda: port_open(self.server_port), 20, 0.05, "the filesync server to listen")
        self.a = Node(self, "a")
        self.b = Node(self, "b")

    def pair(self, name, prefill_a=False):
        """Adds folder `name` on B (through a fresh relay) and, unless `prefill_a`, on A.
        Returns the relay."""
        relay = Relay(self.work, f"b-{name}", self.server_port)
        bdir = self.work / "b-folders" / name
        bdir.mkdir(parents=True)
        self.b.ctl("add", bdir, "--server", f"127.0.0.1:{relay.port}", "--name", name)
        self.b.wait(name, 60)
        if not prefill_a:
            self.add_a(name)
        return relay

    def add_a(self, name):
        adir = self.adir(name)
        adir.mkdir(parents=True, exist_ok=True)
        self.a.ctl("add", adir, "--server", f"127.0.0.1:{self.server_port}", "--name", name)

    def adir(self, name):
        return self.work / "a-folders" / name

    def bdir(self, name):
        return self.work / "b-folders" / name

    def unpair(self, name, relay):
        for node in (self.a, self.b):
            node.ctl("remove", name, check=False)
        relay.close()
        for d in (self.adir(name), self.bdir(name), self.src / name, self.rsyncd.dst / name):
            shutil.rmtree(d, ignore_errors=True)

    def cpu_fs(self, relay):
        return {
            "A": cpu_seconds(self.a.p.pid),
            "server": cpu_seconds(self.server.p.pid),
            "B": cpu_seconds(self.b.p.pid),
            "relay": cpu_seconds(relay.p.pid),
        }

    def cpu_rsync(self, relay):
        # The daemon forks a process per connection; its CPU time is counted in the
        # daemon's once it has been reaped.
        kids = Path(f"/proc/{self.rsyncd.p.pid}/task/{self.rsyncd.p.pid}/children")
        poll_until(lambda: not kids.exists() or not kids.read_text().strip(), 30, 0.01,
                   "the rsync daemon's connection process to end")
        return {
            "client": own_children_cpu(),
            "daemon": cpu_seconds(self.rsyncd.p.pid, children=True),
            "relay": cpu_seconds(relay.p.pid),
        }

    def record_cpu(self, label, secs, fs0, fs1, rs_secs=None, rs0=None, rs1=None):
        """CPU seconds each process used during the timed parts, next to the wall time."""
        fs = {k: fs1[k] - fs0[k] for k in fs0}
        rs = {k: rs1[k] - rs0[k] for k in rs0} if rs0 else None
        self.cpu_rows.append((label, secs, fs, rs_secs, rs))
        text = ", ".join(f"{k} {v:.2f}" for k, v in fs.items())
        if rs:
            text += "; rsync " + ", ".join(f"{k} {v:.2f}" for k, v in rs.items())
        log(f"  CPU seconds: filesync {text}")

    def link_bytes(self, name, relay, b0, a0):
        """Bytes on B's link (relay) and on A's (A's counters) since the snapshots b0, a0;
        logs each direction."""
        b1, a1 = relay.stats(), self.a.wire(name)
        up, down = b1["c2s"] - b0["c2s"], b1["s2c"] - b0["s2c"]
        a_sent, a_received = a1[0] - a0[0], a1[1] - a0[1]
        log(f"  B's link: {up} bytes B→server, {down} server→B; "
            f"A's link: {a_sent} bytes A→server, {a_received} server→A")
        return up + down, a_sent + a_received

    def label(self, name):
        """How folder `name`'s figures are labelled in the notes and the CPU table."""
        return name

    def cross_check(self, name, relay):
        """B's own counters of the folder against the relay on its link, at a quiet moment."""
        for _ in range(5):
            before = relay.stats()
            sent, received = self.b.wire(name)
            after = relay.stats()
            if (before["c2s"], before["s2c"]) == (after["c2s"], after["s2c"]):
                # The first connection is the one `filesyncctl add` makes to log in (TLS
                # and credentials) before the folder exists; the folder's counters count
                # its sessions only.
                conns = after["conns"]
                login = conns[0] if len(conns) > 1 and not conns[0]["open"] else None
                c2s = after["c2s"] - (login["c2s"] if login else 0)
                s2c = after["s2c"] - (login["s2c"] if login else 0)
                ok = (sent, received) == (c2s, s2c)
                self.cross_checks.append((self.label(name), c2s, s2c, sent, received, ok))
                word = "equal" if ok else "DIFFERENT; connections: " + ", ".join(
                    f"#{c['n']} {c['c2s']}/{c['s2c']}{' open' if c['open'] else ''}"
                    for c in conns
                )
                less = (f" (less add's login connection, {login['c2s']} / {login['s2c']})"
                        if login else "")
                log(
                    f"cross-check {name}: relay B→server {c2s} / server→B {s2c} bytes{less}; "
                    f"B's counters {sent} / {received}: {word}"
                )
                return
        log(f"cross-check {name}: the link never went quiet; skipped")

    def latencies(self, src_dir, dst_dir, writes, who):
        """Writes `writes` files of 4 KiB one after the other, each once the previous one
        arrived; returns the seconds each took. The samples, with the wall-clock time of
        each write (to line up with daemon logs), go to latency-WHO.tsv in the work dir."""
        out = []
        with open(self.work / f"latency-{who}.tsv", "w") as tsv:
            tsv.write("file\twritten_at_utc\tseconds\n")
            for i in range(writes):
                data = random_bytes(self.rng, 4 * KiB)
                digest = hashlib.sha256(data).hexdigest()
                rel = f"lat-{i:03d}.dat"
                wall, t0 = time.time(), time.monotonic()
                with open(src_dir / rel, "wb") as f:
                    f.write(data)
                t1 = wait_content(dst_dir / rel, len(data), digest, None, 30, 0.001)
                out.append(t1 - t0)
                stamp = time.strftime("%H:%M:%S", time.gmtime(wall)) + f"{wall % 1:.6f}"[1:]
                tsv.write(f"{rel}\t{stamp}\t{t1 - t0:.6f}\n")
        return out

    def stop(self):
        stop_all()

    # -- output

    def tool_versions(self):
        """The versions of the tools compared, for the record."""
        first = run(["rsync", "--version"], 10).stdout.splitlines()[0]
        tools = " ".join(first.split()[:3])  # "rsync version 3.x.y"
        if shutil.which("lsyncd"):
            r = run(["lsyncd", "--version"], 10, check=False)
            m = re.search(r"(\d+\.\d+\.\d+)", r.stdout + r.stderr)
            tools += f", lsyncd {m.group(1) if m else '?'}"
        return tools

    def machine(self):
        info = {}
        info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        info["nproc"] = str(os.cpu_count())
        try:
            mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal"))
            info["memory"] = f"{int(mem.split()[1]) / (1 << 20):.1f} GiB"
        except (OSError, StopIteration):
            info["memory"] = "?"
        info["kernel"] = platform.release()
        try:
            cpu = next(l for l in open("/proc/cpuinfo") if l.startswith("model name"))
            info["cpu"] = cpu.split(":", 1)[1].strip()
        except (OSError, StopIteration):
            info["cpu"] = "?"
        info["tools"] = self.tool_versions()
        info["load"] = f"{self.load_start} at the start, {os.getloadavg()[0]:.2f} at the end"
        r = run(["git", "-C", HERE.parent, "rev-parse", "--short", "HEAD"], 10, check=False)
        info["filesync"] = r.stdout.strip() or "?"
        info["filesystem"] = self.filesystems()
        return info

    def filesystems(self):
        """Where the work directory is, for the record: "temp dir on DEVICE FSTYPE"."""
        return f"temp dir on {filesystem(self.work)}"

    def table(self):
        head = self.head()
        rows = [r.cells for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
        text = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
        return "\n".join(text)

    def markdown(self, info):
        md = []
        md.append(f"Measured {info['date']} on: {info['nproc']} CPUs ({info['cpu']}), "
                  f"{info['memory']} memory, Linux {info['kernel']}, {info['filesystem']}; "
                  f"filesync {info['filesync']}, {info['tools']}"
                  + f"; 1-minute load average {info['load']}.")
        md.append("")
        md.append(f"Command: `{self.args.command}`")
        md.append("")
        head = self.head()
        md.append("| " + " | ".join(head) + " |")
        md.append("|" + "---|" * len(head))
        for r in self.rows:
            md.append("| " + " | ".join(str(c) for c in r.cells) + " |")
        md.append("")
        if self.cross_checks:
            ok = all(c[5] for c in self.cross_checks)
            md.append(
                "Bytes on B's link are counted by a TCP relay; client B's own counters "
                "(`status --json`, `counters.wire_bytes_*`) "
                + ("agreed with the relay to the byte every time: "
                   if ok else "did NOT always agree with the relay: ")
                + "; ".join(f"{c[0]}: relay {c[1]}/{c[2]}, daemon {c[3]}/{c[4]}"
                            for c in self.cross_checks)
                + " (B→server/server→B)."
            )
            md.append("")
        if self.cpu_rows:
            md.append("CPU seconds (user + system) each process used during the timed part, "
                      "next to its wall time:")
            md.append("")
            md.append("| scenario | filesync wall | client A | server | client B | B's relay "
                      "| rsync wall | rsync client | rsync daemon | rsync's relay |")
            md.append("|---|---|---|---|---|---|---|---|---|---|")
            for label, secs, fs, rs_secs, rs in self.cpu_rows:
                cells = [label, f"{secs:.2f}"] + [f"{fs[k]:.2f}" for k in ("A", "server", "B", "relay")]
                if rs:
                    cells += [f"{rs_secs:.2f}"] + [f"{rs[k]:.2f}" for k in ("client", "daemon", "relay")]
                else:
                    cells += ["–"] * 4
                md.append("| " + " | ".join(cells) + " |")
            md.append("")
        for n in self.notes:
            md.append(f"- {n}")
        return "\n".join(md) + "\n"


def filesystem(path):
    """The device and type of the filesystem holding `path`, e.g. "/dev/vda ext4"."""
    r = run(["df", "-h", "--output=source,fstype", path], 10, check=False)
    return " ".join(r.stdout.split()[2:]) if r.returncode == 0 else "?"


def stop_on_signals():
    """TERM and HUP end the benchmark through SystemExit, so that `finally` blocks stop
    every process it started."""

    def on_term(signum, frame):
        print(f"bench: stopping on signal {signum}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def report(bench):
    """Prints the table and the Markdown of `bench`, which also goes to --markdown."""
    info = bench.machine()
    print()
    print(bench.table())
    md = bench.markdown(info)
    print()
    print("Markdown (for docs/benchmarks.md):")
    print()
    print(md)
    if bench.args.markdown:
        Path(bench.args.markdown).write_text(md)
        log(f"results written to {bench.args.markdown}")


def standard_args(ap, timeout, command):
    """The arguments every benchmark script takes from bench/run.sh: where the binaries
    are, where to work, the bound on any wait, the seed, the daemons' log level, where
    the Markdown goes and the command line to record."""
    ap.add_argument("--bin", required=True, help="directory holding filesyncd and filesyncctl")
    ap.add_argument("--work", required=True, help="an empty directory to work in")
    ap.add_argument("--timeout", type=float, default=timeout)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--log", default="", help="FILESYNC_LOG for the daemons")
    ap.add_argument("--markdown")
    ap.add_argument("--command", default=command)


def publish(text, markdown):
    """Prints the Markdown results `text` and writes them to `markdown` if given."""
    print()
    print(text)
    if markdown:
        Path(markdown).write_text(text)
        log(f"results written to {markdown}")


def run_bench(bench, chosen):
    """Runs the `chosen` scenarios of `bench` (stopping every process it started however
    it ends), then reports."""
    stop_on_signals()
    try:
        bench.start()
        for s in chosen:
            getattr(bench, f"scenario_{s}")()
    finally:
        bench.stop()
    report(bench)


def entry(main):
    """Runs `main`, turning a BenchError or ^C into a message and an exit code, and
    stops every process it started however it ends."""
    try:
        main()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_all()
