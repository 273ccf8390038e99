"""HAProxy's runtime API (the ``stats socket`` in the lab's folder): its streams, each with the
client it serves and its connection to the upstream.

``show sess all`` (2.6) prints one block per stream::

    0x55..: [03/Dec/2026:14:14:42.303786] id=0 proto=tcpv4 source=10.77.0.2:54948
      frontend=connchaos (id=2 mode=tcp), listener=? (id=1) addr=10.77.1.2:10000
      backend=connchaos (id=2 mode=tcp) addr=10.77.1.2:45796
      server=upstream (id=1) addr=10.77.1.2:8765
      ...

``source=`` is the client as HAProxy sees it; the backend line's ``addr=`` is HAProxy's own
end of its server connection and the server line's ``addr=`` the upstream's. The socket is a
file in the lab's folder (bind-mounted into HAProxy's container on the docker backend), so
the harness reaches it without entering any namespace.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from harness.errors import LabError

_HEAD = re.compile(r"^0x[0-9a-f]+: \[[^\]]*\] id=\d+ proto=(\S+) source=(\S+)")
_BACKEND = re.compile(r"^\s+backend=\S+ \(.*?\) addr=(\S+)")
_SERVER = re.compile(r"^\s+server=\S+ \(.*?\) addr=(\S+)")


@dataclass(frozen=True)
class Stream:
    """One stream: the client leg's peer and, once connected, the server connection's ends."""

    client: tuple[str, int]
    tier: tuple[str, int] | None       # HAProxy's end of its server connection
    server: tuple[str, int] | None     # the upstream's end


def _addr(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else None


def parse_sessions(text: str) -> list[Stream]:
    """The TCP streams of ``show sess all`` (the CLI's own stream, on the unix socket, left out)."""
    found: list[Stream] = []
    current: dict[str, tuple[str, int] | None] | None = None

    def flush() -> None:
        if current is not None and current["client"] is not None:
            found.append(Stream(current["client"], current.get("tier"), current.get("server")))

    for line in text.splitlines():
        head = _HEAD.match(line)
        if head:
            flush()
            current = {"client": _addr(head.group(2)) if head.group(1).startswith("tcp") else None}
            continue
        if current is None:
            continue
        for key, pattern in (("tier", _BACKEND), ("server", _SERVER)):
            m = pattern.match(line)
            if m:
                current[key] = _addr(m.group(1))
    flush()
    return found


def ask(path: str, command: str, timeout_s: float = 2.0) -> str:
    """One command on the runtime API; its whole answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(path)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise LabError(f"asking HAProxy's runtime API ({command})", str(exc)) from exc
    return b"".join(chunks).decode(errors="replace")


def streams(path: str) -> list[Stream]:
    """HAProxy's TCP streams now."""
    return parse_sessions(ask(path, "show sess all"))
