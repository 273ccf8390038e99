"""One proxied connection: the client's socket, the upstream socket dialled for it, and the
two streams between them (``link.Stream``).

Closing follows Toxiproxy (link.go): when a stream ends (its source closed, a toxic closed
it, or writing failed) its destination socket is closed; the other stream has then lost its
source, flushes what it already read, and closes its own destination. ``reset_peer`` ends with
SO_LINGER 0 on both sockets, so both peers see an RST. Half-closed connections are not kept,
as in Toxiproxy.

Sockets are tuned as Go tunes every TCP connection (real Toxiproxy is a Go program): no Nagle
delay, keepalive probes after 15 s idle. That matters to the harness: a proxy's keepalive is
part of what a dead client's server sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

from harness.proxy.link import DONE, FAST, Spinner, Stream

LINGER_RESET = struct.pack("ii", 1, 0)


def literal_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP address, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def tune(sock: socket.socket, keepalive_s: float | None) -> None:
    """What Go does to every TCP connection it makes: no Nagle delay and, unless disabled,
    keepalive probes after ``keepalive_s`` idle, every ``keepalive_s``, 9 of them."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive_s is not None and keepalive_s > 0:
            seconds = max(1, round(keepalive_s))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 9)
    except OSError:
        pass


def address(sock: socket.socket | None, peer: bool) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) of a socket's peer or own end; "" if unknown."""
    if sock is None:
        return ""
    try:
        host, port = (sock.getpeername() if peer else sock.getsockname())[:2]
    except OSError:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """A client connection and its upstream connection, joined by two streams."""

    __slots__ = ("loop", "client", "upstream", "up", "down", "closed", "on_open", "on_close",
                 "targets", "task", "keepalive_s", "spinner", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: socket.socket,
                 on_open: Callable[[Connection], None], on_close: Callable[[Connection], None],
                 keepalive_s: float | None, spinner: Spinner) -> None:
        self.loop = loop
        self.client = client
        self.upstream: socket.socket | None = None
        self.up: Stream | None = None
        self.down: Stream | None = None
        self.closed = False
        self.on_open = on_open
        self.on_close = on_close
        self.targets: list[tuple[int, Any]] | None = None
        self.task: asyncio.Task[None] | None = None
        self.keepalive_s = keepalive_s
        self.spinner = spinner
        tune(client, keepalive_s)

    # Dialling the upstream ---------------------------------------------------------------

    def dial(self, host: str, port: int) -> None:
        """Connect to the upstream (resolving ``host`` off the loop when it is a name)."""
        family = literal_family(host)
        if family is not None:
            self.targets = [(family, (host, port))]
            self._try_next()
        else:
            self.task = self.loop.create_task(self._resolve(host, port))

    async def _resolve(self, host: str, port: int) -> None:
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        self.task = None
        if not self.closed:
            self.targets = [(info[0], info[4]) for info in infos]
            self._try_next()

    def _try_next(self) -> None:
        while self.targets:
            family, target = self.targets.pop(0)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                     | socket.SOCK_CLOEXEC)
            except OSError:
                break
            err = sock.connect_ex(target)
            if err == 0:
                self._connected(sock)
                return
            if err == errno.EINPROGRESS:
                self.upstream = sock
                self.loop.add_writer(sock.fileno(), self._on_connect)
                return
            sock.close()
        self.targets = None
        self.abort()

    def _on_connect(self) -> None:
        sock = self.upstream
        assert sock is not None
        self.loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.upstream = None
            sock.close()
            self._try_next()
            return
        self._connected(sock)

    def _connected(self, upstream: socket.socket) -> None:
        self.targets = None
        tune(upstream, self.keepalive_s)
        self.upstream = upstream
        self.up = Stream(self, self.client, upstream)
        self.down = Stream(self, upstream, self.client)
        self.on_open(self)     # the proxy's toxics, if any, move streams off the fast path
        for stream in (self.up, self.down):
            if stream.mode == FAST:
                stream.start_fast()

    def stream(self, name: str) -> Stream | None:
        """The ``upstream`` (client to server) or ``downstream`` stream."""
        return self.up if name == "upstream" else self.down

    def stream_finished(self, stream: Stream) -> None:
        """``stream`` ended: close its destination; the other stream loses its source."""
        if self.closed:
            return
        stream.stop()
        other = self.down if stream is self.up else self.up
        assert other is not None
        other._source_ended()
        self._shut(stream.dst)
        if other.mode == DONE:
            self._release()

    def abort(self, reset: bool = False) -> None:
        """Close both sockets now (with an RST to both peers when ``reset``)."""
        if self.closed:
            return
        if self.task is not None:
            self.task.cancel()
            self.task = None
        for stream in (self.up, self.down):
            if stream is not None:
                stream.stop()
        for sock in (self.client, self.upstream):
            if sock is not None and reset:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self._release()

    def _shut(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            sock.close()

    def _release(self) -> None:
        if self.closed:
            return
        for sock in (self.client, self.upstream):
            if sock is not None:
                self._shut(sock)
        self.closed = True
        self.on_close(self)

    def state(self) -> str:
        """``connecting``, ``open`` or ``closing`` (one stream has ended)."""
        if self.closed:
            return "closed"
        if self.up is None or self.down is None:
            return "connecting"
        if DONE in (self.up.mode, self.down.mode) or self.up.src_done or self.down.src_done:
            return "closing"
        return "open"

    def describe(self) -> dict[str, object]:
        """The ``/proxies/{name}/connections`` entry of this connection."""
        return {
            "client": address(self.client, peer=True),
            "listen": address(self.client, peer=False),
            "upstream_local": address(self.upstream, peer=False),
            "upstream": address(self.upstream, peer=True),
            "bytes_upstream": self.up.bytes if self.up else 0,
            "bytes_downstream": self.down.bytes if self.down else 0,
            "state": self.state(),
        }
