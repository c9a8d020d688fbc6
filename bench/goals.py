#!/usr/bin/env python3
"""The goals of issue 17 ("3/6 Bulk throughput"): filesync next to rsync on the same data
in the same run, once for each place the work directories are given (tmpfs, disk).

Started by bench/run.sh, which builds the binaries and installs rsync (and lsyncd) first;
see `bench/run.sh --help` for the knobs. Python 3.9+ standard library only.

    client A ──────────────► server ◄── relay ── client B        (filesync)
    rsync client ── relay ──► rsync --daemon                      (rsync)
    lsyncd ─────────────────► rsync --daemon                      (latency, optional)

Each place gets its own server, clients and rsync daemon. The rows, in the order they run
(`many` and `memory` first, on fresh processes, so that the peak RSS is that of holding
the big folder):
  many     M files of 1-4 KiB: A's folder added until B has every file; ≤ 2× rsync
  memory   RSS of A, B and the server holding that folder: devices ≤ 60 MiB peak and
           ≤ 30 MiB steady, server ≤ 40 MiB
  small    N files of 1-16 KiB: wall ≤ 1.5× rsync; CPU seconds of A + server + B ≤ 2×
           rsync's (client + daemon)
  big      4 files of S MiB: ≤ 1.5× rsync
  change   1 MiB overwritten in the middle of an S MiB file: ≤ 1.5× rsync's time, bytes
           on B's link ≤ 1.1× rsync's
  insert   1 byte inserted at the start of an S MiB file: ≤ 1.5× rsync's time, bytes on
           B's link < 0.5 MB
  latency  a 4 KiB write from A until B has it: p50 ≤ 15 ms, p95 ≤ 30 ms (next to lsyncd
           pushing to the rsync daemon)
  append   a file appended every 10 ms for T s: B is never more than 2.5 s behind A
"""

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from bench import (
    KiB,
    MiB,
    Bench,
    BenchError,
    Relay,
    Row,
    entry,
    filesystem,
    fmt_bytes,
    fmt_mib,
    fmt_ms,
    fmt_secs,
    log,
    memory,
    percentile,
    poll_until,
    random_bytes,
    report,
    rsync_copy,
    sha256_file,
    signature,
    spawn,
    stop,
    stop_on_signals,
    verify_tree,
    wait_content,
    wait_quiet,
    wait_tree,
    write_file,
)

ROWS = ("many", "memory", "small", "big", "change", "insert", "latency", "append")

# One append of the `append` row: a fixed size, so that a copy's length says which
# version it is.
RECORD = 64


def ratio_text(ours, theirs):
    return "–" if not theirs else f"{ours / theirs:.2f}×"


