"""The API's connections: Toxiproxy's read and idle timeouts, and one log line per malformed
request (issue 16, item 11). In this process: the server runs on a loop thread."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web

from harness.proxy import ProxyServer
from harness.proxy.site import DeadlineSite, answered, request_read
from tests.proxy.conftest import HOST

READ_S = 0.5
WAIT_S = 10.0   # generous: a connection still open after this was never going to be closed


@pytest.fixture(scope="module")
def server() -> Iterator[ProxyServer]:
    with ProxyServer(port=0, read_timeout_s=READ_S).running() as running:
        yield running


def client(server: ProxyServer, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=WAIT_S)
    if sent:
        sock.sendall(sent)
    return sock


def closed_without_answer(sock: socket.socket) -> bool:
    """True when the server closes ``sock`` before WAIT_S having sent nothing."""
    with sock:
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


def test_a_request_line_that_never_ends(server: ProxyServer) -> None:
    assert closed_without_answer(client(server, b"GET /vers"))


def test_headers_that_never_end(server: ProxyServer) -> None:
    assert closed_without_answer(client(server, b"GET /version HTTP/1.1\r\nHost: x\r\n"))


def test_a_connection_that_sends_nothing(server: ProxyServer) -> None:
    assert closed_without_answer(client(server))


def test_a_body_that_never_ends(server: ProxyServer) -> None:
    # Go's ReadTimeout covers the body too
    head = b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    assert closed_without_answer(client(server, head))


def test_500_slow_clients_all_let_go(server: ProxyServer) -> None:
    slow = [client(server, b"GET /version HTTP/1.1\r\nHost: x\r\n") for _ in range(500)]
    assert all(closed_without_answer(sock) for sock in slow)
    assert requests.get(server.url + "/version", timeout=5).json() == {"version": "2.12.0"}


def test_a_kept_alive_connection_serves_request_after_request(server: ProxyServer) -> None:
    # each request has its own read deadline: longer in all than one deadline is fine
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.url + "/version", timeout=5).status_code == 200
            time.sleep(READ_S * 0.6)


def test_a_malformed_request_is_one_info_line(server: ProxyServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"), client(server, b"GET / HTTP/9.9\r\n\r\n") as sock:
        assert sock.recv(100).startswith(b"HTTP/1.0 400 Bad Request")
        sock.recv(1000)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in records] == [
        ("INFO", "bad request from 127.0.0.1: 400, Bad status line: Invalid HTTP version: b'GET / HTTP/9.9'",
         None)]


def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async def version(request: web.Request) -> web.Response:
        request_read(request)
        try:
            return web.Response(text="2.12.0")
        finally:
            answered(request)

    async def scenario() -> bytes:
        app = web.Application()
        app.router.add_get("/version", version)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = DeadlineSite(runner, HOST, 0, read_timeout_s=WAIT_S, idle_timeout_s=0.3)
        await site.start()
        port = runner.addresses[0][1]
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(1000), WAIT_S)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            rest = await asyncio.wait_for(reader.read(), WAIT_S)   # b"" once closed
            writer.close()
            return rest
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == b""
