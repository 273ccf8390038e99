"""``service: mqtt``: Debian's Mosquitto broker, one per lab in its server namespace (or its
container), and MQTT 3.1.1 clients (paho-mqtt) held open against it.

Settings are mosquitto.conf lines (checked by Mosquitto itself, see ``config``), except
``keepalive``: the keepalive the clients send in their CONNECT (default 60, paho's).

Sessions: a paho client per session, driven on the client namespace's event loop (its
socket's reads and writes are the loop's), subscribed to a topic of its own; ``alive``
publishes to that topic and waits for the broker to deliver it back. The client's own
keepalive timer (paho's ``loop_misc``) is not run: the session sends its PINGREQs itself,
one every ``keepalive`` seconds at the middle of a second of CLOCK_MONOTONIC, so that the
whole second the broker stamps it with is never in doubt; and, like a dead client, it never
gives up on a silent broker by itself (a paho client closing its end would reach the broker
through a proxy as a FIN).

Reclaim is the broker's socket leaving its table (or being released to the kernel: after
the disconnect its FIN to a dead client stays unacknowledged, an orphan). When, see
``harness.core.mqtt``: the check runs every 6 whole seconds from the broker's start, so the
target notes that second (its process's start time) and the fault's moment on the same
clock (``fault_at``). Mosquitto's log (stderr, stamped as each line arrives) gives the
client address it saw for each client id and why each client went: "has exceeded timeout"
(its keepalive check: ``heartbeat``), "Socket error" (the kernel's error).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.core.mqtt import BrokerClock, broker_keepalive
from harness.core.prediction import Prediction, SocketSettings
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab.processes import stop_process
from harness.lab.server import ServerProcess, ServerSpec
from harness.scenario.model import Scenario
from harness.targets.base import LabView, Scalar, ServerError, Session
from harness.targets.mqtt import config

DEFAULT_PORT = 1883
CONTAINER_DIR = "/etc/connchaos-mqtt"
START_TRIES = 3
RUNNING = "mosquitto version "   # "... running": its last line before the main loop's first turn
_CONNECTED = re.compile(r"New client connected from ([0-9.]+):(\d+) as (\S+) ")
_ENDED = [(re.compile(r"Client (\S+) has exceeded timeout, disconnecting"), "heartbeat"),
          (re.compile(r"Socket error on client (\S+), disconnecting"), "socket-error"),
          (re.compile(r"Client (\S+) closed its connection"), None)]


def start_mono_s(pid: int) -> float:
    """When process ``pid`` started, in CLOCK_MONOTONIC seconds (its /proc start time is in
    clock ticks of CLOCK_BOOTTIME)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    boot_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return boot_s - (time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic())


