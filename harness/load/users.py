"""The Locust file of load runs: one User class per service, each holding ONE long-lived session.

Locust imports this file in its own processes (``locust -f harness/load/users.py ...``),
after gevent has monkey-patched the standard library: sockets, psycopg's waits (psycopg 3
sees the patch and waits cooperatively) and the websockets sync client's background thread
all become greenlets. Nothing here may run inside the harness's asyncio process.

What a user does, configured by environment variables (``harness.load.locust`` sets them):

- on start, opens its session (postgres, websocket, ssh or raw tcp) (reported to Locust's
  statistics as ``open``) and writes an ``opened`` line with its client address to the events file;
- then holds it: idle, or one small request every ``CONNCHAOS_LOAD_EVERY`` seconds
  (``SELECT 1``, a WebSocket message and its echo, a byte and its echo), each reported as
  ``request``; a request that fails or takes longer than ``CONNCHAOS_LOAD_TIMEOUT`` breaks
  the session: reported as a failure, written as ``broken``, never reopened;
- on SIGUSR1 (the harness asking, once the observation is over), every user still holding
  its session makes one more request, reported as ``alive-check`` and written as ``check``:
  this is how the harness learns from the real clients that the survivors still work.

The events file (``CONNCHAOS_LOAD_EVENTS/events-<pid>.jsonl``) is per process, one JSON
object a line: ``{"at": time.time(), "what": ..., "client": "addr:port", "ok": bool,
"detail": ...}``. Locust's statistics aggregate by name; the harness needs each session by
its address, which only this file gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import time
from typing import Any, ClassVar, TextIO

import gevent
import gevent.event
from locust import User, task

EVENTS_FOLDER = os.environ.get("CONNCHAOS_LOAD_EVENTS", "")
HOST = os.environ.get("CONNCHAOS_LOAD_HOST", "127.0.0.1")
PORT = int(os.environ.get("CONNCHAOS_LOAD_PORT", "0") or 0)
EVERY = float(os.environ["CONNCHAOS_LOAD_EVERY"]) if os.environ.get("CONNCHAOS_LOAD_EVERY") else None
TIMEOUT = float(os.environ.get("CONNCHAOS_LOAD_TIMEOUT", "10"))
CHECK_TIMEOUT = float(os.environ.get("CONNCHAOS_LOAD_CHECK_TIMEOUT", "5"))
# Opening thousands at once on a small machine queues SYNs and handshakes: allow longer.
OPEN_TIMEOUT = float(os.environ.get("CONNCHAOS_LOAD_OPEN_TIMEOUT", "30"))

CHECK = gevent.event.Event()
"""Set by SIGUSR1: every user still holding its session checks it once."""

QUIET: set[str] = set()
"""The sessions (client addresses) that stop their activity: read from ``quiet.txt`` in the
events folder on SIGUSR2 (a fault that makes sessions idle, as behind an expiring NAT)."""


def _raise_file_limit() -> None:
    # One descriptor per session: thousands of them need the hard limit, not the usual 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _read_quiet() -> None:
    with contextlib.suppress(OSError), open(os.path.join(EVENTS_FOLDER, "quiet.txt")) as f:
        QUIET.update(line.strip() for line in f if line.strip())


_raise_file_limit()
gevent.signal_handler(signal.SIGUSR1, CHECK.set)
gevent.signal_handler(signal.SIGUSR2, _read_quiet)


class RequestTimeout(Exception):
    """A request took longer than CONNCHAOS_LOAD_TIMEOUT."""


class _Events:
    """This process's events file, opened on first use (the master process never writes)."""

    def __init__(self) -> None:
        self._file: TextIO | None = None

    def write(self, what: str, client: str, ok: bool = True, detail: str = "") -> None:
        if not EVENTS_FOLDER:
            return
        if self._file is None:
            path = os.path.join(EVENTS_FOLDER, f"events-{os.getpid()}.jsonl")
            # kept open for the user's life; line-buffered: read while running
            self._file = open(path, "a", buffering=1)  # noqa: SIM115
        self._file.write(json.dumps({"at": time.time(), "what": what, "client": client,
                                     "ok": ok, "detail": detail}) + "\n")


