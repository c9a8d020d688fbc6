#!/usr/bin/env python3
"""The benchmarks of issue 7: filesync next to Syncthing, on the same data in one run.

Started by `bench/run.sh --syncthing`, which builds the binaries and installs Syncthing
first; see `bench/run.sh --help`. Python standard library only.

    client A ──────────────► server ◄── relay ── client B        (filesync)
    syncthing A ◄── relay ── syncthing B                          (Syncthing)

Scenarios (the issue's numbering):
  1  initial sync of N small files (1-16 KiB): seconds; goal at least 5x faster
  2  latency of a 4 KiB write, p50/p95 over W writes; goal p50 at least 20x lower
  3  1 MiB changed in the middle of a big file: seconds and bytes on the wire
  4  memory (peak and steady RSS) of each side holding a folder of M files;
     goal under a fifth of Syncthing's
  5  CPU seconds of one no-change rescan of that folder; goal under Syncthing's
Scenarios 4 and 5 run first, on fresh processes, so that the peak RSS (VmHWM) is that
of holding the big folder, not of an earlier scenario.
"""

import argparse
import hashlib
import os
import re
import time
from pathlib import Path

import syncthing as st
from bench import (
    KiB,
    MiB,
    Bench,
    BenchError,
    Relay,
    Row,
    cpu_seconds,
    entry,
    fmt_bytes,
    fmt_mib,
    fmt_ms,
    fmt_secs,
    log,
    memory,
    percentile,
    random_bytes,
    run_bench,
    stop_all,
    verify_tree,
    wait_quiet,
    wait_content,
    wait_tree,
    write_file,
)


