"""``python -m harness.proxy.server`` as a process: the ready line, the API, a clean exit on
SIGTERM and SIGINT, and Toxiproxy's ``-config`` file."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.proxy.conftest import Upstream, connect, round_trip

pytestmark = pytest.mark.lab   # starts the proxy server's process

READY = "connchaos proxy listening on http://127.0.0.1:"


def start(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "harness.proxy.server", "--host",
                             "127.0.0.1", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(READY):
        proc.kill()
        proc.wait(5)
        pytest.fail(f"no ready line: {line!r}")
    return proc, line.split(" on ", 1)[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_exits_cleanly(signum: int, echo: Upstream) -> None:
    proc, url = start()
    try:
        assert requests.get(url + "/version", timeout=5).json() == {"version": "2.12.0"}
        made = requests.post(url + "/proxies", json={"name": "p", "upstream": echo.address},
                             timeout=5).json()
        with connect(made["listen"]) as sock:
            assert round_trip(sock) < 1
            proc.send_signal(signum)
            assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_config_file_populates_at_start(tmp_path: Path, echo: Upstream) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from-file", "listen": "127.0.0.1:0",
                                   "upstream": echo.address}]))
    proc, url = start("-config", str(config))
    try:
        proxies = requests.get(url + "/proxies", timeout=5).json()
        assert list(proxies) == ["from-file"]
        with connect(proxies["from-file"]["listen"]) as sock:
            assert round_trip(sock) < 1
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_a_taken_api_port_is_an_error(echo: Upstream) -> None:
    proc, url = start()
    try:
        port = url.rsplit(":", 1)[1]
        other = subprocess.run([sys.executable, "-m", "harness.proxy.server", "--port", port],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 1 and "cannot serve" in other.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_embedding_on_the_callers_loop(echo: Upstream) -> None:
    import asyncio

    from harness.proxy import ProxyServer

    async def scenario() -> float:
        async with ProxyServer(port=0) as server:
            made = await asyncio.to_thread(lambda: requests.post(
                server.url + "/proxies", json={"name": "p", "upstream": echo.address},
                timeout=5).json())
            assert server.get("p").listen == made["listen"]

            def traffic() -> float:
                with connect(made["listen"]) as sock:
                    return round_trip(sock, b"x" * 1000)
            return await asyncio.to_thread(traffic)

    assert asyncio.run(scenario()) < 1


def test_slow_clients_are_let_go_and_bad_requests_are_one_line(tmp_path: Path) -> None:
    # issue 16, item 11: 500 clients that never finish their headers held the API 20 s and
    # more; each malformed request line was an ERROR with a traceback
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "harness.proxy.server", "--port", "0",
                                 "--read-timeout", "1"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().split(" on ", 1)[1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(500)]
        for sock in slow:
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n")
        for sock in slow:
            # closed unanswered, long before the 30 s timeout: with a FIN, or a reset when
            # the server closes with the partial request still unread
            with sock, contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
        for bad in (b"GET / HTTP/9.9\r\n\r\n", b"GET /version HTTP/1.1\r\nBad Header\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(bad)
                assert sock.recv(100).startswith(b"HTTP/1.0 400 Bad Request")
        assert requests.get(url + "/version", timeout=5).json() == {"version": "2.12.0"}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    lines = log.read_text().splitlines()[1:]   # after "API listening on ..."
    assert lines == [
        line for line in lines if " INFO aiohttp.server: bad request from 127.0.0.1: 400, " in line]
    assert len(lines) == 2 and "Invalid HTTP version: b'GET / HTTP/9.9'" in lines[0]
