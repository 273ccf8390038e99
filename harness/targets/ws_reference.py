"""The reference WebSocket server of ``service: websocket``: an echo server on ``websockets``.

Run inside the lab's server namespace as::

    python -m harness.targets.ws_reference --host H --port P \\
        [--ping-interval S] [--ping-timeout S] [--close-timeout S] \\
        [--tcp-keepalive [--keepalive-idle S] [--keepalive-interval S] [--keepalive-count N]] \\
        [--tcp-user-timeout MS] \\
        [--control PATH] [--log PATH]

``--ping-interval``, ``--ping-timeout`` and ``--close-timeout`` go to ``websockets.serve``
unchanged (``off`` = None); left out, websockets' own defaults apply (20, 20, 10 s). TCP
keepalive is off unless ``--tcp-keepalive``, as in websockets itself; it and
TCP_USER_TIMEOUT are set on the listening socket, whose options every accepted socket
inherits.

It holds every connection and echoes what it receives. Two views for the harness:

- ``--control PATH``: a Unix socket answering one JSON request per line, one JSON reply per
  line. ``{}`` or ``{"op": "status"}`` gives ``{"open": N, "closed": M, "connections":
  [{"peer": "addr:port", "path": "/..."}]}``; ``{"op": "send", "peers": [...], "bytes": N}``
  sends an N-byte message on those connections (all when ``peers`` is left out) and gives
  ``{"sent": K}``; N is at most ``MAX_SEND_BYTES`` (a larger one is an error reply). The
  socket is the server's account's alone (0600), in a folder that must be its alone (0700):
  it shows every session and makes the server send, so no other local user may use it.
- ``--log PATH``: one JSON line per connection opened and closed, stamped with
  ``time.time()``; a close line carries the close frames sent and received (code, reason)
  and the transport error behind it (``cause``), which is what tells a keepalive ping
  timeout from a TCP timeout or a reset.

SIGTERM or SIGINT: stop listening, send a 1001 close to every connection (for at most a
second: a dead peer never answers), abort what is left, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

SHUTDOWN_GRACE_S = 1.0
# A control ``send`` copies its message once per connection into the kernel's and websockets'
# buffers (a dead peer's are never drained): bounded, so that one request cannot take the
# machine's memory. The harness asks for a few kilobytes.
MAX_SEND_BYTES = 1 << 20


def _seconds_or_off(text: str) -> float | None:
    if text.lower() in ("off", "none"):
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.targets.ws_reference",
                                description="connchaos's reference WebSocket echo server")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ping-interval", type=_seconds_or_off, default=20.0)
    p.add_argument("--ping-timeout", type=_seconds_or_off, default=20.0)
    p.add_argument("--close-timeout", type=_seconds_or_off, default=10.0)
    p.add_argument("--tcp-keepalive", action="store_true")
    p.add_argument("--keepalive-idle", type=int)
    p.add_argument("--keepalive-interval", type=int)
    p.add_argument("--keepalive-count", type=int)
    p.add_argument("--tcp-user-timeout", type=int, metavar="MS",
                   help="TCP_USER_TIMEOUT for the accepted sockets, in milliseconds")
    p.add_argument("--control", help="Unix socket answering JSON requests")
    p.add_argument("--log", help="JSON lines: connections opened and closed")
    return p.parse_args(argv)


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


def _frame(frame: Any) -> dict[str, Any] | None:
    return None if frame is None else {"code": int(frame.code), "reason": frame.reason}


def _cause(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    errno = getattr(exc, "errno", None)
    return f"{type(exc).__name__}" + (f" [Errno {errno}]" if errno else "") + f": {exc}"


class EchoServer:
    """The connections held open, the log, and the control requests."""

    def __init__(self, log: TextIO | None) -> None:
        self.log = log
        self.open: dict[ServerConnection, str] = {}
        self.closed = 0

    def _write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    async def handler(self, ws: ServerConnection) -> None:
        peer, path = _peer(ws), ws.request.path if ws.request else "/"
        self.open[ws] = path
        opened = time.time()
        self._write({"at": opened, "event": "open", "peer": peer, "path": path})
        closed_by: ConnectionClosed | None = None
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed as exc:
            closed_by = exc
        finally:
            del self.open[ws]
            self.closed += 1
            if closed_by is None:
                # the iterator ends quietly on a normal close; the frames are on the protocol
                closed_by = ws.protocol.close_exc
            self._write({"at": time.time(), "event": "closed", "peer": peer, "path": path,
                         "open_for_s": round(time.time() - opened, 4),
                         "sent": _frame(closed_by.sent), "rcvd": _frame(closed_by.rcvd),
                         "cause": _cause(closed_by.__cause__ or ws.connection_exc)})

    def status(self) -> dict[str, Any]:
        return {"open": len(self.open), "closed": self.closed,
                "connections": [{"peer": _peer(ws), "path": path} for ws, path in self.open.items()]}

    async def send(self, peers: Sequence[str] | None, size: int) -> int:
        wanted = None if peers is None else set(peers)
        targets = [ws for ws in self.open if wanted is None or _peer(ws) in wanted]
        payload = "x" * size
        sent = 0
        for ws in targets:
            try:
                # send() only waits when the write buffer is full; a dead peer's is not yet
                await asyncio.wait_for(ws.send(payload), 1)
                sent += 1
            except (ConnectionClosed, TimeoutError):
                pass
        return sent

    async def answer(self, request: Any) -> dict[str, Any]:
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
            return {"sent": await self.send(peers, size)}
        return {"error": f"unknown op {op!r}"}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.answer(json.loads(line) if line.strip() else {})
                except ValueError as exc:
                    reply = {"error": f"not JSON: {exc}"}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except ValueError:
            # a line over the reader's limit (64 KiB): no request is that long
            writer.write((json.dumps({"error": "request line too long"}) + "\n").encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def shutdown(self) -> None:
        conns = list(self.open)
        closing = [asyncio.ensure_future(ws.close(1001, "server shutting down")) for ws in conns]
        if closing:
            await asyncio.wait(closing, timeout=SHUTDOWN_GRACE_S)
        for ws in conns:
            if ws.protocol.state is not State.CLOSED:
                ws.transport.abort()


def listening_socket(args: argparse.Namespace) -> socket.socket:
    """The listener, with TCP keepalive set on it for the accepted sockets to inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.tcp_keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in ((socket.TCP_KEEPIDLE, args.keepalive_idle),
                              (socket.TCP_KEEPINTVL, args.keepalive_interval),
                              (socket.TCP_KEEPCNT, args.keepalive_count)):
            if value:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    if args.tcp_user_timeout:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, args.tcp_user_timeout)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def main(args: argparse.Namespace) -> int:
    # one descriptor a connection: thousands of sessions need more than the usual soft 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.ExitStack() as stack:
        # line-buffered: the harness reads the log while the server runs
        log = stack.enter_context(open(args.log, "a", buffering=1)) if args.log else None  # noqa: ASYNC230
        await serve_until_stopped(args, EchoServer(log))
    return 0


