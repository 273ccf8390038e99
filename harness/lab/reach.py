"""How the harness reaches inside a lab's hosts (``cli``, ``rtr``, ``srv``): ``Reach``.

Everything the harness does inside the lab goes through the lab's reach, so faults,
targets, the observer and the runners do not care how the lab is reached. Two ways:

- ``NamespaceReach``, as root: enter the hosts' named network namespaces (the local
  backend's, or the docker backend's containers' attached under the same names): commands
  through ``ip netns exec``, sockets from threads that entered a namespace (``setns``), the
  server's socket table and ``/proc`` read directly.
- ``EngineReach``, the docker backend without root: from outside. Commands run with
  ``docker exec`` in a holder container (which has NET_ADMIN); sessions are opened from the
  harness's own network over the host's bridge (through a forwarder in the client's
  network: ``enters_networks`` is false); the server's socket table, sysctls, listening ports,
  processes and their descriptors come from the observer's agent beside the server
  (``harness.observe.agent``).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import LabError

if TYPE_CHECKING:
    from harness.core.prediction import KernelDefaults
    from harness.lab.netns import LoopInNamespace
    from harness.observe.agent import AgentClient
    from harness.observe.sockdiag import Key, SockInfo, TableReader

INPUT_FILE = "/tmp/connchaos-input"     # a command's standard input, copied into a holder
Usage = tuple[int, int, int]
"""One process's (open descriptors, VmRSS kB, RssAnon kB)."""


class Reach(Protocol):
    """The ways into a lab's hosts."""

    @property
    def enters_networks(self) -> bool:
        """Can the harness open sockets and run its own commands inside the lab's networks?
        If not, sessions go from its own network through a forwarder in the client's, and
        its helpers (Locust) run from the project's image."""
        ...

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               cwd: str | None = None, step: str = "") -> subprocess.CompletedProcess[str]:
        """Run a command on the host ``role`` (its network); a failure is a LabError.
        ``cwd`` is a folder of this machine's (ignored where the command runs elsewhere)."""
        ...

    def loop_in(self, role: str) -> LoopInNamespace:
        """An event loop whose sockets are opened in ``role``'s network, when the harness
        can enter it; else in the harness's own."""
        ...

    def session_loop(self) -> LoopInNamespace:
        """The event loop sessions are opened from."""
        ...

    def control_address(self, addr: str) -> tuple[str, str]:
        """For a service of ours in a host's network whose address there is ``addr``: where
        it should listen for the harness, and where the harness then calls it."""
        ...

    def socket_table(self) -> TableReader:
        """The server's socket table (``columns``, ``dump``, ``close``); one per caller."""
        ...

    def listening(self, port: int, addr: str | None = None) -> bool:
        """Does something listen on ``port`` in the server's network?"""
        ...

    def server_answers(self, addr: str, port: int, timeout_s: float = 0.5) -> bool:
        """Does a TCP connection to ``addr:port`` from the server's own network succeed?"""
        ...

    def kernel_defaults(self) -> KernelDefaults:
        """The server network's keepalive and retransmission sysctls."""
        ...

    def session_pids(self, table: dict[Key, SockInfo], keys: list[Key]) -> dict[Key, int]:
        """For each server socket, the oldest process in the server's network holding it."""
        ...

    def server_usage(self) -> list[Usage]:
        """What each process in the server's network uses now (descriptors, memory)."""
        ...

    def fd_link(self, pid: int, fd: int) -> str:
        """What descriptor ``fd`` of a server process is (``pipe:[inode]``...)."""
        ...

    def write_fd(self, pid: int, fd: int, data: bytes) -> None:
        """Write ``data`` (at most a pipe buffer: one atomic write) to descriptor ``fd`` of a
        server process, reopened through ``/proc``, without blocking."""
        ...

    def shell_hint(self, role: str, command: str, *, interactive: bool = False) -> str:
        """The command line a person types to run ``command`` on host ``role``."""
        ...


def _fd_path(pid: int, fd: int) -> str:
    return f"/proc/{int(pid)}/fd/{int(fd)}"


