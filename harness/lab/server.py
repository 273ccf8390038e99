"""What to run in a lab: ``ServerSpec``, and the process it becomes.

A target (or the proxy, the observer's agent, Locust) says *what* to run: a command, or an
image, with its environment, folders, log and account. The lab decides *how*
(``start_server``): on this machine inside one of its network namespaces (``start_here``),
or in a container of the image that joins a holder's network (``harness.lab.docker``).
Either way it comes back as a ``ServerProcess``: ``poll``, ``wait``, ``send_signal``,
``kill``, ``pid``, ``stderr`` (with ``log_lines``) and ``logs``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.errors import MachineError


@dataclass(frozen=True)
class ServerSpec:
    """One process (or container) for the lab to run."""

    name: str                              # what it is ("postgres", "sshd"): its container's role
    argv: tuple[str, ...] | None = None    # the command; None: the image's own
    image: str | None = None               # run from this image; None: this machine's command
    keep_entrypoint: bool = False          # an image's argv goes to its entrypoint (else replaces it)
    env: Mapping[str, str] = field(default_factory=dict)     # added to its environment
    binds: Mapping[str, str] = field(default_factory=dict)   # an image's: host folder -> its path
    cwd: str | None = None                 # on this machine: the folder it runs in
    log: str | None = None                 # on this machine: stdout and stderr go to this file
    log_lines: bool = False                # its output as lines to read (``stderr``); nothing else
    user: str | None = None                # the account it runs as (an image's: also "uid:gid")
    beside: str = "srv"                    # whose network: srv, rtr (the proxy), cli (Locust)
    cap_add: tuple[str, ...] = ()          # an image's extra capabilities


class ServerProcess(Protocol):
    """A started spec: a process of this machine, or a container seen as one."""

    pid: int

    @property
    def stderr(self) -> Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    def logs(self) -> str:
        """Its output so far (its log file, or the container's)."""
        ...


class LocalProcess(subprocess.Popen[bytes]):
    """A process of this machine, with its log file."""

    log_path: str | None = None

    def logs(self) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def as_account(name: str) -> list[str]:
    """The command prefix that runs a command as account ``name`` (root drops to it)."""
    import pwd

    user = pwd.getpwnam(name)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


def start_here(namespace: str | None, spec: ServerSpec) -> LocalProcess:
    """``spec`` as a process of this machine inside ``namespace`` (None: the harness's own),
    in a session of its own (a Ctrl-C in the terminal reaches the harness, which stops it)."""
    from harness.lab.netns import exec_argv

    assert spec.argv is not None, spec
    argv = [*as_account(spec.user), *spec.argv] if spec.user else list(spec.argv)
    if namespace is not None:
        argv = exec_argv(namespace, argv)
    env = {**os.environ, **spec.env} if spec.env else None
    try:
        if spec.log_lines:
            proc = LocalProcess(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, cwd=spec.cwd, env=env)
        elif spec.log:
            with open(spec.log, "wb") as out:
                proc = LocalProcess(argv, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=spec.cwd, env=env)
        else:
            proc = LocalProcess(argv, start_new_session=True, cwd=spec.cwd, env=env)
    except OSError as exc:
        raise MachineError(f"the command {argv[0]} ({spec.name})", str(exc)) from exc
    proc.log_path = spec.log
    return proc
