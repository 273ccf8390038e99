"""Fixtures for the built-in proxy's tests: one server on a loop thread for the whole
session (each test leaves it empty), and small upstream servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from harness.proxy import ProxyServer

HOST = "127.0.0.1"


class Upstream:
    """A threaded TCP server on 127.0.0.1; ``handle`` runs per connection. It records the
    peer address of every connection it accepted (to check what a server sees)."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.peers: list[str] = []
        self.handle = handle
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            self.peers.append(f"{peer[0]}:{peer[1]}")
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handle(conn)

    def close(self) -> None:
        self.listener.close()


def _echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)


def _greet(conn: socket.socket) -> None:
    conn.sendall(b"hello")


@pytest.fixture(scope="session")
def echo() -> Iterator[Upstream]:
    """Echoes every byte back."""
    server = Upstream(_echo)
    yield server
    server.close()


@pytest.fixture(scope="session")
def greeter() -> Iterator[Upstream]:
    """Says ``hello`` and closes the connection."""
    server = Upstream(_greet)
    yield server
    server.close()


# more than one process is the lab tier's (pytest -m "not lab" keeps to this process)
@pytest.fixture(scope="session", params=[1, pytest.param(2, marks=pytest.mark.lab)],
                ids=["1-process", "2-processes"])
def proxy_server(request: pytest.FixtureRequest) -> Iterator[ProxyServer]:
    """The server under test, once with one process and once with a worker process too
    (every API behaviour must be the same either way)."""
    with ProxyServer(port=0, seed=7, workers=request.param).running() as server:
        yield server


@pytest.fixture
def api(proxy_server: ProxyServer) -> Iterator[str]:
    """The API's base URL; every proxy is deleted after the test."""
    yield proxy_server.url
    for name in requests.get(proxy_server.url + "/proxies", timeout=5).json():
        requests.delete(f"{proxy_server.url}/proxies/{name}", timeout=5)


@pytest.fixture
def toxiproxy(api: str, proxy_server: ProxyServer) -> Toxiproxy:
    """toxiproxy-python pointed at our server (it keeps host and port as class attributes)."""
    APIConsumer.host, APIConsumer.port = HOST, proxy_server.port
    return Toxiproxy()


def connect(listen: str, timeout: float = 5.0) -> socket.socket:
    """A client connection to a proxy's ``listen`` address."""
    host, _, port = listen.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the connection ends first."""
    chunks, got = [], 0
    while got < size:
        data = sock.recv(size - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds for ``payload`` to come back through the echo."""
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    return time.monotonic() - started


def until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, float]:
    """Read until the peer closes; (everything read, seconds it took)."""
    sock.settimeout(timeout)
    started = time.monotonic()
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data), time.monotonic() - started


def refused(listen: str) -> bool:
    """True when nothing listens at ``listen`` any more."""
    try:
        connect(listen, timeout=1).close()
    except OSError:
        return True
    return False


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``check`` until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()
