#!/usr/bin/env python3
"""The cluster backend's benchmark (issue 19): two `filesyncd` nodes sharing a throwaway
PostgreSQL 15 and a one-node Garage, next to the embedded server, in the same run.

Started by `bench/run.sh --cluster` (see `bench/run.sh --help`). Python 3.9+ standard
library only; the process helpers are bench.py's.

    embedded:  client A ──► server ◄── client B
    cluster:   client A ──► node 1 ─┐            ┌─ node 2 ◄── client B
                                    └─ PostgreSQL, Garage ─┘

For each side, with fresh clients:
  * initial sync: N files of 1-16 KiB (default 10,000 in 500 directories) in A's folder,
    from A's `add` until B holds every file (B added first, empty); through the cluster
    A pushes to node 1 and B is fed by node 2;
  * fan-out latency: W writes of 4 KiB on A (default 50), each timed until B holds it
    (polled every millisecond, content checked); p50, p95, max. Across nodes the goal
    is p95 < 200 ms (issue 19).
"""

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

from bench import (
    KiB,
    BenchError,
    Node,
    cpu_seconds,
    descendants,
    entry,
    fmt_ms,
    fmt_secs,
    free_port,
    log,
    percentile,
    poll_until,
    port_open,
    publish,
    random_bytes,
    run,
    spawn,
    standard_args,
    stop_all,
    verify_tree,
    wait_content,
    wait_tree,
    write_file,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BUCKET, REGION = "filesync", "garage"
KEY_ID = "GK0123456789abcdef01234567"
SECRET = "ab" * 32


class Postgres:
    """A throwaway PostgreSQL 15 on a loopback port, with database `filesync`, in
    WORK/pg. As root the server runs as the `postgres` user (initdb refuses root), which
    may then pass through the work directory."""

    def __init__(self, work, timeout):
        if not (PG_BIN / "initdb").is_file():
            raise BenchError("PostgreSQL 15 is not installed (apt-get install postgresql)")
        self.dir = work / "pg"
        self.dir.mkdir()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            os.chmod(work, 0o711)
            os.chmod(self.dir, 0o777)
        self.data, self.port, self.timeout = self.dir / "data", free_port(), timeout
        self.pg("initdb", "-D", self.data, "-A", "trust", "-U", "filesync", "-E", "UTF8",
                "--no-locale", "--no-sync")
        self.ctl("start")
        run(["psql", "-X", "-q", "-d", self.url("postgres"), "-c", "CREATE DATABASE filesync"],
            60)

    def url(self, db="filesync"):
        return f"postgresql://filesync@127.0.0.1:{self.port}/{db}"

    def pg(self, program, *args):
        cmd = [PG_BIN / program, *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return run(cmd, self.timeout)

    def ctl(self, *action):
        # Durable as a real deployment: fsync stays on (unlike the tests' PostgreSQL).
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                   "-c max_connections=200")
        self.pg("pg_ctl", "-D", self.data, "-l", self.dir / "log", "-w", "-t", "60",
                "-o", options, *action)

    def postmaster(self):
        """The server's pid (the first line of its pid file)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def close(self):
        try:
            self.ctl("-m", "fast", "stop")
        except BenchError as e:
            log(f"PostgreSQL did not stop: {e}")


class Garage:
    """One Garage node with the bucket and key the nodes use."""

    def __init__(self, work, timeout):
        found = shutil.which("garage") or str(Path.home() / ".cargo/bin/garage")
        if not Path(found).is_file():
            raise BenchError("garage is not installed (cargo install --locked garage@2.5.0)")
        self.bin, home = found, work / "garage"
        home.mkdir()
        self.s3_port, rpc, admin = free_port(), free_port(), free_port()
        self.config = home / "garage.toml"
        self.config.write_text(
            f'metadata_dir = "{home}/meta"\ndata_dir = "{home}/data"\ndb_engine = "sqlite"\n'
            f'replication_factor = 1\nrpc_bind_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_public_addr = "127.0.0.1:{rpc}"\nrpc_secret = "{"0f" * 32}"\n'
            f'[s3_api]\ns3_region = "{REGION}"\napi_bind_addr = "127.0.0.1:{self.s3_port}"\n'
            f'[admin]\napi_bind_addr = "127.0.0.1:{admin}"\n')
        self.log = open(home / "garage.log", "w")
        self.p = spawn([self.bin, "-c", self.config, "server"], stdout=self.log,
                       stderr=subprocess.STDOUT)
        poll_until(lambda: self.cli("status", check=False).returncode == 0, timeout, 0.1,
                   "Garage to answer")
        node = self.cli("node", "id", "-q").stdout.split("@")[0].strip()
        self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
        self.cli("layout", "apply", "--version", "1")
        poll_until(lambda: self.cli("bucket", "create", BUCKET, check=False).returncode == 0,
                   timeout, 0.2, "Garage to make the bucket")
        self.cli("key", "import", "--yes", KEY_ID, SECRET, "-n", "filesync")
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID)

    def cli(self, *args, check=True):
        return run([self.bin, "-c", self.config, *args], 60, check)

    def endpoint(self):
        return f"http://127.0.0.1:{self.s3_port}"


def cpu_of(procs):
    """{name: CPU seconds of the process and its live descendants} for {name: pid}."""
    return {name: sum(cpu_seconds(p) for p in [pid, *descendants(pid)])
            for name, pid in procs.items()}


class ClusterBench:
    def __init__(self, args):
        # bench.Node reads these attributes of its "bench".
        self.args = args
        self.bin = Path(args.bin)
        self.work = Path(args.work)
        self.rng = random.Random(args.seed)
        self.load_start = os.getloadavg()[0]
        self.results = {}

    def server(self, name, table=""):
        """A server node (open registration) with `table` after its `[server]` table;
        returns (node, address)."""
        port = free_port()
        node = Node(self, name,
                    f'[server]\nlisten = "127.0.0.1:{port}"\n'
                    f'data_dir = "{self.work / name / "data"}"\nregistration = "open"\n'
                    'min_free_space = "0"\n' + table)
        poll_until(lambda: port_open(port), 30, 0.05, f"{name} to listen")
        return node, f"127.0.0.1:{port}"

    def cluster_table(self, pg, garage, n):
        return (f'backend = "cluster"\n[server.cluster]\nnode_name = "node-{n}"\n'
                f'postgres = "{pg.url()}"\ns3_endpoint = "{garage.endpoint()}"\n'
                f's3_region = "{REGION}"\ns3_bucket = "{BUCKET}"\n'
                f's3_access_key_id = "{KEY_ID}"\ns3_secret_access_key = "{SECRET}"\n')

    def side(self, label, addr_a, addr_b, servers):
        """Both measures through servers `addr_a` (client A's) and `addr_b` (B's).
        `servers` ({name: pid}) are the server side's processes whose CPU seconds (with
        their descendants') are counted over the initial sync."""
        a, b = Node(self, f"{label}-a"), Node(self, f"{label}-b")
        procs = {"A": a.p.pid, **servers, "B": b.p.pid}
        adir, bdir = self.work / f"{label}-a-docs", self.work / f"{label}-b-docs"
        expected = {}
        for i in range(self.args.files):
            data = random_bytes(self.rng, self.rng.randint(KiB, 16 * KiB))
            rel = f"d{i % self.args.dirs:04d}/f{i:06d}.dat"
            write_file(adir / rel, data)
            expected[rel] = (len(data), hashlib.sha256(data).hexdigest())
        bdir.mkdir()
        b.ctl("add", bdir, "--server", addr_b, "--name", "docs", timeout=120)
        b.wait("docs", self.args.timeout)
        os.sync()
        log(f"{label}: adding {self.args.files} files on A; timing until B has them all")
        cpu0, t0 = cpu_of(procs), time.monotonic()
        a.ctl("add", adir, "--server", addr_a, "--name", "docs", timeout=120)
        secs = wait_tree(bdir, expected, self.args.timeout, 0.005) - t0
        a.wait("docs", self.args.timeout)
        b.wait("docs", self.args.timeout)
        cpu = {k: v - cpu0[k] for k, v in cpu_of(procs).items()}
        verify_tree(bdir, expected)
        log(f"{label}: initial sync {secs:.2f} s")
        lat = []
        for i in range(self.args.writes):
            data = random_bytes(self.rng, 4 * KiB)
            rel = f"lat-{i:03d}.dat"
            t = time.monotonic()
            write_file(adir / rel, data)
            got = wait_content(bdir / rel, len(data), hashlib.sha256(data).hexdigest(), None,
                               30, 0.001)
            lat.append(got - t)
        log(f"{label}: fan-out p50 {percentile(lat, 50) * 1000:.1f} ms, "
            f"p95 {percentile(lat, 95) * 1000:.1f} ms")
        self.results[label] = (secs, lat, cpu)

    def run(self):
        server, addr = self.server("embedded")
        self.side("embedded", addr, addr, {"server": server.p.pid})
        stop_all()  # idle daemons of one side must not take CPU from the other's
        pg = Postgres(self.work, self.args.timeout)
        try:
            garage = Garage(self.work, self.args.timeout)
            n1, node1 = self.server("node1", self.cluster_table(pg, garage, 1))
            n2, node2 = self.server("node2", self.cluster_table(pg, garage, 2))
            engines = {"PostgreSQL": pg.postmaster(), "Garage": garage.p.pid}
            self.side("cluster", node1, node2,
                      {"node 1": n1.p.pid, "node 2": n2.p.pid, **engines})
        finally:
            stop_all()
            pg.close()
        self.report()

    def report(self):
        a = self.args
        (e_secs, e_lat, e_cpu), (c_secs, c_lat, c_cpu) = (self.results["embedded"],
                                                          self.results["cluster"])
        cpu_text = lambda cpu: ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        p95 = percentile(c_lat, 95)
        rows = [
            (f"initial sync of {a.files:,} files of 1-16 KiB (A's add until B has all)",
             fmt_secs(e_secs), fmt_secs(c_secs), "–", ""),
            (f"fan-out latency p50 ({a.writes} writes of 4 KiB, A → B)",
             fmt_ms(percentile(e_lat, 50)), fmt_ms(percentile(c_lat, 50)), "–", ""),
            ("fan-out latency p95", fmt_ms(percentile(e_lat, 95)), fmt_ms(p95),
             "< 200 ms across nodes", "met" if p95 < 0.2 else "missed"),
            ("fan-out latency max", fmt_ms(max(e_lat)), fmt_ms(max(c_lat)), "–", ""),
        ]
        lines = [
            "| measure | embedded server | cluster, A on node 1, B on node 2 | goal | verdict |",
            "|---|---|---|---|---|",
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
            f"CPU seconds during the initial sync: embedded: {cpu_text(e_cpu)}; cluster: "
            f"{cpu_text(c_cpu)}.",
            "",
            f"1-minute load average {self.load_start:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end (nproc {os.cpu_count()}); "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Command: `{a.command}`",
        ]
        publish("\n".join(lines) + "\n", a.markdown)


def main():
    ap = argparse.ArgumentParser(description="filesync: the cluster backend next to the "
                                             "embedded server (issue 19)")
    standard_args(ap, 1200, "bench/run.sh --cluster")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=500)
    ap.add_argument("--writes", type=int, default=50)
    args = ap.parse_args()
    if args.files < 1 or args.dirs < 1 or args.writes < 1:
        ap.error("--files, --dirs and --writes must be at least 1")
    ClusterBench(args).run()


if __name__ == "__main__":
    entry(main)
