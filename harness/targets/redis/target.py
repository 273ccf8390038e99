"""Redis, started from Debian's redis-server inside the lab's server namespace.

The lab's redis.conf (in the lab's ``connchaos-`` folder) binds the server's address, keeps
Redis in the foreground without persistence, logs at ``verbose`` (the lines that say why a
client went) and, on this machine, opens a unix socket in the lab's folder for the harness's
own connection, a path no network fault can cut (on docker the harness talks to it over TCP
from this machine's side of the server's bridge, as for PostgreSQL). The scenario's settings
follow, one directive a line, checked by redis-server itself before a run (``config``).

Sessions are redis-py asyncio connections, one TCP connection each, named ``connchaos-<id>``
(``CLIENT SETNAME``), without client-side keepalive. Each command connchaos sends is sent
away from a whole wall-clock second (``SAFE_FRACTION``): Redis's idle ``timeout`` counts whole
seconds, and a command just after a second boundary could be stamped with the second before
(its cached clock is up to 1/hz old), which would move the close by a whole second.

Redis's log names no client when it drops one ("Closing idle client", "Reading from client:
Connection timed out"); a watcher polls ``CLIENT LIST`` every 50 ms on the harness's own
connection and ``server_errors`` gives each line to the client that vanished around it.
With ``timeout`` set, the survivors must keep talking or Redis closes them too: the runner
asks them a PING every ``keep_talking_s`` (the faulted sessions fall silent at the fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from harness.core.prediction import Prediction, SocketSettings
from harness.core.redis import RedisSettings, idle_close, socket_settings
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab.processes import stop_process, wait_ready
from harness.lab.server import ServerProcess, ServerSpec
from harness.targets.base import LabView, Scalar, ServerError, Session
from harness.targets.redis import config

DEFAULT_PORT = 6379
ALIVE_TIMEOUT_S = 5.0
POLL_S = 0.05
SAFE_FRACTION = (0.15, 0.85)
"""Where in its wall-clock second a session's command may go (see the module docstring)."""
# "12345:M 03 Dec 2026 17:27:06.069 - Closing idle client"
_LOG = re.compile(r"^\d+:[A-Z] (\d\d \w{3} \d{4} \d\d:\d\d:\d\d\.\d{3}) [-.*#] (.*)$")
_ADDR = re.compile(r"\baddr=([0-9.]+):(\d+)\b")


def _kind(text: str) -> str | None:
    """The kind of a log line about a client going, None for other lines."""
    if text.startswith("Closing idle client"):
        return "heartbeat"       # Redis's own idle reclaim (timeout), not a kernel timer
    if text.startswith("Reading from client:") or text.startswith("Error writing to client:"):
        low = text.lower()
        return "timeout" if "timed out" in low else "reset" if "reset by peer" in low else text
    if text.startswith("Client closed connection"):
        return "eof"
    return None


def _account() -> pwd.struct_passwd | None:
    """Debian's ``redis`` account, which its package runs the server as; None: as we are."""
    try:
        return pwd.getpwnam("redis")
    except KeyError:
        return None


async def until_safe_fraction(now: Any = time.time) -> None:
    """Wait until the wall clock is inside ``SAFE_FRACTION`` of its second."""
    frac = now() % 1
    lo, hi = SAFE_FRACTION
    if not lo <= frac < hi:
        await asyncio.sleep((lo - frac) % 1)


def tcp_clients(listed: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], str]:
    """``CLIENT LIST``'s TCP clients (as redis-py parses it): (addr, port) -> name."""
    found = {}
    for fields in listed:
        addr, _, port = str(fields.get("addr", "")).rpartition(":")
        if addr and port.isdigit() and not addr.startswith("/"):
            found[(addr, int(port))] = str(fields.get("name", ""))
    return found


@dataclass
class _Vanished:
    last_seen: float
    missed_at: float