@dataclass
class _Client:
    """One session's paho client, its socket driven by the running loop."""

    loop: asyncio.AbstractEventLoop
    client_id: str
    keepalive: int
    mqtt: paho.Client = field(init=False)
    connected: asyncio.Future[Any] = field(init=False)
    subscribed: asyncio.Future[Any] = field(init=False)
    gone: asyncio.Future[str] = field(init=False)
    messages: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    pinger: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        loop = self.loop
        self.connected, self.subscribed, self.gone = (loop.create_future(), loop.create_future(),
                                                      loop.create_future())
        m = self.mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                    protocol=paho.MQTTv311, clean_session=True,
                                    reconnect_on_failure=False)
        m.on_socket_open = lambda c, _u, s: loop.add_reader(s, c.loop_read)

        def closed(_c: paho.Client, _u: Any, sock: Any) -> None:
            loop.remove_reader(sock)
            loop.remove_writer(sock)

        def no_more_writes(_c: paho.Client, _u: Any, sock: Any) -> None:
            loop.remove_writer(sock)

        m.on_socket_close = closed
        m.on_socket_register_write = lambda c, _u, s: loop.add_writer(s, c.loop_write)
        m.on_socket_unregister_write = no_more_writes
        m.on_connect = lambda _c, _u, _f, rc, _p: _settle(self.connected, rc)
        m.on_subscribe = lambda _c, _u, _m, rcs, _p: _settle(self.subscribed, rcs[0] if rcs else None)
        m.on_message = lambda _c, _u, msg: self.messages.put_nowait(bytes(msg.payload))
        m.on_disconnect = lambda _c, _u, _f, rc, _p: _settle(self.gone, str(rc))

    @property
    def topic(self) -> str:
        return f"connchaos/{self.client_id}"

    async def open(self, host: str, port: int) -> None:
        self.mqtt.connect(host, port, keepalive=self.keepalive)
        rc = await asyncio.wait_for(asyncio.shield(self.connected), 10)
        if rc.is_failure:
            raise LabError("connecting", f"the broker refused the connection: {rc}")
        self.mqtt.subscribe(self.topic, qos=0)
        rc = await asyncio.wait_for(asyncio.shield(self.subscribed), 10)
        if rc is None or rc.is_failure:
            raise LabError("subscribing", f"the broker refused the subscription: {rc}")
        if self.keepalive > 0:
            self.pinger = asyncio.ensure_future(self._ping())

    async def _ping(self) -> None:
        """A PINGREQ every ``keepalive`` seconds at x.5 s of CLOCK_MONOTONIC."""
        due = math.floor(time.monotonic()) + 0.5
        if due <= time.monotonic() + 0.05:
            due += 1
        while self.mqtt.socket() is not None:
            await asyncio.sleep(due - time.monotonic())
            self.mqtt._send_pingreq()
            due += self.keepalive

    def close(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
        sock: Any = self.mqtt.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.send(b"\xe0\x00")      # DISCONNECT, if the socket takes it now
            self.mqtt._sock_close()


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


@dataclass
class MqttTarget:
    """Mosquitto with the scenario's settings; sessions are MQTT clients with a keepalive."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    image: str | None = None        # the user's own image (docker backend); None = ours
    service: ClassVar[str] = "mqtt"
    needs_process: ClassVar[bool] = False
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)
    _log: list[tuple[float, str]] = field(default_factory=list, init=False, repr=False)
    _log_path: str = field(default="", init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _first_check: int | None = field(default=None, init=False, repr=False)
    _fault_mono: float | None = field(default=None, init=False, repr=False)
    _probe: Any = field(default_factory=itertools.count, init=False, repr=False)

    @classmethod
    def from_scenario(cls, spec: Scenario) -> MqttTarget:
        return cls(settings=dict(spec.target.settings), image=spec.target.image)

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """``keepalive`` checked here, every other setting by Mosquitto itself."""
        return config.check(settings)

    @property
    def keepalive(self) -> int:
        return config.client_keepalive(self.settings)

    def socket_settings(self) -> SocketSettings:
        """Mosquitto 2.0 sets no SO_KEEPALIVE (and has no option for it)."""
        return SocketSettings(keepalive=False)

    def describe_settings(self) -> dict[str, Scalar]:
        shown: dict[str, Scalar] = {"keepalive (clients)": self.keepalive, "tcp keepalive": "off"}
        shown.update({k: v for k, v in self.settings.items() if k != config.CLIENT_KEEPALIVE})
        return shown

    def clock(self) -> BrokerClock | None:
        """The broker's check seconds against the fault, once both are known."""
        if self._first_check is None or self._fault_mono is None:
            return None
        return BrokerClock(fault_mono_s=self._fault_mono, first_check_second=self._first_check)

    def fault_at(self, t0: float) -> None:
        """The runner's fault moment (``time.time()``), noted on the broker's clock."""
        self._fault_mono = t0 - (time.time() - time.monotonic())

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        """The broker's keepalive check (``harness.core.mqtt``). The broker sends nothing to a
        silent client (PINGREQ is the client's), so nothing of its own goes unanswered."""
        return broker_keepalive(self.keepalive, last_heard_s=last_activity_s, clock=self.clock()), None

    def load_env(self, folder: str) -> dict[str, str]:
        """For load runs (``harness/load/users.py``'s MqttUser): the clients' keepalive."""
        return {"CONNCHAOS_LOAD_MQTT_KEEPALIVE": str(self.keepalive)}

    # -- running ----------------------------------------------------------------------------

    def _fixed(self, addr: str) -> list[str]:
        return [f"listener {self.port} {addr}", "allow_anonymous true", "persistence false",
                "log_dest stderr", "log_timestamp false", "log_type error", "log_type warning",
                "log_type notice", "log_type information", "connection_messages true"]

    def start(self, lab: LabView) -> None:
        self._server_addr = lab.server_addr
        image = lab.image_for("mqtt", self.image)
        base = os.path.join(lab.tmpdir, "mqtt")
        os.makedirs(base, mode=0o755)
        os.chmod(base, 0o755)      # the broker's account reads its file (here, or in its container)
        self._log_path = os.path.join(base, "mosquitto.log")
        conf = os.path.join(base, "mosquitto.conf")
        config.write_conf(conf, self._fixed(lab.server_addr), config.broker_settings(self.settings))
        if image is None:
            spec = ServerSpec("mosquitto", (config.require_mosquitto(), "-c", conf), log_lines=True)
        else:
            spec = ServerSpec("mosquitto", ("mosquitto", "-c", f"{CONTAINER_DIR}/mosquitto.conf"),
                              image=image, binds={base: CONTAINER_DIR}, log_lines=True, user="mosquitto")
        lab.on_close("mosquitto", self.stop)
        for _ in range(START_TRIES):
            self._log.clear()
            # started early in a second, so that its first check's second is certain
            frac = time.monotonic() % 1
            if not 0.02 <= frac <= 0.4:
                time.sleep((1.02 - frac) % 1)
            self._proc = lab.start_server(spec)
            self._reader = threading.Thread(target=self._read_log, args=(self._proc.stderr,),
                                            name="mosquitto-log", daemon=True)
            self._reader.start()
            started = start_mono_s(self._proc.pid)
            running = self._wait_ready(lab)
            # the first check is at the loop's first turn: after the process started, before
            # its "running" line reached us
            if math.floor(started) == math.floor(running):
                self._first_check = math.floor(started)
                return
            # too near the end of a second to tell which one: again, and the stopped one is
            # not the lab's server any more (the run's watch would take its exit for a crash)
            proc = self._proc
            self.stop()
            servers = getattr(lab, "servers", None)
            if isinstance(servers, list) and proc in servers:
                servers.remove(proc)
        raise LabError("starting mosquitto", f"could not start it early in a second in {START_TRIES} tries")

    def _read_log(self, stream: Any) -> None:
        with stream, open(self._log_path, "a") as out:
            for raw in stream:
                now = time.time()
                line = raw.decode(errors="replace").rstrip("\r\n")
                self._log.append((now, line))
                out.write(f"{now:.6f} {line}\n")
                out.flush()

    def _wait_ready(self, lab: LabView, timeout_s: float = 30.0) -> float:
        """Until it listens and has logged that it runs; when that line came (monotonic)."""
        deadline = time.monotonic() + timeout_s
        offset = time.time() - time.monotonic()
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(2)
                raise LabError("starting mosquitto", self.log_tail())
            running = next((at for at, line in list(self._log)
                            if line.startswith(RUNNING) and line.endswith(" running")), None)
            if running is not None and lab.reach.listening(self.port, lab.server_addr):
                return running - offset
            time.sleep(0.01)
        raise LabError("starting mosquitto", f"not listening after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(line for _, line in self._log[-lines:]).strip()

    def stop(self) -> None:
        """SIGTERM (Mosquitto's clean stop), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        import signal

        stop_process(proc, signal.SIGTERM, grace_s=5)
        if self._reader is not None:
            self._reader.join(5)

    # -- sessions (on the client namespace's loop) ------------------------------------------

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        """An MQTT 3.1.1 client ``connchaos-<index>`` with the scenario's keepalive,
        subscribed to its own topic."""
        host, port = via or (lab.server_addr, self.port)
        client = _Client(asyncio.get_running_loop(), f"connchaos-{index}", self.keepalive)
        try:
            await client.open(host, port)
        except (OSError, TimeoutError, ValueError, LabError) as exc:
            client.close()
            detail = exc.detail if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
            raise LabError(f"opening mqtt session {index}", detail) from exc
        sock: Any = client.mqtt.socket()
        addr, cport = sock.getsockname()[:2]
        return Session(id=index, flow=Flow(addr, cport, host, port), pid=None, handle=client,
                       opened_at=time.time())

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def _peers(self) -> dict[str, tuple[str, int]]:
        found = {}
        for _, line in list(self._log):
            if m := _CONNECTED.search(line):
                found[m.group(3)] = (m.group(1), int(m.group(2)))
        return found

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """The client address the broker logged for the session's client id (its log line
        comes before its CONNACK; the reader may be a moment behind)."""
        deadline = time.monotonic() + 2
        while True:
            peer = self._peers().get(session.handle.client_id)
            if peer is not None or time.monotonic() > deadline:
                return peer
            time.sleep(0.02)

    async def close_session(self, session: Session) -> None:
        session.handle.close()

    async def alive(self, session: Session, timeout_s: float = 5.0) -> tuple[bool, str]:
        """A message published to the session's own topic comes back through the broker."""
        client: _Client = session.handle
        if client.gone.done() or client.mqtt.socket() is None:
            return False, f"disconnected ({client.gone.result() if client.gone.done() else 'closed'})"
        token = f"alive-{next(self._probe)}".encode()
        client.mqtt.publish(client.topic, token, qos=0)

        async def echo() -> None:
            while await client.messages.get() != token:
                pass
        task: asyncio.Future[Any] = asyncio.ensure_future(echo())
        gone: asyncio.Future[Any] = client.gone
        done, _ = await asyncio.wait({task, gone}, timeout=timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            if client.gone.done():
                return False, f"disconnected ({client.gone.result()})"
            return False, f"no message back within {timeout_s:g} s"
        return True, "its publish came back"

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        raise LabError("activity: in-flight", "the mqtt target runs idle sessions only")

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """Why Mosquitto let each client go, by the client address it saw."""
        peers: dict[str, tuple[str, int]] = {}
        found: dict[int | tuple[str, int], ServerError] = {}
        for at, line in list(self._log):
            if m := _CONNECTED.search(line):
                peers[m.group(3)] = (m.group(1), int(m.group(2)))
                continue
            for pattern, kind in _ENDED:
                if (m := pattern.search(line)) and kind is not None and m.group(1) in peers:
                    found.setdefault(peers[m.group(1)], ServerError(at, kind, line.strip()))
        return found
