"""``service: grpc``: connchaos's reference gRPC server (grpcio), and long-lived streams.

The server (``harness.targets.grpc_reference``) runs in the server's network as its own
process, with the scenario's settings as its channel arguments. A session is one
server-streaming call (``/connchaos.Hold/Stream``) on a channel of its own: one channel, one
subchannel (``grpc.use_local_subchannel_pool``), one TCP connection. The first message of
the stream is the client address the server sees; the client's own end is read from the
client network's socket table as the channel connects.

Settings are grpc channel arguments, as ``grpc.server(options=...)`` takes them (whole
numbers; milliseconds where the name ends in ``_ms``; true/false or 0/1 for
``grpc.keepalive_permit_without_calls``): see ``grpc_reference.SERVER_ARGS``. Left out,
grpc-core's own defaults (keepalive every 2 h, ping ack timeout 60 s, TCP_USER_TIMEOUT 20 s).

Reclaim is the socket leaving the server's table or its descriptor closing. What ends a
blackholed stream, and when, is ``harness.core.grpc`` (measured): the first keepalive ping
after the fault, then the earlier of TCP_USER_TIMEOUT (= ``grpc.keepalive_timeout_ms``) from
the ping's first retransmission and ``grpc.http2.ping_timeout_ms`` from the ping. The
reference server's log has a line per stream closed, with how long its last keepalive ping
had gone unanswered, which ``server_errors`` reads by the client address the server saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.core.grpc import INT_MAX_MS, KeepaliveSettings, predict_heartbeat
from harness.core.prediction import Prediction, SocketSettings
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab.processes import stop_process_group, wait_ready
from harness.lab.server import ServerProcess, ServerSpec
from harness.targets import control
from harness.targets.base import LabView, Scalar, ServerError, Session
from harness.targets.grpc_reference import (
    ECHO_METHOD,
    SERVER_ARGS,
    STREAM_METHOD,
    check_arg,
)

DEFAULT_PORT = 50051
ALIVE_TIMEOUT_S = 5.0
OPEN_TIMEOUT_S = 10.0
IN_FLIGHT_BYTES = 4000
PEER_KERNEL_ANSWERS = {"process-pause"}
"""Packet-layer faults after which the client's kernel still acknowledges the server's data
(proxy faults all do: the proxy's kernel does)."""
HEARTBEAT_MARGIN_S = 0.1
"""A close this near the ping timeout after the unanswered ping is the ping timeout's."""


def _arg_value(value: Scalar) -> int:
    return int(value)


def established_to(host: str, port: int) -> set[tuple[str, int]]:
    """The local ends of this thread's network's established TCP connections to host:port
    (``/proc/thread-self/net/tcp``: the namespace of the calling thread, the client loop's;
    and ``tcp6``: grpc connects from a dual-stack socket, so an IPv4 peer is v4-mapped there)."""
    v4 = socket.inet_aton(host)[::-1].hex().upper()
    wants = {f"{v4}:{port:04X}", f"0000000000000000FFFF0000{v4}:{port:04X}"}
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/thread-self/net/{table}") as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:    # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            if fields[2] not in wants or fields[3] != "01":
                continue
            addr_hex, _, port_hex = fields[1].partition(":")
            found.add((socket.inet_ntoa(bytes.fromhex(addr_hex[-8:])[::-1]), int(port_hex, 16)))
    return found


@dataclass
class GrpcSession:
    """A session's client objects: its channel and its stream."""

    channel: Any
    call: Any
    server_saw: str


@dataclass
class GrpcTarget:
    """connchaos's reference gRPC server, with the scenario's channel arguments."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    in_flight: bool = False
    peer_kernel_answers: bool = False   # the fault leaves something acking (a proxy, a paused client)
    port: int = DEFAULT_PORT
    service: ClassVar[str] = "grpc"
    needs_process: ClassVar[bool] = False
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _control: str = field(default="", init=False, repr=False)
    _log: str = field(default="", init=False, repr=False)
    _opening: asyncio.Lock | None = field(default=None, init=False, repr=False)
    _probe: Any = field(default_factory=itertools.count, init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Any) -> GrpcTarget:
        t = spec.target
        f = spec.fault
        return cls(settings=dict(t.settings), in_flight=spec.sessions.activity == "in-flight",
                   peer_kernel_answers=f.layer == "proxy" or f.type in PEER_KERNEL_ANSWERS)

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        problems = []
        for name, value in settings.items():
            why = check_arg(name, value)
            if why and name not in SERVER_ARGS:
                near = difflib.get_close_matches(name, list(SERVER_ARGS), n=1)
                if near:
                    why += f" (did you mean {near[0]}?)"
            if why:
                problems.append((name, why))
        return problems

    def channel_args(self) -> dict[str, int]:
        """The settings as grpc channel arguments (whole numbers)."""
        return {name: _arg_value(value) for name, value in self.settings.items()}

    def keepalive(self) -> KeepaliveSettings:
        return KeepaliveSettings.from_args(self.channel_args())

    def socket_settings(self) -> SocketSettings:
        """No TCP keepalive; grpc's own TCP_USER_TIMEOUT (keepalive_timeout_ms, 20 s default)."""
        return self.keepalive().socket_settings()

    def describe_settings(self) -> dict[str, Scalar]:
        ka = self.keepalive()
        shown: dict[str, Scalar] = {
            "server": "reference (grpcio)",
            "keepalive_time": "off" if ka.time_s is None else f"{ka.time_s:g} s",
            "ping_timeout": f"{ka.ping_timeout_s:g} s",
            "tcp_user_timeout": "off" if ka.user_timeout_s is None else f"{ka.user_timeout_s:g} s"}
        shown.update(self.settings)
        return shown

    def heartbeat(self, *, last_activity_s: float,
                  opened_s: float) -> tuple[Prediction | None, float | None]:
        """grpc's keepalive ping: it goes ``keepalive_time`` after the last byte the server
        read (the last ping's ack on an idle stream), so ``last_activity_s`` sets it."""
        return predict_heartbeat(self.keepalive(), last_read_s=last_activity_s,
                                 in_flight_since_s=0.0 if self.in_flight else None,
                                 peer_kernel_answers=self.peer_kernel_answers)

    # -- running ----------------------------------------------------------------------------

    def _argv(self, lab: LabView, python: str) -> list[str]:
        argv = [python, "-m", "harness.targets.grpc_reference", "--host", lab.server_addr,
                "--port", str(self.port), "--control", self._control, "--log", self._log]
        for name, value in self.channel_args().items():
            argv += ["--arg", f"{name}={value}"]
        return argv

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        base = os.path.join(lab.tmpdir, "grpc")
        os.makedirs(base, exist_ok=True)
        control = os.path.join(base, "control")
        os.makedirs(control, mode=0o700)
        os.chmod(control, 0o700)
        self._control = os.path.join(control, "control.sock")
        self._log = os.path.join(base, "streams.log")
        # grpc listens on a dual-stack IPv6 socket whenever the network has an IPv6 loopback
        # (its listener maps 10.0.0.1 to ::ffff:10.0.0.1); the observer reads the IPv4 table.
        # Without ::1 it falls back to a plain IPv4 socket (grpc_create_dualstack_socket).
        lab.reach.run_in("srv", ["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6"],
                         step="turning off IPv6 on the server's loopback (grpc then listens on IPv4)")
        image = lab.image_for("grpc", None)
        argv = tuple(self._argv(lab, "python3" if image else sys.executable))
        user = f"{os.getuid()}:{os.getgid()}" if image and os.geteuid() != 0 else None
        self._proc = lab.start_server(ServerSpec(
            "grpc", argv, image=image, binds={base: base}, log=os.path.join(base, "server.out"),
            user=user))
        lab.on_close("grpc server", self.stop)
        proc = self._proc
        wait_ready(proc, lambda: lab.reach.server_answers(lab.server_addr, self.port)
                   and self._ask({"op": "status"}) is not None,
                   step="starting the grpc server", what="the reference server", log=proc.logs,
                   timeout_s=30.0)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process_group(proc)

    def _ask(self, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any] | None:
        if not self._control:
            return None
        return control.ask(self._control, request, timeout_s)

    def _peers_by_name(self) -> dict[str, str]:
        status = self._ask({"op": "status"}) or {}
        return {s["name"]: s["peer"] for s in status.get("streams", [])}

    def open_streams(self) -> int | None:
        """The reference server's own count of open streams."""
        status = self._ask({"op": "status"})
        return None if status is None else int(status["open"])

    # -- sessions -----------------------------------------------------------------------------

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        import grpc
        import grpc.aio

        host, port = via or (lab.server_addr, self.port)
        if self._opening is None:
            self._opening = asyncio.Lock()
        # One at a time: the new connection is told apart from the others by the table.
        async with self._opening:
            before = established_to(host, port)
            # its own subchannel pool and a distinct argument: never a connection shared
            channel = grpc.aio.insecure_channel(f"{host}:{port}", options=[
                ("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0),
                ("connchaos.session", index)])
            call = channel.unary_stream(STREAM_METHOD)(f"session-{index}".encode())
            try:
                first = await asyncio.wait_for(call.read(), OPEN_TIMEOUT_S)
            except (TimeoutError, grpc.RpcError) as exc:
                await channel.close(None)
                raise LabError(f"opening grpc session {index}", f"{type(exc).__name__}: {exc}") from exc
            new = established_to(host, port) - before
        if len(new) != 1 or not isinstance(first, bytes) or not first.startswith(b"peer "):
            await channel.close(None)
            raise LabError(f"opening grpc session {index}",
                           f"cannot tell the stream's connection in the client's network (new: {sorted(new)},"
                           f" first message {first!r})")
        addr, local_port = new.pop()
        return Session(id=index, flow=Flow(addr, local_port, host, port), pid=None,
                       handle=GrpcSession(channel, call, first[5:].decode()), opened_at=time.time())

    async def close_session(self, session: Session) -> None:
        h: GrpcSession = session.handle
        h.call.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(h.channel.close(None), 1.5)

    async def alive(self, session: Session, timeout_s: float = ALIVE_TIMEOUT_S) -> tuple[bool, str]:
        """The stream is still open and an echo comes back on the same channel (its one
        connection: a channel that had to reconnect has lost the stream)."""
        import grpc

        h: GrpcSession = session.handle
        if h.call.done():
            return False, f"stream ended: {await h.call.code()}"
        token = f"connchaos-alive-{next(self._probe)}".encode()
        try:
            got = await h.channel.unary_unary(ECHO_METHOD)(token, timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"echo failed: {exc.code()}"
        if got != token:
            return False, "echo answered something else"
        if h.call.done():
            return False, "stream ended"
        return True, "echo"

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """The reference server sends one message on each of these sessions' streams."""
        by_name = self._peers_by_name()
        peers = [by_name[f"session-{s.id}"] for s in sessions if f"session-{s.id}" in by_name]
        answer = self._ask({"op": "send", "peers": peers, "bytes": IN_FLIGHT_BYTES})
        if answer is None or "error" in answer:
            raise LabError("asking the grpc reference server to send", str(answer))

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Streams the reference server saw end under it, by the client address it saw:
        ``heartbeat`` (its keepalive ping went unanswered for the ping timeout), ``timeout``
        (the connection failed sooner with a ping unanswered: the kernel's TCP_USER_TIMEOUT),
        ``closed`` otherwise (the client went, or the transport failed)."""
        ka = self.keepalive()
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
            if record.get("event") != "closed" or record.get("cause") != "cancelled":
                continue
            kind, text = classify_close(record, ka.ping_timeout_s, ka.user_timeout_s)
            addr, _, port = str(record.get("peer", "")).rpartition(":")
            if kind is not None and addr and port.isdigit():
                found.setdefault((addr, int(port)), ServerError(float(record["at"]), kind, text))
        return found

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        peer = self._peers_by_name().get(f"session-{session.id}")
        if peer is None:
            return None
        addr, _, port = peer.rpartition(":")
        return addr, int(port)


def classify_close(record: Mapping[str, Any], ping_timeout_s: float,
                   user_timeout_s: float | None) -> tuple[str | None, str]:
    """(kind, text) of one ``closed`` line whose call was cancelled under the server; kind
    None when no keepalive ping had waited long enough to explain it (the client went away
    itself, perhaps with a ping just sent)."""
    unanswered = record.get("unanswered_ping_s")
    if not isinstance(unanswered, (int, float)):
        return None, "cancelled"
    text = f"keepalive ping unanswered for {unanswered:.3f} s"
    if unanswered >= ping_timeout_s - HEARTBEAT_MARGIN_S:
        return "heartbeat", text + " (ping timeout)"
    # the kernel gives up no sooner than TCP_USER_TIMEOUT after the ping
    if user_timeout_s is not None and unanswered >= user_timeout_s - HEARTBEAT_MARGIN_S:
        return "timeout", text + " (the connection failed first: TCP_USER_TIMEOUT)"
    return None, text


__all__ = ["INT_MAX_MS", "GrpcTarget", "classify_close", "established_to"]