def write_fd_here(pid: int, fd: int, data: bytes) -> None:
    """``Reach.write_fd`` from a process that may (root, or the agent)."""
    handle = os.open(_fd_path(pid, fd), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(handle, data)
    finally:
        os.close(handle)


def fd_link_here(pid: int, fd: int) -> str:
    """``Reach.fd_link`` from a process that may (root, or the agent)."""
    return os.readlink(_fd_path(pid, fd))


@dataclass
class NamespaceReach:
    """Into the lab's named network namespaces (root)."""

    client_ns: str
    router_ns: str
    server_ns: str

    @property
    def enters_networks(self) -> bool:
        return True

    def namespace_of(self, role: str) -> str:
        """The namespace of ``cli``, ``rtr`` or ``srv``."""
        return {"cli": self.client_ns, "rtr": self.router_ns, "srv": self.server_ns}[role]

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               cwd: str | None = None, step: str = "") -> subprocess.CompletedProcess[str]:
        from harness.lab.netns import run_in

        return run_in(self.namespace_of(role), argv, input=input, cwd=cwd, step=step)

    def loop_in(self, role: str) -> LoopInNamespace:
        from harness.lab.netns import LoopInNamespace

        return LoopInNamespace(self.namespace_of(role))

    def session_loop(self) -> LoopInNamespace:
        return self.loop_in("cli")

    def control_address(self, addr: str) -> tuple[str, str]:
        # the harness calls it from a thread inside the same namespace: loopback is enough
        return "127.0.0.1", "127.0.0.1"

    def socket_table(self) -> TableReader:
        from harness.observe.sockdiag import SocketTable

        return SocketTable(self.server_ns)

    def listening(self, port: int, addr: str | None = None) -> bool:
        from harness.lab.netns import listening

        return listening(self.server_ns, port, addr)

    def server_answers(self, addr: str, port: int, timeout_s: float = 0.5) -> bool:
        from harness.lab.netns import entered

        try:
            with entered(self.server_ns), socket.create_connection((addr, port), timeout_s):
                return True
        except OSError:
            return False

    def kernel_defaults(self) -> KernelDefaults:
        from harness.lab.kernel import kernel_defaults

        return kernel_defaults(self.server_ns)

    def session_pids(self, table: dict[Key, SockInfo], keys: list[Key]) -> dict[Key, int]:
        from harness.observe.owners import session_pids

        return session_pids(self.server_ns, table, keys)

    def server_usage(self) -> list[Usage]:
        from harness.observe.owners import process_usage

        return process_usage(self.server_ns)

    def fd_link(self, pid: int, fd: int) -> str:
        try:
            return fd_link_here(pid, fd)
        except OSError as exc:
            raise LabError(f"reading descriptor {fd} of process {pid}", str(exc)) from exc

    def write_fd(self, pid: int, fd: int, data: bytes) -> None:
        try:
            write_fd_here(pid, fd, data)
        except OSError as exc:
            raise LabError(f"writing to descriptor {fd} of process {pid}", str(exc)) from exc

    def shell_hint(self, role: str, command: str, *, interactive: bool = False) -> str:
        return f"ip netns exec {self.namespace_of(role)} {command}"


@dataclass
class EngineReach:
    """From outside, through the Docker engine and the observer's agent (no root)."""

    containers: Mapping[str, Any]    # role -> the docker SDK's container holding its network
    agent: AgentClient

    @property
    def enters_networks(self) -> bool:
        return False

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               cwd: str | None = None, step: str = "") -> subprocess.CompletedProcess[str]:
        from docker.errors import APIError

        container = self.containers[role]
        step = step or f"{' '.join(argv)} in {container.name}"
        try:
            if input is not None:
                # exec has no stdin in the SDK: the input goes in as a file (an nft set of
                # thousands of flows is larger than one argument may be)
                container.put_archive(os.path.dirname(INPUT_FILE), _tar(os.path.basename(INPUT_FILE), input))
                argv = ["sh", "-c", f'exec "$@" < {INPUT_FILE}', "sh", *argv]
            code, (out, err) = container.exec_run(argv, demux=True)
        except APIError as exc:
            raise LabError(step, str(exc.explanation or exc)) from exc
        done = subprocess.CompletedProcess(argv, int(code), (out or b"").decode(errors="replace"),
                                           (err or b"").decode(errors="replace"))
        if done.returncode != 0:
            raise LabError(step, (done.stderr or done.stdout).strip())
        return done

    def loop_in(self, role: str) -> LoopInNamespace:
        from harness.lab.netns import LoopInNamespace

        return LoopInNamespace(None)

    def session_loop(self) -> LoopInNamespace:
        return self.loop_in("cli")

    def control_address(self, addr: str) -> tuple[str, str]:
        # this machine is on the lab's bridges: the service listens on every address of its
        # container and the harness calls it at the container's
        return "0.0.0.0", addr

    def socket_table(self) -> TableReader:
        from harness.observe.agent import RemoteSocketTable

        return RemoteSocketTable(self.agent)

    def listening(self, port: int, addr: str | None = None) -> bool:
        return bool(self.agent.call({"op": "listening", "port": port, "addr": addr})["listening"])

    def server_answers(self, addr: str, port: int, timeout_s: float = 0.5) -> bool:
        return bool(self.agent.call({"op": "connect", "addr": addr, "port": port,
                                     "timeout": timeout_s})["answers"])

    def kernel_defaults(self) -> KernelDefaults:
        from harness.lab.kernel import from_sysctls

        keys = [f"net.ipv4.{k}" for k in ("tcp_keepalive_time", "tcp_keepalive_intvl",
                                          "tcp_keepalive_probes", "tcp_retries2")]
        values = self.agent.call({"op": "sysctl", "keys": keys})["values"]
        return from_sysctls(lambda key: str(values[f"net.ipv4.{key}"]))

    def session_pids(self, table: dict[Key, SockInfo], keys: list[Key]) -> dict[Key, int]:
        from harness.observe.owners import pids_holding

        holders = self.agent.call({"op": "holders"})["holders"]
        return pids_holding({int(k): v for k, v in holders.items()}, table, keys)

    def server_usage(self) -> list[Usage]:
        rows: Iterable[list[int]] = self.agent.call({"op": "usage"})["usage"]
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    def fd_link(self, pid: int, fd: int) -> str:
        return str(self.agent.call({"op": "readlink", "pid": pid, "fd": fd})["link"])

    def write_fd(self, pid: int, fd: int, data: bytes) -> None:
        self.agent.call({"op": "write", "pid": pid, "fd": fd, "data": data.decode("latin-1")})

    def shell_hint(self, role: str, command: str, *, interactive: bool = False) -> str:
        return f"docker exec {'-it ' if interactive else ''}{self.containers[role].name} {command}"


def _tar(name: str, text: str) -> bytes:
    """A tar holding one file, for ``put_archive``."""
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