class Goals(Bench):
    """The rows on one place (`medium`: tmpfs or disk), with work directory `work`.
    `before`: the Goals of the places already run, whose results this one adds to."""

    THEIRS = "rsync"

    def __init__(self, args, medium, work, before=None):
        super().__init__(args, work)
        self.medium = medium
        self.places = [(medium, work)]
        if before is not None:
            self.rows, self.notes = before.rows, before.notes
            self.cross_checks, self.cpu_rows = before.cross_checks, before.cpu_rows
            self.load_start = before.load_start
            self.places = before.places + self.places

    def label(self, name):
        return f"{name} ({self.medium})"

    def head(self):
        return ["row", "on", "measure", "filesync", self.THEIRS, "ratio", "goal", "verdict"]

    def add(self, row, measure, ours, theirs, ratio, goal="–", ok=None):
        verdict = "" if ok is None else ("met" if ok else "missed")
        self.rows.append(Row(row, self.medium, measure, ours, theirs, ratio, goal, verdict))

    def filesystems(self):
        return "work directories on " + ", ".join(
            f"{medium}: {filesystem(work)}" for medium, work in self.places)

    def run_rows(self, chosen):
        self.start()
        try:
            if "many" in chosen or "memory" in chosen:
                with self.profiled([r for r in ("many", "memory") if r in chosen]):
                    self.rows_many(chosen)
            for row in ROWS[2:]:
                if row in chosen:
                    with self.profiled([row]):
                        getattr(self, f"row_{row}")()
        finally:
            self.stop()

    @contextlib.contextmanager
    def profiled(self, rows):
        """Runs the block under `perf record -g` of client A, the server and client B when
        one of `rows` is in --perf; the profile goes to perf-ROW.data in the work
        directory."""
        wanted = [r for r in rows if r in self.args.perf]
        if not wanted:
            yield
            return
        row = wanted[0]
        out = self.work / f"perf-{row}.data"
        pids = ",".join(str(n.p.pid) for n in (self.a, self.server, self.b))
        log(f"  perf record of A, server, B ({pids}) into {out}")
        with open(self.work / f"perf-{row}.log", "w") as perf_log:
            perf = spawn(["perf", "record", "-F", "499", "-g", "-p", pids, "-o", out],
                         stdout=perf_log, stderr=subprocess.STDOUT)
            try:
                yield
            finally:
                perf.send_signal(signal.SIGINT)  # perf writes its file and exits
                stop(perf, grace=60)
        self.note(f"Profiles (`perf report -i FILE`): {out} and the like, one per row and place.")

    # -- helpers

    def small_files(self, n, dirs, lo, hi):
        """(path, bytes) of `n` files of `lo`..`hi` pseudo-random bytes in `dirs` dirs."""
        for i in range(n):
            yield f"d{i % dirs:04d}/f{i:06d}.dat", random_bytes(self.rng, self.rng.randint(lo, hi))

    def populate(self, name, files):
        """Writes `files` ((path, bytes) pairs) into A's folder `name` and into rsync's
        source, one at a time; returns {path: (size, digest)} and the total size."""
        expected, total = {}, 0
        for rel, data in files:
            write_file(self.adir(name) / rel, data)
            write_file(self.src / name / rel, data)
            expected[rel] = (len(data), hashlib.sha256(data).hexdigest())
            total += len(data)
        return expected, total

    def rsync(self, name, relay, secs, c0, c1, changed=False):
        """Copies rsync's source `name` to its daemon through `relay`, after a sync(2) so
        that write-back of the set-up does not land in it; records both tools' CPU.
        Returns (seconds, CPU seconds of client + daemon, client peak, daemon peak)."""
        os.sync()
        r0 = self.cpu_rsync(relay)
        theirs, stats, client_peak, daemon_peak = rsync_copy(
            self.src / name, relay.port, name, self.timeout, self.rsyncd.p.pid, changed)
        r1 = self.cpu_rsync(relay)
        self.record_cpu(self.label(name), secs, c0, c1, theirs, r0, r1)
        log(f"  rsync: {theirs:.2f} s, {stats}")
        cpu = sum(r1[k] - r0[k] for k in ("client", "daemon"))
        return theirs, cpu, client_peak, daemon_peak

    def fs_cpu(self, c0, c1):
        """CPU seconds of client A, the server and client B between two cpu_fs()."""
        return sum(c1[k] - c0[k] for k in ("A", "server", "B"))

    def initial_sync(self, name, files, keep=False):
        """Writes `files` into A's folder and rsync's source, then times filesync (A's
        `add` until B has every file at its size; CPU until both clients' `wait` return)
        and rsync (a copy into an empty module directory). With `keep`, the folder stays
        paired (self.unpair it later). Returns a SimpleNamespace of the figures."""
        expected, total = self.populate(name, files)
        relay = self.pair(name, prefill_a=True)
        rsync_relay = Relay(self.work, f"rsync-{name}", self.rsyncd.port)
        os.sync()
        log(f"  filesync: adding the folder on A; timing until B has all {len(expected)} files")
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        self.add_a(name)
        ours = wait_tree(self.bdir(name), expected, self.timeout, 0.005) - t0
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        c1 = self.cpu_fs(relay)
        b_bytes = relay.total()
        log(f"  filesync: {ours:.2f} s, {b_bytes} bytes on B's link")
        verify_tree(self.bdir(name), expected)
        self.cross_check(name, relay)
        theirs, rs_cpu, client_peak, daemon_peak = self.rsync(
            name, rsync_relay, ours, c0, c1)
        r_bytes = rsync_relay.total()
        verify_tree(self.rsyncd.dst / name, expected)
        rsync_relay.close()
        if not keep:
            self.unpair(name, relay)
        return SimpleNamespace(ours=ours, theirs=theirs, total=total, fs_cpu=self.fs_cpu(c0, c1),
                               rs_cpu=rs_cpu, b_bytes=b_bytes, r_bytes=r_bytes, relay=relay,
                               rsync_peaks=(client_peak, daemon_peak))

    def add_times(self, label, s, goal):
        """The rows of an initial sync `s`: seconds (against `goal`, a factor of rsync's),
        throughput and bytes on the wire."""
        r = s.ours / s.theirs
        self.add(label, "seconds (A's add until B has every file)", fmt_secs(s.ours),
                 fmt_secs(s.theirs), f"{r:.2f}×", f"≤ {goal}× rsync", r <= goal)
        self.add(label, "throughput (MB/s, 10⁶ B)", f"{s.total / s.ours / 1e6:.1f}",
                 f"{s.total / s.theirs / 1e6:.1f}", f"{s.theirs / s.ours:.2f}×")
        self.add(label, "bytes on the wire (B's link / rsync's)", fmt_bytes(s.b_bytes),
                 fmt_bytes(s.r_bytes), ratio_text(s.b_bytes, s.r_bytes))

    # -- rows

    def rows_many(self, chosen):
        n = self.args.many
        label = f"{n:,} files of 1–4 KiB"
        log(f"row many: initial sync of {n} files of 1-4 KiB in {max(1, n // 100)} directories")
        s = self.initial_sync("many", self.small_files(n, max(1, n // 100), KiB, 4 * KiB),
                              keep=True)
        if "many" in chosen:
            self.add_times(label, s, 2)
            self.add(label, "CPU seconds (A + server + B / rsync client + daemon)",
                     f"{s.fs_cpu:.2f}", f"{s.rs_cpu:.2f}", ratio_text(s.fs_cpu, s.rs_cpu))
        if "memory" in chosen:
            self.row_memory(n, s.rsync_peaks)
        self.unpair("many", s.relay)

    def row_memory(self, n, rsync_peaks):
        label = f"memory holding {n:,} files"
        log(f"row memory: RSS of each process holding the folder of {n} files, once idle")
        procs = {"device A": self.a.p.pid, "device B": self.b.p.pid, "server": self.server.p.pid}
        for pid in procs.values():
            wait_quiet(pid, quiet=2.0, timeout=self.timeout)
        mem = {who: memory(pid) for who, pid in procs.items()}
        client_peak, daemon_peak = rsync_peaks
        theirs = {"device A": client_peak, "device B": daemon_peak, "server": None}
        for who, peak_goal, steady_goal in (("device A", 60, 30), ("device B", 60, 30),
                                            ("server", 40, 40)):
            steady, peak = mem[who]
            self.add(label, f"{who}: peak RSS (VmHWM)", fmt_mib(peak), fmt_mib(theirs[who]),
                     ratio_text(peak, theirs[who]), f"≤ {peak_goal} MiB", peak <= peak_goal * MiB)
            self.add(label, f"{who}: steady RSS (VmRSS, idle 2 s)", fmt_mib(steady), "–", "–",
                     f"≤ {steady_goal} MiB", steady <= steady_goal * MiB)
        log("  RSS (steady / peak): " + "; ".join(
            f"{w} {fmt_mib(m[0])} / {fmt_mib(m[1])}" for w, m in mem.items())
            + f"; rsync client peak {fmt_mib(client_peak)}, daemon side {fmt_mib(daemon_peak)}")
        self.note(
            "Memory: rsync's column holds the peak RSS of rsync's client next to device A's "
            "and the sum of the peaks of the rsync daemon's processes serving the copy next "
            "to device B's, for the same tree.")

    def row_small(self):
        n, dirs = self.args.files, self.args.dirs
        label = f"{n:,} files of 1–16 KiB"
        log(f"row small: initial sync of {n} files of 1-16 KiB in {dirs} directories")
        s = self.initial_sync("small", self.small_files(n, dirs, KiB, 16 * KiB))
        self.add_times(label, s, 1.5)
        r = s.fs_cpu / s.rs_cpu if s.rs_cpu else float("inf")
        self.add(label, "CPU seconds (A + server + B / rsync client + daemon)",
                 f"{s.fs_cpu:.2f}", f"{s.rs_cpu:.2f}", f"{r:.2f}×", "≤ 2× rsync", r <= 2)

    def row_big(self):
        n, size = 4, self.size
        label = f"{n} × {fmt_bytes(size)}"
        log(f"row big: initial sync of {n} files of {fmt_bytes(size)}")
        files = ((f"random-{i}.bin", random_bytes(self.rng, size)) for i in range(n))
        s = self.initial_sync("big", files)
        self.add_times(label, s, 1.5)
        self.add(label, "CPU seconds (A + server + B / rsync client + daemon)",
                 f"{s.fs_cpu:.2f}", f"{s.rs_cpu:.2f}", ratio_text(s.fs_cpu, s.rs_cpu))

    def base_file(self, name, data):
        """Puts `data` as big.bin in A's folder and in rsync's source, and waits until B
        and the rsync daemon have it (untimed)."""
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

    def time_change(self, name, relays, size, digest, change_a, change_src):
        """With big.bin on A, B, in rsync's source and at its daemon (big_file): times
        `change_a()` on A until B holds the new content (`size` bytes hashing to
        `digest`), then `change_src()` on rsync's source and an rsync copy of it through
        the `relays` (B's, rsync's). Returns the seconds of each and the bytes on B's link
        and on rsync's."""
        relay, rsync_relay = relays
        target = self.bdir(name) / "big.bin"
        old = signature(target)
        b0, a0 = relay.stats(), self.a.wire(name)
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        change_a()
        ours = wait_content(target, size, digest, old, self.timeout, 0.002) - t0
        c1 = self.cpu_fs(relay)
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        b_bytes, a_bytes = self.link_bytes(name, relay, b0, a0)
        self.cross_check(name, relay)
        change_src()
        r0 = rsync_relay.total()
        theirs, _, _, _ = self.rsync(name, rsync_relay, ours, c0, c1, changed=True)
        r_bytes = rsync_relay.total() - r0
        if sha256_file(self.rsyncd.dst / name / "big.bin") != digest:
            raise BenchError("rsync's copy of the changed file has the wrong content")
        log(f"  filesync: {ours:.2f} s, {b_bytes} bytes on B's link ({a_bytes} on A's); "
            f"rsync: {theirs:.2f} s, {r_bytes} bytes")
        rsync_relay.close()
        self.unpair(name, relay)
        return ours, theirs, b_bytes, r_bytes

    def big_file(self, name):
        """A folder `name` on A and B holding big.bin of `--size-mb` MiB, also at the rsync
        daemon; returns its content and the relays on B's link and on rsync's."""
        relay = self.pair(name)
        rsync_relay = Relay(self.work, f"rsync-{name}", self.rsyncd.port)
        base = random_bytes(self.rng, self.size)
        self.base_file(name, base)
        rsync_copy(self.src / name, rsync_relay.port, name, self.timeout, self.rsyncd.p.pid)
        return base, (relay, rsync_relay)

    def add_change(self, label, ours, theirs, b_bytes, r_bytes, bytes_goal, bytes_ok):
        r = ours / theirs
        self.add(label, "seconds (A's change until B has it)", fmt_secs(ours), fmt_secs(theirs),
                 f"{r:.2f}×", "≤ 1.5× rsync", r <= 1.5)
        self.add(label, "bytes on the wire (B's link / rsync's)", fmt_bytes(b_bytes),
                 fmt_bytes(r_bytes), ratio_text(b_bytes, r_bytes), bytes_goal, bytes_ok)

    def row_change(self):
        name, size = "change", self.size
        change = min(MiB, size // 4)
        label = f"{fmt_bytes(change)} overwritten in {fmt_bytes(size)}"
        log(f"row change: {fmt_bytes(change)} overwritten in the middle of {fmt_bytes(size)}")
        base, relays = self.big_file(name)
        new = bytearray(base)
        del base
        patch = random_bytes(self.rng, change)
        at = size // 2 - change // 2
        new[at:at + change] = patch
        digest = hashlib.sha256(new).hexdigest()
        del new

        def patch_file(path):
            with open(path, "r+b") as f:
                f.seek(at)
                f.write(patch)

        ours, theirs, b_bytes, r_bytes = self.time_change(
            name, relays, size, digest, lambda: patch_file(self.adir(name) / "big.bin"),
            lambda: patch_file(self.src / name / "big.bin"))
        self.add_change(label, ours, theirs, b_bytes, r_bytes, "≤ 1.1× rsync",
                        b_bytes <= 1.1 * r_bytes)

    def row_insert(self):
        name, size = "insert", self.size
        label = f"1 byte inserted at the start of {fmt_bytes(size)}"
        log(f"row insert: 1 byte inserted at the start of {fmt_bytes(size)}")
        base, relays = self.big_file(name)
        new = b"\x42" + base
        del base
        digest = hashlib.sha256(new).hexdigest()
        staged = self.work / "stage" / f"{name}.new"
        write_file(staged, new)
        write_file(self.src / name / "big.bin.new", new)
        del new
        os.sync()
        ours, theirs, b_bytes, r_bytes = self.time_change(
            name, relays, size + 1, digest, lambda: os.replace(staged, self.adir(name) / "big.bin"),
            lambda: os.replace(self.src / name / "big.bin.new", self.src / name / "big.bin"))
        self.add_change(label, ours, theirs, b_bytes, r_bytes, "< 0.5 MB", b_bytes < 500_000)

    def row_latency(self):
        name, writes = "latency", self.args.writes
        label = f"a 4 KiB write A → B ({writes} writes)"
        log(f"row latency: propagation latency of a 4 KiB file, {writes} writes")
        relay = self.pair_empty(name)
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        ours = self.latencies(self.adir(name), self.bdir(name), writes, f"filesync-{self.medium}")
        self.record_cpu(self.label(name), time.monotonic() - t0, c0, self.cpu_fs(relay))
        self.b.wait(name, 60)
        self.cross_check(name, relay)
        self.unpair(name, relay)
        theirs = self.lsyncd_latencies(writes)
        for p, goal in ((50, 0.015), (95, 0.030)):
            o = percentile(ours, p)
            t = percentile(theirs, p) if theirs else None
            self.add(label, f"p{p} (lsyncd + rsync next to it)", fmt_ms(o), fmt_ms(t),
                     ratio_text(o, t), f"≤ {goal * 1000:.0f} ms", o <= goal)
        log(f"  filesync: p50 {percentile(ours, 50) * 1000:.1f} ms, "
            f"p95 {percentile(ours, 95) * 1000:.1f} ms, max {max(ours) * 1000:.1f} ms")

    def lsyncd_latencies(self, writes):
        """The latencies of the same writes through lsyncd pushing to the rsync daemon,
        or None (and a note) when lsyncd is not run."""
        if self.args.lsyncd == "no":
            self.note("lsyncd was not run (BENCH_LSYNCD=0).")
            return None
        exe = shutil.which("lsyncd")
        if not exe:
            self.note("lsyncd is not installed, so the latency row has no comparison.")
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
            samples = self.latencies(src, dst, writes, f"lsyncd-{self.medium}")
        except BenchError as e:
            self.note(f"lsyncd could not be run on {self.medium} ({e}); see {ldir}.")
            return None
        finally:
            stop(p)
            out.close()
        self.note("Latency: lsyncd (delay = 0, default.rsync) pushed to the same rsync daemon "
                  "directly, without a relay.")
        return samples

    def pair_empty(self, name):
        """An empty folder `name` on A and B (B's through a fresh relay), in sync."""
        relay = self.pair(name)
        self.a.wait(name, 60)
        return relay

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)
        log(f"  note: {text}")

    def row_append(self):
        name, secs = "append", self.args.append_secs
        label = f"a file appended every 10 ms for {secs:g} s"
        log(f"row append: a file appended every 10 ms for {secs:g} s; sampling B's copy")
        relay = self.pair_empty(name)
        lags, held, written = self.append_lags(self.adir(name) / "log.txt",
                                               self.bdir(name) / "log.txt", secs)
        self.b.wait(name, self.timeout)
        self.cross_check(name, relay)
        self.unpair(name, relay)
        worst = max(lags)
        gaps = [b - a for a, b in zip(written, written[1:])]
        pauses = sum(1 for g in gaps if g >= 0.030)
        log(f"  B held {held} distinct versions; lag p50 {percentile(lags, 50):.3f} s, "
            f"max {worst:.3f} s over {len(lags)} samples; {len(written)} appends, "
            f"largest gap {max(gaps, default=0) * 1000:.0f} ms, {pauses} gaps ≥ 30 ms")
        self.add(label, "most B was behind A (s)", f"{worst:.2f}", "–", "–", "≤ 2.5 s",
                 worst <= 2.5)
        self.add(label, f"B behind A, p50 / p95 of {len(lags)} samples (s)",
                 f"{percentile(lags, 50):.2f} / {percentile(lags, 95):.2f}", "–", "–")
        self.add(label, "versions B held", str(held), "–", "–")
        self.add(label, "appends made; gaps between two ≥ 30 ms; largest gap",
                 f"{len(written)} of {round(secs * 100)}; {pauses}; "
                 f"{max(gaps, default=0) * 1000:.0f} ms", "–", "–")
        if pauses:
            self.note(f"Append on {self.medium}: the writer paused {pauses} times for 30 ms "
                      "or more (machine load), long enough for a 30 ms quiet period to pass, "
                      "so B may have got versions a writer that never pauses would not give.")

    def append_lags(self, src, dst, secs):
        """Appends a RECORD-byte line to `src` every 10 ms for `secs` seconds and, at each
        tick and afterwards until `dst` holds the last version, reads `dst`. Version k is
        the first k records; B's copy must be one of them. The lag at a sample is 0 if B
        holds A's newest version, else the time since A first held a version newer than
        B's. Returns the lags, how many distinct versions B held, and the time of each
        append."""
        content = bytearray()
        written = []  # monotonic time of each append: A holds version k + 1 from written[k]
        lags, held = [], set()
        start = time.monotonic()
        end, deadline = start + secs, start + secs + self.timeout
        next_at = start
        with open(src, "ab", buffering=0) as f:
            while True:
                now = time.monotonic()
                if now >= next_at and now < end:
                    record = f"{len(written):08d} {time.time():.6f} ".ljust(RECORD - 1, "x")
                    f.write(record.encode() + b"\n")
                    content += record.encode() + b"\n"
                    written.append(time.monotonic())
                    # A late tick is not made up for: the cadence slips instead.
                    next_at = max(next_at + 0.010, now)
                now = time.monotonic()
                try:
                    copy = dst.read_bytes()
                except FileNotFoundError:
                    copy = b""
                k = len(copy) // RECORD
                if len(copy) % RECORD or copy != content[:len(copy)]:
                    raise BenchError(f"{dst} held {len(copy)} bytes that A never had "
                                     "(a torn or foreign version)")
                held.add(k)
                if written:
                    lags.append(0.0 if k == len(written) else now - written[k])
                if now >= end and k == len(written):
                    return lags, len(held - {0}), written
                if now > deadline:
                    raise BenchError(f"timed out after {self.timeout:.0f}s waiting for {dst} "
                                     f"to get A's last version ({len(written)} records; B has {k})")
                time.sleep(max(0.0, min(next_at, now + 0.010) - time.monotonic()))


def main():
    ap = argparse.ArgumentParser(description="filesync vs rsync: the goals of issue 17")
    ap.add_argument("--bin", required=True, help="directory with filesyncd and filesyncctl")
    ap.add_argument("--work", required=True, action="append", metavar="PLACE=DIR",
                    help="an empty work directory for one place (tmpfs=DIR, disk=DIR); repeatable")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=500)
    ap.add_argument("--many", type=int, default=100_000)
    ap.add_argument("--writes", type=int, default=50)
    ap.add_argument("--append-secs", type=float, default=10.0)
    ap.add_argument("--lsyncd", choices=["auto", "no"], default="auto")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds any one wait may take")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--log", default="", help="FILESYNC_LOG for the daemons")
    ap.add_argument("--perf", default="", help="rows to run under perf record")
    ap.add_argument("--markdown", help="write the results in Markdown here too")
    ap.add_argument("--command", default="bench/run.sh", help="the command to record")
    args = ap.parse_args()
    chosen = [r for r in re.split(r"[,\s]+", args.rows.strip()) if r]
    args.perf = [r for r in re.split(r"[,\s]+", args.perf.strip()) if r]
    unknown = [r for r in chosen + args.perf if r not in ROWS]
    if not chosen or unknown:
        ap.error(f"--rows and --perf take some of {', '.join(ROWS)}, not {', '.join(unknown)}")
    if args.perf and not shutil.which("perf"):
        raise BenchError("--perf needs perf (apt-get install -y linux-perf)")
    places = []
    for w in args.work:
        medium, sep, path = w.partition("=")
        if not sep or not medium or not path:
            ap.error(f"--work takes PLACE=DIR, not {w!r}")
        places.append((medium, Path(path)))
    if min(args.size_mb - 3, args.files, args.dirs, args.many, args.writes) < 1 \
            or args.append_secs <= 0:
        ap.error("sizes and counts must be positive (--size-mb at least 4)")
    if not shutil.which("rsync"):
        raise BenchError("rsync is not installed (bench/run.sh installs it)")
    # Every row, in the run order, also when given in another.
    chosen = [r for r in ROWS if r in chosen]
    run_goals(args, places, chosen)


def run_goals(args, places, chosen):
    """Runs the `chosen` rows on each place in turn, then reports them together."""
    stop_on_signals()
    goals = None
    for medium, work in places:
        log(f"== on {medium}: {work} ({filesystem(work)}) ==")
        goals = Goals(args, medium, work, goals)
        goals.run_rows(chosen)
    report(goals)


if __name__ == "__main__":
    entry(main)
