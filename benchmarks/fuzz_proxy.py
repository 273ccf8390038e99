"""Fuzzing the built-in proxy's API: ``connchaos bench fuzz-proxy`` (``python -m
benchmarks.fuzz_proxy --requests N``).

One server process (``python -m harness.proxy.server``, so that its memory is its own and a
crash is an exit), an echo server in this process, and N random requests: methods (the
usual ones, WebDAV's, made-up tokens, lower case), paths (every route, with names that exist
or not, percent-escapes, ``.``/``..``/``//``, junk), bodies (JSON of every type, proxies and
toxics with absurd fields, invalid JSON, now and then more than the API's 8 MiB), browser
User-Agents. Each answer is checked against what Toxiproxy 2.12 answers for that class of
request (``check_answer``: api.go's statuses per route, gorilla/mux's 301/404/405, the error
shapes); a request unanswered within ``TIMEOUT_S`` is a hang. Afterwards a proxy made through
the API must carry bytes to the echo server and back.

Printed: requests sent, answers by status class, 5xx (and which), answers Toxiproxy would
not give, hangs, crashes (the process gone, or a handler's unexpected exception in its log),
the server's RSS before and after, and whether traffic still flowed. Exit 0 when all is well.
``tests/proxy/test_fuzz_api.py`` runs the same generator under hypothesis.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, unquote

HOST = "127.0.0.1"
TIMEOUT_S = 10.0
BODY_LIMIT = 8 * 1024 * 1024
READY = "connchaos proxy listening on http://"
NAMES = ["fz", "fz2", "a.b", "x y", "é", "%2F", "0"]
TOXIC_TYPES = ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer",
               "limit_data", "noop", "earthquake", "", "LATENCY"]
ATTRIBUTES = ["latency", "jitter", "rate", "delay", "timeout", "average_size",
              "size_variation", "bytes", "Latency", "nope"]
METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "PROPFIND", "FOO",
           "get", "Post", "patch"]
LISTENS = ["127.0.0.1:0", "", "127.0.0.1:1", "0.0.0.0:0", "[::1]:0", "localhost:0",
           "nonsense", "127.0.0.1:99999", "[::1", ":0", "256.1.1.1:0", "{api}"]

# Routes: (segments, {method: statuses Toxiproxy's handler can answer}); None is a variable.
# api.go: each handler's apiError calls; 500 only where a listener fails (Proxy.Start).
ROUTES: list[tuple[tuple[str | None, ...], dict[str, set[int]]]] = [
    (("reset",), {"POST": {204, 500}}),
    (("proxies",), {"GET": {200}, "POST": {201, 400, 409, 500}}),
    (("populate",), {"POST": {201, 400, 500}}),
    (("proxies", None), {"GET": {200, 404}, "POST": {200, 400, 404, 500},
                         "PATCH": {200, 400, 404, 500}, "DELETE": {204, 404}}),
    (("proxies", None, "toxics"), {"GET": {200, 404}, "POST": {200, 400, 404, 409}}),
    (("proxies", None, "toxics", None), {"GET": {200, 404}, "POST": {200, 400, 404},
                                         "PATCH": {200, 400, 404}, "DELETE": {204, 404}}),
    (("proxies", None, "connections"), {"GET": {200, 404}}),   # ours, documented
    (("version",), {"GET": {200}}),
]
DECODES = {("proxies", "POST"), ("populate", "POST"), ("proxies/_", "POST"),
           ("proxies/_", "PATCH"), ("proxies/_/toxics", "POST"),
           ("proxies/_/toxics/_", "POST"), ("proxies/_/toxics/_", "PATCH")}


@dataclass(frozen=True)
class FuzzRequest:
    """One request: ``path`` as sent (percent-encoded), ``body`` as bytes or None."""

    method: str
    path: str
    body: bytes | None = None
    browser: bool = False

    def __repr__(self) -> str:
        body = self.body if self.body is None or len(self.body) < 300 else (
            self.body[:300] + f"... ({len(self.body)} bytes)".encode())
        return f"FuzzRequest({self.method} {self.path} body={body!r} browser={self.browser})"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


# Generating ---------------------------------------------------------------------------

def _number(rng: random.Random) -> object:
    return rng.choice([0, 1, -1, 100, 2**31, 2**63 - 1, -(2**63), 2**63, 10**30, 1.5, -0.5,
                       1e300, 0.0, rng.randint(-10**6, 10**6)])


def _json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return _number(rng)
    if kind == 3:
        return rng.choice(["", "x", "127.0.0.1:1", "é\u2028<&>", "\x00", "a" * 300])
    if kind == 4:
        return rng.choice(NAMES)
    if kind == 5:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "upstream", "listen", "enabled", "type", "stream", "toxicity",
            "attributes", "NAME", "junk"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _proxy_json(rng: random.Random, upstream: str, api: str) -> dict[str, object]:
    out: dict[str, object] = {}
    if rng.random() < 0.9:
        out["name"] = rng.choice(NAMES) if rng.random() < 0.85 else _json_value(rng)
    if rng.random() < 0.9:
        out["upstream"] = upstream if rng.random() < 0.8 else _json_value(rng)
    if rng.random() < 0.9:
        out["listen"] = rng.choice(LISTENS).replace("{api}", api)
    if rng.random() < 0.4:
        out["enabled"] = rng.random() < 0.7 if rng.random() < 0.9 else _json_value(rng)
    return out


def _toxic_json(rng: random.Random) -> dict[str, object]:
    out: dict[str, object] = {"type": rng.choice(TOXIC_TYPES)}
    if rng.random() < 0.5:
        out["name"] = rng.choice(["t", "t2", ""]) if rng.random() < 0.9 else _json_value(rng)
    if rng.random() < 0.5:
        out["stream"] = rng.choice(["upstream", "downstream", "UpStream", "sideways", ""])
    if rng.random() < 0.5:
        out["toxicity"] = rng.choice([0, 0.5, 1, -1, 2, 1e39, "x", None])
    if rng.random() < 0.8:
        out["attributes"] = ({rng.choice(ATTRIBUTES): _attribute(rng)
                              for _ in range(rng.randrange(4))}
                             if rng.random() < 0.9 else _json_value(rng))
    return out


def _attribute(rng: random.Random) -> object:
    return rng.choice([_number(rng), _number(rng), "5", [1], {"a": 1}, True, None])


def _body(rng: random.Random, upstream: str, api: str, segments: list[str]) -> bytes | None:
    roll = rng.random()
    if roll < 0.08:
        return None
    if roll < 0.11:   # more than the API reads: a valid value padded, or one long string
        pad = BODY_LIMIT + rng.randrange(1, 4096)
        if rng.random() < 0.5:
            return json.dumps(_proxy_json(rng, upstream, api)).encode() + b" " * pad
        return b'{"name": "' + b"n" * pad + b'"}'
    if roll < 0.22:
        return rng.choice([b"", b"{", b"{not json", b'{"name": "a', b"\xff\xfe\x00",
                           b"nul", b"[" * 5000, b'{"a" 1}', b"-", b'"\\q"', b"NaN",
                           b'{"name": "x", "upstream": "y:1"}trailing junk'])
    if roll < 0.35:
        value = _json_value(rng)
    elif segments and segments[-1] == "toxics" or len(segments) == 4:
        value = _toxic_json(rng)
    elif segments == ["populate"]:
        value = [_proxy_json(rng, upstream, api) for _ in range(rng.randrange(4))]
    else:
        value = _proxy_json(rng, upstream, api)
    return json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()


def _segment(rng: random.Random, pool: Sequence[str]) -> str:
    roll = rng.random()
    if roll < 0.8:
        return quote(rng.choice(pool), safe="")
    return rng.choice(["%zz", "%FF", "..", ".", "", "%2e%2e", "a%2Fb", "x" * 200])


def random_request(rng: random.Random, upstream: str, api: str = "127.0.0.1:8474") -> FuzzRequest:
    """One random request; ``api`` is the API's own address (a listen address that is busy)."""
    shape = rng.choice([["reset"], ["proxies"], ["populate"], ["proxies", "{p}"],
                        ["proxies", "{p}"], ["proxies", "{p}", "toxics"],
                        ["proxies", "{p}", "toxics"], ["proxies", "{p}", "toxics", "{t}"],
                        ["proxies", "{p}", "connections"], ["version"], ["junk"],
                        ["proxies", "{p}", "nope"], ["proxies", ""], ["metrics"]])
    segments = [_segment(rng, NAMES) if part == "{p}" else
                _segment(rng, ["t", "t2", "latency_downstream", "x"]) if part == "{t}" else part
                for part in shape]
    path = "/" + "/".join(segments)
    if rng.random() < 0.05:
        path = "/" + path
    if rng.random() < 0.1:
        path += "?x=1&y"
    method = rng.choice(METHODS[:4]) if rng.random() < 0.8 else rng.choice(METHODS)
    return FuzzRequest(method, path, _body(rng, upstream, api, segments),
                       browser=rng.random() < 0.03)


