"""What every target provides: start it in a lab, open sessions, find their server side, predict.

A target is a small dataclass built from the scenario's ``target`` section plus the methods
of ``Target``. Sessions are opened on the client namespace's event loop, so every coroutine
here runs there; the rest runs on the harness's main thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from harness.core.assess import SessionFacts, UpstreamPrediction
from harness.core.prediction import Prediction, SocketSettings
from harness.errors import Problem
from harness.faults.base import Flow

if TYPE_CHECKING:
    from harness.lab.reach import Reach
    from harness.lab.server import ServerProcess, ServerSpec

Scalar = str | int | float | bool


@dataclass
class Session:
    """One client connection to the target, held open."""

    id: int
    flow: Flow                 # the 4-tuple, client first
    pid: int | None            # the server-side process serving it, if there is one
    handle: Any                # the client object (a psycopg connection, ...)
    opened_at: float           # time.time()


@dataclass(frozen=True)
class ServerError:
    """An error the server itself reported for a session (from its log)."""

    at: float                  # time.time()
    kind: str                  # "timeout" | "reset" | other short text
    text: str


class LabView(Protocol):
    """The part of a lab a target needs (a LocalLab or a DockerLab)."""

    lab_id: str
    tmpdir: str
    server_addr: str
    reach: Reach

    def on_close(self, what: str, fn: Any) -> None: ...

    def image_for(self, name: str, own: str | None) -> str | None: ...

    def start_server(self, spec: ServerSpec) -> ServerProcess: ...


def ready_command_succeeds(lab: LabView, command: str, cwd: str | None) -> bool:
    """A scenario's ``ready:`` command, run in the server's network: on this machine inside
    the namespace (in ``cwd``), or without root in the server's container."""
    from harness.errors import LabError

    try:
        lab.reach.run_in("srv", ["sh", "-c", command], cwd=cwd)
        return True
    except LabError:
        return False


def user_command(command: str, addr: str, port: int) -> tuple[str, ...]:
    """A user's ``command`` line through ``sh -c``, with {host} and {port} filled in."""
    return "sh", "-c", command.replace("{host}", addr).replace("{port}", str(port))


class Target(Protocol):
    """The methods of a target; see ``harness/targets/postgres.py`` for the reference one."""

    service: ClassVar[str]
    port: int
    needs_process: ClassVar[bool]     # reclaim also waits for the session's server process

    @classmethod
    def from_scenario(cls, spec: Any) -> Target:
        """The target for a (validated) scenario."""
        ...

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """Problems with ``settings`` as (setting name, message); empty when fine."""
        ...

    def socket_settings(self) -> SocketSettings:
        """What the server will set on its accepted sockets, from its settings."""
        ...

    def describe_settings(self) -> dict[str, Scalar]:
        """The settings that decide reclaim, for reports."""
        ...

    def heartbeat(self, *, last_activity_s: float,
                  opened_s: float) -> tuple[Prediction | None, float | None]:
        """The service's own heartbeat: its prediction and when its first unanswered
        heartbeat goes out (seconds from the fault); (None, None) without one."""
        ...

    def start(self, lab: LabView) -> None:
        """Start the service in the lab's server namespace; register its stop with the lab."""
        ...

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        """Open one session from the client namespace (runs on the client loop), to the
        server or, when ``via`` is given, to that proxy address."""
        ...

    def server_addr_of(self, session: Session) -> str:
        """The address the server listens on."""
        ...

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """The client address the server itself sees for ``session``, if it can tell."""
        ...

    async def close_session(self, session: Session) -> None:
        """Close the client end without waiting on a dead peer."""
        ...

    async def alive(self, session: Session) -> tuple[bool, str]:
        """Does the session still work end to end? (answer, detail)"""
        ...

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """Make the server send data on these sessions now (for ``activity: in-flight``)."""
        ...

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Errors the server reported, by server-side pid or by the client (addr, port) the
        server saw."""
        ...


Key = tuple[str, int, str, int]   # a socket as its own side sees it: (addr, port, peer addr, peer port)


@dataclass(frozen=True)
class Upstream:
    """A session's upstream leg: the tier's connection to its backend."""

    key: Key           # as the backend's socket sees it: (backend addr, port, tier addr, port)
    pid: int | None    # the backend's process serving it (a PostgreSQL backend), if there is one


class Tier(Target, Protocol):
    """A target that is a middle tier (pgbouncer, haproxy): its sessions are the client legs
    (the tier's sockets towards the clients), and each may have an upstream leg to the
    backend, which runs beside the tier in the server's network."""

    upstream_port: int   # the backend's listening port

    def upstreams(self, lab: LabView, clients: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Upstream]:
        """The upstream leg of each client leg, by the client (addr, port) the tier sees;
        absent: no upstream now (transaction pooling between transactions)."""
        ...

    def pool_states(self, lab: LabView) -> dict[tuple[str, int], str]:
        """The tier's own view of its upstream connections, by the tier's (addr, port) of
        each: "linked" (serving a client) or "pooled" (idle in its pool); absent: gone.
        Called about every 0.25 s while observing."""
        ...

    def predict_upstream(self, client: Prediction | None, facts: SessionFacts) -> UpstreamPrediction:
        """What the tier does with the upstream leg once the client leg is reclaimed at
        ``client.reclaim_s`` (None, or a None time: never, so the upstream is held)."""
        ...


def is_tier(target: object) -> bool:
    """Whether ``target`` is a middle tier with upstream legs."""
    return hasattr(target, "upstreams") and hasattr(target, "predict_upstream")


__all__ = ["Key", "LabView", "Problem", "Scalar", "ServerError", "Session", "Target", "Tier",
           "Upstream", "UpstreamPrediction", "is_tier"]
