"""PostgreSQL, started from the machine's server binaries inside the lab's server namespace.

A fresh cluster (initdb) lives in the lab's ``connchaos-`` temporary folder. Every scenario
setting is passed to the server with ``-c`` after checking it as the server would, before
anything starts: against its own list of settings (``postgres --describe-config``) and by its
own parsing (``postgres -C``). Clients are trusted only from the lab's client
network; the harness itself talks to the server through its Unix socket, a path no network
fault can cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg

from harness.core.prediction import Prediction, SocketSettings
from harness.errors import LabError, MachineError
from harness.faults.base import Flow
from harness.lab import naming
from harness.lab.processes import run_whole, stop_process, wait_ready
from harness.lab.server import ServerProcess, ServerSpec, as_account
from harness.scenario.model import Scenario
from harness.targets.base import LabView, Scalar, ServerError, Session

USER = "connchaos"
CHANNEL = "connchaos_in_flight"
# The lab decides these; a scenario setting them would cut the harness off from its target.
RESERVED = {"listen_addresses", "port", "unix_socket_directories", "unix_socket_group",
            "unix_socket_permissions", "data_directory", "config_file", "hba_file",
            "ident_file", "external_pid_file", "logging_collector", "log_destination",
            "log_line_prefix", "log_timezone"}
_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d|B|kB|MB|GB|TB)?\s*$")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[(\d+)\] \w+:\s+"
                  r"(could not (?:receive|send) data (?:from|to) client: .*|unexpected EOF.*)$")


STREAM_ROW_BYTES = 8192
STREAM_BYTES = 800 * 1024 * 1024
"""What a slow reader asks for: far more than a client's receive window (at most
net.ipv4.tcp_rmem's, 6 MiB) and the server's send buffer (tcp_wmem, 4 MiB) hold."""
STREAM_QUERY = (f"COPY (SELECT repeat('x', {STREAM_ROW_BYTES}) FROM generate_series(1,"
                f" {STREAM_BYTES // STREAM_ROW_BYTES})) TO STDOUT")

_BOOLEAN_WORDS = {"on", "off", "true", "false", "yes", "no", "1", "0"}

def find_bindir() -> str | None:
    """The folder holding ``postgres`` and ``initdb``: $CONNCHAOS_PG_BINDIR, Debian's
    /usr/lib/postgresql/<newest>/bin, or the PATH."""
    env = os.environ.get("CONNCHAOS_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(re.sub(r"\D", "", p.split("/")[-2]) or 0), reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for d in candidates:
        if os.access(os.path.join(d, "postgres"), os.X_OK) and os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


def require_bindir() -> str:
    found = find_bindir()
    if found is None:
        raise MachineError("PostgreSQL server binaries (postgres, initdb)",
                           "apt-get install postgresql, or set CONNCHAOS_PG_BINDIR")
    return found


@functools.lru_cache(maxsize=4)
def known_settings(bindir: str) -> dict[str, tuple[str, str, str]]:
    """name -> (type, min, max) from ``postgres --describe-config`` (needs no cluster)."""
    out = subprocess.run([os.path.join(bindir, "postgres"), "--describe-config"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) >= 7:
            found[cols[0]] = (cols[3], cols[5], cols[6])
    return found


def _check_value(kind: str, lo: str, hi: str, value: Scalar) -> str | None:
    """Why ``value`` does not fit a setting of type ``kind``, or None."""
    if kind == "BOOLEAN":
        if isinstance(value, bool) or str(value).lower() in _BOOLEAN_WORDS:
            return None
        return f"expected a boolean (on/off); got {value!r}"
    if kind in ("INTEGER", "REAL"):
        if isinstance(value, bool):
            return f"expected a number; got {value!r}"
        if isinstance(value, (int, float)):
            if kind == "INTEGER" and isinstance(value, float) and not value.is_integer():
                return f"expected a whole number; got {value!r}"
            if lo and hi and not float(lo) <= value <= float(hi):
                return f"expected a number from {lo} to {hi}; got {value!r}"
            return None
        if _UNIT.match(str(value)):
            return None
        return f"expected a number, optionally with a unit like 5s or 500ms; got {value!r}"
    return None


_FATAL = re.compile(r"^.*?\b(FATAL|HINT|DETAIL):\s+(.*)$")


def _server_says(stderr: str) -> str:
    """The server's FATAL message with its HINT and DETAIL, without the log line prefix."""
    parts = [m.group(2).strip() for m in map(_FATAL.match, stderr.splitlines()) if m]
    return " ".join(p if p.endswith(".") else p + ";" for p in parts).rstrip(";") or stderr.strip()[-300:]


