"""``service: websocket``: a WebSocket server, and websockets clients held open against it.

By default connchaos runs its reference server (``harness.targets.ws_reference``: an echo
server on the ``websockets`` library) with the scenario's settings; with ``command:`` it
runs the user's own server instead (``{host}`` and ``{port}`` filled in, in the scenario
file's folder, its readiness by ``ready:``, else by the port accepting).

Settings (for the reference server they configure it; for a ``command:`` they *declare*
what the user's server does, for the prediction; left out, websockets' own defaults):

- ``ping_interval``, ``ping_timeout``, ``close_timeout``: seconds (a number or a duration
  like ``500ms``), as ``websockets.serve`` takes them; ``off`` or ``false`` is None. A 0
  means off for the two ping settings (websockets would ping without pause, or time out at
  once); for ``close_timeout`` 0 is refused: None there means *wait forever*, the opposite of
  what a 0 suggests.
- ``tcp_keepalive`` (default false, as websockets' own server) and, with it,
  ``tcp_keepalive_idle``, ``tcp_keepalive_interval`` (seconds), ``tcp_keepalive_count``.
- ``tcp_user_timeout``: TCP_USER_TIMEOUT in milliseconds (0 = off), which also bounds how long
  the kernel keeps the orphaned socket of a connection websockets closed.

Reclaim is the socket leaving the server's table. When websockets gives up on a silent
client it closes a socket whose ping, close frame and FIN are unacknowledged, and the kernel
keeps that socket as an orphan, retransmitting, for about 100 s more (unless
``tcp_user_timeout`` ends it): ``heartbeat()`` predicts the table, and its formula also says
when websockets let go (``harness.core.websocket``). The reference server shows that earlier
moment itself: its control socket answers its count of open connections, and its log has a
line per closed connection (close code, reason and cause), which ``server_errors`` reads by
the client address the server saw. A user's server is watched through the table only.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from harness.core.prediction import Prediction, SocketSettings
from harness.core.websocket import (
    WEBSOCKETS_DEFAULT_CLOSE_TIMEOUT_S,
    WEBSOCKETS_DEFAULT_PING_INTERVAL_S,
    WEBSOCKETS_DEFAULT_PING_TIMEOUT_S,
    PingSettings,
    predict_heartbeat,
    predict_heartbeat_answered,
)
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab.processes import log_tail, stop_process_group, wait_ready
from harness.lab.server import ServerProcess, ServerSpec
from harness.scenario.durations import parse_duration
from harness.targets import control
from harness.targets.base import (
    LabView,
    Scalar,
    ServerError,
    Session,
    ready_command_succeeds,
    user_command,
)

DEFAULT_PORT = 8765
ALIVE_TIMEOUT_S = 5.0
IN_FLIGHT_BYTES = 4000
SECONDS = ("ping_interval", "ping_timeout", "close_timeout")
KEEPALIVE = {"tcp_keepalive_idle": (1, 32767), "tcp_keepalive_interval": (1, 32767),
             "tcp_keepalive_count": (1, 127)}
KNOWN = (*SECONDS, "tcp_keepalive", *KEEPALIVE, "tcp_user_timeout")
DEFAULTS = {"ping_interval": WEBSOCKETS_DEFAULT_PING_INTERVAL_S,
            "ping_timeout": WEBSOCKETS_DEFAULT_PING_TIMEOUT_S,
            "close_timeout": WEBSOCKETS_DEFAULT_CLOSE_TIMEOUT_S}
_OFF = {"off", "none", "null"}


def _seconds(name: str, value: Scalar) -> float | None:
    """A time setting in seconds, None for off; ValueError with the reason otherwise."""
    if value is False or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    if value is True:
        raise ValueError("expected seconds (a number or a duration like 500ms) or off; got true")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(f"expected seconds (a number or a duration like 500ms) or off;"
                             f" got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"must not be negative; got {value!r}")
    if seconds == 0:
        if name == "close_timeout":
            raise ValueError("0 is ambiguous: websockets' None (write off) waits for the closing"
                             " handshake forever; for a quick abort give a short time like 100ms")
        return None
    return seconds


def _whole(value: Scalar, lo: int, hi: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        return f"expected a whole number from {lo} to {hi}; got {value!r}"
    return None


def _arg(value: float | None) -> str:
    return "off" if value is None else repr(value)


@dataclass
class WebSocketTarget:
    """A WebSocket server: connchaos's reference one, or the user's own ``command``."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    command: str | None = None
    ready: str | None = None
    in_flight: bool = False
    port: int = DEFAULT_PORT
    workdir: str = field(default_factory=os.getcwd)   # a command runs here (the scenario's folder)
    image: str | None = None        # the user's own image (docker backend)
    service: ClassVar[str] = "websocket"
    needs_process: ClassVar[bool] = False
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _control: str = field(default="", init=False, repr=False)
    _log: str = field(default="", init=False, repr=False)
    _output: str = field(default="", init=False, repr=False)
    _probe: Any = field(default_factory=itertools.count, init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Any) -> WebSocketTarget:
        t = spec.target
        return cls(settings=dict(t.settings), command=getattr(t, "command", None),
                   ready=getattr(t, "ready", None),
                   in_flight=spec.sessions.activity == "in-flight",
                   port=getattr(t, "port", None) or DEFAULT_PORT, image=getattr(t, "image", None))

    @property
    def reference(self) -> bool:
        """Is this connchaos's own server (which can be asked things)?"""
        return self.command is None

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        problems = []
        for name, value in settings.items():
            if name not in KNOWN:
                near = difflib.get_close_matches(name, KNOWN, n=1)
                hint = f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(KNOWN)})"
                problems.append((name, f"not a websocket setting{hint}"))
            elif name in SECONDS:
                try:
                    _seconds(name, value)
                except ValueError as exc:
                    problems.append((name, str(exc)))
            elif name == "tcp_keepalive":
                if not isinstance(value, bool):
                    problems.append((name, f"expected true or false; got {value!r}"))
            elif name in KEEPALIVE:
                why = _whole(value, *KEEPALIVE[name])
                if why:
                    problems.append((name, why))
                elif settings.get("tcp_keepalive") is not True:
                    problems.append((name, "has no effect unless tcp_keepalive: true"))
            elif name == "tcp_user_timeout":
                why = _whole(value, 0, 2**31 - 1)
                if why:
                    problems.append((name, why + " (milliseconds)"))
        return problems

    def _time(self, name: str) -> float | None:
        if name not in self.settings:
            return DEFAULTS[name]
        return _seconds(name, self.settings[name])

    def ping_settings(self) -> PingSettings:
        ut = self.settings.get("tcp_user_timeout")
        return PingSettings(interval_s=self._time("ping_interval"),
                            timeout_s=self._time("ping_timeout"),
                            close_timeout_s=self._time("close_timeout"),
                            user_timeout_s=ut / 1000 if isinstance(ut, int) and ut > 0 else None)

    def socket_settings(self) -> SocketSettings:
        """TCP keepalive only when asked for (websockets' own server leaves it off)."""
        def num(name: str) -> int | None:
            value = self.settings.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        idle, interval = num("tcp_keepalive_idle"), num("tcp_keepalive_interval")
        return SocketSettings(keepalive=self.settings.get("tcp_keepalive") is True,
                              idle_s=float(idle) if idle else None,
                              interval_s=float(interval) if interval else None,
                              count=num("tcp_keepalive_count"),
                              user_timeout_s=self.ping_settings().user_timeout_s)

    def describe_settings(self) -> dict[str, Scalar]:
        ping = self.ping_settings()
        shown: dict[str, Scalar] = {
            "server": "reference (websockets)" if self.reference else self.command or "",
            "ping_interval": _arg(ping.interval_s), "ping_timeout": _arg(ping.timeout_s),
            "close_timeout": _arg(ping.close_timeout_s),
            "tcp_keepalive": self.settings.get("tcp_keepalive") is True}
        shown.update({k: v for k, v in self.settings.items() if k not in shown})
        return shown

    def heartbeat(self, *, last_activity_s: float,
                  opened_s: float) -> tuple[Prediction | None, float | None]:
        """websockets' keepalive ping: when the socket leaves the table, and when the first
        unanswered ping goes out. The pings run on the connection's own clock (from
        ``opened_s``) whatever the traffic, so ``last_activity_s`` does not move them."""
        return predict_heartbeat(self.ping_settings(), opened_s=opened_s,
                                 in_flight_since_s=0.0 if self.in_flight else None)

    def heartbeat_answered(self, *, last_activity_s: float,
                           opened_s: float) -> tuple[Prediction | None, float | None]:
        """The keepalive ping against a client whose kernel acknowledges it but whose
        application never answers (``process-pause``): websockets' own timeouts decide."""
        return predict_heartbeat_answered(self.ping_settings(), opened_s=opened_s)

    # -- running ----------------------------------------------------------------------------

    def _reference_argv(self, lab: LabView, python: str) -> list[str]:
        ping = self.ping_settings()
        argv = [python, "-m", "harness.targets.ws_reference",
                "--host", lab.server_addr, "--port", str(self.port),
                "--ping-interval", _arg(ping.interval_s), "--ping-timeout", _arg(ping.timeout_s),
                "--close-timeout", _arg(ping.close_timeout_s),
                "--control", self._control, "--log", self._log]
        if self.settings.get("tcp_keepalive") is True:
            argv.append("--tcp-keepalive")
            for name, flag in (("tcp_keepalive_idle", "--keepalive-idle"),
                               ("tcp_keepalive_interval", "--keepalive-interval"),
                               ("tcp_keepalive_count", "--keepalive-count")):
                if name in self.settings:
                    argv += [flag, str(self.settings[name])]
        if ping.user_timeout_s:
            argv += ["--tcp-user-timeout", str(self.settings["tcp_user_timeout"])]
        return argv

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        base = os.path.join(lab.tmpdir, "websocket")
        os.makedirs(base, exist_ok=True)
        # The control socket shows every session and makes the server send: it lives in a
        # folder of its own, closed to every other account (the server refuses anything else).
        control = os.path.join(base, "control")
        os.makedirs(control, mode=0o700)
        os.chmod(control, 0o700)
        self._control = os.path.join(control, "control.sock")
        self._log = os.path.join(base, "connections.log")
        self._output = os.path.join(base, "server.out")
        image = lab.image_for("websocket", self.image)
        argv: tuple[str, ...] | None = None     # a user's image without a command: its own
        if self.command is not None:
            argv = user_command(self.command, lab.server_addr, self.port)
        elif not self.image:
            argv = tuple(self._reference_argv(lab, "python3" if image else sys.executable))
        # its own process group: Ctrl-C reaches the harness, which stops the whole group
        # In a container the server would be root, and its 0600 socket out of reach of a
        # harness without root: there it runs as the harness's own account.
        user = f"{os.getuid()}:{os.getgid()}" if image and self.reference and os.geteuid() != 0 else None
        self._proc = lab.start_server(ServerSpec(
            "websocket", argv, image=image, binds={base: base}, log=self._output,
            cwd=None if self.reference else self.workdir, user=user))
        lab.on_close("websocket server", self.stop)
        self._wait_ready(lab)

    def _wait_ready(self, lab: LabView, timeout_s: float = 30.0) -> None:
        assert self._proc is not None
        what = "the reference server" if self.reference else repr(self.command)
        wait_ready(self._proc, lambda: self._is_ready(lab), step="starting the websocket server",
                   what=what, log=self._proc.logs, timeout_s=timeout_s)

    def _is_ready(self, lab: LabView) -> bool:
        if self.ready and self.ready != "port":
            return ready_command_succeeds(lab, self.ready, self.workdir)
        if not lab.reach.server_answers(lab.server_addr, self.port):
            return False
        return not self.reference or self._ask({}) is not None

    def _tail(self) -> str:
        return log_tail(self._output)

    def stop(self) -> None:
        """SIGTERM to the server's process group (sh and what it started, for a command),
        then SIGKILL to the group if anything lingers."""
        proc, self._proc = self._proc, None
        stop_process_group(proc)

    # -- the reference server's own view -----------------------------------------------------

    def _ask(self, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any] | None:
        """One request to the reference server's control socket; None if it does not answer."""
        if not self.reference or not self._control:
            return None
        return control.ask(self._control, request, timeout_s)

    def _peers_by_path(self) -> dict[str, str]:
        status = self._ask({"op": "status"}) or {}
        return {c["path"]: c["peer"] for c in status.get("connections", [])}

    def open_connections(self) -> int | None:
        """The reference server's own count of open connections (None for a command)."""
        status = self._ask({"op": "status"})
        return None if status is None else int(status["open"])

    # -- sessions -----------------------------------------------------------------------------

    def _path(self, index: int) -> str:
        # The reference server tells sessions apart by path (server_peer); a user's server
        # gets the root, which any WebSocket server serves.
        return f"/connchaos/{index}" if self.reference else "/"

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        host, port = via or (lab.server_addr, self.port)
        try:
            # No client pings (the server's heartbeat is what is measured), no read pausing
            # (a client that stops reading stops answering pings), a short close for teardown.
            ws = await connect(f"ws://{host}:{port}{self._path(index)}", ping_interval=None,
                               max_queue=None, close_timeout=1, open_timeout=10)
        except Exception as exc:  # websockets, OSError, timeouts: the lab's failure
            raise LabError(f"opening websocket session {index}", f"{type(exc).__name__}: {exc}") from exc
        addr, local_port = ws.local_address[:2]
        return Session(id=index, flow=Flow(addr, local_port, host, port), pid=None, handle=ws,
                       opened_at=time.time())

    async def close_session(self, session: Session) -> None:
        ws = session.handle
        # a dead peer never completes the closing handshake: give it a moment, then abort
        with contextlib.suppress(TimeoutError, OSError, WebSocketException):
            await asyncio.wait_for(ws.close(), 1.5)
        ws.transport.abort()

    async def alive(self, session: Session, timeout_s: float = ALIVE_TIMEOUT_S) -> tuple[bool, str]:
        """The reference server: a message and its echo. A user's server: a ping and its
        pong (every WebSocket server answers those; not every one echoes)."""
        ws = session.handle
        try:
            async with asyncio.timeout(timeout_s):
                if not self.reference:
                    await (await ws.ping())
                    return True, "pong"
                token = f"connchaos-alive-{next(self._probe)}"
                await ws.send(token)
                while await ws.recv() != token:
                    pass  # skip what the server sent for in-flight activity
                return True, "echo"
        except TimeoutError:
            what = "pong" if not self.reference else "echo"
            return False, f"no {what} within {timeout_s:g} s"
        except (OSError, WebSocketException) as exc:  # closed, reset, ...
            return False, f"{type(exc).__name__}: {exc}"

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """The reference server sends one message on each of these sessions' connections."""
        if not self.reference:
            raise LabError("activity: in-flight",
                           "a WebSocket server of your own cannot be told to send data")
        by_path = self._peers_by_path()
        peers = [by_path[self._path(s.id)] for s in sessions if self._path(s.id) in by_path]
        answer = self._ask({"op": "send", "peers": peers, "bytes": IN_FLIGHT_BYTES})
        if answer is None or "error" in answer:
            raise LabError("asking the reference server to send", str(answer))

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Connections the reference server saw end other than by a normal close, by the
        client address it saw: ``heartbeat`` (its keepalive ping timed out), ``timeout``
        (the kernel gave up: keepalive, retransmissions, TCP_USER_TIMEOUT), ``reset``,
        ``eof`` (closed without a close frame)."""
        found: dict[int | tuple[str, int], ServerError] = {}
        try:
            with open(self._log, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return found
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") != "closed":
                continue
            kind, text = classify_close(record)
            if kind is None:
                continue
            addr, _, port = str(record.get("peer", "")).rpartition(":")
            if addr and port.isdigit():
                found.setdefault((addr, int(port)), ServerError(float(record["at"]), kind, text))
        return found

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """Who the server sees for ``session``: the direct client, or (through a proxy)
        the connection the reference server holds on the session's path."""
        if self.reference:
            peer = self._peers_by_path().get(self._path(session.id))
            if peer is None:
                return None
            addr, _, port = peer.rpartition(":")
            return addr, int(port)
        if (session.flow.server_addr, session.flow.server_port) == (self._server_addr, self.port):
            return session.flow.client_addr, session.flow.client_port
        return None


def classify_close(record: Mapping[str, Any]) -> tuple[str | None, str]:
    """(kind, text) for one ``closed`` line of the reference server's log; kind None for a
    normal close (the client sent a close frame)."""
    sent, rcvd, cause = record.get("sent") or {}, record.get("rcvd"), record.get("cause") or ""
    text = "; ".join(part for part in (
        f"sent {sent.get('code')} {sent.get('reason', '')}".strip() if sent else "",
        f"received {rcvd.get('code')} {rcvd.get('reason', '')}".strip() if rcvd else "",
        cause) if part)
    if sent.get("reason") == "keepalive ping timeout":
        return "heartbeat", text
    if "Errno 104" in cause or "ConnectionReset" in cause:
        return "reset", text
    if "Errno 110" in cause:
        return "timeout", text
    if rcvd:
        return None, text
    return "eof", text or "closed without a close frame"
