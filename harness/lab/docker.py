"""The docker backend's lab: client, router and server containers on two networks of their own.

::

    network cc-<lab>-c                     network cc-<lab>-s
    [cc-<lab>-cli] ──── [cc-<lab>-rtr] ──── [cc-<lab>-srv] ← the target's container
       clients          forwards; faults     shares this network namespace
                        and the proxy here

The three small containers only hold network namespaces (they sleep); the target runs in a
container of its own that joins the server container's namespace, as a pod does, so the
addresses and routes are in place before the service starts and the service's image is the
user's choice. The proxy, at the proxy layer, joins the router's namespace the same way.

The harness is root on this host, so it does what the local backend does inside those
namespaces: each one is attached under the ``cc-<lab>-cli/rtr/srv`` name (``ip netns attach``),
sessions are opened from a thread that entered the client's, packet faults are nftables rules
in the router's or client's (never the server's: DESIGN.md), and the observer reads the
server's socket table. Containers run in the host's PID namespace, so a session's server
process has the same pid for the service (``pg_backend_pid``) and for the harness.

Without root (``rootless``: the harness may use the engine but not enter namespaces) the
same lab is reached from outside (``harness.lab.reach.EngineReach``): the three holders get
NET_ADMIN, so routes and a packet fault's nftables rules are loaded with ``docker exec`` in
the client's or router's container; sessions are opened from the harness's own namespace
over the host's bridge, through a forwarder in the client's namespace (see
``harness.experiment.ForwarderRouting``); and an agent beside the server
(``harness.observe.agent``) answers for the server's socket table, sysctls, listening ports
and processes over a Unix socket in the lab's folder.

Every container and network carries ``connchaos.run=<run id>``, ``connchaos.lab=<lab id>`` and
``connchaos.proof`` (made from its name and the secret in the lab's owner record:
``harness.lab.owner.proof``), and is removed with its anonymous volumes on every exit path;
``connchaos clean`` removes those of runs that died, proven by that label. Nothing else is
touched, whatever labels it carries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import netns

from harness.errors import LabError, MachineError
from harness.lab import naming
from harness.lab.base import LabBase
from harness.lab.netns import list_namespaces
from harness.lab.reach import EngineReach, NamespaceReach
from harness.lab.server import ServerSpec
from harness.observe.agent import AgentClient

LABEL_RUN = "connchaos.run"
LABEL_LAB = "connchaos.lab"
LABEL_ROLE = "connchaos.role"
LABEL_PROOF = "connchaos.proof"
SLEEP = ["sleep", "infinity"]
AGENT_DIR = "/run/connchaos-agent"      # in the agent's container: the lab folder's agent/


def engine(timeout_s: float = 60) -> Any:
    """A docker SDK client for the engine this machine uses (DOCKER_HOST or the local socket);
    exit 3 when none answers."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise MachineError("the docker SDK for Python", "pip install docker") from exc
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except DockerException as exc:
        raise MachineError("a Docker engine",
                           f"none answers ({exc}); start dockerd or set DOCKER_HOST") from exc
    return client


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None."""
    try:
        engine(timeout_s=5).close()
    except MachineError as exc:
        return str(exc)
    return None


def labels(run_id: str, lab_id: str, role: str, proof: str = "") -> dict[str, str]:
    found = {LABEL_RUN: run_id or "none", LABEL_LAB: lab_id, LABEL_ROLE: role}
    return {**found, LABEL_PROOF: proof} if proof else found


class LogLines:
    """A container's output as lines (bytes), followed until the container ends: the same
    shape as a Popen's pipe, so a target reads both alike."""

    def __init__(self, container: Any) -> None:
        self._stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        for chunk in self._stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if pending:
            yield pending


