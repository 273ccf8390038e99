"""toxiproxy-python against the built-in server, every toxic checked by real traffic."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import NotFound, ProxyExists

from tests.proxy.conftest import Upstream, connect, eventually, recv_exact, refused, round_trip, until_closed


def make(toxiproxy: Toxiproxy, upstream: Upstream, name: str = "svc"):  # type: ignore[no-untyped-def]
    return toxiproxy.create(upstream=upstream.address, name=name)


def test_create_list_and_destroy_a_proxy(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    assert proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0")
    assert proxy.enabled is True
    listed = toxiproxy.proxies()
    assert set(listed) == {"svc"} and listed["svc"].upstream == echo.address
    with connect(proxy.listen) as sock:
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
    with pytest.raises(ProxyExists):
        make(toxiproxy, echo)
    assert toxiproxy.destroy(proxy) is True
    assert toxiproxy.proxies() == {}
    assert refused(proxy.listen)
    with pytest.raises(NotFound):
        proxy.destroy()


def test_disable_closes_connections_and_stops_listening(toxiproxy: Toxiproxy,
                                                         echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    sock = connect(proxy.listen)
    round_trip(sock)
    proxy.disable()
    data, _ = until_closed(sock, timeout=3)
    assert data == b""
    assert refused(proxy.listen)
    assert toxiproxy.get_proxy("svc").enabled is False
    proxy.enable()
    with connect(proxy.listen) as again:
        assert round_trip(again) < 1
    with proxy.down():
        assert refused(proxy.listen)
    assert not refused(proxy.listen)


def test_latency_acts_on_a_live_connection_and_goes_away(toxiproxy: Toxiproxy,
                                                         echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    with connect(proxy.listen) as sock:
        assert round_trip(sock) < 0.05
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        assert set(proxy.toxics()) == {"latency_downstream"}
        delays = [round_trip(sock) for _ in range(3)]
        assert all(0.1 <= d < 0.3 for d in delays), delays
        proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 100})
        assert 0.2 <= round_trip(sock) < 0.45
        proxy.destroy_toxic("latency_downstream")
        proxy.destroy_toxic("latency_upstream")
        assert proxy.toxics() == {}
        assert round_trip(sock) < 0.05


def test_latency_is_never_shorter_than_asked(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    """Toxiproxy's Go timers never fire early; a loop's timers can (uvloop's are whole
    milliseconds), which once made a 150 ms toxic take 149.95 ms. Many short round trips
    make an early wake-up likely if the proxy allows one."""
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 5})
    with connect(proxy.listen) as sock:
        delays = [round_trip(sock) for _ in range(200)]
    assert min(delays) >= 0.005, sorted(delays)[:5]


def test_latency_jitter_varies_around_the_latency(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 50})
    with connect(proxy.listen) as sock:
        delays = [round_trip(sock) for _ in range(8)]
    assert all(0.05 <= d < 0.3 for d in delays), delays
    assert max(delays) - min(delays) > 0.01, delays


def test_bandwidth_limits_the_rate(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    payload = bytes(range(256)) * 240   # 61,440 bytes
    with connect(proxy.listen) as sock:
        assert round_trip(sock, payload) < 0.3
        proxy.add_toxic(type="bandwidth", attributes={"rate": 100})   # 100 KB/s
        elapsed = round_trip(sock, payload)
    assert 0.5 <= elapsed < 1.5, elapsed


def test_limit_data_passes_that_many_bytes_then_closes(toxiproxy: Toxiproxy,
                                                       echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="limit_data", attributes={"bytes": 1000})
    with connect(proxy.listen) as sock:
        sock.sendall(b"a" * 600)
        assert recv_exact(sock, 600) == b"a" * 600
        sock.sendall(b"b" * 2000)
        data, _ = until_closed(sock)
    assert data == b"b" * 400


def test_reset_peer_resets_the_connection(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 200})
    with connect(proxy.listen) as sock:
        started = time.monotonic()
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
        assert 0.19 <= time.monotonic() - started < 1.5


def test_timeout_zero_stalls_until_removed_then_closes(toxiproxy: Toxiproxy,
                                                       echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    with connect(proxy.listen) as sock:
        round_trip(sock)
        proxy.add_toxic(type="timeout", attributes={"timeout": 0})
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)          # no data, and the connection stays open
        sock.sendall(b"still open")
        proxy.destroy_toxic("timeout_downstream")
        data, elapsed = until_closed(sock, timeout=3)
    assert data == b"" and elapsed < 1


def test_timeout_closes_after_the_timeout(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 300})
    with connect(proxy.listen) as sock:
        sock.sendall(b"never arrives")
        data, elapsed = until_closed(sock)
    assert data == b"" and 0.28 <= elapsed < 1.5


def test_slow_close_delays_the_close(toxiproxy: Toxiproxy, greeter: Upstream) -> None:
    proxy = make(toxiproxy, greeter)
    with connect(proxy.listen) as sock:
        data, elapsed = until_closed(sock)
    assert data == b"hello" and elapsed < 0.2
    proxy.add_toxic(type="slow_close", attributes={"delay": 400})
    with connect(proxy.listen) as sock:
        data, elapsed = until_closed(sock)
    assert data == b"hello" and 0.38 <= elapsed < 1.5


def test_slicer_delivers_every_byte_in_pieces(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="slicer", attributes={"average_size": 10, "size_variation": 4,
                                               "delay": 2000})
    payload = bytes(range(200))
    with connect(proxy.listen) as sock:
        sock.sendall(payload)
        pieces = []
        while sum(map(len, pieces)) < len(payload):
            pieces.append(sock.recv(65536))
            assert pieces[-1]
    assert b"".join(pieces) == payload
    assert len(pieces) >= 8 and max(map(len, pieces)) < 50


def test_noop_changes_nothing(toxiproxy: Toxiproxy, echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="noop", name="nothing")
    assert proxy.get_toxic("nothing").type == "noop"
    with connect(proxy.listen) as sock:
        assert round_trip(sock, b"x" * 10000) < 0.2


def test_toxicity_decides_per_connection(toxiproxy: Toxiproxy, echo: Upstream,
                                         api: str) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 200})
    with connect(proxy.listen) as sock:
        assert round_trip(sock) < 0.1
        requests.patch(f"{api}/proxies/svc/toxics/latency_downstream",
                       json={"toxicity": 1.0}, timeout=5).raise_for_status()
        assert round_trip(sock) >= 0.2
    with connect(proxy.listen) as sock:
        assert round_trip(sock) >= 0.2


def test_every_toxic_can_be_updated(toxiproxy: Toxiproxy, echo: Upstream, api: str) -> None:
    proxy = make(toxiproxy, echo)
    updates = {"latency": {"latency": 300}, "bandwidth": {"rate": 5},
               "slow_close": {"delay": 10}, "timeout": {"timeout": 5000},
               "reset_peer": {"timeout": 5000}, "limit_data": {"bytes": 77},
               "slicer": {"average_size": 3, "size_variation": 1, "delay": 7}, "noop": {}}
    for kind, attributes in updates.items():
        proxy.add_toxic(type=kind, name=kind, stream="upstream")
        answer = requests.post(f"{api}/proxies/svc/toxics/{kind}",
                               json={"attributes": attributes, "toxicity": 0.5}, timeout=5)
        assert answer.status_code == 200, answer.text
        toxic = answer.json()
        assert toxic["toxicity"] == 0.5 and toxic["type"] == kind
        for key, value in attributes.items():
            assert toxic["attributes"][key] == value
    for kind in updates:
        proxy.destroy_toxic(kind)
    assert proxy.toxics() == {}


def test_latency_update_takes_effect_on_a_live_connection(toxiproxy: Toxiproxy,
                                                          echo: Upstream, api: str) -> None:
    proxy = make(toxiproxy, echo)
    proxy.add_toxic(type="latency", attributes={"latency": 50})
    with connect(proxy.listen) as sock:
        assert 0.05 <= round_trip(sock) < 0.2
        requests.patch(f"{api}/proxies/svc/toxics/latency_downstream",
                       json={"attributes": {"latency": 300}}, timeout=5).raise_for_status()
        assert 0.3 <= round_trip(sock) < 0.6


def test_populate_creates_keeps_and_replaces(api: str, echo: Upstream, greeter: Upstream,
                                             toxiproxy: Toxiproxy) -> None:
    config = [{"name": "one", "listen": "127.0.0.1:0", "upstream": echo.address},
              {"name": "two", "listen": "127.0.0.1:0", "upstream": echo.address}]
    answer = requests.post(f"{api}/populate", json=config, timeout=5)
    assert answer.status_code == 201
    made = {p["name"]: p for p in answer.json()["proxies"]}
    assert set(made) == {"one", "two"}
    with connect(made["two"]["listen"]) as sock:
        round_trip(sock)
    toxiproxy.get_proxy("one").add_toxic(type="latency", attributes={"latency": 10})
    again = [{"name": "one", "listen": made["one"]["listen"], "upstream": echo.address},
             {"name": "two", "listen": made["two"]["listen"], "upstream": greeter.address}]
    answer = requests.post(f"{api}/populate", json=again, timeout=5)
    assert answer.status_code == 201
    after = {p["name"]: p for p in answer.json()["proxies"]}
    assert [t["name"] for t in after["one"]["toxics"]] == ["latency_downstream"]  # kept
    assert after["two"]["upstream"] == greeter.address                           # replaced
    with connect(after["two"]["listen"]) as sock:
        assert until_closed(sock)[0] == b"hello"


def test_reset_enables_everything_and_removes_toxics(toxiproxy: Toxiproxy,
                                                     echo: Upstream) -> None:
    proxy = make(toxiproxy, echo)
    other = make(toxiproxy, echo, name="other")
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    other.disable()
    assert toxiproxy.reset() is True
    assert toxiproxy.get_proxy("other").enabled is True
    assert proxy.toxics() == {}
    for listen in (proxy.listen, other.listen):
        with connect(listen) as sock:
            assert round_trip(sock) < 0.1


def test_toxics_switch_live_without_losing_or_reordering_bytes(toxiproxy: Toxiproxy,
                                                               echo: Upstream, api: str) -> None:
    proxy = make(toxiproxy, echo)
    payload = bytes(range(256)) * 8192        # 2 MiB
    sock = connect(proxy.listen, timeout=20)
    received = bytearray()

    def read() -> None:
        while len(received) < len(payload):
            data = sock.recv(65536)
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    sender = threading.Thread(target=lambda: [sock.sendall(payload[i:i + 32768])
                                             for i in range(0, len(payload), 32768)])
    sender.start()
    for round_ in range(6):
        stream = "upstream" if round_ % 2 else "downstream"
        proxy.add_toxic(type="latency", name="wobble", stream=stream, attributes={"latency": 5})
        proxy.add_toxic(type="slicer", name="cut", stream=stream,
                        attributes={"average_size": 4096, "size_variation": 1024})
        time.sleep(0.03)
        proxy.destroy_toxic("wobble")
        time.sleep(0.02)
        proxy.destroy_toxic("cut")
        time.sleep(0.02)
    sender.join(20)
    reader.join(20)
    sock.close()
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert eventually(lambda: requests.get(f"{api}/proxies/svc/connections",
                                           timeout=5).json() == [])


def test_no_descriptor_leaks_after_many_connections(toxiproxy: Toxiproxy, echo: Upstream,
                                                    api: str) -> None:
    import os

    proxy = make(toxiproxy, echo)

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    with connect(proxy.listen) as warm:          # the pipe pool's first pipe
        round_trip(warm)
    before = descriptors()
    for index in range(60):
        with connect(proxy.listen) as sock:
            round_trip(sock, b"y" * 70000)
            if index == 20:
                proxy.add_toxic(type="latency", name="slow", attributes={"latency": 1})
            if index == 40:
                proxy.destroy_toxic("slow")
    assert eventually(lambda: requests.get(f"{api}/proxies/svc/connections",
                                           timeout=5).json() == [])
    assert eventually(lambda: descriptors() <= before + 4), (before, descriptors())
