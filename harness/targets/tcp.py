"""``service: tcp``: the user's own service, started from its ``command`` in the lab's server
namespace, its sessions opened by an opener (``raw`` by default; see ``openers``).

connchaos cannot know what the service sets on its sockets, so ``settings`` *declares* it,
for the prediction: ``tcp_keepalive`` (SO_KEEPALIVE, default false), ``tcp_keepalive_idle``,
``tcp_keepalive_interval``, ``tcp_keepalive_count`` (seconds / probes; unset = the OS
default) and ``tcp_user_timeout`` (milliseconds). Reclaim is the socket leaving the server's
table: a service of unknown shape has no per-session process to wait for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.core.prediction import Prediction, SocketSettings
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab.processes import log_tail, stop_process_group, wait_ready
from harness.lab.server import ServerProcess, ServerSpec
from harness.scenario.model import Scenario
from harness.targets import openers
from harness.targets.base import (
    LabView,
    Scalar,
    ServerError,
    Session,
    ready_command_succeeds,
    user_command,
)

DECLARED = {"tcp_keepalive": "bool", "tcp_keepalive_idle": "int", "tcp_keepalive_interval": "int",
            "tcp_keepalive_count": "int", "tcp_user_timeout": "int"}


@dataclass
class TcpTarget:
    """A service of the user's own."""

    command: str
    port: int
    ready: str | None = None
    settings: dict[str, Scalar] = field(default_factory=dict)
    opener_name: str = "raw"
    greeting: str | None = None
    workdir: str = field(default_factory=os.getcwd)   # the command runs here (the scenario's folder)
    image: str | None = None        # the user's own image (docker backend)
    service: ClassVar[str] = "tcp"
    needs_process: ClassVar[bool] = False
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _opener: Any = field(default=None, init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _log: str = field(default="", init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Scenario) -> TcpTarget:
        t = spec.target
        return cls(command=t.command or "", port=t.port or 0, ready=t.ready,
                   settings=dict(t.settings), opener_name=spec.sessions.opener or "raw",
                   greeting=spec.sessions.greeting, image=t.image)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        problems = []
        for name, value in settings.items():
            kind = DECLARED.get(name)
            if kind is None:
                problems.append((name, "not a declared socket setting"
                                       f" (expected one of: {', '.join(DECLARED)})"))
            elif kind == "bool" and not isinstance(value, bool):
                problems.append((name, f"expected true or false; got {value!r}"))
            elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                problems.append((name, f"expected a whole number >= 0; got {value!r}"))
        return problems

    def socket_settings(self) -> SocketSettings:
        def num(name: str) -> float | None:
            value = self.settings.get(name)
            return float(value) if isinstance(value, int) and value > 0 else None
        count = num("tcp_keepalive_count")
        ut = num("tcp_user_timeout")
        return SocketSettings(keepalive=self.settings.get("tcp_keepalive") is True,
                              idle_s=num("tcp_keepalive_idle"), interval_s=num("tcp_keepalive_interval"),
                              count=int(count) if count else None,
                              user_timeout_s=ut / 1000 if ut else None)

    def describe_settings(self) -> dict[str, Scalar]:
        return {"command": self.command, "port": self.port, "opener": self.opener_name, **self.settings}

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        return None, None

    # -- running ----------------------------------------------------------------------------

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        self._opener = openers.make(self.opener_name, self.greeting)
        self._log = os.path.join(lab.tmpdir, "service.log")
        # on the docker backend the scenario check asks for an image; without a command, the
        # image's own runs
        argv = user_command(self.command, lab.server_addr, self.port) if self.command else None
        # its own process group: Ctrl-C reaches the harness, which stops the whole group
        self._proc = lab.start_server(ServerSpec("service", argv, image=lab.image_for("tcp", self.image),
                                                 log=self._log, cwd=self.workdir))
        lab.on_close("service", self.stop)
        self._wait_ready(lab)

    def _wait_ready(self, lab: LabView, timeout_s: float = 30.0) -> None:
        assert self._proc is not None
        wait_ready(self._proc, lambda: self._is_ready(lab), step="starting the service",
                   what=repr(self.command or self.image), log=self._proc.logs,
                   timeout_s=timeout_s)

    def _is_ready(self, lab: LabView) -> bool:
        if self.ready and self.ready != "port":
            return ready_command_succeeds(lab, self.ready, self.workdir)
        return lab.reach.server_answers(lab.server_addr, self.port)

    def _tail(self) -> str:
        return log_tail(self._log)

    def stop(self) -> None:
        """SIGTERM to the service's whole process group (sh and what it started), then SIGKILL."""
        proc, self._proc = self._proc, None
        stop_process_group(proc)

    async def open_session(self, lab: LabView, index: int, via: tuple[str, int] | None = None) -> Session:
        host, port = via or (lab.server_addr, self.port)
        try:
            handle = await self._opener.open(host, port, index)
        except Exception as exc:  # any client library's failure, reported as the lab's
            raise LabError(f"opening session {index} with the {self.opener_name} opener",
                           f"{type(exc).__name__}: {exc}") from exc
        addr, local_port = self._opener.local_address(handle)
        return Session(id=index, flow=Flow(addr, local_port, host, port), pid=None, handle=handle,
                       opened_at=time.time())

    async def close_session(self, session: Session) -> None:
        await self._opener.close(session.handle)

    async def alive(self, session: Session) -> tuple[bool, str]:
        ok, detail = await self._opener.alive(session.handle)
        return ok, detail

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        raise LabError("activity: in-flight", "a service of your own cannot be told to send data")

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        return {}

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        return None
