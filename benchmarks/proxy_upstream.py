"""The proxy benchmark's upstream server, a process of its own:
``python -m benchmarks.proxy_upstream`` (``benchmarks.proxy.Upstream`` starts it).

Three listeners on 127.0.0.1: an echo (round trips), a sink that acknowledges each run of
bytes it was told to expect (throughput), and a holder that accepts and keeps idle
connections (memory, connections held). It prints its three ports as one JSON line, then
answers each ``count`` line on stdin with the number of connections the holder holds, and
exits when stdin closes.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import struct
import sys
import threading
from typing import Any

HOST = "127.0.0.1"
BLOCK = 1 << 20


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(4096)
    return sock


def _serve_threads(listener: socket.socket, handler: Any) -> None:
    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    buffer = bytearray(BLOCK)
    with conn:
        while True:
            header = conn.recv(8, socket.MSG_WAITALL)
            if len(header) < 8:
                return
            (left,) = struct.unpack("!Q", header)
            while left > 0:
                got = conn.recv_into(buffer, min(left, BLOCK))
                if got == 0:
                    return
                left -= got
            conn.sendall(b"k")


def main() -> int:
    """The upstream server: prints its ports, then answers ``count`` on stdin with the
    number of idle connections it holds; exits when stdin closes."""
    raise_nofile()
    echo, sink, hold = _listener(), _listener(), _listener()
    _serve_threads(echo, _echo)
    _serve_threads(sink, _sink)
    held: list[socket.socket] = []
    hold.setblocking(False)

    def holder() -> None:
        selector = selectors.DefaultSelector()
        selector.register(hold, selectors.EVENT_READ)
        while True:
            for _ in selector.select():
                while True:
                    try:
                        conn, _ = hold.accept()
                    except (BlockingIOError, OSError):
                        break
                    held.append(conn)
    threading.Thread(target=holder, daemon=True).start()
    ports = {name: s.getsockname()[1] for name, s in (("echo", echo), ("sink", sink),
                                                       ("hold", hold))}
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(len(held), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
