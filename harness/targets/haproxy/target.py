"""``service: haproxy``: Debian's HAProxy in TCP mode in front of another target (the
scenario's ``upstream:``: websocket, tcp, postgres or ssh), both in the server's network.

The upstream is built by its own target class and started in the same lab by its own
``start``; HAProxy listens on its own port (10000) in front of it, with the scenario's
settings (``harness.targets.haproxy.config``) checked by ``haproxy -c`` before a run.
Sessions are the upstream's (its client library, its alive check), opened through HAProxy's
port: the observed sockets are the client legs, HAProxy's sockets towards the clients.
Each session's upstream leg (HAProxy's connection to the upstream) is told by HAProxy's
runtime API (``show sess all`` on a socket in the lab's folder).

On the docker backend HAProxy runs from its own image (compose/haproxy) in a container of
its own that joins the server's network namespace, beside the upstream's container (as a
pod's containers do); its configuration and runtime socket are in the lab's folder,
bind-mounted at the same path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.core.assess import SessionFacts
from harness.core.haproxy import Timeouts, earliest, through_tier, tier_timeout, upstream_leg
from harness.core.prediction import Prediction, SocketSettings, format_seconds
from harness.errors import LabError
from harness.lab.processes import log_tail, stop_process, wait_ready
from harness.lab.server import ServerProcess, ServerSpec
from harness.targets.base import LabView, Scalar, ServerError, Session, Upstream, UpstreamPrediction
from harness.targets.haproxy import config, runtime

DEFAULT_PORT = 10000
_LOG = re.compile(r"connchaos client=(\S+):(\d+) accept=(\d+)\.(\d+) total_ms=(-?\d+) end=(\S\S)")
# HAProxy's termination state, first letter (configuration.txt 8.5): who ended the stream
_ENDS = {"c": ("timeout", "client-side timeout"), "s": ("timeout", "server-side timeout"),
         "C": ("client-abort", "the client side aborted (an error or reset on it)"),
         "S": ("server-abort", "the server side aborted or refused")}


@dataclass
class HaproxyTarget:
    """HAProxy (TCP mode) in front of the upstream target."""

    upstream: Any                   # the upstream's own target (registry), started by its start()
    settings: dict[str, Scalar] = field(default_factory=dict)
    sessions: int = 20
    port: int = DEFAULT_PORT
    workdir: str = field(default_factory=os.getcwd)   # the upstream's command runs here
    service: ClassVar[str] = "haproxy"
    needs_process: ClassVar[bool] = False   # the client leg: HAProxy's socket, no process per session
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _admin: str = field(default="", init=False, repr=False)
    _log: str = field(default="", init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _pids: dict[tuple[str, int], int] = field(default_factory=dict, init=False, repr=False)
    _clients_of: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict, init=False,
                                                                 repr=False)
    _final_logs: str = field(default="", init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Any) -> HaproxyTarget:
        from harness.targets import target_class

        up = spec.target.upstream
        # the upstream builds itself from the scenario as if it were the target
        upstream = target_class(up.service).from_scenario(spec.model_copy(update={"target": up}))
        port = DEFAULT_PORT if upstream.port != DEFAULT_PORT else DEFAULT_PORT + 1
        return cls(upstream=upstream, settings=dict(spec.target.settings),
                   sessions=spec.sessions.count, port=port)

    @property
    def upstream_port(self) -> int:
        """The backend's listening port in the server's network."""
        return int(self.upstream.port)

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        return config.check_settings(settings)

    def _seconds(self, name: str) -> float | None:
        value = self.settings.get(name)
        return None if value is None else config.seconds_of(value)

    def timeouts(self) -> Timeouts:
        # HAProxy reads 0 as "not set" (infinite), as for every timeout
        def set_(name: str) -> float | None:
            s = self._seconds(name)
            return s if s else None
        return Timeouts(client_s=set_("timeout_client"), server_s=set_("timeout_server"),
                        tunnel_s=set_("timeout_tunnel"), client_fin_s=set_("timeout_client_fin"))

    def socket_settings(self) -> SocketSettings:
        """The client leg: HAProxy sets SO_KEEPALIVE with ``option clitcpka`` and
        TCP_KEEPIDLE/INTVL/CNT from ``clitcpka-*`` on its accepted sockets."""
        count = self.settings.get("clitcpka_cnt")
        return SocketSettings(keepalive=self.settings.get("clitcpka") is True,
                              idle_s=self._seconds("clitcpka_idle"),
                              interval_s=self._seconds("clitcpka_intvl"),
                              count=count if isinstance(count, int) and not isinstance(count, bool) else None)

    def describe_settings(self) -> dict[str, Scalar]:
        shown: dict[str, Scalar] = {"upstream": self.upstream.service, "port": self.port,
                                    "clitcpka": self.settings.get("clitcpka") is True}
        for name in config.TIMEOUTS:
            unset = config.DEFAULT_CONNECT if name == "timeout_connect" else "off"
            shown[name] = self.settings.get(name, unset)
        shown.update({k: v for k, v in self.settings.items() if k not in shown})
        for name, value in self.upstream.describe_settings().items():
            shown[f"upstream.{name}"] = value
        return shown

    def heartbeat(self, *, last_activity_s: float,
                  opened_s: float) -> tuple[Prediction | None, float | None]:
        """HAProxy's inactivity timeout (the tier's own idle reclaim), and the upstream's own
        heartbeat passed through: the earliest decides. The upstream's heartbeat data is what
        goes out unanswered on the client leg (HAProxy itself sends nothing)."""
        up, first_send = self.upstream.heartbeat(last_activity_s=last_activity_s, opened_s=opened_s)
        up = self._upstream_closes(up, opened_s)
        timeouts = self.timeouts()
        own = tier_timeout(timeouts, last_activity_s=last_activity_s, upstream_first_send_s=first_send)
        return earliest(own, through_tier(up, timeouts)), first_send

    def _upstream_closes(self, up: Prediction | None, opened_s: float) -> Prediction | None:
        """When the upstream closes its leg (sends its FIN), which is what HAProxy passes on:
        a WebSocket server does so at its ping timeout (close frame 1011 and FIN), before it
        lets go of the connection (close_timeout later)."""
        if up is None or up.reclaim_s is None or self.upstream.service != "websocket":
            return up
        from harness.core.websocket import timeline

        tl = timeline(self.upstream.ping_settings(), opened_s=opened_s,
                      in_flight_since_s=0.0 if self.upstream.in_flight else None)
        if tl is None or tl.give_up_s is None:
            return up
        return dataclasses.replace(
            up, reclaim_s=tl.give_up_s,
            formula=f"first unanswered ping at {format_seconds(tl.ping_s)} s + ping_timeout:"
                    f" close frame 1011 and FIN at {format_seconds(tl.give_up_s)} s")

    # -- the tier's legs (LEGS.md) ---------------------------------------------------------

    def upstreams(self, lab: LabView, clients: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Upstream]:
        """Each client's upstream leg, from ``show sess all``: the backend's socket sees
        (upstream addr, port, HAProxy's addr, port); the pid is the upstream session's own
        (a PostgreSQL backend), if it had one."""
        wanted = set(clients)
        found = {}
        for s in runtime.streams(self._admin):
            if s.client in wanted and s.tier is not None and s.server is not None:
                found[s.client] = Upstream(key=(*s.server, *s.tier), pid=self._pids.get(s.client))
                self._clients_of[s.tier] = s.client
        return found

    def pool_states(self, lab: LabView) -> dict[tuple[str, int], str]:
        """TCP mode has no pool: an upstream connection is "linked" while its stream exists."""
        return {s.tier: "linked" for s in runtime.streams(self._admin) if s.tier is not None}

    def predict_upstream(self, client: Prediction | None, facts: SessionFacts) -> UpstreamPrediction:
        outcome, at, mechanism, formula, slack = upstream_leg(client)
        return UpstreamPrediction(outcome=outcome, at_s=at, mechanism=mechanism,  # type: ignore[arg-type]
                                  formula=formula, slack_s=slack)

    # -- running ----------------------------------------------------------------------------

    def start(self, lab: LabView) -> None:
        if hasattr(self.upstream, "workdir"):
            self.upstream.workdir = self.workdir
        self.upstream.start(lab)
        self._server_addr = lab.server_addr
        base = os.path.join(lab.tmpdir, "haproxy")
        os.makedirs(base, mode=0o700)
        self._admin = os.path.join(base, "admin.sock")
        self._log = os.path.join(base, "haproxy.log")
        rendered = config.render(self.settings, addr=lab.server_addr, port=self.port,
                                 upstream_addr=lab.server_addr, upstream_port=self.upstream_port,
                                 admin_socket=self._admin, maxconn=max(100, self.sessions + 20))
        cfg = os.path.join(base, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(rendered.text)
        image = lab.image_for("haproxy", None)
        binary = "haproxy" if image else config.require_haproxy()
        # -db: in the foreground, logging (``log stdout``) to its output
        argv = (binary, "-db", "-f", cfg)
        # without root, the 0600 runtime socket must be the harness's own account's
        user = f"{os.getuid()}:{os.getgid()}" if image and os.geteuid() != 0 else None
        if user:
            os.chmod(base, 0o755)
        self._proc = lab.start_server(ServerSpec("haproxy", argv, image=image, binds={base: base},
                                                 log=self._log, user=user))
        lab.on_close("haproxy", self.stop)
        wait_ready(self._proc, lambda: self._is_ready(lab), step="starting haproxy",
                   what="haproxy", log=self._logs, timeout_s=30)

    def _is_ready(self, lab: LabView) -> bool:
        if not lab.reach.listening(self.port):
            return False
        try:
            runtime.ask(self._admin, "show info", timeout_s=1)
        except LabError:
            return False
        return True

    def _logs(self) -> str:
        if self._proc is not None:
            return self._proc.logs()[-2000:]
        return log_tail(self._log)

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop: it closes every stream at once), then SIGKILL."""
        proc, self._proc = self._proc, None
        stop_process(proc, signal.SIGTERM, grace_s=5)
        if proc is not None:
            self._final_logs = proc.logs()

    # -- sessions: the upstream's own, through HAProxy's port -------------------------------

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        to = via or (lab.server_addr, self.port)
        session: Session = await self.upstream.open_session(lab, index, via=to)
        if session.pid is not None:
            # the upstream's process serves the upstream leg; the client leg has none
            self._pids[(session.flow.client_addr, session.flow.client_port)] = session.pid
        session.pid = None
        return session

    async def close_session(self, session: Session) -> None:
        await self.upstream.close_session(session)

    async def alive(self, session: Session) -> tuple[bool, str]:
        found: tuple[bool, str] = await self.upstream.alive(session)
        return found

    def load_env(self, folder: str) -> dict[str, str]:
        """For load runs: what the upstream's Locust user needs (an ssh account's key); the
        users connect to HAProxy's port (``port``)."""
        found: dict[str, str] = self.upstream.load_env(folder) if hasattr(self.upstream, "load_env") else {}
        return found

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """The upstream sends; HAProxy forwards it to the client leg."""
        self.upstream.send_in_flight(sessions)

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        return None

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """How HAProxy ended each stream (its log line, by the client it saw), and an
        upstream's heartbeat giving up (its own log, by HAProxy's end of the upstream leg,
        told back to the client)."""
        found: dict[int | tuple[str, int], ServerError] = {}
        for key, err in self.upstream.server_errors().items():
            client = self._clients_of.get(key) if isinstance(key, tuple) else None
            if client is not None and err.kind == "heartbeat":
                found[client] = err
        text = self._proc.logs() if self._proc is not None else self._final_logs
        for line in text.splitlines():
            m = _LOG.search(line)
            if not m or m.group(6)[0] not in _ENDS:
                continue
            kind, why = _ENDS[m.group(6)[0]]
            at = int(m.group(3)) + int(m.group(4)) / 1000 + int(m.group(5)) / 1000
            found.setdefault((m.group(1), int(m.group(2))),
                             ServerError(at, kind, f"HAProxy ended the stream: {m.group(6)} ({why})"))
        return found
