"""One proxy: its listener, the toxics configured on it and its live connections
(Toxiproxy's ``Proxy`` and ``ToxicCollection``, proxy.go and toxic_collection.go).

Toxics are kept per stream in the order they were added; every change is applied to the
live connections at once, so a toxic acts on connections that already exist, as in
Toxiproxy. A new connection gets the toxics present when it opens, each with its own
toxicity roll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any

from harness.proxy import gojson, toxics
from harness.proxy.connection import Connection, literal_family
from harness.proxy.errors import (INVALID_STREAM, INVALID_TOXIC_TYPE, TOXIC_ALREADY_EXISTS,
                                  TOXIC_NOT_FOUND, internal)
from harness.proxy.link import Spinner

log = logging.getLogger(__name__)
STREAMS = ("upstream", "downstream")   # Toxiproxy lists upstream toxics first
ACCEPTS_PER_WAKEUP = 64
BACKLOG = 4096


@dataclass
class Settings:
    """What all proxies of one server share."""

    loop: asyncio.AbstractEventLoop
    listen_host: str = "127.0.0.1"       # where a proxy with an empty ``listen`` binds
    keepalive_s: float | None = 15.0     # Go's default on every TCP connection
    rng: random.Random = field(default_factory=random.Random)
    spin_s: float = 50e-6                # see link.Spinner; 0 turns it off
    spinner: Spinner = field(init=False)

    def __post_init__(self) -> None:
        self.spinner = Spinner(self.loop, self.spin_s)


@dataclass(frozen=True)
class ProxyConfig:
    """A proxy as the API describes it (create, update, populate)."""

    name: str
    listen: str
    upstream: str
    enabled: bool


@dataclass
class ToxicEntry:
    """A toxic as the API shows it, with its parsed parameters."""

    name: str
    type: str
    stream: str
    direction: str
    toxicity: float
    params: Any

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's JSON for a toxic (its field order too)."""
        return {"attributes": toxics.encode(self.params), "name": self.name, "type": self.type,
                "stream": self.stream, "toxicity": gojson.number(self.toxicity)}


def split_host_port(text: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``, with its complaints."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"address {text}: missing ']' in address")
        if not text[end + 1:].startswith(":"):
            raise ValueError(f"address {text}: missing port in address")
        return text[1:end], text[end + 2:]
    if ":" not in text:
        raise ValueError(f"address {text}: missing port in address")
    host, _, port = text.rpartition(":")
    if ":" in host:
        raise ValueError(f"address {text}: too many colons in address")
    return host, port


def parse_port(port: str) -> int:
    """A port number from its text (0 when empty, as Go allows)."""
    if port == "":
        return 0
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {port}: invalid port")
    return int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, bracketing IPv6 as Go does."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_listen(text: str, default_host: str) -> tuple[int, str, int]:
    """(family, ip, port) to bind for a ``listen`` address; ValueError with Go's text."""
    if text == "":
        host, port = default_host, 0
    else:
        host, port_text = split_host_port(text)
        port = parse_port(port_text)
    if host == "":
        return socket.AF_INET6, "::", port
    family = literal_family(host)
    if family is not None:
        return family, host, port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"lookup {host}: no such host") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)   # Go listens on IPv4 first
    family, address = infos[0][0], infos[0][4]
    return family, str(address[0]), port


def bind_listener(text: str, default_host: str) -> socket.socket:
    """A listening, non-blocking socket for ``listen``; errors read like Go's."""
    try:
        family, host, port = resolve_listen(text, default_host)
    except ValueError as exc:
        raise internal(f"listen tcp: {exc}") from None
    families = [family] + ([socket.AF_INET] if host == "::" else [])
    for attempt in families:
        bind_host = "0.0.0.0" if attempt != family else host
        sock = socket.socket(attempt, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                             | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if attempt == socket.AF_INET6 and bind_host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, port))
            sock.listen(BACKLOG)
            return sock
        except OSError as exc:
            sock.close()
            if attempt == families[-1]:
                reason = os.strerror(exc.errno or 0) if exc.errno else str(exc)
                reason = reason[:1].lower() + reason[1:]
                raise internal(
                    f"listen tcp {join_host_port(bind_host, port)}: bind: {reason}") from None
    raise internal("listen tcp: no address")  # pragma: no cover - families is never empty


