#!/usr/bin/env python3
"""A counting TCP relay for the benchmarks (stdlib asyncio only).

    relay.py --target HOST:PORT [--listen HOST:PORT]

Listens on loopback (port 0 = any free port), forwards every accepted connection to
TARGET and counts the bytes going each way, exactly: every byte read from one side is
counted once and written to the other. On start it prints one line, `PORT <n>`.

Commands, one per line on stdin; each answer is one line of JSON on stdout:
    stats   {"c2s": N, "s2c": N, "accepted": N, "open": N, "conns": [...]}
    quit    closes every connection and exits (so does end of input)

c2s counts bytes from the connecting client towards TARGET, s2c the other way.
"""

import argparse
import asyncio
import json
import socket
import sys


class Totals:
    def __init__(self):
        self.c2s = 0
        self.s2c = 0
        self.accepted = 0
        self.conns = []  # one Conn per accepted connection, open or closed

    def snapshot(self):
        return {
            "c2s": self.c2s,
            "s2c": self.s2c,
            "accepted": self.accepted,
            "open": sum(1 for c in self.conns if c.open),
            "conns": [c.as_dict() for c in self.conns],
        }


class Conn:
    """The counts of one relayed connection."""

    def __init__(self, number, peer):
        self.number = number
        self.peer = peer
        self.c2s = 0
        self.s2c = 0
        self.open = True

    def as_dict(self):
        return {
            "n": self.number,
            "peer": self.peer,
            "c2s": self.c2s,
            "s2c": self.s2c,
            "open": self.open,
        }


def nodelay(transport):
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Side(asyncio.Protocol):
    """One end of a relayed connection. `towards` is the direction of the bytes it
    receives: "c2s" on the client's end, "s2c" on the target's end."""

    def __init__(self, totals, conn, towards):
        self.totals = totals
        self.conn = conn
        self.towards = towards
        self.transport = None
        self.peer = None  # the other Side, once both ends are connected
        self.closed = False
        self.eof = False  # this end will send nothing more

    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport)

    def data_received(self, data):
        n = len(data)
        if self.towards == "c2s":
            self.totals.c2s += n
            self.conn.c2s += n
        else:
            self.totals.s2c += n
            self.conn.s2c += n
        self.peer.transport.write(data)

    def eof_received(self):
        # Half-close: pass the end of this direction on, keep the other one open until
        # it ends too; then the connection is over and both ends are closed.
        self.eof = True
        if self.peer is not None and not self.peer.closed and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
            if self.peer.eof:
                self.peer.transport.close()
                return False
            return True
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.conn.open = False
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.close()  # sends what is buffered, then closes

    # Flow control: when the other side cannot take more, stop reading from this one.
    def pause_writing(self):
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class ClientSide(Side):
    """The accepting end: reads nothing until the target has answered."""

    def __init__(self, totals, conn, target, sides):
        super().__init__(totals, conn, "c2s")
        self.target = target
        self.sides = sides

    def connection_made(self, transport):
        super().connection_made(transport)
        self.sides.append(self)
        peer = transport.get_extra_info("peername")
        self.conn.peer = "%s:%s" % peer[:2] if peer else "?"
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self.open_target())

    async def open_target(self):
        host, port = self.target
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: Side(self.totals, self.conn, "s2c"), host, port
            )
        except OSError as e:
            print(f"relay: cannot connect to {host}:{port}: {e}", file=sys.stderr)
            self.transport.close()
            return
        self.sides.append(upstream)
        if self.closed:
            upstream.transport.close()
            return
        self.peer, upstream.peer = upstream, self
        self.transport.resume_reading()


async def commands(totals):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = line.decode().strip()
        if cmd == "stats":
            print(json.dumps(totals.snapshot()), flush=True)
        elif cmd == "quit":
            break
        elif cmd:
            print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    args = ap.parse_args()
    thost, tport = args.target.rsplit(":", 1)
    lhost, lport = args.listen.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    totals = Totals()
    sides = []

    def accept():
        totals.accepted += 1
        conn = Conn(totals.accepted, None)
        totals.conns.append(conn)
        return ClientSide(totals, conn, (thost, int(tport)), sides)

    server = await loop.create_server(accept, lhost, int(lport), reuse_address=True)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await commands(totals)
    server.close()
    for side in sides:
        if not side.closed:
            side.transport.abort()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
