"""One proxy: its listener, the toxics configured on it and its live connections
(Toxiproxy's ``Proxy`` and ``ToxicCollection``, proxy.go and toxic_collection.go).

Toxics are kept per stream in the order they were added; every change is applied to the
live connections at once, so a toxic acts on connections that already exist, as in
Toxiproxy. A new connection gets the toxics present when it opens, each with its own
toxicity roll.

A proxy with a ``journal`` (the API process of a multi-process server) reports each change
it made, once made, as a normalized operation (concrete listen address, every toxic
attribute, in API units): ``start``, ``stop``, ``address``, ``add_toxic``, ``update_toxic``,
``remove_toxic``. ``replica`` applies them to the workers' copies of the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.proxy import gojson, toxics
from harness.proxy.connection import Connection
from harness.proxy.errors import INVALID_STREAM, INVALID_TOXIC_TYPE, TOXIC_ALREADY_EXISTS, TOXIC_NOT_FOUND
from harness.proxy.link import Spinner
from harness.proxy.listener import ALONE, Share, bind_listener, join_host_port, parse_port, split_host_port

log = logging.getLogger(__name__)
STREAMS = ("upstream", "downstream")   # Toxiproxy lists upstream toxics first
ACCEPTS_PER_WAKEUP = 64
Journal = Callable[[dict[str, object]], None]


@dataclass
class Settings:
    """What all proxies of one server share."""

    loop: asyncio.AbstractEventLoop
    listen_host: str = "127.0.0.1"       # where a proxy with an empty ``listen`` binds
    keepalive_s: float | None = 15.0     # Go's default on every TCP connection
    rng: random.Random = field(default_factory=random.Random)
    spin_s: float = 50e-6                # see link.Spinner; 0 turns it off
    share: Share = ALONE                 # how listeners bind (see ``listener``)
    rejoin: Counter[str] = field(default_factory=Counter)  # released, workers may hold
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
    values: dict[str, int]   # the attributes in the API's units, exactly as given

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's JSON for a toxic (its field order too)."""
        return {"attributes": dict(self.values), "name": self.name, "type": self.type,
                "stream": self.stream, "toxicity": gojson.number(self.toxicity)}

    def state(self) -> dict[str, object]:
        """Everything ``Proxy.add_toxic`` needs to make this toxic again, exactly."""
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": dict(self.values)}


class Proxy:
    """A named proxy from ``listen`` to ``upstream``, with its toxics and connections.
    ``journal``, when set, is told of every change (see the module's docstring)."""

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
        self.journal: Journal | None = None

    def _record(self, op: str, **fields: object) -> None:
        if self.journal is not None:
            self.journal({"op": op, "proxy": self.name, **fields})

    # Listening ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and accept (no-op when already listening); raises a 500 ApiError with
        Go's text when the address cannot be bound."""
        if self.enabled:
            return
        settings = self.settings
        listener = bind_listener(self.listen, settings.listen_host, settings.share,
                                 settings.rejoin)
        host, port = listener.getsockname()[:2]
        self._listener = listener
        self.listen = join_host_port(host, port)
        self.enabled = True
        self.settings.loop.add_reader(listener.fileno(), self._accept)
        self._record("start", listen=self.listen)
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
        self._record("stop", listen=self.listen)
        log.info("proxy %s stopped", self.name)

    def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Toxiproxy's ``Proxy.Update``: a new address restarts the proxy."""
        if listen != self.listen or upstream != self.upstream:
            self.stop()
            self.listen, self.upstream = listen, upstream
            self._record("address", listen=listen, upstream=upstream)
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
            raise INVALID_STREAM()
        if not name:
            name = f"{kind}_{stream}"
        if kind not in toxics.TOXICS:
            raise INVALID_TOXIC_TYPE()
        if self.find_toxic(name) is not None:
            raise TOXIC_ALREADY_EXISTS()
        params, values = toxics.decode(kind, gojson.lookup(obj, "attributes"))
        entry = ToxicEntry(name, kind, stream, direction, toxicity, params, values)
        self.toxics[direction].append(entry)
        for conn in list(self.connections):
            live = conn.stream(direction)
            if live is not None:
                live.add_toxic(name, params, toxicity, type(params).buffer_size,
                               self.settings.rng)
        self._record("add_toxic", toxic=entry.state())
        return entry

    def update_toxic(self, name: str, body: object) -> ToxicEntry:
        """Toxiproxy's ``UpdateToxicJson``: ``attributes`` merge, ``toxicity`` replaces."""
        entry = self.find_toxic(name)
        if entry is None:
            raise TOXIC_NOT_FOUND()
        obj = gojson.object_of(body, "struct { Attributes interface {}; Toxicity float32 }")
        params, values = toxics.decode(entry.type, gojson.lookup(obj, "attributes"),
                                       base=entry.params, base_values=entry.values)
        raw_toxicity = gojson.lookup(obj, "toxicity")
        toxicity = entry.toxicity if raw_toxicity is None else gojson.float32(
            raw_toxicity, ".toxicity")
        entry.params, entry.values, entry.toxicity = params, values, toxicity
        for conn in list(self.connections):
            live = conn.stream(entry.direction)
            if live is not None:
                live.update_toxic(name, params, toxicity)
        self._record("update_toxic", toxic=entry.state())
        return entry

    def remove_toxic(self, name: str) -> None:
        """Take a toxic out of every connection (removing ``timeout`` closes them)."""
        entry = self.find_toxic(name)
        if entry is None:
            raise TOXIC_NOT_FOUND()
        self.toxics[entry.direction].remove(entry)
        close = type(entry.params).closes_on_removal
        for conn in list(self.connections):
            live = conn.stream(entry.direction)
            if live is not None:
                live.remove_toxic(name, close)
        self._record("remove_toxic", name=name)

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
