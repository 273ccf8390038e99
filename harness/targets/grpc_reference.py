"""The reference gRPC server of ``service: grpc``: long-lived server streams on grpcio.

Run inside the lab's server namespace as::

    python -m harness.targets.grpc_reference --host H --port P \\
        [--arg grpc.keepalive_time_ms=1000 ...] [--control PATH] [--log PATH]

Each ``--arg NAME=VALUE`` is one channel argument for ``grpc.aio.server(options=...)``;
only the keepalive and connection-lifetime ones of ``SERVER_ARGS`` are taken, each checked
for its type and range (a bad one: exit 2 naming it). Left out, grpc-core's own defaults.

The service is defined without protobuf (bytes in, bytes out, generic handlers):

- ``/connchaos.Hold/Stream`` (unary-stream): the request names the session; the first reply
  is ``peer <addr:port>``, the client address the server sees (``context.peer()``), then the
  stream stays open, sending only what the control socket asks for, until the client goes or
  the transport closes.
- ``/connchaos.Hold/Echo`` (unary): the request, back.

Two views for the harness, as the WebSocket reference server has:

- ``--control PATH``: a Unix socket, one JSON request per line, one JSON reply per line:
  ``{"op": "status"}`` gives ``{"open": N, "closed": M, "streams": [{"peer": "addr:port",
  "name": "..."}]}``; ``{"op": "send", "peers": [...], "bytes": N}`` sends an N-byte message
  on those streams (at most ``MAX_SEND_BYTES``). 0600, in a folder that must be the server's
  alone (0700).
- ``--log PATH``: JSON lines stamped with ``time.time()``: a stream opened and closed; a close
  under the server (``cause: cancelled``: the client went, or the transport failed) carries
  ``unanswered_ping_s``, how long the connection's last keepalive ping had waited for its
  ack (null: none waited). grpc-core's keepalive trace (GRPC_TRACE=http_keepalive, one line
  per ping sent and per ack) is read from this process's own stderr for that, and passed on.

SIGTERM or SIGINT: stop with a grace of a second (streams are cancelled), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

SERVICE = "connchaos.Hold"
STREAM_METHOD = f"/{SERVICE}/Stream"
ECHO_METHOD = f"/{SERVICE}/Echo"
SHUTDOWN_GRACE_S = 1.0
MAX_SEND_BYTES = 1 << 20
INT_MAX = 2**31 - 1

SERVER_ARGS: dict[str, tuple[str, int, int]] = {
    # name: (kind, lowest, highest); kind "ms" (milliseconds), "count" or "bool" (0 or 1)
    "grpc.keepalive_time_ms": ("ms", 1, INT_MAX),
    "grpc.keepalive_timeout_ms": ("ms", 0, INT_MAX),
    # how long a ping waits for its ack before the transport is closed (grpc-core's
    # GRPC_ARG_PING_TIMEOUT_MS; 60 s by default): in grpcio 1.85 this, not keepalive_timeout_ms,
    # is what ends a connection whose keepalive ping goes unanswered (harness/core/grpc.py)
    "grpc.http2.ping_timeout_ms": ("ms", 0, INT_MAX),
    "grpc.keepalive_permit_without_calls": ("bool", 0, 1),
    "grpc.http2.max_pings_without_data": ("count", 0, INT_MAX),
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS: the least time between the
    # client's pings the server tolerates without data (else a strike, and GOAWAY)
    "grpc.http2.min_ping_interval_without_data_ms": ("ms", 0, INT_MAX),
    "grpc.http2.max_ping_strikes": ("count", 0, INT_MAX),
    "grpc.max_connection_idle_ms": ("ms", 1, INT_MAX),
    "grpc.max_connection_age_ms": ("ms", 1, INT_MAX),
    "grpc.max_connection_age_grace_ms": ("ms", 0, INT_MAX),
}
"""The channel arguments the reference server takes (grpc_types.h's strings)."""

CLIENT_ONLY = {
    "grpc.http2.min_time_between_pings_ms": "the client's own ping pacing (not the server's)",
    "grpc.http2.min_recv_ping_interval_without_data_ms":
        "not an argument name (the C macro's); the server's is grpc.http2.min_ping_interval_without_data_ms",
}


def check_arg(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``name`` for the server; None when it is."""
    if name not in SERVER_ARGS:
        why = CLIENT_ONLY.get(name)
        if why:
            return f"not a server channel argument: {why}"
        return f"not a channel argument the reference server takes (known: {', '.join(SERVER_ARGS)})"
    kind, lo, hi = SERVER_ARGS[name]
    if kind == "bool" and isinstance(value, bool):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        unit = {"ms": " (milliseconds)", "count": "", "bool": " (or true/false)"}[kind]
        return f"expected a whole number from {lo} to {hi}{unit}; got {value!r}"
    return None


def _parse_arg(text: str) -> tuple[str, int]:
    name, eq, raw = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE; got {text!r}")
    value: object = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        with contextlib.suppress(ValueError):
            value = int(raw)
    why = check_arg(name, value)
    if why:
        raise argparse.ArgumentTypeError(f"{name}: {why}")
    return name, int(value)  # type: ignore[call-overload]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.targets.grpc_reference",
                                description="connchaos's reference gRPC streaming server")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--arg", type=_parse_arg, action="append", default=[], metavar="NAME=VALUE",
                   help="a server channel argument (keepalive, connection age and idle)")
    p.add_argument("--control", help="Unix socket answering JSON requests")
    p.add_argument("--log", help="JSON lines: streams opened and closed, keepalive verdicts")
    return p.parse_args(argv)


def peer_address(peer: str) -> str:
    """``ipv4:10.77.0.2:40112`` (grpc's peer string) as ``10.77.0.2:40112``."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer[len(prefix):]
    return peer


# grpc-core's keepalive trace (GRPC_TRACE=http_keepalive), one line per ping sent and per ack:
#   "...] SERVER[0x7f..]: Ping 3214790234221895452 sent [ipv4:10.77.0.2:40112]: max_pings..."
#   "...] ipv4:10.77.0.2:40112: Finish keepalive ping"
_PING_SENT = re.compile(r"\bPing \d+ sent \[(ipv[46]:[^\]]+)\]")
_PING_ACKED = re.compile(r"(ipv[46]:\S+): Finish keepalive ping")


def core_event(line: str) -> tuple[str, str] | None:
    """(``ping`` or ``ack``, peer addr:port) of one line of grpc-core's log, if it is one."""
    m = _PING_SENT.search(line)
    if m is not None:
        return "ping", peer_address(m.group(1))
    m = _PING_ACKED.search(line)
    if m is not None:
        return "ack", peer_address(m.group(1))
    return None


@dataclass
class Stream:
    """One open server stream."""

    peer: str
    name: str
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


class HoldServer:
    """The streams held open, the log, and the control requests."""

    def __init__(self, log: TextIO | None) -> None:
        self.log = log
        self.lock = threading.Lock()     # the stderr reader writes from its own thread
        self.open: dict[int, Stream] = {}
        self.closed = 0
        # by peer: when grpc-core last sent it a keepalive ping and last had one acked
        self.pinged: dict[str, float] = {}
        self.acked: dict[str, float] = {}

    def core_line(self, line: str, at: float) -> None:
        """Note one line of grpc-core's log."""
        found = core_event(line)
        if found is not None:
            (self.pinged if found[0] == "ping" else self.acked)[found[1]] = at

    def unanswered_ping_s(self, peer: str, now: float) -> float | None:
        """How long the peer's last keepalive ping has waited for its ack; None if none waits."""
        sent = self.pinged.get(peer)
        if sent is None or self.acked.get(peer, -1.0) >= sent:
            return None
        return round(now - sent, 4)

    def write(self, record: dict[str, Any]) -> None:
        if self.log is None:
            return
        with self.lock:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        peer = peer_address(context.peer())
        s = Stream(peer, request.decode(errors="replace")[:200])
        key = id(s)
        self.open[key] = s
        opened = time.time()
        self.write({"at": opened, "event": "open", "peer": peer, "name": s.name})
        cause = "ended"
        try:
            yield f"peer {peer}".encode()
            while True:
                yield await s.outbox.get()
        except asyncio.CancelledError:
            cause = "cancelled"     # the client went, or the transport closed under the call
            raise
        finally:
            del self.open[key]
            self.closed += 1
            now = time.time()
            self.write({"at": now, "event": "closed", "peer": peer, "name": s.name,
                        "open_for_s": round(now - opened, 4), "cause": cause,
                        "unanswered_ping_s": self.unanswered_ping_s(peer, now)})

    async def echo(self, request: bytes, context: Any) -> bytes:
        return request

    def status(self) -> dict[str, Any]:
        return {"open": len(self.open), "closed": self.closed,
                "streams": [{"peer": s.peer, "name": s.name} for s in self.open.values()]}

    def send(self, peers: Sequence[str] | None, size: int) -> int:
        wanted = None if peers is None else set(peers)
        sent = 0
        for s in self.open.values():
            if wanted is None or s.peer in wanted:
                s.outbox.put_nowait(b"x" * size)
                sent += 1
        return sent

    def answer(self, request: Any) -> dict[str, Any]:
        """The reply to one control request (a JSON object)."""
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        op = request.get("op", "status")
        if op == "status":
            return self.status()
        if op == "send":
            size = request.get("bytes", 4000)
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SEND_BYTES:
                return {"error": f"bytes must be a whole number from 0 to {MAX_SEND_BYTES}; got {size!r}"}
            peers = request.get("peers")
            if peers is not None and not (isinstance(peers, list) and all(isinstance(p, str) for p in peers)):
                return {"error": "peers must be a list of addr:port strings"}
            return {"sent": self.send(peers, size)}
        return {"error": f"unknown op {op!r}"}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = self.answer(json.loads(line) if line.strip() else {})
                except ValueError as exc:
                    reply = {"error": f"not JSON: {exc}"}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except ValueError:
            writer.write((json.dumps({"error": "request line too long"}) + "\n").encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def tee_core_log(on_line: Callable[[str], None]) -> None:
    """grpc-core writes its log to descriptor 2: route that through a pipe, whose lines go on
    to the real stderr and to ``on_line``. Before grpc is imported."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115  (lives as long as the process)

    def pump() -> None:
        with open(read_end, "rb") as source, open(real, "wb", buffering=0) as sink:
            for raw in source:
                sink.write(raw)
                on_line(raw.decode(errors="replace"))
    threading.Thread(target=pump, name="grpc-core-log", daemon=True).start()


class ControlFolderError(Exception):
    """The control socket's folder is not the server's alone."""


def check_control_folder(path: str) -> None:
    """The control socket's folder must be this account's and closed to everyone else."""
    folder = os.path.dirname(os.path.abspath(path))
    st = os.stat(folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ControlFolderError(
            f"the control socket's folder {folder} must be owned by uid {os.geteuid()} and"
            f" closed to others (mode 0700); it is uid {st.st_uid}, mode {st.st_mode & 0o777:04o}")


async def serve(args: argparse.Namespace, hold: HoldServer) -> None:
    import grpc
    import grpc.aio

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Stream": grpc.unary_stream_rpc_method_handler(hold.stream),
        "Echo": grpc.unary_unary_rpc_method_handler(hold.echo),
    })
    server = grpc.aio.server(options=list(args.arg))
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"{args.host}:{args.port}") == 0:
        raise OSError(f"cannot listen on {args.host}:{args.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    control = None
    try:
        if args.control:
            check_control_folder(args.control)
            old = os.umask(0o077)
            try:
                control = await asyncio.start_unix_server(hold.control, path=args.control)
            finally:
                os.umask(old)
            os.chmod(args.control, 0o600)
        await server.start()
        await stop.wait()
        await server.stop(SHUTDOWN_GRACE_S)
    finally:
        if control is not None:
            control.close()
            if os.path.exists(args.control):
                os.unlink(args.control)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(args.log, "a", buffering=1)) if args.log else None
        hold = HoldServer(log)

        # the keepalive trace says when each ping goes out and when its ack comes back
        os.environ.setdefault("GRPC_TRACE", "http_keepalive")
        os.environ.setdefault("GRPC_VERBOSITY", "INFO")
        tee_core_log(lambda line: hold.core_line(line, time.time()))
        try:
            asyncio.run(serve(args, hold))
        except ControlFolderError as exc:
            print(f"grpc_reference: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
