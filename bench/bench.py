#!/usr/bin/env python3
"""The benchmarks of issue 4 ("3/7 Chunked transfer"): filesync next to rsync.

Started by bench/run.sh, which builds the binaries and installs rsync first; see
`bench/run.sh --help` for the knobs. Python 3.11 standard library only.

Topology, all on loopback in a fresh temporary directory:

    client A ──────────────► server ◄── relay ── client B        (filesync)
    rsync client ── relay ──► rsync --daemon                      (rsync)
    lsyncd ─────────────────► rsync --daemon                      (scenario 5, optional)

The relay (bench/relay.py) counts every byte each way. Client A reaches the server
directly; its bytes come from its own counters (`filesyncctl status --json`), which the
benchmark checks against the relay on client B's link.
"""

import argparse
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


def rsync_copy(src, relay_port, sub, timeout, changed=False):
    """rsync -a src/ to the daemon's module through the relay; returns (seconds, stats).
    `changed`: the files were changed since the last copy, maybe within the same second
    and keeping their size, which rsync's quick check (size and whole-second mtime) would
    take for unchanged; --ignore-times makes it compare them as it does a changed file."""
    t = time.monotonic()
    r = run(
        ["rsync", "-a", "--stats", *(["--ignore-times"] if changed else []),
         f"{src}/", f"rsync://127.0.0.1:{relay_port}/bench/{sub}/"],
        timeout,
    )
    secs = time.monotonic() - t
    stats = {}
    for key in ("Total bytes sent", "Total bytes received"):
        m = re.search(key + r":\s*([\d,.]+)", r.stdout)
        if m:
            stats[key] = int(re.sub(r"[,.]", "", m.group(1)))
    return secs, stats


# ---------------------------------------------------------------- formatting


