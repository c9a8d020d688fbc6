#!/usr/bin/env python3
"""The many-devices load test of issue 7: one filesync server serving 50 devices.

Started by `bench/run.sh --many`; see `bench/run.sh --help`. Every device is a real
`filesyncd` process (a device is a daemon: its identity and credential are per state
directory) with one folder, over TLS on loopback:

  * account `team`: SHARED devices (default 10) sharing the folder `team`;
  * ACCOUNTS other accounts (default 40), `acct-NN`, one device and one folder each.

All of them connect from 127.0.0.1, more than the default 32 connections per address, so
the server runs with `max_connections_per_address = 256`.

Each round, one of the shared devices (in turn) writes a 4 KiB file while 4 of the other
accounts (in turn) each write one too; the time until each of the other shared devices
holds the new file (polled every millisecond, content verified) is one fan-out sample.
Printed: fan-out p50/p95/max over all samples (goal p50 < 200 ms, p95 < 500 ms), the
server's peak and steady RSS and its CPU seconds, and the clients' RSS.
"""

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

from bench import (
    KiB,
    MiB,
    BenchError,
    Node,
    cpu_seconds,
    entry,
    fmt_ms,
    free_port,
    log,
    percentile,
    poll_until,
    port_open,
    publish,
    standard_args,
)
from stbench import memory

BACKGROUND_PER_ROUND = 4


class Many:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin)
        self.work = Path(args.work)
        self.rng = random.Random(args.seed)
        self.load_start = os.getloadavg()

    def start_server(self):
        port = free_port()
        self.server = Node(
            self, "server",
            f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{self.work / "server-data"}"\n'
            "max_connections_per_address = 256\n",
        )
        poll_until(lambda: port_open(port), 20, 0.05, "the filesync server to listen")
        self.addr = f"127.0.0.1:{port}"

    def device(self, name, account, folder):
        """A client daemon enrolled into `account` (a fresh invite) syncing `folder`."""
        node = Node(self, name)
        token = self.server.ctl("server", "invite", account).stdout.strip()
        path = self.work / "folders" / name
        path.mkdir(parents=True)
        node.ctl("add", path, "--server", self.addr, "--name", folder, "--token", token,
                 timeout=120)
        node.path = path
        node.folder = folder
        return node

    def connected(self):
        status = json.loads(self.server.ctl("status", "--json").stdout)
        return len(status["server"]["devices"])

    def run(self):
        a = self.args
        self.start_server()
        log(f"starting {a.shared} devices of account team and {a.accounts} other accounts")
        self.shared = [self.device(f"team-{i:02d}", "team", "team") for i in range(a.shared)]
        self.others = [self.device(f"acct-{k:02d}", f"acct-{k:02d}", f"own-{k:02d}")
                       for k in range(a.accounts)]
        everyone = self.shared + self.others
        for node in everyone:
            node.ctl("wait", "--timeout", f"{int(a.timeout)}s", node.folder, timeout=a.timeout + 30)
        total = len(everyone)
        poll_until(lambda: self.connected() >= total, 60, 0.2,
                   f"all {total} devices to be connected to the server")
        log(f"{total} devices connected; server RSS {memory(self.server.p.pid)[0] / MiB:.1f} MiB")

        cpu0, t0 = cpu_seconds(self.server.p.pid), time.monotonic()
        samples = self.rounds()
        wall = time.monotonic() - t0
        cpu = cpu_seconds(self.server.p.pid) - cpu0
        rss, hwm = memory(self.server.p.pid)
        clients = [memory(n.p.pid)[0] for n in everyone]
        self.report(samples, wall, cpu, rss, hwm, clients, total)

    def rounds(self):
        a = self.args
        samples = []
        for r in range(a.rounds):
            for j in range(BACKGROUND_PER_ROUND):
                other = self.others[(r * BACKGROUND_PER_ROUND + j) % len(self.others)]
                (other.path / f"bg-{r:03d}.dat").write_bytes(self.rng.randbytes(4 * KiB))
            sender = self.shared[r % len(self.shared)]
            receivers = [n for n in self.shared if n is not sender]
            data = self.rng.randbytes(4 * KiB)
            digest = hashlib.sha256(data).hexdigest()
            rel = f"fan-{r:03d}.dat"
            t0 = time.monotonic()
            (sender.path / rel).write_bytes(data)
            got = self.fan_out(receivers, rel, len(data), digest, t0)
            samples.extend(got)
            log(f"round {r + 1}/{a.rounds}: from {sender.name}, slowest of {len(got)} "
                f"receivers {max(got) * 1000:.1f} ms")
        return samples

    def fan_out(self, receivers, rel, size, digest, t0):
        """Seconds from `t0` until each receiver holds `rel` with `digest`."""
        pending = {n.name: n.path / rel for n in receivers}
        got = []
        deadline = t0 + self.args.timeout
        while pending:
            for name, path in list(pending.items()):
                try:
                    if os.stat(path).st_size != size:
                        continue
                except FileNotFoundError:
                    continue
                at = time.monotonic()
                if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                    got.append(at - t0)
                    del pending[name]
            if time.monotonic() > deadline:
                raise BenchError(f"{rel} did not reach {sorted(pending)} within {self.args.timeout}s")
            time.sleep(0.001)
        return got

    def report(self, samples, wall, cpu, rss, hwm, clients, total):
        a = self.args
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        load_end = os.getloadavg()
        lines = [
            f"{total} devices on one server ({a.shared} sharing one folder, {a.accounts} "
            f"other accounts), {a.rounds} rounds, {len(samples)} fan-out samples:",
            "",
            "| measure | value | goal | verdict |",
            "|---|---|---|---|",
            f"| fan-out latency p50 | {fmt_ms(p50)} | < 200 ms | {'met' if p50 < 0.2 else 'missed'} |",
            f"| fan-out latency p95 | {fmt_ms(p95)} | < 500 ms | {'met' if p95 < 0.5 else 'missed'} |",
            f"| fan-out latency max | {fmt_ms(max(samples))} | – | |",
            f"| server CPU seconds during the rounds | {cpu:.2f} in {wall:.1f} s of wall time | – | |",
            f"| server RSS, peak (VmHWM) / at the end | {hwm / MiB:.1f} / {rss / MiB:.1f} MiB | – | |",
            f"| client RSS, mean / max | {sum(clients) / len(clients) / MiB:.1f} / "
            f"{max(clients) / MiB:.1f} MiB | – | |",
            "",
            f"1-minute load average {self.load_start[0]:.2f} at the start, {load_end[0]:.2f} "
            f"at the end (nproc {os.cpu_count()}). Command: `{a.command}`",
        ]
        publish("\n".join(lines) + "\n", a.markdown)


def main():
    ap = argparse.ArgumentParser(description="filesync: one server, many devices (issue 7)")
    standard_args(ap, 600, "bench/run.sh --many")
    ap.add_argument("--shared", type=int, default=10, help="devices sharing one folder")
    ap.add_argument("--accounts", type=int, default=40, help="other accounts, one device each")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    if args.shared < 2 or args.accounts < 1 or args.rounds < 1:
        ap.error("--shared must be at least 2, --accounts and --rounds at least 1")
    Many(args).run()


if __name__ == "__main__":
    entry(main)
