"""One request to a reference server's control socket (the websocket and grpc ones): a JSON
line out, a JSON line back."""

from __future__ import annotations

import json
import socket
from typing import Any


def ask(path: str, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The answer, or None if the server does not answer (gone, or not yet listening)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(path)
            s.sendall((json.dumps(request) + "\n").encode())
            line = s.makefile("rb").readline()
        answer: dict[str, Any] = json.loads(line)
        return answer
    except (OSError, ValueError):
        return None