class StBench(Bench):
    THEIRS = "Syncthing"

    def __init__(self, args):
        super().__init__(args)
        self.st_cpu = []
        self.memory_rows = []
        self.big = None  # (folder name, file count) once scenario 4's folder is synced

    def start(self):
        self.start_filesync()
        self.st = st.Pair(self.work, lambda port: Relay(self.work, "syncthing", port),
                          self.args.log)
        log(f"filesync server on 127.0.0.1:{self.server_port}; syncthing A listens on "
            f"127.0.0.1:{self.st.a.listen_port}, B dials it through relay port {self.st.relay.port}")

    def stop(self):
        try:
            self.st.close()
        except AttributeError:
            pass
        stop_all()

    def tool_versions(self):
        return st.version()

    # -- helpers

    def st_dirs(self, name):
        return self.work / "st-folders" / "a" / name, self.work / "st-folders" / "b" / name

    def st_add(self, name):
        """Adds folder `name` on Syncthing B, then on A (whose folder may be full)."""
        sa, sb = self.st_dirs(name)
        self.st.b.add_folder(name, sb, self.st.a)
        self.st.a.add_folder(name, sa, self.st.b)

    def st_remove(self, name):
        for inst in (self.st.a, self.st.b):
            inst.remove_folder(name)

    def cpu_st(self):
        return {"A": cpu_seconds(self.st.a.p.pid), "B": cpu_seconds(self.st.b.p.pid),
                "relay": cpu_seconds(self.st.relay.p.pid)}

    def record_st_cpu(self, label, secs, c0, c1):
        used = {k: c1[k] - c0[k] for k in c0}
        self.st_cpu.append((label, secs, used))
        log("  CPU seconds: syncthing " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()))

    def small_files(self, n, dirs, lo, hi):
        files = {}
        for i in range(n):
            rel = f"d{i % dirs:03d}/f{i:06d}.dat"
            files[rel] = random_bytes(self.rng, self.rng.randint(lo, hi))
        return files

    def write_both(self, files, *roots):
        """Writes `files` under every root; returns {rel: (size, digest)}."""
        expected = {}
        for rel, data in files.items():
            for root in roots:
                write_file(root / rel, data)
            expected[rel] = (len(data), hashlib.sha256(data).hexdigest())
        files.clear()
        return expected

    def fs_initial(self, name, expected):
        """A's folder (already full) is added; returns seconds until B has every file."""
        relay = self.pair(name, prefill_a=True)
        os.sync()
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        self.add_a(name)
        secs = wait_tree(self.bdir(name), expected, self.timeout, 0.005) - t0
        self.record_cpu(name, secs, c0, self.cpu_fs(relay))
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        verify_tree(self.bdir(name), expected)
        return secs, relay

    def st_initial(self, name, expected):
        sa, sb = self.st_dirs(name)
        os.sync()
        r0 = self.st.relay.total()
        c0, t0 = self.cpu_st(), time.monotonic()
        self.st_add(name)
        secs = wait_tree(sb, expected, self.timeout, 0.005) - t0
        self.record_st_cpu(name, secs, c0, self.cpu_st())
        self.st.wait_idle(name, len(expected), self.timeout)
        verify_tree(sb, expected)
        return secs, self.st.relay.total() - r0

    def unpair_fs(self, name, relay):
        for node in (self.a, self.b):
            node.ctl("remove", name, check=False)
        relay.close()

    # -- scenarios

    def scenario_1(self):
        n, dirs = self.args.files, self.args.dirs
        name, label = "s1", f"1. initial sync, {n:,} files of 1–16 KiB"
        log(f"scenario 1: initial sync of {n} files of 1-16 KiB in {dirs} directories")
        files = self.small_files(n, dirs, KiB, 16 * KiB)
        sa, _ = self.st_dirs(name)
        expected = self.write_both(files, self.adir(name), sa)
        ours, relay = self.fs_initial(name, expected)
        fs_bytes = relay.total()
        self.cross_check(name, relay)
        self.unpair_fs(name, relay)
        theirs, st_bytes = self.st_initial(name, expected)
        self.st_remove(name)
        log(f"  filesync {ours:.2f} s, syncthing {theirs:.2f} s")
        self.rows.append(Row(label, "seconds (A's folder added until B has every file)",
                             fmt_secs(ours), fmt_secs(theirs), f"{ours / theirs:.2f}×",
                             "≤ 0.2× (5× faster)", "met" if theirs / ours >= 5 else "missed"))
        self.rows.append(Row(label, "bytes on the wire (B's link / A↔B)", fmt_bytes(fs_bytes),
                             fmt_bytes(st_bytes), f"{fs_bytes / st_bytes:.2f}×", "–", ""))

    def scenario_2(self):
        name, writes = "s2", self.args.writes
        label = f"2. latency of a 4 KiB write, {writes} writes"
        log(f"scenario 2: propagation latency of a 4 KiB file, {writes} writes")
        relay = self.pair(name)
        self.a.wait(name, 60)
        ours = self.latencies(self.adir(name), self.bdir(name), writes, "filesync")
        self.cross_check(name, relay)
        self.unpair_fs(name, relay)
        self.st_add(name)
        self.st.wait_idle(name, 0, 60)
        sa, sb = self.st_dirs(name)
        theirs = self.latencies(sa, sb, writes, "syncthing")
        self.st_remove(name)
        o50, o95 = percentile(ours, 50), percentile(ours, 95)
        t50, t95 = percentile(theirs, 50), percentile(theirs, 95)
        log(f"  filesync p50 {o50 * 1000:.1f} ms p95 {o95 * 1000:.1f} ms; "
            f"syncthing p50 {t50 * 1000:.1f} ms p95 {t95 * 1000:.1f} ms")
        self.rows.append(Row(label, "p50", fmt_ms(o50), fmt_ms(t50), f"{o50 / t50:.3f}×",
                             "≤ 0.05× (20× lower)", "met" if t50 / o50 >= 20 else "missed"))
        self.rows.append(Row(label, "p95", fmt_ms(o95), fmt_ms(t95), f"{o95 / t95:.3f}×", "–", ""))

    def change_middle(self, path, data):
        """Overwrites 1 MiB in the middle of `path` with `data`, in place."""
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(data)

    def scenario_3(self):
        name, size = "s3", self.size
        label = f"3. 1 MiB changed mid-file ({size // MiB} MiB)"
        log(f"scenario 3: 1 MiB changed in the middle of a {size // MiB} MiB file")
        base = random_bytes(self.rng, size)
        patch = random_bytes(self.rng, MiB)
        new = bytearray(base)
        new[size // 2:size // 2 + MiB] = patch
        base_digest, new_digest = hashlib.sha256(base).hexdigest(), hashlib.sha256(new).hexdigest()
        del new
        sa, sb = self.st_dirs(name)

        relay = self.pair(name)
        write_file(self.adir(name) / "big.bin", base)
        wait_content(self.bdir(name) / "big.bin", size, base_digest, None, self.timeout, 0.01)
        self.a.wait(name, self.timeout)
        self.b.wait(name, self.timeout)
        os.sync()
        b0, a0 = relay.stats(), self.a.wire(name)
        c0, t0 = self.cpu_fs(relay), time.monotonic()
        self.change_middle(self.adir(name) / "big.bin", patch)
        ours = wait_content(self.bdir(name) / "big.bin", size, new_digest, None, self.timeout,
                            0.002) - t0
        self.record_cpu(name, ours, c0, self.cpu_fs(relay))
        self.b.wait(name, self.timeout)
        self.a.wait(name, self.timeout)
        fs_bytes, fs_a_bytes = self.link_bytes(name, relay, b0, a0)
        self.cross_check(name, relay)
        self.unpair_fs(name, relay)

        write_file(sa / "big.bin", base)
        del base
        self.st_add(name)
        wait_content(sb / "big.bin", size, base_digest, None, self.timeout, 0.01)
        self.st.wait_idle(name, 1, self.timeout)
        os.sync()
        r0 = self.st.relay.total()
        c0, t0 = self.cpu_st(), time.monotonic()
        self.change_middle(sa / "big.bin", patch)
        theirs = wait_content(sb / "big.bin", size, new_digest, None, self.timeout, 0.002) - t0
        self.record_st_cpu(name, theirs, c0, self.cpu_st())
        self.st.wait_idle(name, 1, self.timeout)
        st_bytes = self.st.relay.total() - r0
        self.st_remove(name)
        log(f"  filesync {ours:.2f} s, {fs_bytes} B; syncthing {theirs:.2f} s, {st_bytes} B")
        self.rows.append(Row(label, "seconds (A's write until B has it)", fmt_secs(ours),
                             fmt_secs(theirs), f"{ours / theirs:.2f}×", "–", ""))
        self.rows.append(Row(label, "bytes on the wire, B's link (relay) / A↔B (relay)",
                             fmt_bytes(fs_bytes), fmt_bytes(st_bytes),
                             f"{fs_bytes / st_bytes:.2f}×", "–", ""))
        self.rows.append(Row(label, "bytes on the wire, A's link (A's counters) / A↔B",
                             fmt_bytes(fs_a_bytes), fmt_bytes(st_bytes),
                             f"{fs_a_bytes / st_bytes:.2f}×", "–", ""))

    def settled_memory(self, procs):
        """{who: (steady RSS, peak RSS)} once every process has been quiet for 2 s."""
        for pid in procs.values():
            wait_quiet(pid, quiet=2.0, timeout=self.timeout)
        return {who: memory(pid) for who, pid in procs.items()}

    def sync_big(self):
        """Scenario 4's folder of `--big-files` files of 0-1 KiB, synced on both tools;
        returns the seconds each took, the first of the measures only."""
        name, n = "s4", self.args.big_files
        log(f"  writing {n} files of 0-1 KiB for each tool")
        files = self.small_files(n, max(1, n // 200), 0, KiB)
        sa, _ = self.st_dirs(name)
        expected = self.write_both(files, self.adir(name), sa)
        ours, relay = self.fs_initial(name, expected)
        self.big_relay = relay
        theirs, _ = self.st_initial(name, expected)
        self.big = (name, n)
        return ours, theirs

    def scenario_4(self):
        n = self.args.big_files
        label = f"4. memory holding {n:,} files"
        log(f"scenario 4: memory of each side holding a folder of {n} files")
        ours, theirs = self.sync_big()
        self.rows.append(Row(label, "initial sync seconds (for the record)", fmt_secs(ours),
                             fmt_secs(theirs), f"{ours / theirs:.2f}×", "–", ""))
        fs_mem = self.settled_memory({"A": self.a.p.pid, "B": self.b.p.pid,
                                      "server": self.server.p.pid})
        st_mem = self.settled_memory({"A": self.st.a.p.pid, "B": self.st.b.p.pid})
        self.memory_rows.append((n, fs_mem, st_mem))
        for who in ("A", "B"):
            for i, what in ((1, "peak RSS (VmHWM)"), (0, "steady RSS (VmRSS, idle)")):
                ours_b, theirs_b = fs_mem[who][i], st_mem[who][i]
                ratio = ours_b / theirs_b
                self.rows.append(Row(label, f"{what}, device {who}", fmt_mib(ours_b),
                                     fmt_mib(theirs_b), f"{ratio:.2f}×", "< 0.2×",
                                     "met" if ratio < 0.2 else "missed"))
        steady, peak = fs_mem["server"]
        self.rows.append(Row(label, "filesync server: peak / steady RSS (no counterpart)",
                             f"{fmt_mib(peak)} / {fmt_mib(steady)}", "–", "–", "–", ""))
        log("  RSS (steady / peak): " + "; ".join(
            f"filesync {w} {fmt_mib(m[0])} / {fmt_mib(m[1])}" for w, m in fs_mem.items())
            + "; " + "; ".join(f"syncthing {w} {fmt_mib(m[0])} / {fmt_mib(m[1])}"
                               for w, m in st_mem.items()))

    def rescan_cpu(self, pid, trigger):
        """CPU seconds `pid` used from `trigger()` until it was quiet for 1 s again."""
        wait_quiet(pid, quiet=1.0, timeout=self.timeout)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        trigger()
        end = wait_quiet(pid, quiet=1.0, timeout=self.timeout)
        return cpu_seconds(pid) - c0, end - t0

    def scenario_5(self):
        if self.big is None:
            log("scenario 5: syncing scenario 4's folder first (not measured)")
            self.sync_big()
        name, n = self.big
        label = f"5. no-change rescan of {n:,} files"
        log(f"scenario 5: CPU seconds of one no-change rescan of {n} files on device A")
        ours, ours_wall = self.rescan_cpu(self.a.p.pid, lambda: self.a.ctl("rescan", name))
        self.a.wait(name, self.timeout)
        theirs, theirs_wall = self.rescan_cpu(self.st.a.p.pid,
                                              lambda: self.st.a.scan(name, self.timeout))
        log(f"  filesync A {ours:.2f} CPU s (about {ours_wall:.2f} s), "
            f"syncthing A {theirs:.2f} CPU s (about {theirs_wall:.2f} s)")
        ratio = ours / theirs if theirs else float("inf")
        self.rows.append(Row(label, "CPU seconds of device A (user + system)", f"{ours:.2f}",
                             f"{theirs:.2f}", f"{ratio:.2f}×", "< 1×",
                             "met" if ours < theirs else "missed"))

    # -- output

    def markdown(self, info):
        fs_cpu, self.cpu_rows = self.cpu_rows, []
        md = [super().markdown(info).rstrip("\n"), ""]
        self.cpu_rows = fs_cpu
        if fs_cpu or self.st_cpu:
            md.append("CPU seconds (user + system) during each timed part:")
            md.append("")
            md.append("| part | filesync wall | client A | server | client B | B's relay "
                      "| Syncthing wall | Syncthing A | Syncthing B | its relay |")
            md.append("|---|---|---|---|---|---|---|---|---|---|")
            theirs = {label: (secs, used) for label, secs, used in self.st_cpu}
            for label, secs, fs, _, _ in fs_cpu:
                cells = [label, f"{secs:.2f}"] + [f"{fs[k]:.2f}" for k in ("A", "server", "B", "relay")]
                if label in theirs:
                    s_secs, used = theirs[label]
                    cells += [f"{s_secs:.2f}"] + [f"{used[k]:.2f}" for k in ("A", "B", "relay")]
                else:
                    cells += ["–"] * 4
                md.append("| " + " | ".join(cells) + " |")
            md.append("")
        return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description="filesync vs Syncthing benchmarks (issue 7)")
    ap.add_argument("--bin", required=True, help="directory with filesyncd and filesyncctl")
    ap.add_argument("--work", required=True, help="an empty temporary directory to work in")
    ap.add_argument("--scenarios", default="1,2,3,4,5")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=500)
    ap.add_argument("--writes", type=int, default=50)
    ap.add_argument("--big-files", type=int, default=100_000)
    ap.add_argument("--timeout", type=float, default=1200, help="seconds any one wait may take")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--log", default="", help="FILESYNC_LOG for the daemons (and Syncthing --verbose)")
    ap.add_argument("--markdown", help="write the results in Markdown here too")
    ap.add_argument("--command", default="bench/run.sh --syncthing", help="the command to record")
    args = ap.parse_args()
    try:
        chosen = {int(s) for s in re.split(r"[,\s]+", args.scenarios.strip()) if s}
    except ValueError:
        ap.error(f"--scenarios takes numbers 1-5 separated by commas, not {args.scenarios!r}")
    if not chosen or any(s not in range(1, 6) for s in chosen):
        ap.error(f"--scenarios takes numbers 1-5, not {args.scenarios!r}")
    if min(args.size_mb, args.files, args.dirs, args.writes, args.big_files) < 1:
        ap.error("sizes and counts must be positive")
    if not Path("/proc/self/status").exists():
        raise BenchError("this benchmark reads /proc (Linux only)")
    # 4 and 5 first: fresh processes, so peak RSS is that of holding the big folder.
    order = [s for s in (4, 5, 1, 2, 3) if s in chosen]
    run_bench(StBench(args), order)


if __name__ == "__main__":
    entry(main)