EVENTS = _Events()


def _address(sock: socket.socket) -> str:
    addr, port = sock.getsockname()[:2]
    return f"{addr}:{port}"


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:200]


class SessionUser(User):
    """One session held open: open on start, the activity pattern, a check on SIGUSR1.

    Subclasses say how to ``connect`` (returning the handle and the client address),
    ``exchange`` (one small request, returning the bytes received) and ``close``.
    """

    abstract = True
    protocol: ClassVar[str] = "session"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.handle: Any = None
        self.client = ""
        self.broken = ""         # why the session broke; empty while it works

    # -- what subclasses provide ------------------------------------------------------------

    def connect(self) -> tuple[Any, str]:
        raise NotImplementedError

    def exchange(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the session's life -----------------------------------------------------------------

    def _report(self, name: str, started: float, exc: BaseException | None, length: int = 0) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol, name=name, response_length=length, exception=exc,
            response_time=(time.perf_counter() - started) * 1000, context={})

    def on_start(self) -> None:
        started = time.perf_counter()
        try:
            with gevent.Timeout(OPEN_TIMEOUT, RequestTimeout(f"no session within {OPEN_TIMEOUT:g} s")):
                self.handle, self.client = self.connect()
        except Exception as exc:
            self._report("open", started, exc)
            self.broken = _why(exc)
            EVENTS.write("open-failed", "", ok=False, detail=self.broken)
            return
        self._report("open", started, None)
        EVENTS.write("opened", self.client)

    def _request(self, name: str) -> bool:
        started = time.perf_counter()
        timeout = CHECK_TIMEOUT if name == "alive-check" else TIMEOUT
        try:
            with gevent.Timeout(timeout, RequestTimeout(f"no answer within {timeout:g} s")):
                length = self.exchange()
        except Exception as exc:
            self._report(name, started, exc)
            self.broken = _why(exc)
            kind = "timeout" if isinstance(exc, RequestTimeout) else "closed"
            EVENTS.write("broken", self.client, ok=False, detail=f"{kind}: {self.broken}")
            return False
        self._report(name, started, None, length)
        return True

    @task
    def hold(self) -> None:
        """Runs for the user's whole life: requests on the activity's clock until the check."""
        # spread the first request over one period: users spawned together must not beat together
        next_at = time.monotonic() + (random.uniform(0, EVERY) if EVERY else 0.0)
        while not CHECK.is_set():
            if self.broken or EVERY is None:
                CHECK.wait()
                break
            if CHECK.wait(max(0.0, next_at - time.monotonic())):
                break
            if self.client not in QUIET:    # a quiet session is idle from now on, until the check
                self._request("request")
            next_at += EVERY
        if self.broken:
            EVENTS.write("check", self.client, ok=False, detail=f"broken earlier: {self.broken}")
        elif self._request("alive-check"):
            EVENTS.write("check", self.client, ok=True)
        else:
            EVENTS.write("check", self.client, ok=False, detail=self.broken)
        while True:   # hold on until Locust stops the user
            gevent.sleep(3600)

    def on_stop(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):  # the run is over; a dead session may not close cleanly
                self.close()
            self.handle = None


class PostgresUser(SessionUser):
    """A psycopg 3 connection; the request is ``SELECT 1``."""

    protocol = "postgres"

    def connect(self) -> tuple[Any, str]:
        import psycopg

        conn = psycopg.connect(host=HOST, port=PORT, dbname="postgres",
                               user=os.environ.get("CONNCHAOS_LOAD_PG_USER", "connchaos"),
                               autocommit=True, connect_timeout=max(1, int(OPEN_TIMEOUT)),
                               application_name="connchaos-load")
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
            return conn, _address(s)

    def exchange(self) -> int:
        row = self.handle.execute("SELECT 1").fetchone()
        if row != (1,):
            raise ValueError(f"SELECT 1 gave {row!r}")
        return 1

    def close(self) -> None:
        self.handle.close()


