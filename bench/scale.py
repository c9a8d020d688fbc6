#!/usr/bin/env python3
"""The big-folder benchmark of issue 7: a folder of many small files, synced from one
client to the server, then rescanned with no change.

Started by bench/scale.sh (see `bench/scale.sh --help`). Python 3.11 standard library
only; the process helpers are bench.py's.

Measures, on client A (which holds the folder first) and on the server:
  * the first scan (the daemon's own figure, `last_scan.millis`), then the first sync:
    from `filesyncctl add` until `filesyncctl wait` returns;
  * rescans with no change on disk (run while the upload goes on): the daemon's figure,
    and that they read no file (`last_scan.hashed_files` is 0);
  * resident memory (VmRSS) idle after the sync, and its peak (VmHWM);
  * the index's size on disk (`index_bytes`).
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared process helpers)
from bench import BenchError, log, poll_until  # noqa: E402


def make_tree(root, files, dirs, max_size, seed):
    """`files` files of 0..max_size pseudo-random bytes in `dirs` directories, two levels
    deep (100 directories per top-level one)."""
    rng = random.Random(seed)
    per_dir, extra = divmod(files, dirs)
    total = 0
    for d in range(dirs):
        sub = root / f"d{d // 100:03d}" / f"s{d:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(per_dir + (1 if d < extra else 0)):
            data = rng.randbytes(rng.randint(0, max_size))
            (sub / f"f{f:04d}.bin").write_bytes(data)
            total += len(data)
    return total


def memory(pid):
    """(VmRSS, VmHWM) of a process in MiB."""
    return tuple(b / bench.MiB for b in bench.memory(pid))


class Scale:
    def __init__(self, args):
        # bench.Node reads these attributes of its "bench".
        self.args = args
        self.bin = Path(args.bin)
        self.work = Path(args.work)
        self.results = []

    def record(self, what, value):
        log(f"{what}: {value}")
        self.results.append((what, value))

    def folder(self, node):
        return node.folder("scale")

    def run(self):
        folder = self.work / "a-folders" / "scale"
        folder.mkdir(parents=True)
        t = time.monotonic()
        total = make_tree(folder, self.args.files, self.args.dirs, self.args.max_size, 7)
        log(f"made {self.args.files} files ({total / 2**20:.1f} MiB) in {self.args.dirs} "
            f"directories in {time.monotonic() - t:.1f}s")
        port = bench.free_port()
        server = bench.Node(
            self, "server",
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'data_dir = "{self.work / "server-data"}"\nregistration = "open"\n',
        )
        poll_until(lambda: bench.port_open(port), 20, 0.05, "the server to listen")
        a = bench.Node(self, "a")
        os.sync()
        t = time.monotonic()
        a.ctl("add", folder, "--server", f"127.0.0.1:{port}", "--name", "scale")
        scan = poll_until(lambda: self.folder(a)["last_scan"], self.args.timeout, 0.05,
                          "the first scan")
        self.record("first scan (s, the daemon's figure)", f"{scan['millis'] / 1000:.2f}")
        self.record("first scan: files read", scan["hashed_files"])
        self.record("client A RSS peak after the first scan (MiB)",
                    f"{memory(a.p.pid)[1]:.1f}")
        # The upload goes on meanwhile: these rescans find nothing changed on disk.
        for round_ in range(self.args.rescans):
            before = scan["at_ms"]
            a.ctl("rescan", "scale")
            scan = poll_until(
                lambda: (s := self.folder(a)["last_scan"])["at_ms"] != before and s,
                self.args.timeout, 0.05, "the rescan to finish")
            self.record(f"no-change rescan {round_ + 1} (s, {scan['entries']} paths)",
                        f"{scan['millis'] / 1000:.2f}")
            if scan["hashed_files"]:
                raise BenchError(f"the no-change rescan read {scan['hashed_files']} files")
        self.record("client A RSS peak after the rescans (MiB)", f"{memory(a.p.pid)[1]:.1f}")
        a.wait("scale", self.args.timeout)
        self.record("first scan and sync, until `wait` returns (s)",
                    f"{time.monotonic() - t:.1f}")
        status = self.folder(a)
        if status["files"] != self.args.files:
            raise BenchError(f"client A indexed {status['files']} files, not {self.args.files}")
        self.record("client A pushes", status["counters"]["pushes"])
        time.sleep(self.args.idle)
        for name, node in (("client A", a), ("server", server)):
            rss, hwm = memory(node.p.pid)
            self.record(f"{name} RSS idle after the sync (MiB)", f"{rss:.1f}")
            self.record(f"{name} RSS peak (MiB)", f"{hwm:.1f}")
        self.record("client A index on disk (MiB)", f"{status['index_bytes'] / 2**20:.1f}")
        server_folder = json.loads(server.ctl("status", "--json").stdout)["server"]["folders"][0]
        self.record("server index on disk (MiB)", f"{server_folder['index_bytes'] / 2**20:.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="directory holding filesyncd and filesyncctl")
    p.add_argument("--work", required=True, help="an empty directory to work in")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--dirs", type=int, default=5_000)
    p.add_argument("--max-size", type=int, default=4096, help="largest file, bytes")
    p.add_argument("--rescans", type=int, default=3)
    p.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring RSS")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--log", default="", help="FILESYNC_LOG for the daemons")
    args = p.parse_args()
    scale = Scale(args)
    try:
        scale.run()
    except BenchError as e:
        print(f"scale: error: {e}", file=sys.stderr)
        return 1
    finally:
        bench.stop_all()
    print()
    print("| measure | value |")
    print("|---|---|")
    for what, value in scale.results:
        print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
