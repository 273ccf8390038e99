"""A data plane over several processes (``workers=2``): connections spread over the members,
every API change acts in every member before the API answers, the connections listing is
the union, and no worker outlives the API process however it ends.

(Every test of ``test_api`` and ``test_toxiproxy_python`` also runs against a two-process
server: see the ``proxy_server`` fixture.)"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness.proxy import ProxyServer
from tests.proxy.conftest import Upstream, connect, eventually, recv_exact, refused, round_trip

pytestmark = pytest.mark.lab   # a data plane of several processes

CLIENTS = 40
READY = "connchaos proxy listening on http://127.0.0.1:"


@pytest.fixture(scope="module")
def two() -> Iterator[ProxyServer]:
    """A server whose data plane is this process and one worker process."""
    with ProxyServer(port=0, workers=2).running() as server:
        assert len(server.worker_pids) == 1
        yield server


@pytest.fixture
def api2(two: ProxyServer) -> Iterator[str]:
    yield two.url
    for name in requests.get(two.url + "/proxies", timeout=5).json():
        requests.delete(f"{two.url}/proxies/{name}", timeout=5)


def per_member(server: ProxyServer, name: str) -> list[list[dict[str, Any]]]:
    """Each member's connections, asked on the server's loop."""
    future = asyncio.run_coroutine_threadsafe(server.connections(name), server.settings.loop)
    return future.result(10)


def create(api: str, upstream: Upstream, name: str = "svc") -> str:
    answer = requests.post(f"{api}/proxies", json={"name": name, "upstream": upstream.address,
                                                   "listen": "127.0.0.1:0"}, timeout=5)
    assert answer.status_code == 201, answer.text
    listen: str = answer.json()["listen"]
    return listen


def open_clients(listen: str, count: int = CLIENTS) -> list[socket.socket]:
    """``count`` connections through the proxy, each proven open by a round trip."""
    clients = [connect(listen) for _ in range(count)]
    for sock in clients:
        assert round_trip(sock) < 1
    return clients


def spread(server: ProxyServer, name: str, count: int) -> list[int]:
    """How many connections each member holds, once all ``count`` are listed."""
    assert eventually(lambda: sum(map(len, per_member(server, name))) == count)
    return [len(listed) for listed in per_member(server, name)]


def parallel_round_trips(clients: list[socket.socket]) -> list[float]:
    """Seconds each connection took to echo a ping, all pings sent at once."""
    sent = []
    for sock in clients:
        sent.append(time.monotonic())
        sock.sendall(b"ping")
    took = []
    for sock, started in zip(clients, sent, strict=True):
        assert recv_exact(sock, 4) == b"ping"
        took.append(time.monotonic() - started)
    return took


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_connections_land_on_every_member_and_are_listed_together(
        two: ProxyServer, api2: str, echo: Upstream) -> None:
    listen = create(api2, echo)
    clients = open_clients(listen)
    try:
        counts = spread(two, "svc", CLIENTS)
        assert len(counts) == 2 and all(n > 0 for n in counts) and sum(counts) == CLIENTS
        listed = requests.get(f"{api2}/proxies/svc/connections", timeout=5).json()
        expected = {"{}:{}".format(*sock.getsockname()) for sock in clients}
        assert {entry["client"] for entry in listed} == expected
        union = [entry["client"] for members in per_member(two, "svc") for entry in members]
        assert sorted(union) == sorted(entry["client"] for entry in listed)
        assert all(entry["listen"] == listen and entry["state"] == "open" for entry in listed)
    finally:
        for sock in clients:
            sock.close()
    assert eventually(lambda: requests.get(f"{api2}/proxies/svc/connections",
                                           timeout=5).json() == [])


def test_a_toxic_acts_on_every_members_connections_at_once(
        two: ProxyServer, api2: str, echo: Upstream) -> None:
    listen = create(api2, echo)
    clients = open_clients(listen)
    try:
        assert all(n > 0 for n in spread(two, "svc", CLIENTS))
        answer = requests.post(f"{api2}/proxies/svc/toxics", json={
            "type": "latency", "attributes": {"latency": 150}}, timeout=5)
        assert answer.status_code == 200
        # Measured right after the answer: the toxic must already be live everywhere.
        assert min(parallel_round_trips(clients)) >= 0.15
        answer = requests.patch(f"{api2}/proxies/svc/toxics/latency_downstream",
                                json={"attributes": {"latency": 300}}, timeout=5)
        assert answer.status_code == 200
        assert min(parallel_round_trips(clients)) >= 0.3
        assert requests.delete(f"{api2}/proxies/svc/toxics/latency_downstream",
                               timeout=5).status_code == 204
        assert max(parallel_round_trips(clients)) < 0.1
    finally:
        for sock in clients:
            sock.close()


def test_disable_closes_every_member_and_enable_listens_again(
        two: ProxyServer, api2: str, echo: Upstream) -> None:
    listen = create(api2, echo)
    clients = open_clients(listen)
    try:
        assert all(n > 0 for n in spread(two, "svc", CLIENTS))
        answer = requests.patch(f"{api2}/proxies/svc", json={"enabled": False}, timeout=5)
        assert answer.status_code == 200 and answer.json()["enabled"] is False
        assert all(closed_by_peer(sock) for sock in clients)
        # Each attempt would reach any member still listening: none is.
        assert all(refused(listen) for _ in range(20))
        assert per_member(two, "svc") == [[], []]
    finally:
        for sock in clients:
            sock.close()
    answer = requests.patch(f"{api2}/proxies/svc", json={"enabled": True}, timeout=5)
    assert answer.json()["listen"] == listen
    again = open_clients(listen)
    try:
        assert all(n > 0 for n in spread(two, "svc", CLIENTS))
    finally:
        for sock in again:
            sock.close()


def test_reset_and_delete_reach_every_member(two: ProxyServer, api2: str,
                                             echo: Upstream) -> None:
    listen = create(api2, echo)
    url = f"{api2}/proxies/svc/toxics"
    assert requests.post(url, json={"type": "timeout", "stream": "upstream"}, timeout=5).ok
    assert requests.patch(f"{api2}/proxies/svc", json={"enabled": False}, timeout=5).ok
    assert requests.post(f"{api2}/reset", timeout=5).status_code == 204
    clients = open_clients(listen)       # would stall with the timeout toxic left anywhere
    try:
        assert all(n > 0 for n in spread(two, "svc", CLIENTS))
        assert requests.delete(f"{api2}/proxies/svc", timeout=5).status_code == 204
        assert all(closed_by_peer(sock) for sock in clients)
        assert all(refused(listen) for _ in range(20))
    finally:
        for sock in clients:
            sock.close()
    # The name and the port are free in every member: a new proxy may take both.
    answer = requests.post(f"{api2}/proxies", json={"name": "svc", "upstream": echo.address,
                                                    "listen": listen}, timeout=5)
    assert answer.status_code == 201, answer.text
    again = open_clients(listen)
    try:
        assert all(n > 0 for n in spread(two, "svc", CLIENTS))
    finally:
        for sock in again:
            sock.close()


def test_a_taken_port_is_refused_even_though_members_share_ports(
        api2: str, echo: Upstream) -> None:
    listen = create(api2, echo)
    answer = requests.post(f"{api2}/proxies", json={"name": "other", "upstream": echo.address,
                                                    "listen": listen}, timeout=5)
    assert answer.status_code == 500
    assert answer.json()["error"] == f"listen tcp {listen}: bind: address already in use"


# The server as a process ----------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_server(workers: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "harness.proxy.server", "--host",
                             "127.0.0.1", "--port", "0", "-workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(READY):
        proc.kill()
        proc.wait(5)
        pytest.fail(f"no ready line: {line!r}")
    return proc, line.split(" on ", 1)[1]


def test_the_server_process_with_workers_exits_0_on_sigterm_leaving_no_child(
        echo: Upstream) -> None:
    proc, url = start_server(2)
    workers: list[int] = []
    try:
        workers = children(proc.pid)
        assert len(workers) == 1
        made = requests.post(url + "/proxies", json={"name": "p", "upstream": echo.address},
                             timeout=5).json()
        clients = open_clients(made["listen"], 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert all(closed_by_peer(sock) for sock in clients)
        for sock in clients:
            sock.close()
        assert not any(alive(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_exit_by_themselves_when_the_api_process_is_killed(echo: Upstream) -> None:
    proc, url = start_server(3)
    workers: list[int] = []
    try:
        workers = children(proc.pid)
        assert len(workers) == 2
        made = requests.post(url + "/proxies", json={"name": "p", "upstream": echo.address},
                             timeout=5).json()
        clients = open_clients(made["listen"], 10)
        proc.kill()
        proc.wait(5)
        assert eventually(lambda: not any(alive(pid) for pid in workers), timeout=5)
        assert all(closed_by_peer(sock) for sock in clients)
        for sock in clients:
            sock.close()
        assert refused(made["listen"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_must_be_at_least_one() -> None:
    with pytest.raises(ValueError):
        ProxyServer(workers=0)
    done = subprocess.run([sys.executable, "-m", "harness.proxy.server", "--workers", "0"],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr


def test_a_worker_that_cannot_start_is_an_error_and_leaves_nothing_behind() -> None:
    from harness.proxy.errors import WorkerError
    from harness.proxy.pool import WorkerPool

    before = children(os.getpid())     # other fixtures' workers
    pool = WorkerPool(2, ["--loop", "no-such-loop"], ready_timeout_s=20)
    with pytest.raises(WorkerError, match="did not start"):
        asyncio.run(pool.start())
    assert pool.workers == [] and children(os.getpid()) == before
