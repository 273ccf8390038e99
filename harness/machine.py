"""What this machine must have, in one list: ``connchaos doctor`` prints it, a run raises from it
(exit 3) and the test suite skips from it.

Each requirement names what needs it (``needed_for``): a backend (``local``, ``docker``), a way
of running one (``docker as root``), or a service or feature on a backend (``postgres on
local``). ``needs_for`` turns scenarios into those needs, ``missing`` and
``require`` check the requirements that serve them, in the list's order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import ConnchaosError, MachineError

if TYPE_CHECKING:
    from harness.scenario import LoadedScenario


@dataclass(frozen=True)
class Requirement:
    """One thing a run may need from this machine."""

    name: str                           # doctor's label
    what: str                           # what a run lacks without it (MachineError's text)
    check: Callable[[], str | None]     # why it is missing here (doctor's detail), or None
    fix: str                            # what to do about it
    needed_for: tuple[str, ...]         # the needs it serves (see the module docstring)
    seen: Callable[[], str] = lambda: "found"   # doctor's detail when present
    # doctor's real attempt (slower: it creates and removes something), after check passes
    trial: Callable[[], str | None] | None = None
    blocking: bool = True               # False: doctor reports it; a run does not stop for it
    reason_in_error: bool = False       # the error's hint starts with the check's reason

    def error(self, reason: str) -> MachineError:
        hint = f"{reason}; {self.fix}" if self.reason_in_error else self.fix
        return MachineError(self.what, hint)


# services whose server binary comes from the machine on the local backend ("X on local")
SERVER_BINARIES = ("postgres", "ssh", "haproxy", "pgbouncer", "mqtt", "redis")


def _root() -> str | None:
    return None if os.geteuid() == 0 else f"euid {os.geteuid()}"


def _command(tool: str) -> Requirement:
    package = {"ip": "iproute2", "setpriv": "util-linux"}[tool]
    return Requirement(
        f"{tool} command", f"the {tool} command",
        lambda: None if shutil.which(tool) else "missing", f"apt-get install {package}",
        ("local", "docker as root") if tool == "ip" else ("local",),
        seen=lambda: shutil.which(tool) or "")


def _netns() -> str | None:
    return None if os.path.exists("/proc/self/ns/net") else "no /proc/self/ns/net"


def _nft() -> str | None:
    from harness.faults import nft

    return None if nft.nft_binary() else "no nft command"


def _conntrack() -> str | None:
    """Per-namespace conntrack with its TCP sysctls, and ctnetlink to read the table (the
    middlebox): the modules load on demand, so their files are the cheap check."""
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"):
        return "no nf_conntrack sysctls (modprobe nf_conntrack)"
    import socket

    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12):   # NETLINK_NETFILTER
            pass
    except OSError as exc:
        return f"no nfnetlink socket ({exc.strerror}; modprobe nf_conntrack_netlink)"
    return None


def _trial_namespace(load_table: bool) -> str | None:
    """Create a throwaway namespace (and load an nft table in it): the real test of both."""
    from harness.lab import naming, owner

    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "not tried (needs root and ip)"
    lab_id = naming.new_lab_id()
    name = naming.namespace(lab_id, "doc")
    # recorded as a lab's namespace is: a doctor cut short leaves what `clean` can prove
    folder = owner.make_folder(lab_id, namespaces=[name])
    made = _run(["ip", "netns", "add", name])
    if made is None or made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return (made.stderr.strip() if made else "ip failed") if not load_table else "not tried"
    try:
        if not load_table:
            return None
        from harness.errors import LabError
        from harness.faults import nft
        from harness.faults.base import chain

        if nft.nft_binary() is None:
            return "no nft command"
        # the same loader and rule shape the packet faults use
        try:
            nft.load(nft.InNamespace(name), "rtr",
                     f"table {nft.TABLE} {{\n{chain('forward', 'forward', 'tcp dport 9 drop')}}}\n")
        except LabError as exc:
            return str(exc)
        return None
    finally:
        _run(["ip", "netns", "delete", name])
        shutil.rmtree(folder, ignore_errors=True)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _postgres() -> str | None:
    from harness.targets.postgres import find_bindir

    return None if find_bindir() else "postgres/initdb not found"


def _postgres_version() -> str:
    from harness.targets.postgres import find_bindir

    bindir = find_bindir()
    out = _run([os.path.join(bindir, "postgres"), "--version"]) if bindir else None
    return out.stdout.strip() if out else ""


def _pgbouncer() -> str | None:
    from harness.targets.pgbouncer.config import find_pgbouncer

    return None if find_pgbouncer() else "pgbouncer not found"


def _pgbouncer_version() -> str:
    from harness.targets.pgbouncer.config import find_pgbouncer

    command = find_pgbouncer()
    out = _run([command, "--version"]) if command else None
    return out.stdout.splitlines()[0].strip() if out and out.stdout else ""


def _mosquitto() -> str | None:
    from harness.targets.mqtt.config import find_mosquitto

    return None if find_mosquitto() else "mosquitto not found"


def _mosquitto_version() -> str:
    from harness.targets.mqtt.config import find_mosquitto

    command = find_mosquitto()
    out = _run([command, "-h"]) if command else None
    return out.stdout.splitlines()[0].strip() if out and out.stdout else ""


def _redis() -> str | None:
    from harness.targets.redis.config import find_redis_server

    return None if find_redis_server() else "redis-server not found"


def _redis_version() -> str:
    from harness.targets.redis.config import find_redis_server

    command = find_redis_server()
    out = _run([command, "--version"]) if command else None
    return out.stdout.strip() if out and out.stdout else ""


def _sshd() -> str | None:
    from harness.targets.ssh import find_sshd

    return None if find_sshd() else "sshd not found"


def _haproxy() -> str | None:
    from harness.targets.haproxy.config import find_haproxy

    return None if find_haproxy() else "haproxy not found"


def _haproxy_version() -> str:
    from harness.targets.haproxy.config import find_haproxy

    found = find_haproxy()
    done = _run([found, "-v"]) if found else None
    lines = done.stdout.splitlines() if done is not None else []
    return lines[0] if lines else found or ""


def _sshd_path() -> str:
    from harness.targets.ssh import find_sshd

    return find_sshd() or ""


def _engine() -> str | None:
    """Why no Docker engine answers (the SDK's words), or None: what ``lab.docker.engine``
    raises from, as a reason."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - a dependency of the package
        return "no docker SDK for Python (pip install docker)"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except DockerException as exc:
        return f"none answers ({exc})"
    return None


def _engine_version() -> str:
    from harness.lab.docker import engine

    client = engine(timeout_s=10)
    try:
        return str(client.version().get("Version", ""))
    finally:
        client.close()


def _images_todo() -> list[str]:
    from harness.lab import images

    client = images.connect()
    try:
        found = images.status(client)
    finally:
        client.close()
    return [f"{s.name} {s.state.split(' (')[0]}" for s in found
            if s.name in ("base", *images.NAMES) and not s.state.startswith("up to date")]


def _images() -> str | None:
    if _engine() is not None:
        return "not tried (no Docker engine)"
    try:
        todo = _images_todo()
    except ConnchaosError as exc:
        return str(exc)
    return ", ".join(todo) if todo else None


def _images_seen() -> str:
    from harness.lab import images

    return f"{len(images.NAMES)} images and the base up to date"


def _toxiproxy() -> str | None:
    return None if shutil.which("toxiproxy-server") else "not installed"


# -- capacity: what a count of sessions needs -----------------------------------------------------
#
# Sessions are held at once, so their count meets two limits of this machine. Open files:
# the harness holds each session's socket (a plain run; Locust's processes hold a load run's)
# and, for a service whose session is a process (PostgreSQL, sshd), that process's pidfd.
# Memory: each PostgreSQL session is a backend process. Measured here (PostgreSQL 15, 2000
# idle sessions through psycopg's async client, as the harness opens them): a backend's PSS
# is 1.1 MB, and MemAvailable drops by 1.3 MB per session (backend, kernel, the harness's
# side); 1.5 MiB a session leaves room for the server's per-connection shared memory.

DESCRIPTOR_MARGIN = 256                 # the harness's own files, sockets and pipes
SERVER_SESSION_BYTES = {"postgres": 3 << 19}     # 1.5 MiB; other services: not measured
HARNESS_SESSION_BYTES = 64 << 10        # the harness's side of one session (about 20 kB seen)
GIB = 1 << 30


@dataclass(frozen=True)
class Capacity:
    """What one scenario's sessions need from this machine."""

    service: str
    sessions: int
    descriptors: int        # open files of the harness's own process, beyond its margin
    memory_bytes: int

    @classmethod
    def of(cls, service: str, sessions: int, *, needs_process: bool, load: bool) -> Capacity:
        per_session = (0 if load else 1) + (1 if needs_process else 0)
        return cls(service, sessions, sessions * per_session,
                   sessions * (SERVER_SESSION_BYTES.get(service, 0) + HARNESS_SESSION_BYTES))


def descriptor_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process; unlimited as a very large number."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 1 << 62
    return (unlimited if soft == resource.RLIM_INFINITY else soft,
            unlimited if hard == resource.RLIM_INFINITY else hard)


def make_room_for_descriptors(needed: int) -> str | None:
    """Raise the soft open-files limit to ``needed`` (plus the margin) when the hard limit
    allows; else why not."""
    import resource

    want = needed + DESCRIPTOR_MARGIN
    soft, hard = descriptor_limits()
    if soft >= want:
        return None
    if hard >= want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            return None
        except (ValueError, OSError) as exc:
            return f"raising the soft open-files limit to {want} failed: {exc}"
    return f"about {want} open files are needed and the hard limit (RLIMIT_NOFILE) is {hard}"


def _meminfo() -> dict[str, int]:
    found = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                found[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def _cgroup_room() -> int | None:
    """What this process's cgroup (v2) still lets it use, when it has a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def available_memory() -> tuple[int, int]:
    """(bytes available now, bytes kept free): MemAvailable (or the cgroup's room, if less),
    and a reserve of 10 % of the memory, at least 1 GiB, for everything else."""
    info = _meminfo()
    available = info.get("MemAvailable", 0)
    room = _cgroup_room()
    if room is not None:
        available = min(available, room)
    return available, max(GIB, info.get("MemTotal", 0) // 10)


def memory_problem(needed: int) -> str | None:
    """Why ``needed`` bytes more do not fit in this machine's memory now, or None."""
    available, reserve = available_memory()
    if needed <= available - reserve:
        return None
    return (f"about {needed / GIB:.1f} GiB of memory is needed and {available / GIB:.1f} GiB is"
            f" available, of which {reserve / GIB:.1f} GiB stays free")


def _room(per_item: int, budget: int) -> int:
    return max(0, budget // per_item) if per_item else 0


def require_capacity(capacities: Iterable[Capacity]) -> None:
    """Raise MachineError (exit 3) when the sessions of a scenario (they run one after the
    other: the largest counts) cannot be held here; raises the soft open-files limit first
    when that is all it takes."""
    wanted = list(capacities)
    if not wanted:
        return
    files = max(wanted, key=lambda c: c.descriptors)
    why = make_room_for_descriptors(files.descriptors)
    if why is not None:
        hard = descriptor_limits()[1]
        most = _room(files.descriptors // files.sessions, hard - DESCRIPTOR_MARGIN)
        raise MachineError(f"open files for {files.sessions} {files.service} sessions",
                           f"{why}; raise the hard limit (as root `ulimit -Hn"
                           f" {files.descriptors + DESCRIPTOR_MARGIN}`, LimitNOFILE= for a"
                           f" service, nofile in limits.conf) or hold at most {most} sessions here")
    memory = max(wanted, key=lambda c: c.memory_bytes)
    why = memory_problem(memory.memory_bytes)
    if why is not None:
        available, reserve = available_memory()
        most = _room(memory.memory_bytes // memory.sessions, available - reserve)
        raise MachineError(f"memory for {memory.sessions} {memory.service} sessions",
                           f"{why}; free memory or hold at most {most} sessions here")


def _descriptors_seen() -> str:
    soft, hard = descriptor_limits()
    per = Capacity.of("postgres", 1, needs_process=True, load=False).descriptors
    return (f"soft {soft}, hard {hard}: room for {_room(per, hard - DESCRIPTOR_MARGIN)}"
            f" postgres sessions (a run raises the soft limit to what it needs)")


def _memory_seen() -> str:
    available, reserve = available_memory()
    per = Capacity.of("postgres", 1, needs_process=True, load=False).memory_bytes
    return (f"{available / GIB:.1f} GiB available, {reserve / GIB:.1f} GiB kept free: room for"
            f" {_room(per, available - reserve)} postgres sessions")


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("root", "root (network namespaces and nftables need it)", _root, "run as root",
                ("local",), seen=lambda: f"euid {os.geteuid()}"),
    _command("ip"),
    _command("setpriv"),
    Requirement("network namespaces", "network namespaces in this kernel", _netns, "", ("local",),
                seen=lambda: "created and removed one", trial=lambda: _trial_namespace(False)),
    Requirement("nftables", "nftables (the nft command)", _nft, "apt-get install nftables",
                ("local", "docker as root"), seen=lambda: "loaded a table in a lab namespace",
                trial=lambda: _trial_namespace(True)),
    Requirement("conntrack", "connection tracking with ctnetlink (the middlebox)", _conntrack,
                "modprobe nf_conntrack nf_conntrack_netlink", ("middlebox",),
                seen=lambda: "nf_conntrack sysctls and an nfnetlink socket"),
    Requirement("PostgreSQL server", "PostgreSQL server binaries (postgres, initdb)", _postgres,
                "apt-get install postgresql, or set CONNCHAOS_PG_BINDIR", ("postgres on local",),
                seen=_postgres_version),
    Requirement("PgBouncer", "PgBouncer (the pgbouncer command)", _pgbouncer,
                "apt-get install pgbouncer, or set CONNCHAOS_PGBOUNCER", ("pgbouncer on local",),
                seen=_pgbouncer_version),
    Requirement("Mosquitto", "the Mosquitto MQTT broker (mosquitto)", _mosquitto,
                "apt-get install mosquitto, or set CONNCHAOS_MOSQUITTO", ("mqtt on local",),
                seen=_mosquitto_version),
    Requirement("Redis", "Redis (the redis-server command)", _redis,
                "apt-get install redis-server, or set CONNCHAOS_REDIS_SERVER", ("redis on local",),
                seen=_redis_version),
    Requirement("OpenSSH server", "the OpenSSH server (sshd)", _sshd, "apt-get install openssh-server",
                ("ssh on local",), seen=_sshd_path),
    Requirement("HAProxy", "HAProxy (haproxy)", _haproxy, "apt-get install haproxy",
                ("haproxy on local",), seen=_haproxy_version),
    Requirement("Docker engine", "a Docker engine", _engine, "start dockerd or set DOCKER_HOST",
                ("docker",), seen=_engine_version, reason_in_error=True),
    # a run builds what is missing itself (connchaos images build is the same step)
    Requirement("docker images", "the project's images", _images, "connchaos images build",
                ("docker",), seen=_images_seen, blocking=False),
    # a run checks these against its session count (require_capacity); doctor shows the room
    Requirement("open files", "open files for the sessions", lambda: None, "", ("many sessions",),
                seen=_descriptors_seen, blocking=False),
    Requirement("memory", "memory for the sessions", lambda: None, "", ("many sessions",),
                seen=_memory_seen, blocking=False),
    Requirement("Toxiproxy server", "a Toxiproxy server", _toxiproxy, "",
                ("proxy layer: optional, the built-in proxy stands in (--toxiproxy-server)",),
                seen=lambda: shutil.which("toxiproxy-server") or "", blocking=False),
)


def needs_for(loaded: Sequence[LoadedScenario], backend: str) -> set[str]:
    """What these scenarios, all run on ``backend`` (``local`` or ``docker``), need."""
    needs = {backend}
    if backend == "docker" and os.geteuid() == 0:
        # as root the docker backend enters the containers' network namespaces and writes
        # nftables rules there with this machine's nft; without root the engine alone does
        needs.add("docker as root")
    for ls in loaded:
        spec = ls.scenario
        for t in (spec.target, *([spec.target.upstream] if spec.target.upstream else [])):
            if backend == "local" and t.service in SERVER_BINARIES:
                needs.add(f"{t.service} on local")
        if backend == "local" and spec.target.service == "pgbouncer":
            needs.add("postgres on local")   # its backend
        if spec.middlebox is not None:
            needs.add("middlebox")
    return needs


def missing(needed: Iterable[str]) -> list[tuple[Requirement, str]]:
    """The requirements serving ``needed`` that this machine lacks, in the list's order, each
    with why (a cheap check: nothing is created)."""
    wanted = set(needed)
    found = []
    for req in REQUIREMENTS:
        if req.blocking and wanted.intersection(req.needed_for):
            reason = req.check()
            if reason is not None:
                found.append((req, reason))
    return found


def require(needed: Iterable[str]) -> None:
    """Raise MachineError (exit 3) naming the first thing this machine lacks for ``needed``."""
    lacking = missing(needed)
    if lacking:
        req, reason = lacking[0]
        raise req.error(reason)