def _ask_server(bindir: str, datadir: str, user: str | None,
                settings: Sequence[tuple[str, str]]) -> str | None:
    """Start ``postgres -C port`` with ``settings``: it parses every ``-c`` as a start does,
    prints one value and exits; None when it takes them all, else what it says."""
    argv = [*(as_account(user) if user else []), os.path.join(bindir, "postgres"), "-D", datadir,
            "-C", "port"]
    for name, value in settings:
        argv += ["-c", f"{name}={value}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=datadir, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not ask the server: {exc}"
    return None if done.returncode == 0 else _server_says(done.stderr)


@functools.lru_cache(maxsize=64)
def server_refuses(bindir: str, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The settings the server itself refuses, each with its words (``postgres -C``, which
    runs the server's own parsing and checks without a cluster: an empty configuration in a
    scratch folder, removed again). One start for all of them; one each only when that
    start fails. Root asks as the account PostgreSQL runs as."""
    from harness.lab import owner

    user = server_account().pw_name if os.geteuid() == 0 else None
    # a folder with an owner record: a check cut short leaves what `clean` can remove
    folder = owner.make_folder(naming.new_lab_id(), purpose="postgres settings check")
    try:
        datadir = os.path.join(folder, "data")
        os.makedirs(datadir, mode=0o700)
        open(os.path.join(datadir, "postgresql.conf"), "w").close()
        if user:
            account = pwd.getpwnam(user)
            for path in (datadir, os.path.join(datadir, "postgresql.conf")):
                os.chown(path, account.pw_uid, account.pw_gid)
        if _ask_server(bindir, datadir, user, settings) is None:
            return {}
        found = {}
        for name, value in settings:
            why = _ask_server(bindir, datadir, user, [(name, value)])
            if why is not None:
                found[name] = why
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pg_seconds(value: Scalar | None, base_s: float) -> float | None:
    """A PostgreSQL time setting in seconds; ``base_s`` is its unit without a suffix."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) * base_s
    m = _UNIT.match(str(value))
    if not m:
        return None
    return float(m.group(1)) * (_SECONDS.get(m.group(2), base_s) if m.group(2) else base_s)


def _pg_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def server_account() -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root: use the ``postgres`` account, else ``nobody``."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise MachineError("a non-root account to run PostgreSQL as (postgres or nobody)")


@dataclass
class PostgresTarget:
    """A PostgreSQL server with the scenario's settings."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    sessions: int = 20
    listen_for_in_flight: bool = False
    port: int = 5432
    image: str | None = None        # the user's own image (docker backend); None = ours
    trust_server: bool = False      # also trust the server's own address (a tier in front of it)
    service: ClassVar[str] = "postgres"
    needs_process: ClassVar[bool] = True
    console_db: ClassVar[str] = "postgres"        # the database the harness's own connection uses
    stop_signal: ClassVar[int] = signal.SIGINT   # the server's fast shutdown
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _admin: psycopg.Connection[Any] | None = field(default=None, init=False, repr=False)
    _log_path: str = field(default="", init=False, repr=False)
    _logs_at_stop: str = field(default="", init=False, repr=False)
    _sockdir: str = field(default="", init=False, repr=False)   # or the server's address
    _server_addr: str = field(default="", init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Scenario) -> PostgresTarget:
        return cls(settings=dict(spec.target.settings), sessions=spec.sessions.count,
                   listen_for_in_flight=spec.sessions.activity == "in-flight",
                   image=spec.target.image)

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """Each setting as the server takes it: the lab's own refused, numbers and booleans
        against ``--describe-config``'s types and bounds (our wording), then every value the
        server itself parses (``server_refuses``: enums, strings, settings that list leaves
        out such as ``application_name``), before anything starts."""
        bindir = find_bindir()
        problems = []
        known = known_settings(bindir) if bindir else {}
        to_ask: dict[str, str] = {}
        for name, value in settings.items():
            if name.lower() in RESERVED:     # the server's names are not case-sensitive
                problems.append((name, "is set by connchaos to run the lab; remove it"))
                continue
            if "\0" in name or "\0" in _pg_text(value):
                problems.append((name, "contains a NUL character, which no setting can hold"))
                continue
            if not known:
                continue  # no server binaries to ask; a run stops with exit 3 anyway
            if name in known:
                why = _check_value(*known[name], value)
                if why:
                    problems.append((name, why))
                    continue
            to_ask[name] = _pg_text(value)
        refused = server_refuses(bindir, tuple(to_ask.items())) if bindir and to_ask else {}
        for name, why in refused.items():
            if why.startswith("unrecognized configuration parameter"):
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                why = f"PostgreSQL has no setting {name!r}{hint}"
            problems.append((name, why))
        order = list(settings)
        return sorted(problems, key=lambda p: order.index(p[0]))

    def socket_settings(self) -> SocketSettings:
        """PostgreSQL turns SO_KEEPALIVE on for every TCP client; 0 means the OS default."""
        def positive(v: float | None) -> float | None:
            return v if v else None
        count = self.settings.get("tcp_keepalives_count")
        return SocketSettings(
            keepalive=True,
            idle_s=positive(pg_seconds(self.settings.get("tcp_keepalives_idle"), 1.0)),
            interval_s=positive(pg_seconds(self.settings.get("tcp_keepalives_interval"), 1.0)),
            count=int(count) if count and not isinstance(count, bool) and int(count) > 0 else None,
            user_timeout_s=positive(pg_seconds(self.settings.get("tcp_user_timeout"), 1e-3)),
        )

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        """PostgreSQL has no heartbeat of its own toward idle clients."""
        return None, None

    def describe_settings(self) -> dict[str, Scalar]:
        names = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                 "tcp_user_timeout")
        shown: dict[str, Scalar] = {n: 0 for n in names}
        shown.update(self.settings)
        return shown

    # -- running ----------------------------------------------------------------------------

    def _fixed(self) -> dict[str, str]:
        """What the lab sets; the scenario's settings come after (and cannot name these)."""
        return {"port": str(self.port), "log_line_prefix": "%m [%p] ", "log_timezone": "UTC",
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "max_connections": str(max(100, self.sessions + 20))}

    def _options(self, fixed: Mapping[str, str]) -> list[str]:
        argv = []
        for name, value in {**fixed, **{k: _pg_text(v) for k, v in self.settings.items()}}.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self, lab: LabView) -> None:
        image = lab.image_for("postgres", self.image)
        if image is not None:
            self._start_image(lab, image)
            return
        bindir = require_bindir()
        user = server_account()
        base = os.path.join(lab.tmpdir, "postgres")
        data, self._sockdir = os.path.join(base, "data"), os.path.join(base, "sock")
        for d in (base, self._sockdir):
            os.makedirs(d, mode=0o700)
            os.chown(d, user.pw_uid, user.pw_gid)
        # initdb's bootstrap backend writes the data folder: interrupted, it must be gone
        # before the lab's folder is removed (run_whole waits for its whole group)
        init = run_whole([*as_account(user.pw_name), os.path.join(bindir, "initdb"), "-D", data,
                          "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"], cwd=base)
        if init.returncode != 0:
            raise LabError("initdb", (init.stderr or init.stdout).strip()[-800:])
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            # only the harness (Unix socket in a private folder), the lab's client network and
            # the lab's proxy (sessions at the proxy layer arrive from the router), and a
            # tier in front of it in the server's own namespace (service: haproxy)
            f.write(f"local all all trust\nhost all all {naming.CLIENT_NET} trust\n"
                    f"host all all {naming.ROUTER_SERVER_ADDR}/32 trust\n"
                    f"host all all {lab.server_addr}/32 trust\n")

        argv = [os.path.join(bindir, "postgres"), "-D", data, *self._options(
            {"listen_addresses": lab.server_addr, "unix_socket_directories": self._sockdir,
             **self._fixed()})]
        self._log_path = os.path.join(base, "server.log")
        self._proc = lab.start_server(ServerSpec("postgres", tuple(argv), log=self._log_path,
                                                 user=user.pw_name))
        lab.on_close("postgres", self.stop)
        self._admin = self._wait_ready()

    def _start_image(self, lab: LabView, image: str) -> None:
        """The official image's interface (ours has the same): it initialises the data folder
        on first start and runs ``postgres -c ...``."""
        # The harness talks to it over TCP, from this machine's side of the server's bridge
        # (a socket folder mounted from the lab's would become the image's postgres user's,
        # sticky: a harness without root could not delete it again).
        self._sockdir = lab.server_addr
        self._proc = lab.start_server(ServerSpec(
            "postgres", ("postgres", *self._options({"listen_addresses": "*", **self._fixed()})),
            image=image, keep_entrypoint=True,
            env={"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_USER": USER}))
        lab.on_close("postgres", self.stop)
        # The image's first start runs a temporary server on the socket only (initdb, init
        # scripts); the real one is up once it listens on TCP.
        wait_ready(self._proc, lambda: lab.reach.listening(self.port), step="starting postgres",
                   what="the postgres container", log=self.log_tail, timeout_s=60)
        self._admin = self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> psycopg.Connection[Any]:
        """The harness's own connection (to ``console_db``), once the server answers."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LabError(f"starting {self.service}", self.log_tail() or "it exited")
            try:
                return psycopg.connect(host=self._sockdir, port=self.port, user=USER,
                                       dbname=self.console_db, autocommit=True, connect_timeout=2)
            except psycopg.OperationalError as exc:
                last = str(exc)
                time.sleep(0.05)
        raise LabError(f"starting {self.service}", f"not ready after {timeout_s:.0f} s: {last}")

    def _log_lines(self) -> list[str]:
        """The server's log: its file, or its container's output."""
        return self._proc.logs().splitlines(keepends=True) if self._proc is not None else []

    def log_tail(self, lines: int = 15) -> str:
        return "".join(self._log_lines()[-lines:]).strip()

    def stop(self) -> None:
        """Fast shutdown (``stop_signal``), then SIGKILL if it lingers."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        proc, self._proc = self._proc, None
        stop_process(proc, self.stop_signal)
        if proc is not None:
            self._logs_at_stop = proc.logs()

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        dest_host, dest_port = via or (lab.server_addr, self.port)
        try:
            conn = await psycopg.AsyncConnection.connect(
                host=dest_host, port=dest_port, user=USER, dbname="postgres",
                autocommit=True, connect_timeout=10, application_name=f"connchaos-{index}")
            if self.listen_for_in_flight:
                await conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise LabError(f"opening session {index}", str(exc).strip()) from exc
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
            addr, port = s.getsockname()[:2]
        self._server_addr = lab.server_addr
        return Session(id=index, flow=Flow(addr, port, dest_host, dest_port),
                       pid=conn.info.backend_pid, handle=conn, opened_at=time.time())

    def server_addr_of(self, session: Session) -> str:
        """The address the server listens on (a session through a proxy connects elsewhere)."""
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """Who the server thinks the session's client is (pg_stat_activity), for sessions
        that reach it through a proxy."""
        assert self._admin is not None
        row = self._admin.execute("SELECT host(client_addr), client_port FROM pg_stat_activity"
                                  " WHERE pid = %s", (session.pid,)).fetchone()
        return (row[0], int(row[1])) if row and row[0] else None

    async def close_session(self, session: Session) -> None:
        with contextlib.suppress(TimeoutError, psycopg.Error, OSError):
            await asyncio.wait_for(session.handle.close(), 2)

    async def alive(self, session: Session, timeout_s: float = 5.0) -> tuple[bool, str]:
        async def select_one() -> Any:
            cur = await session.handle.execute("SELECT 1")
            return await cur.fetchone()

        # Not wait_for: on cancellation psycopg asks the server to cancel and then waits for
        # the result again, which on a dead connection may never come. Stop waiting instead.
        task = asyncio.ensure_future(select_one())
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            return False, f"no answer to SELECT 1 within {timeout_s:g} s"
        try:
            row = task.result()
        except psycopg.Error as exc:
            return False, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (row == (1,)), f"SELECT 1 -> {row}"

    async def request_stream(self, session: Session) -> None:
        """Ask for ``STREAM_BYTES`` (``COPY ... TO STDOUT``) and return once the query is
        sent, reading none of the answer (``slow-reader``): the backend streams until the
        client's window and its own send buffer are full, then blocks in its send."""
        pgconn = session.handle.pgconn
        pgconn.send_query(STREAM_QUERY.encode())
        while pgconn.flush():   # a nonblocking connection may keep part of the query
            await asyncio.sleep(0.001)

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """One NOTIFY: every listening backend sends it to its client at once."""
        assert self._admin is not None
        self._admin.execute(f"SELECT pg_notify('{CHANNEL}', repeat('x', 4000))")

    def logged(self, pattern: re.Pattern[str]) -> Iterator[tuple[float, re.Match[str]]]:
        """Each line of the server's log (or of its last run's) that ``pattern`` matches,
        with the time its group 1 says (``%Y-%m-%d %H:%M:%S.%f``, UTC)."""
        for line in self._log_lines() or self._logs_at_stop.splitlines():
            m = pattern.match(line.rstrip("\n"))
            if m:
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
                yield at.timestamp(), m

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        found: dict[int | tuple[str, int], ServerError] = {}
        for at, m in self.logged(_LOG):
            text = m.group(3)
            kind = ("timeout" if "timed out" in text else "reset" if "reset by peer" in text
                    else "eof" if "EOF" in text else text)
            found.setdefault(int(m.group(2)), ServerError(at, kind, text))
        return found
