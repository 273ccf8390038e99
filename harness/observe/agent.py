"""The observer's agent: the server's view of a docker lab, for a harness that is not root.

Without root the harness cannot enter the server container's network namespace, so this
agent runs there instead: ``python -m harness.observe.agent --socket PATH`` in a container
of the project's image that joins the server container's network (``network_mode:
container:<srv>``) and the host's PID namespace, so the pids it names are the harness's pids.
It answers over a Unix socket in a folder bind-mounted from the lab's temporary folder, one
JSON request per line, one JSON reply per line::

    {"op": "rows", "port": 5432}            {"rows": [[state, timer, sport, ...], ...]}
    {"op": "listening", "port": 5432}       {"listening": true}
    {"op": "connect", "addr": .., "port": ..}  {"answers": true}
    {"op": "sysctl", "keys": ["net.ipv4.tcp_keepalive_time"]}   {"values": {...: "7200"}}
    {"op": "holders"}                        {"holders": {"<inode>": [pid, ...]}}
    {"op": "usage"}                          {"usage": [[fds, rss_kb, anon_kb], ...]}
    {"op": "readlink", "pid": .., "fd": 1}   {"link": "pipe:[1234]"}
    {"op": "write", "pid": .., "fd": 1, "data": ".."}   {} (latin-1 text, one write)

Errors come back as ``{"error": "..."}``. One dump per observer sample, the same sock_diag
reader as the root path, its rows (``sockdiag.ROW``) as plain lists of ints so the JSON
stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any

from harness.errors import LabError
from harness.observe.sockdiag import Columns, Key, SocketTable, SockInfo

OWN_NAMESPACE = "/proc/self/ns/net"


# -- the agent (inside the server's network) ----------------------------------------------------

class Agent:
    """Answers requests from this process's own network namespace."""

    def __init__(self) -> None:
        self._table = SocketTable(None)
        self._lock = threading.Lock()     # one dump at a time on the netlink socket

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "rows":
            with self._lock:
                columns = self._table.columns(int(request["port"]))
            return {"rows": columns.rows.tolist()}
        if op == "listening":
            from harness.lab.netns import listening_here

            return {"listening": listening_here(int(request["port"]), request.get("addr"))}
        if op == "connect":
            try:
                with socket.create_connection((str(request["addr"]), int(request["port"])),
                                              float(request.get("timeout", 0.5))):
                    return {"answers": True}
            except OSError:
                return {"answers": False}
        if op == "sysctl":
            values = {}
            for key in request["keys"]:
                # /proc/sys/net resolves against this (the server's) namespace
                with open("/proc/sys/" + str(key).replace(".", "/")) as f:
                    values[str(key)] = f.read().strip()
            return {"values": values}
        if op == "holders":
            from harness.observe.owners import socket_holders

            return {"holders": {str(k): v for k, v in socket_holders(OWN_NAMESPACE).items()}}
        if op == "usage":
            from harness.observe.owners import process_usage

            return {"usage": [list(u) for u in process_usage(OWN_NAMESPACE)]}
        if op == "readlink":
            from harness.lab.reach import fd_link_here

            return {"link": fd_link_here(int(request["pid"]), int(request["fd"]))}
        if op == "write":
            from harness.lab.reach import write_fd_here

            write_fd_here(int(request["pid"]), int(request["fd"]), str(request["data"]).encode("latin-1"))
            return {}
        return {"error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for line in self.rfile:
            try:
                reply = self.server.agent.answer(json.loads(line))
            except (LabError, OSError, ValueError, KeyError, TypeError) as exc:
                reply = {"error": str(exc)}
            self.wfile.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    agent: Agent


def serve(path: str) -> None:
    """Serve until SIGTERM; the socket is usable by any user (the harness is not root)."""
    if os.path.exists(path):
        os.unlink(path)
    with _Server(path, _Handler) as server:
        server.agent = Agent()
        os.chmod(path, 0o666)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"connchaos agent on {path}", flush=True)
        server.serve_forever()
    if os.path.exists(path):
        os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.observe.agent", description=__doc__.split("\n")[0])
    p.add_argument("--socket", required=True, help="the Unix socket to answer on")
    serve(p.parse_args(argv).socket)
    return 0


# -- the harness's side -------------------------------------------------------------------------

class AgentClient:
    """One connection to the agent; calls from several threads take turns."""

    def __init__(self, path: str, timeout_s: float = 30.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")
        self._lock = threading.Lock()

    @classmethod
    def wait(cls, path: str, alive: Any, timeout_s: float = 30.0) -> AgentClient:
        """Connect once the agent answers; ``alive()`` false (its container ended) or the
        timeout is a LabError."""
        deadline = time.monotonic() + timeout_s
        last = "no socket yet"
        while time.monotonic() < deadline and alive():
            try:
                return cls(path)
            except OSError as exc:
                last = str(exc)
                time.sleep(0.05)
        raise LabError("starting the observer's agent", last)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                self._sock.sendall(json.dumps(request).encode() + b"\n")
                line = self._file.readline()
            except OSError as exc:
                raise LabError(f"asking the observer's agent ({request.get('op')})", str(exc)) from exc
        if not line:
            raise LabError(f"asking the observer's agent ({request.get('op')})", "it hung up")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise LabError(f"the observer's agent ({request.get('op')})", str(reply["error"]))
        return reply

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class RemoteSocketTable:
    """``SocketTable``'s API over the agent: one request per dump."""

    def __init__(self, agent: AgentClient) -> None:
        self.agent = agent

    def columns(self, local_port: int) -> Columns:
        rows = self.agent.call({"op": "rows", "port": local_port})["rows"]
        return Columns.of(map(tuple, rows))

    def dump(self, local_port: int) -> dict[Key, SockInfo]:
        return self.columns(local_port).table()

    def close(self) -> None:
        pass    # the connection is the lab's; it closes it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
