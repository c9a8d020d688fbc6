"""Two Syncthing instances on loopback for the side-by-side benchmark (bench/stbench.py).

Each instance has its own `--home`, generated with `syncthing generate`, then edited:
listening on one 127.0.0.1 port, global and local discovery, relays, NAT traversal,
usage reporting, crash reporting, upgrades and the low-priority mode off, and the
other device known by id. Only instance B dials, to a static tcp address: A's address
behind the counting relay (bench/relay.py), so every byte between the two crosses it. A
knows B as `dynamic`, which with discovery off never resolves, so A never dials.

Folders are added through the REST API (`POST /rest/config/folders`) with the watcher
on at its minimum delay (`fsWatcherDelayS` = 1: the setting is whole seconds) and a
full rescan interval of a day.
"""

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from bench import BenchError, free_port, poll_until, run, spawn, stop

RESCAN_INTERVAL_S = 86_400
WATCHER_DELAY_S = 1


def version():
    first = run(["syncthing", "--version"], 10).stdout.split()
    return " ".join(first[:2]) if first else "syncthing ?"


class Instance:
    def __init__(self, work, name):
        self.name = name
        self.home = work / f"st-{name}"
        self.api_port = free_port()
        self.listen_port = free_port()
        self.api_key = secrets.token_hex(16)
        out = run(["syncthing", "generate", "--home", self.home, "--no-default-folder"], 60)
        self.id = next(
            (l.split("Device ID:", 1)[1].strip() for l in (out.stdout + out.stderr).splitlines()
             if "Device ID:" in l),
            None,
        )
        if not self.id:
            raise BenchError(f"syncthing generate printed no device id for {self.home}")
        self.p = None

    def configure(self, peer, peer_address):
        """Writes config.xml: loopback only, nothing that talks to the internet, and `peer`
        as a device at `peer_address` (a tcp:// URL, or "dynamic" for never)."""
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        gui.find("address").text = f"127.0.0.1:{self.api_port}"
        gui.find("apikey").text = self.api_key
        opts = root.find("options")
        for el in opts.findall("listenAddress"):
            opts.remove(el)
        listen = ET.SubElement(opts, "listenAddress")
        listen.text = f"tcp://127.0.0.1:{self.listen_port}"
        settings = {
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "urAccepted": "-1",
            "crashReportingEnabled": "false",
            "startBrowser": "false",
            "autoUpgradeIntervalH": "0",
            "setLowPriority": "false",
        }
        for key, value in settings.items():
            el = opts.find(key)
            if el is None:
                el = ET.SubElement(opts, key)
            el.text = value
        dev = ET.SubElement(root, "device", {
            "id": peer.id, "name": peer.name, "compression": "metadata",
            "introducer": "false", "skipIntroductionRemovals": "false", "introducedBy": "",
        })
        ET.SubElement(dev, "address").text = peer_address
        ET.SubElement(dev, "paused").text = "false"
        ET.SubElement(dev, "autoAcceptFolders").text = "false"
        tree.write(path)

    def start(self, log_level=""):
        env = dict(os.environ)
        # STMONITORED: run the sync process itself, without the monitor process that
        # would otherwise start it as a child (and hide its CPU and memory from us).
        env.update({"STNOUPGRADE": "1", "STNODEFAULTFOLDER": "1", "STMONITORED": "1",
                    "HOME": str(self.home)})
        self.log = open(self.home / "stdout.log", "w")
        self.p = spawn(
            ["syncthing", "serve", "--home", self.home, "--no-browser", "--no-restart",
             "--no-upgrade", *(["--verbose"] if log_level else [])],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

        def up():
            if self.p.poll() is not None:
                raise BenchError(f"syncthing {self.name} exited; see {self.home}/stdout.log")
            try:
                return self.api("GET", "/rest/system/ping", timeout=2).get("ping") == "pong"
            except (OSError, BenchError):
                return False

        poll_until(up, 60, 0.1, f"syncthing {self.name}'s REST API")

    def api(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method,
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise BenchError(f"syncthing {self.name}: {method} {path}: {e.code} {e.read()!r}")
        return json.loads(text) if text.strip() else {}

    def add_folder(self, folder_id, path, peer):
        path.mkdir(parents=True, exist_ok=True)
        self.api("POST", "/rest/config/folders", {
            "id": folder_id, "label": folder_id, "path": str(path), "type": "sendreceive",
            "rescanIntervalS": RESCAN_INTERVAL_S, "fsWatcherEnabled": True,
            "fsWatcherDelayS": WATCHER_DELAY_S,
            "devices": [{"deviceID": self.id}, {"deviceID": peer.id}],
        })

    def remove_folder(self, folder_id):
        self.api("DELETE", f"/rest/config/folders/{folder_id}")

    def status(self, folder_id):
        return self.api("GET", f"/rest/db/status?folder={folder_id}")

    def idle(self, folder_id, files):
        """The folder is idle with `files` files locally and nothing needed."""
        s = self.status(folder_id)
        return (s.get("state") == "idle" and s.get("needTotalItems", 1) == 0
                and s.get("localFiles") == files)

    def scan(self, folder_id, timeout):
        """A full scan of the folder; the REST call returns when it is done."""
        self.api("POST", f"/rest/db/scan?folder={folder_id}", timeout=timeout)

    def connected(self, peer):
        conns = self.api("GET", "/rest/system/connections").get("connections", {})
        return conns.get(peer.id, {}).get("connected", False)

    def close(self):
        if self.p is not None:
            try:
                self.api("POST", "/rest/system/shutdown", timeout=5)
                self.p.wait(20)
            except (OSError, BenchError, subprocess.TimeoutExpired):
                pass
            stop(self.p)
            self.log.close()


class Pair:
    """Instances A and B; B reaches A through `relay` (a bench.Relay made by `make_relay`
    from A's listening port)."""

    def __init__(self, work, make_relay, log_level=""):
        self.a = Instance(work, "a")
        self.b = Instance(work, "b")
        self.relay = make_relay(self.a.listen_port)
        self.a.configure(self.b, "dynamic")
        self.b.configure(self.a, f"tcp://127.0.0.1:{self.relay.port}")
        self.a.start(log_level)
        self.b.start(log_level)
        poll_until(lambda: self.b.connected(self.a), 60, 0.1,
                   "syncthing B to connect to A through the relay")

    def wait_idle(self, folder_id, files, timeout):
        poll_until(lambda: self.a.idle(folder_id, files) and self.b.idle(folder_id, files),
                   timeout, 0.1, f"syncthing folder {folder_id} to be idle on A and B")

    def close(self):
        for inst in (self.b, self.a):
            inst.close()
        self.relay.close()