def fmt_bytes(n):
    if n is None:
        return "–"
    if n >= MiB:
        return f"{n / MiB:.2f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{n} B"


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
    def __init__(self, scenario, metric, ours, theirs, ratio, goal, verdict):
        self.cells = [scenario, metric, ours, theirs, ratio, goal, verdict]


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin)
        self.work = Path(args.work)
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
                self.cross_checks.append((name, c2s, s2c, sent, received, ok))
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

    def base_file(self, name, data):
        """Puts `data` as big.bin in A's folder and in rsync's source, and waits until
        B and the rsync daemon have it (untimed)."""
        digest = hashlib.sha256(data).hexdigest()
        stage = self.work / "stage"
        stage.mkdir(exist_ok=True)
        tmp = stage / f"{name}.bin"
        write_file(tmp, data)
        write_file(self.src / name / "big.bin", data)
        os.replace(tmp, self.adir(name) / "big.bin")
        wait_content(self.bdir(name) / "big.bin", len(data), digest, None, self.timeout, 0.01)
        self.a.wait(name, self.timeout)
        self.b.wait(name, self.timeout)
        return digest

    def time_change(self, name, relay, rsync_relay, size, digest, change_a, change_src):
        """Times `change_a()` on A's big.bin until B holds the new content (`size` bytes
        hashing to `digest`), then `change_src()` on rsync's source and an rsync copy of it.
        Logs both; returns (ours, theirs) in seconds and the bytes on B's link, on A's and
        on rsync's."""
        target = self.bdir(name) / "big.bin"
        old = signature(target)
        b0, a0 = relay.stats(), self.a.wire(name)
        c0 = self.cpu_fs(relay)
        t0 = time.monotonic()
        change_a()
        t1 = wait_content(target, size, digest, old, self.timeout, 0.002)
        ours = t1 - t0
        c1 = self.cpu_fs(relay)
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        b_bytes, a_bytes = self.link_bytes(name, relay, b0, a0)
        self.cross_check(name, relay)

        change_src()
        os.sync()
        r0 = rsync_relay.total()
        rc0 = self.cpu_rsync(rsync_relay)
        theirs, stats = rsync_copy(self.src / name, rsync_relay.port, name, self.timeout,
                                   changed=True)
        self.record_cpu(name, ours, c0, c1, theirs, rc0, self.cpu_rsync(rsync_relay))
        r_bytes = rsync_relay.total() - r0
        if sha256_file(self.rsyncd.dst / name / "big.bin") != digest:
            raise BenchError("rsync's copy of the changed file has the wrong content")
        log(
            f"  filesync: {ours:.2f} s, {b_bytes} bytes on B's link ({a_bytes} on A's hop); "
            f"rsync: {theirs:.2f} s, {r_bytes} bytes (rsync --stats: {stats})"
        )
        return ours, theirs, b_bytes, a_bytes, r_bytes

    # -- scenarios

    def scenario_1(self):
        name, size = "s1", self.size
        log(f"scenario 1: 1 MiB changed in the middle of a {fmt_bytes(size)} file")
        change = min(MiB, size // 4)
        relay = self.pair(name)
        rsync_relay = Relay(self.work, f"rsync-{name}", self.rsyncd.port)
        base = random_bytes(self.rng, size)
        self.base_file(name, base)
        rsync_copy(self.src / name, rsync_relay.port, name, self.timeout)
        patch = random_bytes(self.rng, change)
        at = size // 2 - change // 2
        new = bytearray(base)
        new[at : at + change] = patch
        digest = hashlib.sha256(new).hexdigest()
        del new
        os.sync()

        def patch_file(path):
            with open(path, "r+b") as f:
                f.seek(at)
                f.write(patch)

        ours, theirs, b_bytes, a_bytes, r_bytes = self.time_change(
            name, relay, rsync_relay, size, digest,
            lambda: patch_file(self.adir(name) / "big.bin"),
            lambda: patch_file(self.src / name / "big.bin"),
        )
        ratio = b_bytes / r_bytes
        label = f"1. {fmt_bytes(change)} changed mid-file ({fmt_bytes(size)})"
        self.rows.append(Row(label, "bytes on the wire, B's link (relay)",
                             fmt_bytes(b_bytes), fmt_bytes(r_bytes), f"{ratio:.2f}×",
                             "≤ 1.3× rsync", "met" if ratio <= 1.3 else "missed"))
        self.rows.append(Row(label, "bytes on the wire, A's link (A's counters)", fmt_bytes(a_bytes),
                             fmt_bytes(r_bytes), f"{a_bytes / r_bytes:.2f}×", "(same goal)",
                             "met" if a_bytes / r_bytes <= 1.3 else "missed"))
        self.rows.append(Row(label, "seconds (A's write until B has it)", fmt_secs(ours),
                             fmt_secs(theirs), f"{ours / theirs:.2f}×", "–", ""))
        rsync_relay.close()
        self.unpair(name, relay)

    def scenario_2(self):
        name, size = "s2", self.size
        log(f"scenario 2: 1 byte inserted at the start of a {fmt_bytes(size)} file")
        relay = self.pair(name)
        rsync_relay = Relay(self.work, f"rsync-{name}", self.rsyncd.port)
        base = random_bytes(self.rng, size)
        self.base_file(name, base)
        rsync_copy(self.src / name, rsync_relay.port, name, self.timeout)
        new = b"\x42" + base
        del base
        digest = hashlib.sha256(new).hexdigest()
        staged = self.work / "stage" / f"{name}.new"
        write_file(staged, new)
        write_file(self.src / name / "big.bin.new", new)
        del new
        os.sync()

        ours, theirs, b_bytes, a_bytes, r_bytes = self.time_change(
            name, relay, rsync_relay, size + 1, digest,
            lambda: os.replace(staged, self.adir(name) / "big.bin"),
            lambda: os.replace(self.src / name / "big.bin.new", self.src / name / "big.bin"),
        )
        label = f"2. 1 byte inserted at the start ({fmt_bytes(size)})"
        goal = 0.5 * MiB
        self.rows.append(Row(label, "bytes on the wire, B's link (relay)", fmt_bytes(b_bytes),
                             fmt_bytes(r_bytes), f"{b_bytes / r_bytes:.2f}×", "< 0.5 MiB",
                             "met" if b_bytes < goal else "missed"))
        self.rows.append(Row(label, "bytes on the wire, A's link (A's counters)", fmt_bytes(a_bytes),
                             fmt_bytes(r_bytes), f"{a_bytes / r_bytes:.2f}×", "< 0.5 MiB",
                             "met" if a_bytes < goal else "missed"))
        self.rows.append(Row(label, "seconds (A's rename until B has it)", fmt_secs(ours),
                             fmt_secs(theirs), f"{ours / theirs:.2f}×", "–", ""))
        rsync_relay.close()
        self.unpair(name, relay)

    def initial_sync(self, name, files):
        """Writes `files` ({relpath: bytes}) into A's folder and rsync's source, then
        times filesync (A's `add` until B has every file) and rsync (a copy into an
        empty module directory)."""
        expected = {}
        total = 0
        for rel, data in files.items():
            write_file(self.adir(name) / rel, data)
            write_file(self.src / name / rel, data)
            expected[rel] = (len(data), hashlib.sha256(data).hexdigest())
            total += len(data)
        files.clear()
        relay = self.pair(name, prefill_a=True)
        rsync_relay = Relay(self.work, f"rsync-{name}", self.rsyncd.port)
        os.sync()

        log(f"  filesync: adding the folder on A; timing until B has all {len(expected)} files")
        c0 = self.cpu_fs(relay)
        t0 = time.monotonic()
        self.add_a(name)
        t1 = wait_tree(self.bdir(name), expected, self.timeout, 0.005)
        ours = t1 - t0
        c1 = self.cpu_fs(relay)
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        b_bytes, a_bytes = relay.total(), sum(self.a.wire(name))
        verify_tree(self.bdir(name), expected)
        self.cross_check(name, relay)

        os.sync()
        rc0 = self.cpu_rsync(rsync_relay)
        theirs, stats = rsync_copy(self.src / name, rsync_relay.port, name, self.timeout)
        self.record_cpu(name, ours, c0, c1, theirs, rc0, self.cpu_rsync(rsync_relay))
        r_bytes = rsync_relay.total()
        verify_tree(self.rsyncd.dst / name, expected)
        log(
            f"  filesync: {ours:.2f} s ({total / ours / 1e6:.1f} MB/s), {b_bytes} bytes to B, "
            f"{a_bytes} on A's hop; rsync: {theirs:.2f} s ({total / theirs / 1e6:.1f} MB/s), "
            f"{r_bytes} bytes"
        )
        rsync_relay.close()
        self.unpair(name, relay)
        return ours, theirs, total, b_bytes, r_bytes

    def scenario_3(self):
        n, size = 4, self.size
        label = f"3. initial sync, {n} × {fmt_bytes(size)} random"
        log(f"scenario 3: initial sync of {n} files of {fmt_bytes(size)}")
        files = {f"random-{i}.bin": random_bytes(self.rng, size) for i in range(n)}
        ours, theirs, total, b_bytes, r_bytes = self.initial_sync("s3", files)
        ours_rate, their_rate = total / ours / 1e6, total / theirs / 1e6
        self.rows.append(Row(label, "seconds", fmt_secs(ours), fmt_secs(theirs),
                             f"{ours / theirs:.2f}×", "–", ""))
        self.rows.append(Row(label, "throughput (MB/s, 10⁶ B)", f"{ours_rate:.1f}",
                             f"{their_rate:.1f}", f"{ours_rate / their_rate:.2f}×",
                             "≥ rsync's", "met" if ours_rate >= their_rate else "missed"))
        self.rows.append(Row(label, "bytes on the wire (B's link / rsync's)", fmt_bytes(b_bytes),
                             fmt_bytes(r_bytes), f"{b_bytes / r_bytes:.2f}×", "–", ""))

    def scenario_4(self):
        nfiles, ndirs = self.args.files, self.args.dirs
        label = f"4. initial sync, {nfiles:,} files of 1–16 KiB in {ndirs} dirs"
        log(f"scenario 4: initial sync of {nfiles} files of 1-16 KiB in {ndirs} directories")
        files = {}
        for i in range(nfiles):
            rel = f"d{i % ndirs:03d}/f{i:05d}.dat"
            files[rel] = random_bytes(self.rng, self.rng.randint(KiB, 16 * KiB))
        ours, theirs, total, b_bytes, r_bytes = self.initial_sync("s4", files)
        ratio = ours / theirs
        self.rows.append(Row(label, "seconds", fmt_secs(ours), fmt_secs(theirs), f"{ratio:.2f}×",
                             "≤ 1.2× rsync", "met" if ratio <= 1.2 else "missed"))
        self.rows.append(Row(label, "bytes on the wire (B's link / rsync's)", fmt_bytes(b_bytes),
                             fmt_bytes(r_bytes), f"{b_bytes / r_bytes:.2f}×", "–", ""))

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

    def scenario_5(self):
        name, writes = "s5", self.args.writes
        label = f"5. latency of a 4 KiB file, {writes} writes"
        log(f"scenario 5: propagation latency of a 4 KiB file, {writes} writes")
        relay = self.pair(name)
        self.a.wait(name, 60)
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        ours = self.latencies(self.adir(name), self.bdir(name), writes, "filesync")
        self.record_cpu(name, time.monotonic() - t0, c0, self.cpu_fs(relay))
        self.b.wait(name, 60)
        self.cross_check(name, relay)
        theirs = self.lsyncd_latencies(writes)
        p50, p95 = percentile(ours, 50), percentile(ours, 95)
        t50 = t95 = None
        if theirs:
            t50, t95 = percentile(theirs, 50), percentile(theirs, 95)
        log(
            f"  filesync: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {max(ours) * 1000:.1f} ms"
            + (f"; lsyncd: p50 {t50 * 1000:.1f} ms, p95 {t95 * 1000:.1f} ms" if theirs else "")
        )

        def ratio(a, b):
            return "–" if b is None else f"{a / b:.2f}×"

        self.rows.append(Row(label, "p50", fmt_ms(p50), fmt_ms(t50), ratio(p50, t50), "< 50 ms",
                             "met" if p50 < 0.050 else "missed"))
        self.rows.append(Row(label, "p95", fmt_ms(p95), fmt_ms(t95), ratio(p95, t95), "< 150 ms",
                             "met" if p95 < 0.150 else "missed"))
        self.unpair(name, relay)

    def lsyncd_latencies(self, writes):
        if self.args.lsyncd == "no":
            self.notes.append("lsyncd was not run (BENCH_LSYNCD=0).")
            return None
        exe = shutil.which("lsyncd")
        if not exe:
            self.notes.append("lsyncd is not installed, so scenario 5 has no comparison.")
            log("  lsyncd not found; skipping its side of scenario 5")
            return None
        ldir = self.work / "lsyncd"
        src = ldir / "src"
        src.mkdir(parents=True)
        (src / "marker").write_bytes(b"ready")
        conf = ldir / "lsyncd.conf.lua"
        conf.write_text(
            "settings {\n"
            f'    logfile = "{ldir / "lsyncd.log"}",\n'
            f'    statusFile = "{ldir / "lsyncd.status"}",\n'
            "    nodaemon = true,\n"
            "}\n"
            "sync {\n"
            "    default.rsync,\n"
            f'    source = "{src}",\n'
            f'    target = "rsync://127.0.0.1:{self.rsyncd.port}/bench/lsyncd",\n'
            "    delay = 0,\n"
            "}\n"
        )
        out = open(ldir / "stderr.log", "w")
        p = spawn([exe, "-nodaemon", conf], stdout=out, stderr=subprocess.STDOUT)
        dst = self.rsyncd.dst / "lsyncd"
        try:
            def started():
                if p.poll() is not None:
                    raise BenchError(f"lsyncd exited with {p.returncode}")
                return (dst / "marker").exists()

            poll_until(started, 60, 0.01, "lsyncd's start-up copy")
            samples = self.latencies(src, dst, writes, "lsyncd")
        except BenchError as e:
            self.notes.append(f"lsyncd could not be run ({e}); see {ldir}.")
            log(f"  lsyncd failed: {e}; no comparison for scenario 5")
            return None
        finally:
            stop(p)
            out.close()
        self.notes.append(
            "lsyncd (delay = 0, default.rsync) pushed to the same rsync daemon directly, "
            "without a relay."
        )
        return samples

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
        r = run(["df", "-h", "--output=source,fstype", self.work], 10, check=False)
        info["filesystem"] = " ".join(r.stdout.split()[2:]) if r.returncode == 0 else "?"
        return info

    def table(self):
        head = ["scenario", "measure", "filesync", self.THEIRS, "ratio", "goal", "verdict"]
        rows = [r.cells for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
        text = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
        return "\n".join(text)

    def markdown(self, info):
        md = []
        md.append(f"Measured {info['date']} on: {info['nproc']} CPUs ({info['cpu']}), "
                  f"{info['memory']} memory, Linux {info['kernel']}, temp dir on {info['filesystem']}; "
                  f"filesync {info['filesync']}, {info['tools']}"
                  + f"; 1-minute load average {info['load']}.")
        md.append("")
        md.append(f"Command: `{self.args.command}`")
        md.append("")
        md.append(f"| scenario | measure | filesync | {self.THEIRS} | ratio | goal | verdict |")
        md.append("|---|---|---|---|---|---|---|")
        for r in self.rows:
            md.append("| " + " | ".join(str(c) for c in r.cells) + " |")
        md.append("")
        if self.cross_checks:
            ok = all(c[5] for c in self.cross_checks)
            md.append(
                "Bytes on B's link are counted by a TCP relay; client B's own counters "
                "(`status --json`, `counters.wire_bytes_*`) "
                + ("agreed with the relay to the byte in every scenario: "
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


def main():
    ap = argparse.ArgumentParser(description="filesync vs rsync benchmarks (issue 4)")
    ap.add_argument("--bin", required=True, help="directory with filesyncd and filesyncctl")
    ap.add_argument("--work", required=True, help="an empty temporary directory to work in")
    ap.add_argument("--scenarios", default="1,2,3,4,5")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=500)
    ap.add_argument("--writes", type=int, default=50)
    ap.add_argument("--lsyncd", choices=["auto", "no"], default="auto")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds any one wait may take")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--log", default="", help="FILESYNC_LOG for the daemons")
    ap.add_argument("--markdown", help="write the results in Markdown here too")
    ap.add_argument("--command", default="bench/run.sh", help="the command to record")
    args = ap.parse_args()
    try:
        chosen = sorted({int(s) for s in re.split(r"[,\s]+", args.scenarios.strip()) if s})
    except ValueError:
        ap.error(f"--scenarios takes numbers 1-5 separated by commas, not {args.scenarios!r}")
    if not chosen or any(s not in range(1, 6) for s in chosen):
        ap.error(f"--scenarios takes numbers 1-5, not {args.scenarios!r}")
    if args.size_mb < 4 or args.files < 1 or args.dirs < 1 or args.writes < 1:
        ap.error("sizes and counts must be positive (BENCH_SIZE_MB at least 4)")
    for tool in ("rsync",):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed (bench/run.sh installs it)")

    run_bench(Bench(args), chosen)


def run_bench(bench, chosen):
    """Runs the `chosen` scenarios of `bench` (stopping every process it started however
    it ends), then prints the table and the Markdown, which also goes to --markdown."""

    def on_term(signum, frame):
        print(f"bench: stopping on signal {signum}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        bench.start()
        for s in chosen:
            getattr(bench, f"scenario_{s}")()
    finally:
        bench.stop()
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


def entry(main):
    """Runs `main`, turning a BenchError or ^C into a message and an exit code."""
    try:
        main()
    except BenchError as e:
        stop_all()
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        stop_all()
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry(main)