class ControlFolderError(Exception):
    """The control socket's folder is not the server's alone."""


def check_control_folder(path: str) -> None:
    """The folder of the control socket must be this account's and closed to everyone else
    (0700): the socket shows every session and makes the server send."""
    folder = os.path.dirname(os.path.abspath(path))
    st = os.stat(folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ControlFolderError(
            f"the control socket's folder {folder} must be owned by uid {os.geteuid()} and"
            f" closed to others (mode 0700); it is uid {st.st_uid}, mode {st.st_mode & 0o777:04o}")


async def open_control(path: str, echo: EchoServer) -> asyncio.Server:
    """The control socket, mode 0600 from the start (created under umask 077)."""
    check_control_folder(path)
    old = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(echo.control, path=path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


async def serve_until_stopped(args: argparse.Namespace, echo: EchoServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    control = None
    try:
        if args.control:
            control = await open_control(args.control, echo)
        server = await serve(echo.handler, sock=listening_socket(args),
                             ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
                             close_timeout=args.close_timeout, max_queue=None)
        await stop.wait()
        server.server.close()    # stop accepting; the connections are ours to end
        await echo.shutdown()
        server.close(close_connections=False)
        await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE_S)
    except TimeoutError:
        pass
    finally:
        if control is not None:
            control.close()
            if os.path.exists(args.control):
                os.unlink(args.control)


def _main() -> int:
    try:
        return asyncio.run(main(parse_args()))
    except ControlFolderError as exc:
        print(f"ws_reference: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