class Proxy:
    """A named proxy from ``listen`` to ``upstream``, with its toxics and connections."""

    def __init__(self, settings: Settings, name: str, listen: str, upstream: str) -> None:
        self.settings = settings
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, list[ToxicEntry]] = {stream: [] for stream in STREAMS}
        self.connections: dict[Connection, None] = {}
        self._listener: socket.socket | None = None
        self._target: tuple[str, tuple[str, int]] | None = None   # (upstream, parsed)

    # Listening ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and accept (no-op when already listening); raises a 500 ApiError with
        Go's text when the address cannot be bound."""
        if self.enabled:
            return
        listener = bind_listener(self.listen, self.settings.listen_host)
        host, port = listener.getsockname()[:2]
        self._listener = listener
        self.listen = join_host_port(host, port)
        self.enabled = True
        self.settings.loop.add_reader(listener.fileno(), self._accept)
        log.info("proxy %s listening on %s, upstream %s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if not self.enabled:
            return
        self.enabled = False
        listener, self._listener = self._listener, None
        if listener is not None:
            self.settings.loop.remove_reader(listener.fileno())
            listener.close()
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()
        log.info("proxy %s stopped", self.name)

    def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Toxiproxy's ``Proxy.Update``: a new address restarts the proxy."""
        if listen != self.listen or upstream != self.upstream:
            self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled != self.enabled:
            if enabled:
                self.start()
            else:
                self.stop()

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]  # no object until needed
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                    return
                continue
            client = socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)
            client.setblocking(False)
            conn = Connection(self.settings.loop, client, self._opened, self._closed,
                              self.settings.keepalive_s, self.settings.spinner)
            self.connections[conn] = None
            target = self._upstream_target()
            if target is None:
                conn.abort()
            else:
                conn.dial(*target)

    def _pause_accepting(self) -> None:
        """Out of descriptors: stop accepting for a moment rather than spin."""
        listener = self._listener
        if listener is None:
            return
        log.warning("proxy %s: out of file descriptors, pausing accept", self.name)
        self.settings.loop.remove_reader(listener.fileno())

        def again() -> None:
            if self._listener is listener:
                self.settings.loop.add_reader(listener.fileno(), self._accept)
        self.settings.loop.call_later(0.1, again)

    def _upstream_target(self) -> tuple[str, int] | None:
        if self._target is None or self._target[0] != self.upstream:
            try:
                host, port = split_host_port(self.upstream)
                self._target = (self.upstream, (host, parse_port(port)))
            except ValueError:
                log.warning("proxy %s: bad upstream %r", self.name, self.upstream)
                return None
        return self._target[1]

    def _opened(self, conn: Connection) -> None:
        for direction in STREAMS:
            stream = conn.stream(direction)
            for entry in self.toxics[direction]:
                if stream is not None:
                    stream.add_toxic(entry.name, entry.params, entry.toxicity,
                                     type(entry.params).buffer_size, self.settings.rng)

    def _closed(self, conn: Connection) -> None:
        self.connections.pop(conn, None)

    # Toxics ------------------------------------------------------------------------------

    def toxic_list(self) -> list[ToxicEntry]:
        """Every toxic, upstream ones first, each stream in the order added."""
        return [entry for direction in STREAMS for entry in self.toxics[direction]]

    def find_toxic(self, name: str) -> ToxicEntry | None:
        """The toxic called ``name``, on either stream."""
        return next((entry for entry in self.toxic_list() if entry.name == name), None)

    def add_toxic(self, body: object) -> ToxicEntry:
        """Toxiproxy's ``AddToxicJson``: same defaults, same checks in the same order."""
        obj = gojson.object_of(body, "toxics.ToxicWrapper")
        name = gojson.string(obj, "name", "ToxicWrapper")
        kind = gojson.string(obj, "type", "ToxicWrapper")
        stream = gojson.string(obj, "stream", "ToxicWrapper", default="downstream")
        raw_toxicity = gojson.lookup(obj, "toxicity")
        toxicity = 1.0 if raw_toxicity is None else gojson.float32(
            raw_toxicity, "ToxicWrapper.toxicity")
        direction = stream.lower()
        if direction not in STREAMS:
            raise INVALID_STREAM
        if not name:
            name = f"{kind}_{stream}"
        if kind not in toxics.TOXICS:
            raise INVALID_TOXIC_TYPE
        if self.find_toxic(name) is not None:
            raise TOXIC_ALREADY_EXISTS
        params = toxics.decode(kind, gojson.lookup(obj, "attributes"))
        entry = ToxicEntry(name, kind, stream, direction, toxicity, params)
        self.toxics[direction].append(entry)
        for conn in list(self.connections):
            live = conn.stream(direction)
            if live is not None:
                live.add_toxic(name, params, toxicity, type(params).buffer_size,
                               self.settings.rng)
        return entry

    def update_toxic(self, name: str, body: object) -> ToxicEntry:
        """Toxiproxy's ``UpdateToxicJson``: ``attributes`` merge, ``toxicity`` replaces."""
        entry = self.find_toxic(name)
        if entry is None:
            raise TOXIC_NOT_FOUND
        obj = gojson.object_of(body, "struct { Attributes interface {}; Toxicity float32 }")
        params = toxics.decode(entry.type, gojson.lookup(obj, "attributes"), base=entry.params)
        raw_toxicity = gojson.lookup(obj, "toxicity")
        toxicity = entry.toxicity if raw_toxicity is None else gojson.float32(
            raw_toxicity, ".toxicity")
        entry.params, entry.toxicity = params, toxicity
        for conn in list(self.connections):
            live = conn.stream(entry.direction)
            if live is not None:
                live.update_toxic(name, params, toxicity)
        return entry

    def remove_toxic(self, name: str) -> None:
        """Take a toxic out of every connection (removing ``timeout`` closes them)."""
        entry = self.find_toxic(name)
        if entry is None:
            raise TOXIC_NOT_FOUND
        self.toxics[entry.direction].remove(entry)
        close = type(entry.params).closes_on_removal
        for conn in list(self.connections):
            live = conn.stream(entry.direction)
            if live is not None:
                live.remove_toxic(name, close)

    def reset_toxics(self) -> None:
        """Remove every toxic."""
        for entry in self.toxic_list():
            self.remove_toxic(entry.name)

    # Views -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's JSON for a proxy, with its toxics."""
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled,
                "toxics": [entry.to_json() for entry in self.toxic_list()]}

    def connections_json(self) -> list[dict[str, object]]:
        """Our extension: one entry per live connection."""
        return [conn.describe() for conn in list(self.connections)]

    def close(self) -> None:
        """Stop and forget everything (the server is shutting down)."""
        with contextlib.suppress(Exception):
            self.stop()