@dataclass
class RedisTarget:
    """A redis-server with the scenario's settings."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    sessions: int = 20
    port: int = DEFAULT_PORT
    image: str | None = None
    service: ClassVar[str] = "redis"
    needs_process: ClassVar[bool] = False     # one process serves every client
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _admin: redis.Redis | None = field(default=None, init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _logs_at_stop: str = field(default="", init=False, repr=False)
    _fault_wall: float | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _watcher: threading.Thread | None = field(default=None, init=False, repr=False)
    _seen: dict[tuple[str, int], float] = field(default_factory=dict, init=False, repr=False)
    _vanished: dict[tuple[str, int], _Vanished] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Any) -> RedisTarget:
        return cls(settings=dict(spec.target.settings), sessions=spec.sessions.count,
                   image=getattr(spec.target, "image", None))

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """Each directive as redis-server reads it (see ``harness.targets.redis.config``)."""
        return config.check(settings)

    def redis_settings(self) -> RedisSettings:
        return RedisSettings.of(self.settings)

    def socket_settings(self) -> SocketSettings:
        """tcp-keepalive N: idle N, interval N/3, count 3 (anetKeepAlive)."""
        return socket_settings(self.redis_settings())

    def describe_settings(self) -> dict[str, Scalar]:
        s = self.redis_settings()
        shown: dict[str, Scalar] = {"tcp-keepalive": s.tcp_keepalive_s, "timeout": s.timeout_s, "hz": s.hz}
        shown.update(self.settings)
        return shown

    def clients(self) -> int:
        """The clients Redis holds during a run: the sessions and the harness's own one."""
        return self.sessions + 1

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        """Redis's idle ``timeout``: its close is also the first (and only) thing it sends."""
        found = idle_close(self.redis_settings(), last_activity_s=last_activity_s,
                           clients=self.clients(), fault_wall=self._fault_wall)
        return (found, found.reclaim_s) if found is not None else (None, None)

    def fault_at(self, wall: float) -> None:
        """The fault's wall-clock time (the runner's t0): it places each session's last
        activity in its whole second, which Redis's ``timeout`` counts in."""
        self._fault_wall = wall

    def keep_talking_s(self) -> float | None:
        """With ``timeout`` set, how often the survivors must talk to stay open."""
        timeout = self.redis_settings().timeout_s
        return max(0.25, timeout / 3) if timeout > 0 else None

    # -- running ----------------------------------------------------------------------------

    def _fixed(self, lab: LabView, base: str, local: bool) -> dict[str, str]:
        fixed = {"bind": lab.server_addr, "port": str(self.port), "protected-mode": "no",
                 "daemonize": "no", "dir": base, "logfile": '""', "loglevel": "verbose",
                 "save": '""', "appendonly": "no", "always-show-logo": "no"}
        if local:
            fixed.update({"unixsocket": os.path.join(base, "redis.sock"), "unixsocketperm": "700"})
        if not any(k.lower() == "maxclients" for k in self.settings):
            fixed["maxclients"] = str(max(1000, self.sessions + 50))
        return fixed

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        image = lab.image_for("redis", self.image)
        base = os.path.join(lab.tmpdir, "redis")
        os.makedirs(base, mode=0o755)
        os.chmod(base, 0o755)
        account = _account() if image is None else None
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        conf = os.path.join(base, "redis.conf")
        config.write_conf(conf, self._fixed(lab, base, image is None),
                          [(n, config.conf_text(v)) for n, v in self.settings.items()])
        env = {"TZ": "UTC"}     # the log's times are the server's local time
        if image is None:
            spec = ServerSpec("redis", (config.require_redis_server(), conf), env=env,
                              log=os.path.join(base, "server.log"),
                              user=account.pw_name if account else None)
        else:
            spec = ServerSpec("redis", ("redis-server", conf), image=image, binds={base: base},
                              env=env, user="redis" if not self.image else None)
        self._proc = lab.start_server(spec)
        lab.on_close("redis", self.stop)
        if image is None:
            admin = redis.Redis(unix_socket_path=os.path.join(base, "redis.sock"), socket_timeout=2)
        else:
            admin = redis.Redis(host=lab.server_addr, port=self.port, socket_timeout=2,
                                socket_connect_timeout=2)
        proc = self._proc

        def ready() -> bool:
            try:
                return bool(admin.ping())
            except redis.exceptions.RedisError:
                return False

        wait_ready(proc, ready, step="starting redis", what="redis-server", log=self.log_tail,
                   timeout_s=30 if image is None else 60)
        self._admin = admin
        self._watcher = threading.Thread(target=self._watch, name="connchaos-redis-clients", daemon=True)
        self._watcher.start()

    def _client_list(self) -> dict[tuple[str, int], str]:
        with self._lock:
            if self._admin is None:
                raise LabError("CLIENT LIST", "redis is not running")
            try:
                listed = self._admin.client_list()
            except redis.exceptions.RedisError as exc:
                raise LabError("CLIENT LIST", str(exc)) from exc
        return tcp_clients(listed)

    def _watch(self) -> None:
        """Which client went when, at POLL_S: Redis's log lines name none."""
        while not self._stop.wait(POLL_S):
            self._poll()

    def _poll(self) -> None:
        # the list is the server's state somewhere between asking and hearing back: a
        # sighting counts from the asking, a miss from the answer (a loaded machine's
        # round trip must not push a log line out of its client's window)
        asked = time.time()
        try:
            listed = self._client_list()
        except LabError:
            return
        now = time.time()
        with self._lock:
            for key in listed:
                self._seen[key] = asked
            for key, last in list(self._seen.items()):
                if key not in listed and key not in self._vanished:
                    self._vanished[key] = _Vanished(last, now)

    def _log_lines(self) -> list[str]:
        return self._proc.logs().splitlines() if self._proc is not None else self._logs_at_stop.splitlines()

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self._log_lines()[-lines:]).strip()

    def stop(self) -> None:
        """SIGTERM (Redis's own shutdown: no save here), then SIGKILL if it lingers."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
            self._watcher = None
        with self._lock:
            if self._admin is not None:
                with contextlib.suppress(redis.exceptions.RedisError):
                    self._admin.close()
                self._admin = None
        proc, self._proc = self._proc, None
        stop_process(proc, signal.SIGTERM)
        if proc is not None:
            self._logs_at_stop = proc.logs()

    # -- sessions ---------------------------------------------------------------------------

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        host, port = via or (lab.server_addr, self.port)
        # No retries (a reconnect would hide a closed session), no client keepalive (the
        # server's reclaim is what is measured), no library banner (CLIENT SETINFO).
        conn = redis.asyncio.Connection(host=host, port=port, client_name=f"connchaos-{index}",
                                        socket_connect_timeout=10, socket_timeout=None,
                                        socket_keepalive=False, retry=Retry(NoBackoff(), 0),
                                        driver_info=None)
        try:
            await conn.connect()   # type: ignore[no-untyped-call]
            await until_safe_fraction()
            await conn.send_command("PING")
            await asyncio.wait_for(conn.read_response(), 10)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            await conn.disconnect(nowait=True)
            raise LabError(f"opening redis session {index}", f"{type(exc).__name__}: {exc}") from exc
        addr, local_port = _local_address(conn)
        return Session(id=index, flow=Flow(addr, local_port, host, port), pid=None, handle=conn,
                       opened_at=time.time())

    async def close_session(self, session: Session) -> None:
        conn = session.handle
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            writer.transport.abort()
        with contextlib.suppress(Exception):   # closing a dead session must not fail the run
            await asyncio.wait_for(conn.disconnect(nowait=True), 1)

    async def alive(self, session: Session, timeout_s: float = ALIVE_TIMEOUT_S) -> tuple[bool, str]:
        """A PING and its PONG on the session's own connection (never a new one)."""
        conn = session.handle
        if not conn.is_connected:
            return False, "the connection was closed"
        await until_safe_fraction()
        try:
            async with asyncio.timeout(timeout_s):
                await conn.send_command("PING")
                answer = await conn.read_response()
        except TimeoutError:
            return False, f"no PONG within {timeout_s:g} s"
        except (redis.exceptions.RedisError, OSError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        own = (session.flow.client_addr, session.flow.client_port)
        if not conn.is_connected or _local_address(conn) != own:
            return False, "the connection was closed"
        return answer in (b"PONG", "PONG", True), f"PING -> {answer!r}"

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        raise LabError("activity: in-flight", "redis sessions cannot be made to receive data (idle only)")

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """Who Redis sees for ``session``: its client by the session's name (CLIENT LIST)."""
        name = f"connchaos-{session.id}"
        return next((key for key, n in self._client_list().items() if n == name), None)

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Why Redis dropped each client, by its (addr, port): a line that names the client
        ("Client closed connection ... addr=..."), else the line logged while that client
        vanished from CLIENT LIST (between its last sighting and the poll that missed it)."""
        self._poll()   # a client the socket table saw go a moment ago: the poll's next turn, now
        lines: list[tuple[float, str, str]] = []
        found: dict[int | tuple[str, int], ServerError] = {}
        for line in self._log_lines():
            m = _LOG.match(line.rstrip("\n"))
            if not m or (kind := _kind(m.group(2))) is None:
                continue
            at = datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
            named = _ADDR.search(m.group(2))
            if named:
                found.setdefault((named.group(1), int(named.group(2))), ServerError(at, kind, m.group(2)))
            else:
                lines.append((at, kind, m.group(2)))
        used: set[int] = set()
        with self._lock:
            vanished = dict(self._vanished)
        for key, gone in sorted(vanished.items(), key=lambda kv: kv[1].last_seen):
            if key in found:
                continue
            for i, (at, kind, text) in enumerate(lines):
                if i not in used and gone.last_seen - 0.01 <= at <= gone.missed_at + 0.01:
                    used.add(i)
                    found[key] = ServerError(at, kind, text)
                    break
        return found


def _local_address(conn: Any) -> tuple[str, int]:
    writer = getattr(conn, "_writer", None)
    if writer is None:
        raise LabError("a redis session's address", "it is not connected")
    addr, port = writer.get_extra_info("sockname")[:2]
    return str(addr), int(port)