@dataclass
class ContainerProcess:
    """A service's container, seen as the process it runs (the subset of ``Popen`` the
    targets use: ``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``, ``stderr``)."""

    container: Any
    pid: int = 0
    stderr: LogLines | None = None

    def poll(self) -> int | None:
        try:
            self.container.reload()
        except Exception:
            return -1  # removed
        state = self.container.attrs["State"]
        return None if state.get("Running") else int(state.get("ExitCode", -1))

    def wait(self, timeout: float | None = None) -> int:
        import requests

        try:
            status = self.container.wait(timeout=timeout if timeout is not None else 3600)
        except requests.exceptions.RequestException as exc:
            raise subprocess.TimeoutExpired(str(self.container.name), timeout or 0) from exc
        return int(status.get("StatusCode", -1))

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(Exception):  # not running any more
            self.container.kill(signal=int(sig))

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def logs(self) -> str:
        try:
            return str(self.container.logs(stdout=True, stderr=True).decode(errors="replace"))
        except Exception:
            return ""



@dataclass
class DockerLab(LabBase):
    """One lab in Docker containers. Use as a context manager."""

    client_ns: str = ""
    router_ns: str = ""
    server_ns: str = ""
    client_addr: str = ""
    server_addr: str = ""
    router_client_addr: str = ""
    router_server_addr: str = ""
    client_net: str = ""
    server_net: str = ""
    images: Mapping[str, str] = field(default_factory=dict)   # role -> image, from images.ensure
    rootless: bool = False    # reach it from outside (always so without root)
    _engine: Any = field(default=None, repr=False)
    _containers: dict[str, Any] = field(default_factory=dict, repr=False)
    _networks: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.client_ns = naming.namespace(self.lab_id, "cli")
        self.router_ns = naming.namespace(self.lab_id, "rtr")
        self.server_ns = naming.namespace(self.lab_id, "srv")
        self.rootless = self.rootless or os.geteuid() != 0

    @property
    def backend(self) -> str:
        return "docker"

    def _labels(self, role: str, name: str) -> dict[str, str]:
        from harness.lab.owner import proof

        return labels(self.run_id, self.lab_id, role, proof(self.secret, name) if self.secret else "")

    # -- building ---------------------------------------------------------------------------

    def _build(self) -> None:
        self._make_folder(namespaces=[self.client_ns, self.router_ns, self.server_ns],
                          networks=[naming.link(self.lab_id, side) for side in ("c", "s")],
                          backend="docker")
        self._engine = engine()
        self.on_close("docker client", self._engine.close)
        from harness.lab.images import image_ref

        base = self.images.get("client") or image_ref("client")
        for side in ("c", "s"):
            self._network(side)
        # Without root the holders change their own routes and rules (docker exec): NET_ADMIN.
        caps: dict[str, Any] = {"cap_add": ["NET_ADMIN"]} if self.rootless else {}
        cli = self._container("cli", base, network=self._networks["c"].name, **caps)
        rtr = self._container("rtr", base, network=self._networks["c"].name,
                              sysctls={"net.ipv4.ip_forward": "1"}, **caps)
        self._networks["s"].connect(rtr)
        srv = self._container("srv", base, network=self._networks["s"].name, **caps)
        for role, c in (("cli", cli), ("rtr", rtr), ("srv", srv)):
            c.reload()
            if not self.rootless:
                self._attach(naming.namespace(self.lab_id, role), int(c.attrs["State"]["Pid"]))
        if self.rootless:
            self.reach = EngineReach({"cli": cli, "rtr": rtr, "srv": srv}, self._start_agent())
        else:
            self.reach = NamespaceReach(self.client_ns, self.router_ns, self.server_ns)

        self.client_net, self.server_net = (self._subnet(self._networks[s]) for s in ("c", "s"))
        self.client_addr = self._address(cli, "c")
        self.server_addr = self._address(srv, "s")
        self.router_client_addr = self._address(rtr, "c")
        self.router_server_addr = self._address(rtr, "s")
        # Each end reaches the other side through the router, not through the host's bridge.
        self._route("cli", self.server_net, self.router_client_addr)
        self._route("srv", self.client_net, self.router_server_addr)

    def _network(self, side: str) -> None:
        from docker.errors import APIError

        name = naming.link(self.lab_id, side)
        # the undo first, by name: a signal during the call must not leave a network we never
        # got the handle of (the engine makes it all the same)
        self.on_close(f"docker network {name}", lambda: _remove_network_by_name(self._engine, name))
        try:
            # Not `internal`: Docker drops forwarded traffic from other subnets on internal
            # networks, which is exactly what the router sends.
            net = self._engine.networks.create(name, driver="bridge",
                                               labels=self._labels(f"net-{side}", name))
        except APIError as exc:
            raise LabError(f"creating docker network {name}", str(exc)) from exc
        self._networks[side] = net

    def _container(self, role: str, image: str, *, command: Sequence[str] = SLEEP,
                   network: str | None = None, network_mode: str | None = None,
                   **options: Any) -> Any:
        from docker.errors import APIError, ImageNotFound

        name = naming.namespace(self.lab_id, role)
        # the undo first, by name (see _network): the engine may make it though the call is cut short
        self.on_close(f"container {name}", lambda: _remove_by_name(self._engine, name))
        try:
            c = self._engine.containers.run(
                image, list(command), name=name, detach=True, labels=self._labels(role, name),
                network=network, network_mode=network_mode, init=False, **options)
        except ImageNotFound as exc:
            raise MachineError(f"the image {image}", "run `connchaos images build`") from exc
        except APIError as exc:
            # a container that was created but did not start is removed too
            _remove_by_name(self._engine, name)
            raise LabError(f"starting container {name} ({image})", str(exc.explanation or exc)) from exc
        self._containers[role] = c
        return c

    def _attach(self, name: str, pid: int) -> None:
        if name in list_namespaces():
            raise LabError("creating the lab", f"namespace {name} already exists")
        try:
            netns.attach(name, pid)
        except OSError as exc:
            raise LabError(f"attaching the network namespace of pid {pid} as {name}", str(exc)) from exc
        self.on_close(f"namespace name {name}", lambda: _detach(name))

    def _address(self, container: Any, side: str) -> str:
        net = self._networks[side].name
        return str(container.attrs["NetworkSettings"]["Networks"][net]["IPAddress"])

    @staticmethod
    def _subnet(net: Any) -> str:
        net.reload()
        return str(net.attrs["IPAM"]["Config"][0]["Subnet"])

    def _route(self, role: str, dst: str, gateway: str) -> None:
        self.reach.run_in(role, ["ip", "route", "add", dst, "via", gateway],
                          step=f"adding a route to {dst} in {self._containers[role].name}")

    def _start_agent(self) -> AgentClient:
        """The observer's agent beside the server (its network, the host's pids), answering on
        a socket in our folder; it runs from the project's own image (the proxy's)."""
        folder = os.path.join(self.tmpdir, "agent")
        os.makedirs(folder)
        image = self.image_for("toxiproxy", None)
        proc = self._start_image(ServerSpec(
            "agent", ("python", "-m", "harness.observe.agent", "--socket", f"{AGENT_DIR}/agent.sock"),
            image=image, binds={folder: AGENT_DIR},
            # reading other users' /proc/<pid>/fd (which process holds a socket)
            cap_add=("SYS_PTRACE",)))
        try:
            agent = AgentClient.wait(os.path.join(folder, "agent.sock"),
                                     alive=lambda: proc.poll() is None)
        except LabError as exc:
            raise LabError(exc.step, f"{exc.detail}; its output: {proc.logs()[-800:]}") from exc
        self.on_close("observer's agent connection", agent.close)
        return agent

    # -- services ---------------------------------------------------------------------------

    def image_for(self, name: str, own: str | None) -> str | None:
        from harness.lab.images import image_ref

        return own or self.images.get(name) or image_ref(name)

    def _start_image(self, spec: ServerSpec) -> ContainerProcess:
        """``spec.image`` in the network namespace of the ``spec.beside`` container (the
        server's; the router's for the proxy; the client's for the forwarder and Locust), in
        the host's PID namespace; returns it as a process. ``binds`` are read-write."""
        holder = self._containers[spec.beside]
        options: dict[str, Any] = {"pid_mode": "host", "environment": dict(spec.env),
                                   "volumes": {h: {"bind": c, "mode": "rw"} for h, c in spec.binds.items()}}
        if spec.argv is not None and not spec.keep_entrypoint:
            options["entrypoint"] = []      # a command line of ours replaces the image's entrypoint
        if spec.user is not None:
            options["user"] = spec.user
        if spec.cap_add:
            options["cap_add"] = list(spec.cap_add)
        c = self._container(spec.name, str(spec.image), command=list(spec.argv or []),
                            network_mode=f"container:{holder.id}", **options)
        c.reload()
        return ContainerProcess(c, pid=int(c.attrs["State"]["Pid"]),
                                stderr=LogLines(c) if spec.log_lines else None)

    def describe(self) -> dict[str, str]:
        """Where things are, for reports and for ``connchaos up``."""
        return {"client_ns": self.client_ns, "router_ns": self.router_ns,
                "server_ns": self.server_ns, "client_addr": self.client_addr,
                "server_addr": self.server_addr, "tmpdir": self.tmpdir,
                "containers": ", ".join(sorted(c.name for c in self._containers.values())),
                "networks": ", ".join(sorted(n.name for n in self._networks.values()))}


