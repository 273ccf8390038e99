"""The HTTP API with raw requests: statuses, JSON shapes, Toxiproxy's error texts, edge
cases, and our ``connections`` extension."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import pytest
import requests

from tests.proxy.conftest import HOST, Upstream, connect, eventually, recv_exact, refused, round_trip


def create(api: str, upstream: Upstream, name: str = "svc", **extra: Any) -> dict[str, Any]:
    answer = requests.post(f"{api}/proxies", json={"name": name, "upstream": upstream.address,
                                                   "listen": "127.0.0.1:0", **extra}, timeout=5)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def error_of(answer: requests.Response) -> tuple[int, str]:
    body = answer.json()
    assert body["status"] == answer.status_code
    return answer.status_code, body["error"]


def test_version_as_toxiproxy_answers_it(api: str) -> None:
    answer = requests.get(f"{api}/version", timeout=5)
    assert answer.status_code == 200
    assert answer.text == '{"version": "2.12.0"}\n'
    assert answer.headers["Content-Type"] == "application/json;charset=utf-8"


def test_proxy_json_shape_and_defaults(api: str, echo: Upstream) -> None:
    made = create(api, echo)
    assert list(made) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert made["enabled"] is True and made["toxics"] == []
    index = requests.get(f"{api}/proxies", timeout=5).json()
    assert index == {"svc": made}
    assert requests.get(f"{api}/proxies/svc", timeout=5).json() == made


def test_missing_listen_picks_a_free_port(api: str, echo: Upstream) -> None:
    answer = requests.post(f"{api}/proxies", json={"name": "svc", "upstream": echo.address},
                           timeout=5)
    assert answer.status_code == 201
    listen = answer.json()["listen"]
    host, _, port = listen.rpartition(":")
    assert host == HOST and int(port) > 0
    with connect(listen) as sock:
        assert round_trip(sock) < 1


def test_create_errors(api: str, echo: Upstream) -> None:
    assert error_of(requests.post(f"{api}/proxies", json={"upstream": echo.address},
                                  timeout=5)) == (400, "missing required field: name")
    assert error_of(requests.post(f"{api}/proxies", json={"name": "x"}, timeout=5)) == (
        400, "missing required field: upstream")
    made = create(api, echo)
    assert error_of(requests.post(f"{api}/proxies", json={"name": "svc", "upstream": "a:1"},
                                  timeout=5)) == (409, "proxy already exists")
    taken = made["listen"]
    answer = requests.post(f"{api}/proxies", json={"name": "b", "upstream": echo.address,
                                                   "listen": taken}, timeout=5)
    assert error_of(answer) == (500, f"listen tcp {taken}: bind: address already in use")
    answer = requests.post(f"{api}/proxies", json={"name": "c", "upstream": echo.address,
                                                   "listen": "nonsense"}, timeout=5)
    assert error_of(answer) == (500, "listen tcp: address nonsense: missing port in address")


@pytest.mark.parametrize("body, reason", [
    (b"", "bad request body: EOF"),
    (b"{not json", "bad request body: invalid character"),
    (b'{"name": 5, "upstream": "a:1"}', "bad request body: json: cannot unmarshal number 5 "
                                        "into Go struct field Proxy.name of type string"),
    (b'{"name": "a", "upstream": "a:1", "enabled": "yes"}', "bad request body: json: cannot "
                                                             "unmarshal string"),
    (b"[1, 2]", "bad request body: json: cannot unmarshal array into Go value"),
    (b"[" * 5000 + b"]" * 5000, "bad request body"),
    (b"\xff\xfe\x00garbage", "bad request body"),
])
def test_malformed_bodies_are_400(api: str, body: bytes, reason: str) -> None:
    answer = requests.post(f"{api}/proxies", data=body, timeout=5)
    status, error = error_of(answer)
    assert status == 400 and error.startswith(reason), error
    assert requests.get(f"{api}/version", timeout=5).status_code == 200


def test_unknown_proxy_is_404_everywhere(api: str) -> None:
    for method, path in [("GET", "/proxies/nope"), ("PATCH", "/proxies/nope"),
                         ("POST", "/proxies/nope"), ("DELETE", "/proxies/nope"),
                         ("GET", "/proxies/nope/toxics"), ("POST", "/proxies/nope/toxics"),
                         ("GET", "/proxies/nope/toxics/t"), ("DELETE", "/proxies/nope/toxics/t"),
                         ("GET", "/proxies/nope/connections")]:
        answer = requests.request(method, api + path, json={}, timeout=5)
        assert error_of(answer) == (404, "proxy not found"), (method, path)


def test_unknown_route_and_method(api: str) -> None:
    # no route: net/http's http.NotFound, plain text (gorilla/mux Router.ServeHTTP)
    for path in ("/nothing/here", "/proxies/"):
        answer = requests.get(f"{api}{path}", timeout=5)
        assert (answer.status_code, answer.text) == (404, "404 page not found\n")
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    # a route without the method: mux's methodNotAllowed, 405 and no body at all
    for answer in (requests.delete(f"{api}/proxies", timeout=5),
                   requests.get(f"{api}/reset", timeout=5)):
        assert (answer.status_code, answer.content) == (405, b"")
        assert "Content-Type" not in answer.headers


def test_api_errors_are_json_sent_as_plain_text(api: str) -> None:
    # api.go, apiError: the JSON goes through http.Error, which sets text/plain and adds "\n"
    answer = requests.get(f"{api}/proxies/nope", timeout=5)
    assert answer.text == '{"error":"proxy not found","status":404}\n'
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_browsers_are_turned_away(api: str) -> None:
    # api.go, stopBrowsersMiddleware: http.Error(w, "User agent not allowed", 403), plain text
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    answer = requests.post(f"{api}/proxies", json={"name": "x", "upstream": "a:1"},
                           headers=headers, timeout=5)
    assert (answer.status_code, answer.text) == (403, "User agent not allowed\n")
    assert requests.get(f"{api}/proxies", timeout=5).json() == {}
    assert requests.get(f"{api}/version", headers=headers, timeout=5).status_code == 403


def test_update_enable_disable_and_move(api: str, echo: Upstream, greeter: Upstream) -> None:
    made = create(api, echo)
    answer = requests.patch(f"{api}/proxies/svc", json={"enabled": False}, timeout=5)
    assert answer.status_code == 200 and answer.json()["enabled"] is False
    assert refused(made["listen"])
    answer = requests.post(f"{api}/proxies/svc", json={"enabled": True}, timeout=5)
    assert answer.json()["enabled"] is True and answer.json()["listen"] == made["listen"]
    with connect(made["listen"]) as sock:
        round_trip(sock)
    answer = requests.patch(f"{api}/proxies/svc", json={"upstream": greeter.address}, timeout=5)
    assert answer.json()["upstream"] == greeter.address
    with connect(made["listen"]) as sock:
        assert recv_exact(sock, 5) == b"hello"
    assert error_of(requests.patch(f"{api}/proxies/svc", data=b"{", timeout=5))[0] == 400


def test_delete_is_204(api: str, echo: Upstream) -> None:
    made = create(api, echo)
    answer = requests.delete(f"{api}/proxies/svc", timeout=5)
    assert answer.status_code == 204 and answer.content == b""
    assert refused(made["listen"])


def test_toxic_defaults_and_shape(api: str, echo: Upstream) -> None:
    create(api, echo)
    answer = requests.post(f"{api}/proxies/svc/toxics", json={"type": "latency"}, timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"attributes": {"latency": 0, "jitter": 0},
                             "name": "latency_downstream", "type": "latency",
                             "stream": "downstream", "toxicity": 1}
    answer = requests.post(f"{api}/proxies/svc/toxics", json={
        "type": "slicer", "stream": "upstream", "toxicity": 0.2,
        "attributes": {"average_size": 100}}, timeout=5)
    assert answer.json()["name"] == "slicer_upstream" and answer.json()["toxicity"] == 0.2
    listed = requests.get(f"{api}/proxies/svc/toxics", timeout=5).json()
    assert [t["name"] for t in listed] == ["slicer_upstream", "latency_downstream"]
    shown = requests.get(f"{api}/proxies/svc", timeout=5).json()["toxics"]
    assert shown == listed
    one = requests.get(f"{api}/proxies/svc/toxics/slicer_upstream", timeout=5).json()
    assert one["attributes"] == {"average_size": 100, "size_variation": 0, "delay": 0}


def test_toxic_errors(api: str, echo: Upstream) -> None:
    create(api, echo)
    url = f"{api}/proxies/svc/toxics"
    assert error_of(requests.post(url, json={"type": "earthquake"}, timeout=5)) == (
        400, "invalid toxic type")
    assert error_of(requests.post(url, json={"type": "latency", "stream": "sideways"},
                                  timeout=5)) == (
        400, "stream was invalid, can be either upstream or downstream")
    assert error_of(requests.post(url, json={"type": "latency", "attributes": {
        "latency": "slow"}}, timeout=5))[0] == 400
    assert error_of(requests.post(url, json={"type": "latency", "attributes": {
        "latency": 1.5}}, timeout=5))[0] == 400
    assert error_of(requests.post(url, data=b"nope", timeout=5))[0] == 400
    assert requests.post(url, json={"type": "latency", "name": "t"}, timeout=5).ok
    assert error_of(requests.post(url, json={"type": "timeout", "name": "t",
                                             "stream": "upstream"}, timeout=5)) == (
        409, "toxic already exists")
    assert error_of(requests.get(f"{url}/ghost", timeout=5)) == (404, "toxic not found")
    assert error_of(requests.patch(f"{url}/ghost", json={}, timeout=5)) == (
        404, "toxic not found")
    assert error_of(requests.delete(f"{url}/ghost", timeout=5)) == (404, "toxic not found")
    assert error_of(requests.patch(f"{url}/t", json={"toxicity": "high"}, timeout=5))[0] == 400
    assert requests.delete(f"{url}/t", timeout=5).status_code == 204


def test_toxic_update_merges_attributes(api: str, echo: Upstream) -> None:
    create(api, echo)
    requests.post(f"{api}/proxies/svc/toxics", json={
        "type": "latency", "attributes": {"latency": 100, "jitter": 10}}, timeout=5)
    answer = requests.patch(f"{api}/proxies/svc/toxics/latency_downstream",
                            json={"attributes": {"latency": 500}, "toxicity": 0.5}, timeout=5)
    assert answer.json()["attributes"] == {"latency": 500, "jitter": 10}
    assert answer.json()["toxicity"] == 0.5
    answer = requests.patch(f"{api}/proxies/svc/toxics/latency_downstream",
                            json={"attributes": {"jitter": 0}}, timeout=5)
    assert answer.json()["attributes"] == {"latency": 500, "jitter": 0}
    assert answer.json()["toxicity"] == 0.5


def test_populate_statuses(api: str, echo: Upstream) -> None:
    answer = requests.post(f"{api}/populate", json=[
        {"name": "a", "upstream": echo.address, "listen": "127.0.0.1:0"},
        {"name": "b", "upstream": echo.address, "listen": "127.0.0.1:0", "enabled": False}],
        timeout=5)
    assert answer.status_code == 201
    proxies = answer.json()["proxies"]
    assert [(p["name"], p["enabled"]) for p in proxies] == [("a", True), ("b", False)]
    answer = requests.post(f"{api}/populate", json=[{"name": "c", "upstream": "x:1"},
                                                    {"upstream": "y:1"}], timeout=5)
    assert (answer.status_code, answer.json()["error"]) == (
        400, "missing required field: name at proxy 2")
    assert "c" not in requests.get(f"{api}/proxies", timeout=5).json()
    answer = requests.post(f"{api}/populate", json={"name": "d"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"].startswith("bad request body")
    taken = proxies[0]["listen"]
    answer = requests.post(f"{api}/populate", json=[
        {"name": "e", "upstream": echo.address, "listen": "127.0.0.1:0"},
        {"name": "f", "upstream": echo.address, "listen": taken}], timeout=5)
    assert answer.status_code == 500
    assert [p["name"] for p in answer.json()["proxies"]] == ["e"]
    assert requests.post(f"{api}/populate", json=[], timeout=5).json() == {"proxies": None}


def test_reset_is_204(api: str, echo: Upstream) -> None:
    create(api, echo)
    requests.post(f"{api}/proxies/svc/toxics", json={"type": "timeout"}, timeout=5)
    answer = requests.post(f"{api}/reset", timeout=5)
    assert answer.status_code == 204 and answer.content == b""
    assert requests.get(f"{api}/proxies/svc/toxics", timeout=5).json() == []


def test_connections_extension_maps_clients_to_server_side_sockets(api: str,
                                                                   echo: Upstream) -> None:
    made = create(api, echo)
    clients = [connect(made["listen"]) for _ in range(2)]
    try:
        clients[0].sendall(b"12345")
        assert recv_exact(clients[0], 5) == b"12345"
        url = f"{api}/proxies/svc/connections"
        assert eventually(lambda: len(requests.get(url, timeout=5).json()) == 2)
        listed = {c["client"]: c for c in requests.get(url, timeout=5).json()}
        for sock in clients:
            ip, port = sock.getsockname()
            entry = listed[f"{ip}:{port}"]
            assert entry["listen"] == made["listen"]
            assert entry["upstream"] == echo.address
            assert entry["upstream_local"] in echo.peers   # what the server sees as its peer
            assert entry["state"] == "open"
        ip, port = clients[0].getsockname()
        first = listed[f"{ip}:{port}"]
        assert (first["bytes_upstream"], first["bytes_downstream"]) == (5, 5)
    finally:
        for sock in clients:
            sock.close()
    assert eventually(lambda: requests.get(url, timeout=5).json() == [])


def test_garbage_on_the_api_port_does_not_hurt(api: str, proxy_server: Any) -> None:
    for junk in (b"\x00\x01\x02 nonsense\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"POST /proxies HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"):
        with socket.create_connection((HOST, proxy_server.port), timeout=5) as sock:
            sock.sendall(junk)
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.recv(1000)
    assert requests.get(f"{api}/version", timeout=5).status_code == 200