# Checking -----------------------------------------------------------------------------

def _clean(path: str) -> str:
    """gorilla/mux's cleanPath (Go's path.Clean, trailing slash kept)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def expected(request: FuzzRequest) -> tuple[set[int], str]:
    """The statuses Toxiproxy 2.12 can answer ``request`` with, and the shape of the body:
    ``json`` (the resource), ``error`` (api.go's error JSON), ``text`` (net/http's), ``empty``."""
    raw = request.path.partition("?")[0]
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        return {400}, "text"          # net/http: url.ParseRequestURI fails
    path = unquote(raw, errors="surrogateescape")
    if _clean(path) != path:
        return {301}, "empty"         # mux Router.ServeHTTP: redirect to the clean path
    parts = path[1:].split("/")
    for pattern, methods in ROUTES:
        if len(pattern) == len(parts) and all(
                (want is None and got) or want == got for want, got in zip(pattern, parts, strict=True)):
            if request.method not in methods:
                return {405}, "empty"  # mux methodNotAllowed
            if request.browser:
                return {403}, "text"   # stopBrowsersMiddleware
            statuses = set(methods[request.method])
            key = "/".join("_" if want is None else want for want in pattern)
            if (key, request.method) in DECODES and request.body is not None \
                    and len(request.body) > BODY_LIMIT:
                statuses.add(413)     # ours: a first value longer than we read
            return statuses, "json"
    return {404}, "text"              # http.NotFound


def check_answer(request: FuzzRequest, answer: Answer | None) -> str | None:
    """None when ``answer`` is one Toxiproxy gives ``request``, else what is wrong."""
    if answer is None:
        return f"no answer within {TIMEOUT_S:g} s (hang): {request!r}"
    statuses, shape = expected(request)
    if answer.status not in statuses:
        return f"status {answer.status}, Toxiproxy gives {sorted(statuses)}: {request!r}"
    ctype = answer.headers.get("content-type", "")
    if shape == "empty" and answer.body:
        return f"a {answer.status} with a body: {request!r}"
    if shape == "text" and not ctype.startswith("text/plain"):
        return f"{answer.status} as {ctype!r}, not plain text: {request!r}"
    if shape == "json" and answer.status >= 400:
        try:
            error = json.loads(answer.body)
        except ValueError:
            return f"{answer.status} body is not JSON: {answer.body[:200]!r}: {request!r}"
        if answer.status == 413:
            return None
        if not isinstance(error, dict) or error.get("status") != answer.status or \
                not isinstance(error.get("error"), str):
            return f"{answer.status} body is not Toxiproxy's error: {answer.body[:200]!r}"
        if request.path.partition("?")[0] == "/populate":
            # api.go, Populate: the error and the proxies made, written as JSON itself
            if "proxies" not in error or not ctype.startswith("application/json"):
                return f"populate's {answer.status} not as Populate writes it: {request!r}"
        elif not answer.body.endswith(b"\n") or not ctype.startswith("text/plain"):
            return f"{answer.status} not sent as http.Error sends it: {ctype!r}: {request!r}"
        if answer.status == 500 and not error["error"].startswith("listen tcp"):
            return f"500 that is not a listen failure: {error['error']!r}: {request!r}"
    if shape == "json" and answer.status in (200, 201):
        try:
            json.loads(answer.body)
        except ValueError:
            return f"{answer.status} body is not JSON: {answer.body[:200]!r}: {request!r}"
    return None


# Sending ------------------------------------------------------------------------------

def send(url: str, request: FuzzRequest) -> Answer | None:
    """``request`` on a fresh connection (http.client sends the method as written); None
    when no answer came within TIMEOUT_S."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    headers = {"User-Agent": "Mozilla/5.0 (X11)" if request.browser else "connchaos-fuzz"}
    try:
        conn.request(request.method, request.path, body=request.body, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    except TimeoutError:
        return None
    finally:
        conn.close()


class Echo:
    """An echo server on 127.0.0.1, one thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()


def traffic_flows(url: str, upstream: str, name: str = "fuzz-after") -> bool:
    """A proxy made through the API carries 64 KiB to ``upstream`` (an echo) and back."""
    body = json.dumps({"name": name, "listen": f"{HOST}:0", "upstream": upstream}).encode()
    made = send(url, FuzzRequest("POST", "/proxies", body))
    if made is None or made.status != 201:
        return False
    listen = json.loads(made.body)["listen"]
    payload = bytes(range(256)) * 256
    try:
        host, _, port = listen.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            got = bytearray()
            while len(got) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        return bytes(got) == payload
    except OSError:
        return False
    finally:
        send(url, FuzzRequest("DELETE", f"/proxies/{name}"))


class ServerProcess:
    """``python -m harness.proxy.server`` on a free port, its stderr kept in a file."""

    def __init__(self) -> None:
        self._log: IO[str] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix="connchaos-fuzz-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.proxy.server", "--host", HOST, "--port", "0"],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if READY not in line:
            self.stop()
            raise RuntimeError(f"the proxy server did not start: {line!r}")
        self.url = line.split(" on ", 1)[1]
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        self.address = (host, int(port))
        self.rss_at_start = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def handler_failures(self) -> list[str]:
        """Requests whose handler raised (answered 500 by the catch-all): the log line and
        the exception's last line."""
        lines = Path(self._log.name).read_text().splitlines()
        found = []
        for index, line in enumerate(lines):
            if "API request" in line and line.endswith("failed"):
                rest = [text for text in lines[index + 1:index + 60] if text and text[0] != " "
                        and not text.startswith("Traceback")]
                found.append(f"{line}: {rest[0] if rest else '?'}")
        return found

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# The run ------------------------------------------------------------------------------

@dataclass
class Figures:
    sent: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    hangs: int = 0
    crashes: list[str] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    traffic: bool = False
    seconds: float = 0.0


def run(requests: int, seed: int, log: Any = None) -> Figures:
    """Send ``requests`` random requests to a fresh server and gather the figures."""
    figures = Figures()
    echo = Echo()
    started = time.monotonic()
    try:
        with ServerProcess() as server:
            api = f"{server.address[0]}:{server.address[1]}"
            figures.rss_before_kib = server.rss_kib()
            rng = random.Random(seed)
            for index in range(requests):
                request = random_request(rng, echo.address, api)
                figures.sent += 1
                try:
                    answer = send(server.url, request)
                except (OSError, http.client.HTTPException) as exc:
                    figures.wrong.append(f"connection failed ({exc}): {request!r}")
                    continue
                if answer is None:
                    figures.hangs += 1
                else:
                    figures.by_class[f"{answer.status // 100}xx"] += 1
                    if answer.status >= 500:
                        detail = answer.body.decode("utf-8", "replace").strip()[:120]
                        figures.server_errors[f"{answer.status} {detail}"] += 1
                problem = check_answer(request, answer)
                if problem is not None:
                    figures.wrong.append(problem)
                if not server.alive():
                    figures.crashes.append(f"the server exited ({server.proc.returncode}) "
                                           f"after request {index + 1}: {request!r}")
                    break
                if log is not None and (index + 1) % 1000 == 0:
                    log(f"{index + 1} requests, RSS {server.rss_kib()} KiB")
            if server.alive():
                figures.traffic = traffic_flows(server.url, echo.address)
                figures.rss_after_kib = server.rss_kib()
            figures.crashes += server.handler_failures()
    finally:
        echo.close()
    figures.seconds = time.monotonic() - started
    return figures


def report(figures: Figures) -> tuple[list[str], bool]:
    lines = [f"requests sent          {figures.sent} in {figures.seconds:.1f} s",
             "by status class        " + ", ".join(
                 f"{name} {count}" for name, count in sorted(figures.by_class.items())),
             f"5xx                    {sum(figures.server_errors.values())}"]
    for what, count in figures.server_errors.most_common():
        lines.append(f"    {count:5d} x {what}")
    lines += [f"not as Toxiproxy       {len(figures.wrong)}"]
    lines += [f"    {problem[:300]}" for problem in figures.wrong[:10]]
    lines += [f"hangs (> {TIMEOUT_S:g} s)         {figures.hangs}",
              f"crashes                {len(figures.crashes)}"]
    lines += [f"    {crash[:300]}" for crash in figures.crashes[:10]]
    lines += [f"server RSS             {figures.rss_before_kib / 1024:.1f} MiB before, "
              f"{figures.rss_after_kib / 1024:.1f} MiB after",
              f"traffic afterwards     {'flows' if figures.traffic else 'BROKEN'}"]
    ok = (not figures.wrong and not figures.hangs and not figures.crashes and figures.traffic)
    return lines, ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzing and print the figures; 0 when every answer was Toxiproxy's."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000, metavar="N",
                        help="random requests to send (default 5000)")
    parser.add_argument("--seed", type=int, default=15, help="seed of the generator")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    lines, ok = report(run(args.requests, args.seed, log))
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