def _quietly(fn: Any) -> None:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        fn()


def _remove_container(container: Any) -> None:
    """Force-remove with its anonymous volumes (an image's VOLUME, e.g. postgres's data)."""
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        container.remove(force=True, v=True)


def _remove_by_name(client: Any, name: str) -> None:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        _remove_container(client.containers.get(name))


def _remove_network_by_name(client: Any, name: str) -> None:
    for net in client.networks.list(names=[name]):
        if net.name == name:      # the engine's filter matches parts of names too
            _quietly(net.remove)


def _detach(name: str) -> None:
    """Forget an attached namespace name (the namespace itself goes with its container)."""
    if name in list_namespaces():
        netns.remove(name)


# -- cleanup by label ---------------------------------------------------------------------------

def labelled(client: Any) -> tuple[list[Any], list[Any]]:
    """Our containers and networks: those with the ``connchaos.run`` label, nothing else."""
    flt = {"label": LABEL_RUN}
    return client.containers.list(all=True, filters=flt), client.networks.list(filters=flt)


def _labels_of(obj: Any) -> dict[str, str]:
    found = obj.attrs.get("Labels") or obj.attrs.get("Config", {}).get("Labels") or {}
    return {str(k): str(v) for k, v in found.items()}


def lab_of(obj: Any) -> str:
    return _labels_of(obj).get(LABEL_LAB, "")


def proof_of(obj: Any) -> str:
    return _labels_of(obj).get(LABEL_PROOF, "")


def remove_labelled(client: Any, keep: Any = lambda lab: False, proven: Any = None) -> list[str]:
    """Remove our containers (with their anonymous volumes), then our networks, except those
    of labs ``keep`` names (runs still alive) and, given ``proven`` (lab id, name, proof label
    -> bool), those it does not prove are the lab's. Returns what was removed."""
    containers, networks = labelled(client)
    removed = []

    def mine(obj: Any) -> bool:
        name = str(obj.name).lstrip("/")
        return not keep(lab_of(obj)) and (proven is None or proven(lab_of(obj), name, proof_of(obj)))

    for c in containers:
        if mine(c):
            _remove_container(c)
            removed.append(f"container {c.name}")
    for n in networks:
        if mine(n):
            _quietly(n.remove)
            removed.append(f"network {n.name}")
    return removed
