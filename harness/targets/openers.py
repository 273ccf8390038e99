"""How sessions to a service of the user's own (``service: tcp``) are opened and held.

Built in: ``raw`` (connect, optionally send a greeting, hold), ``postgres`` (libpq: the
user, database and password come from the usual PG* environment variables), ``ssh``
(asyncssh with the user's own keys, agent and known hosts), ``websocket`` (a websockets
client). Third-party openers register a class under the entry-point group
``connchaos.openers``; it is built as ``cls(greeting=...)`` and provides the methods of
``Opener``. Every method runs on the client namespace's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

GROUP = "connchaos.openers"


class Opener(Protocol):
    """Opens, checks and closes one kind of session."""

    async def open(self, host: str, port: int, index: int) -> Any:
        """Connect and return the session's handle."""
        ...

    def local_address(self, handle: Any) -> tuple[str, int]:
        """The client end of the session's TCP connection."""
        ...

    async def alive(self, handle: Any) -> tuple[bool, str]:
        """Is the session still usable? (bounded in time)"""
        ...

    async def close(self, handle: Any) -> None:
        """Close without waiting on a dead peer."""
        ...


@dataclass
class Raw:
    """A plain TCP connection, held open; optionally sends ``greeting`` once connected."""

    greeting: str | None = None

    async def open(self, host: str, port: int, index: int) -> Any:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        if self.greeting:
            writer.write(self.greeting.encode())
            await writer.drain()
        return reader, writer

    def local_address(self, handle: Any) -> tuple[str, int]:
        addr, port = handle[1].get_extra_info("sockname")[:2]
        return addr, port

    async def alive(self, handle: Any) -> tuple[bool, str]:
        # Without knowing the protocol, "alive" is what TCP can tell: no end and no error
        # seen, and the kernel still reports the connection established.
        reader, writer = handle
        if reader.at_eof() or writer.is_closing():
            return False, "the server closed the connection"
        if reader.exception() is not None:
            return False, str(reader.exception())
        sock = writer.get_extra_info("socket")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock is not None else 0
        return (err == 0), ("connection open" if err == 0 else os.strerror(err))

    async def close(self, handle: Any) -> None:
        handle[1].close()


@dataclass
class Postgres:
    """A libpq connection; credentials from the PG* environment variables."""

    greeting: str | None = None

    async def open(self, host: str, port: int, index: int) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(host=host, port=port, autocommit=True,
                                                     connect_timeout=10,
                                                     application_name=f"connchaos-{index}")

    def local_address(self, handle: Any) -> tuple[str, int]:
        with socket.socket(fileno=os.dup(handle.pgconn.socket)) as s:
            addr, port = s.getsockname()[:2]
        return addr, port

    async def alive(self, handle: Any) -> tuple[bool, str]:
        task = asyncio.ensure_future(handle.execute("SELECT 1"))
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()
            return False, "no answer to SELECT 1 within 5 s"
        if task.exception() is not None:
            return False, str(task.exception()).strip().splitlines()[0]
        return True, "SELECT 1 answered"

    async def close(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # closing a dead session must not fail the run
            await asyncio.wait_for(handle.close(), 2)


@dataclass
class Ssh:
    """An SSH connection with an interactive shell, as the user's own ssh would open it."""

    greeting: str | None = None

    async def open(self, host: str, port: int, index: int) -> Any:
        import asyncssh

        conn = await asyncio.wait_for(asyncssh.connect(host, port), 15)
        process = await conn.create_process(term_type="xterm")
        return conn, process

    def local_address(self, handle: Any) -> tuple[str, int]:
        addr, port = handle[0].get_extra_info("sockname")[:2]
        return addr, port

    async def alive(self, handle: Any) -> tuple[bool, str]:
        conn, _ = handle
        task = asyncio.ensure_future(conn.run("true", check=False))
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()
            return False, "no answer within 5 s"
        return (task.exception() is None), "ran true" if task.exception() is None else str(task.exception())

    async def close(self, handle: Any) -> None:
        handle[0].abort()


@dataclass
class WebSocket:
    """A websockets client held open; ``greeting`` is sent as a first message."""

    greeting: str | None = None

    async def open(self, host: str, port: int, index: int) -> Any:
        from websockets.asyncio.client import connect

        ws = await asyncio.wait_for(connect(f"ws://{host}:{port}/", ping_interval=None), 10)
        if self.greeting:
            await ws.send(self.greeting)
        return ws

    def local_address(self, handle: Any) -> tuple[str, int]:
        addr, port = handle.local_address[:2]
        return addr, port

    async def alive(self, handle: Any) -> tuple[bool, str]:
        try:
            pong = await handle.ping()
            await asyncio.wait_for(pong, 5)
        except TimeoutError:
            return False, "no pong within 5 s"
        except Exception as exc:  # a closed connection raises its own kinds
            return False, f"{type(exc).__name__}: {exc}"
        return True, "pong"

    async def close(self, handle: Any) -> None:
        handle.transport.abort()


BUILT_IN: dict[str, type[Any]] = {"raw": Raw, "postgres": Postgres, "ssh": Ssh, "websocket": WebSocket}


def known() -> dict[str, Any]:
    """Built-in openers and those registered under ``connchaos.openers`` (not yet loaded)."""
    found: dict[str, Any] = dict(BUILT_IN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def make(name: str, greeting: str | None) -> Opener:
    """The opener called ``name``."""
    entry = known()[name]
    cls = entry if isinstance(entry, type) else entry.load()
    opener: Opener = cls(greeting=greeting)
    return opener
