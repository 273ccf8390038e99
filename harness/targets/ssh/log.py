"""sshd's log: stamped as each line arrives (``sshd -e`` writes no time), and what it says
about connections ending, keyed by the client address sshd saw."""

from __future__ import annotations

import re
import time
from typing import Any

from harness.targets.base import ServerError

_CLIENT = r"(?:(?:authenticating |invalid )?user \S+ )?(\d+\.\d+\.\d+\.\d+) port (\d+)"
_LOG = [
    (re.compile(rf"Timeout, client not responding from {_CLIENT}"), "heartbeat"),
    (re.compile(rf"Read error from remote host {_CLIENT}: (.*)"), None),
    (re.compile(rf"Connection reset by {_CLIENT}"), "reset"),
    (re.compile(rf"Connection (?:from|to) {_CLIENT} timed out"), "timeout"),
    (re.compile(rf"Connection closed by {_CLIENT}"), "closed"),
]


def read_log(stream: Any, path: str, into: list[tuple[float, str]]) -> None:
    """Read sshd's stderr to its end: each line stamped into ``into`` and written to ``path``."""
    with stream, open(path, "w") as out:
        for raw in stream:
            now = time.time()
            line = raw.decode(errors="replace").rstrip("\r\n")
            into.append((now, line))
            out.write(f"{now:.6f} {line}\n")
            out.flush()


def server_errors(lines: list[tuple[float, str]]) -> dict[int | tuple[str, int], ServerError]:
    """What sshd logged about connections ending, by the client (address, port) it saw; the
    first line about a client counts."""
    found: dict[int | tuple[str, int], ServerError] = {}
    for at, line in lines:
        for pattern, kind in _LOG:
            m = pattern.search(line)
            if not m:
                continue
            text = line.strip()
            if kind is None:
                reason = m.group(3).lower()
                kind = "reset" if "reset" in reason else "timeout" if "timed out" in reason else m.group(3)
            found.setdefault((m.group(1), int(m.group(2))), ServerError(at, kind, text))
            break
    return found
