"""pgbouncer in front of the lab's PostgreSQL, both in the server's network.

The backend is the postgres target itself (started the same way, with the scenario's
``backend_settings``); pgbouncer listens on the server's address, port 6432, and reaches
its backend over TCP on the server's address, so both legs of each session are sockets in
the server's table: the client leg on 6432, the upstream leg on 5432. Sessions are
PostgreSQL sessions opened through pgbouncer (the postgres target's), each running one
``SELECT 1`` so that it holds a server connection (pgbouncer links one at the first query).
The harness reads pgbouncer's own view from its admin console (``SHOW CLIENTS``, ``SHOW
SERVERS``), through a Unix socket in the lab's folder on this machine, over TCP from this
machine's side of the server's bridge on docker (as the postgres target does).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import psycopg

from harness.core.assess import SessionFacts
from harness.core.prediction import Prediction, SocketSettings
from harness.errors import LabError
from harness.lab.server import ServerSpec
from harness.scenario.model import Scenario
from harness.targets.base import LabView, Scalar, ServerError, Session, Upstream, UpstreamPrediction
from harness.targets.pgbouncer import config
from harness.targets.pgbouncer.config import Settings
from harness.targets.pgbouncer.upstream import client_idle, predict_upstream
from harness.targets.postgres import USER, PostgresTarget, server_account

CONTAINER_DIR = "/etc/connchaos-pgbouncer"     # the lab's folder for it, in its container
# "C-0x55d0...: postgres/connchaos@10.77.0.2:40112 closing because: client_idle_timeout (age=3s)"
_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] \w+ C-0x[0-9a-f]+: "
                  r"\S+@([0-9.]+):(\d+) (closing because: (.*?)|.*?(?:error|failed).*?)(?: \(age=.*)?$")


def _kind(text: str) -> str:
    if "client_idle_timeout" in text:
        return "heartbeat"     # the tier's own idle reclaim, not a kernel timer
    if "timed out" in text:
        return "timeout"
    if "reset by peer" in text:
        return "reset"
    if "unexpected eof" in text:
        return "eof"       # pgbouncer's words for any failed read, a kernel timeout's too
    return text


@dataclass
class PgbouncerTarget(PostgresTarget):
    """pgbouncer with the scenario's settings, in front of a PostgreSQL of its own."""

    port: int = 6432
    backend_settings: dict[str, Scalar] = field(default_factory=dict)
    upstream_port: int = 5432
    service: ClassVar[str] = "pgbouncer"
    needs_process: ClassVar[bool] = False   # one pgbouncer process serves every client leg
    console_db: ClassVar[str] = "pgbouncer"  # its admin console
    stop_signal: ClassVar[int] = signal.SIGTERM   # immediate shutdown (SIGINT waits for clients)
    _backend: PostgresTarget | None = field(default=None, init=False, repr=False)
    _console_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Scenario) -> PgbouncerTarget:
        return cls(settings=dict(spec.target.settings), sessions=spec.sessions.count,
                   listen_for_in_flight=spec.sessions.activity == "in-flight",
                   image=spec.target.image, backend_settings=dict(spec.target.backend_settings))

    # -- settings and prediction (the client leg) -------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """Each setting as pgbouncer takes it: the lab's own refused, then pgbouncer's own
        loading of the file (see ``harness.targets.pgbouncer.config``)."""
        return config.check(settings)

    def tier_settings(self) -> Settings:
        """The settings that decide both legs, as pgbouncer uses them."""
        return Settings.of(self.settings)

    def socket_settings(self) -> SocketSettings:
        s = self.tier_settings()
        return SocketSettings(keepalive=s.keepalive, idle_s=s.keepidle_s, interval_s=s.keepintvl_s,
                              count=s.keepcnt, user_timeout_s=s.user_timeout_s)

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        """``client_idle_timeout``, where it applies (not to session pooling's linked clients)."""
        return client_idle(self.tier_settings(), last_activity_s)

    def describe_settings(self) -> dict[str, Scalar]:
        shown = {k: v for k, v in config.DEFAULTS.items() if k != "min_pool_size"}
        shown.update(self.settings)
        return shown

    # -- the upstream leg (harness.targets.base's Tier) -------------------------------------

    def predict_upstream(self, client: Prediction | None, facts: SessionFacts) -> UpstreamPrediction:
        return predict_upstream(self.tier_settings(), client, facts)

    def upstream_settle_s(self) -> float:
        """How long after a client leg goes its upstream is watched: a short
        server_idle_timeout closes it within that and a janitor period (else it stays pooled)."""
        idle = self.tier_settings().server_idle_timeout_s
        return idle + config.JANITOR_PERIOD_S + 0.5 if 0 < idle <= 30 else 1.0

    def upstreams(self, lab: LabView,
                  clients: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Upstream]:
        """Each client leg's server connection, from ``SHOW CLIENTS`` (its ``link``) and
        ``SHOW SERVERS`` (that server's addresses and backend pid)."""
        servers = {row["ptr"]: row for row in self.show("SERVERS")}
        wanted = set(clients)
        found = {}
        for row in self.show("CLIENTS"):
            client = (row["addr"], int(row["port"]))
            server = servers.get(row["link"])
            if client in wanted and server is not None:
                pid = int(server["remote_pid"] or 0)
                found[client] = Upstream(key=(server["addr"], int(server["port"]), server["local_addr"],
                                              int(server["local_port"])), pid=pid or None)
        return found

    def pool_states(self, lab: LabView) -> dict[tuple[str, int], str]:
        """``SHOW SERVERS``: active is linked to a client; idle, used, tested are pooled."""
        return {(row["local_addr"], int(row["local_port"])):
                "linked" if row["state"] == "active" else "pooled"
                for row in self.show("SERVERS") if row["local_port"].isdigit()}

    def show(self, what: str) -> list[dict[str, str]]:
        """One ``SHOW`` of the admin console, as rows of text (simple query protocol: the
        console knows no other)."""
        with self._console_lock:
            if self._admin is None:
                raise LabError(f"SHOW {what}", "pgbouncer is not running")
            result = self._admin.pgconn.exec_(f"SHOW {what}".encode())
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                raise LabError(f"SHOW {what}", (result.error_message or b"").decode(errors="replace").strip())
            names = [(result.fname(c) or b"").decode() for c in range(result.nfields)]
            return [{n: (result.get_value(r, c) or b"").decode() for c, n in enumerate(names)}
                    for r in range(result.ntuples)]

    # -- running ----------------------------------------------------------------------------

    def _ini_fixed(self, lab: LabView, folder: str, sockdir: str) -> dict[str, str]:
        """The lab's lines; max_client_conn and default_pool_size only unless the scenario's."""
        fixed = {"listen_addr": lab.server_addr, "listen_port": str(self.port), "unix_socket_dir": sockdir,
                 "auth_type": "trust", "auth_file": f"{folder}/userlist.txt", "admin_users": USER,
                 "logfile": "", "pidfile": "", "log_connections": "1", "log_disconnections": "1"}
        for name, value in (("max_client_conn", self.sessions + 20),
                            ("default_pool_size", self.sessions + 5)):
            if name not in self.settings:
                fixed[name] = str(value)
        return fixed

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        self._backend = PostgresTarget(settings=dict(self.backend_settings), sessions=self.sessions,
                                       trust_server=True)
        self._backend.start(lab)
        image = lab.image_for("pgbouncer", self.image)
        base = os.path.join(lab.tmpdir, "pgbouncer")
        os.makedirs(base, mode=0o755)
        os.chmod(base, 0o755)     # its account reads the file (here, or in its container)
        inside = CONTAINER_DIR if image else base
        sockdir = ""
        if image is None:
            user = server_account()
            sockdir = os.path.join(base, "sock")
            os.makedirs(sockdir, mode=0o700)
            os.chown(sockdir, user.pw_uid, user.pw_gid)
        with open(os.path.join(base, "userlist.txt"), "w") as f:
            f.write(f'"{USER}" ""\n')
        os.chmod(os.path.join(base, "userlist.txt"), 0o644)
        ini = os.path.join(base, "pgbouncer.ini")
        config.write_ini(ini, self._ini_fixed(lab, inside, sockdir),
                         [(n, config.ini_text(v)) for n, v in self.settings.items()],
                         databases=[f"postgres = host={lab.server_addr} port={self.upstream_port}"
                                    " dbname=postgres"])
        if image is None:
            spec = ServerSpec("pgbouncer", (config.require_pgbouncer(), ini),
                              log=os.path.join(base, "server.log"), user=server_account().pw_name)
        else:
            spec = ServerSpec("pgbouncer", ("pgbouncer", f"{inside}/pgbouncer.ini"), image=image,
                              binds={base: inside}, user="postgres")
        self._sockdir = sockdir or lab.server_addr
        self._proc = lab.start_server(spec)
        lab.on_close("pgbouncer", self.stop)
        self._admin = self._wait_ready(timeout_s=30 if image is None else 60)

    def stop(self) -> None:
        """Its immediate shutdown; not while the observer reads the console."""
        with self._console_lock:
            super().stop()

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        """A PostgreSQL session through pgbouncer, holding its server (one SELECT 1). The
        backend pid the client is told is pgbouncer's invention: the session has none."""
        session = await super().open_session(lab, index, via)
        try:
            await session.handle.execute("SELECT 1")
        except psycopg.Error as exc:
            await self.close_session(session)
            raise LabError(f"opening session {index}", str(exc).strip()) from exc
        session.pid = None
        return session

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """Who pgbouncer thinks the session's client is: ``SHOW CLIENTS`` by the session's
        application_name (``connchaos-<id>``), for sessions through a proxy."""
        for row in self.show("CLIENTS"):
            if row["application_name"] == f"connchaos-{session.id}" and row["port"].isdigit():
                return row["addr"], int(row["port"])
        return None

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """The backend's NOTIFY reaches every listening session through pgbouncer."""
        assert self._backend is not None
        self._backend.send_in_flight(sessions)

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Why pgbouncer closed each client leg, by the client's (addr, port)."""
        found: dict[int | tuple[str, int], ServerError] = {}
        for at, m in self.logged(_LOG):
            text = m.group(5) or m.group(4)
            if text == "client close request":
                continue   # the client went in good order
            found.setdefault((m.group(2), int(m.group(3))), ServerError(at, _kind(text), text))
        return found


__all__ = ["PgbouncerTarget", "Upstream", "UpstreamPrediction"]