class PgbouncerUser(PostgresUser):
    """A psycopg 3 connection through pgbouncer, holding its server: pgbouncer links one at
    a client's first query, so the session runs ``SELECT 1`` once it is open."""

    protocol = "pgbouncer"

    def connect(self) -> tuple[Any, str]:
        conn, address = super().connect()
        try:
            row = conn.execute("SELECT 1").fetchone()
            if row != (1,):
                raise ValueError(f"SELECT 1 gave {row!r}")
        except Exception:
            conn.close()
            raise
        return conn, address


class WebSocketUser(SessionUser):
    """A websockets sync client; the request is a message and its echo."""

    protocol = "websocket"
    _sent = 0

    def connect(self) -> tuple[Any, str]:
        from websockets.sync.client import connect

        # no client pings (the server's heartbeat is what is measured), no proxy from the
        # environment, no compression (its buffers cost more than the session itself)
        ws = connect(f"ws://{HOST}:{PORT}{os.environ.get('CONNCHAOS_LOAD_WS_PATH', '/connchaos/load')}",
                     ping_interval=None, proxy=None, compression=None, open_timeout=OPEN_TIMEOUT,
                     close_timeout=0.5, max_queue=None)
        return ws, _address(ws.socket)

    def exchange(self) -> int:
        self._sent += 1
        token = f"connchaos-load-{self._sent}"
        self.handle.send(token)
        while (message := self.handle.recv()) != token:
            pass   # skip what the server sent on its own
        return len(message)

    def close(self) -> None:
        self.handle.close()


class TcpUser(SessionUser):
    """A raw TCP connection; the request is a byte and its echo, so ``every`` needs an
    echoing service."""

    protocol = "tcp"

    def connect(self) -> tuple[Any, str]:
        sock = socket.create_connection((HOST, PORT), timeout=OPEN_TIMEOUT)
        sock.settimeout(None)
        return sock, _address(sock)

    def exchange(self) -> int:
        self.handle.sendall(b".")
        data = self.handle.recv(1)
        if not data:
            raise ConnectionError("closed by the server")
        return len(data)

    def close(self) -> None:
        self.handle.close()



class SshUser(SessionUser):
    """An SSH connection with one channel running ``cat`` (paramiko, whose transport thread
    is a greenlet under gevent); the request is a line and its echo. The lab's ssh target
    gives the account, its key and the server's host key (``SshTarget.load_env``)."""

    protocol = "ssh"
    _sent = 0

    def connect(self) -> tuple[Any, str]:
        import paramiko

        key = paramiko.Ed25519Key.from_private_key_file(os.environ["CONNCHAOS_LOAD_SSH_KEY"])
        sock = socket.create_connection((HOST, PORT), timeout=OPEN_TIMEOUT)
        client = _address(sock)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=OPEN_TIMEOUT)
            offered = transport.get_remote_server_key()
            if f"{offered.get_name()} {offered.get_base64()}" != os.environ["CONNCHAOS_LOAD_SSH_HOST_KEY"]:
                raise paramiko.SSHException("the server's host key is not the lab's")
            transport.auth_publickey(os.environ["CONNCHAOS_LOAD_SSH_USER"], key)
            channel = transport.open_session(timeout=OPEN_TIMEOUT)
            channel.exec_command("cat")
        except BaseException:
            transport.close()
            raise
        return (transport, channel), client

    def exchange(self) -> int:
        _, channel = self.handle
        self._sent += 1
        token = f"connchaos-load-{self._sent}\n".encode()
        channel.sendall(token)
        seen = b""
        while token not in seen:
            data = channel.recv(4096)
            if not data:
                raise ConnectionError("closed by the server")
            seen = seen[-len(token):] + data
        return len(token)

    def close(self) -> None:
        transport, _ = self.handle
        transport.close()
