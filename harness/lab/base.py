"""What every lab shares, whatever its backend: an undo list and a private folder.

A lab creates its objects in ``_build`` (called by ``__enter__``) and registers how to
release each one with ``on_close``; ``close`` releases them newest first, keeps going past a
failed step, and runs for exceptions, Ctrl-C and SIGTERM (the CLI turns SIGTERM into an
exception). The folder holds ``owner.json``, which tells ``connchaos clean`` whether the run
that made the lab is still alive.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from harness.errors import LabError
from harness.lab import naming

if TYPE_CHECKING:
    import subprocess

    from harness.core.prediction import KernelDefaults
    from harness.lab.netns import LoopInNamespace
    from harness.observe.sockdiag import Key, SockInfo, TableReader

ROLES = ("cli", "rtr", "srv")


@dataclass
class LabBase:
    lab_id: str = field(default_factory=naming.new_lab_id)
    run_id: str = ""
    tmpdir: str = ""
    client_ns: str = ""
    router_ns: str = ""
    server_ns: str = ""
    rootless: bool = False    # reached without entering its namespaces (docker, not root)
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def __enter__(self) -> Any:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        raise NotImplementedError

    def on_close(self, what: str, fn: Callable[[], None]) -> None:
        """Register a release step; steps run in reverse order of registration."""
        self._undo.append((what, fn))

    def close(self) -> None:
        """Release everything this lab created, newest first; keep going past failures."""
        errors = []
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as exc:  # one failed release must not leak the rest
                errors.append(f"{what}: {exc}")
        if errors:
            raise LabError("tearing down the lab", "; ".join(errors))

    def _make_folder(self, **owner: Any) -> None:
        """The lab's ``connchaos-<lab>-`` folder with ``owner.json`` (our pid and what we own)."""
        self.tmpdir = tempfile.mkdtemp(prefix=f"{naming.TMP_PREFIX}{self.lab_id}-")
        self.on_close("temporary folder", lambda: shutil.rmtree(self.tmpdir, ignore_errors=True))
        os.chmod(self.tmpdir, 0o755)
        with open(os.path.join(self.tmpdir, naming.OWNER_FILE), "w") as f:
            json.dump({"pid": os.getpid(), "run_id": self.run_id, "lab_id": self.lab_id,
                       "started": time.time(), **owner}, f)

    # -- reaching inside the lab ------------------------------------------------------------
    # Everything the harness does inside the lab's hosts goes through these, so faults,
    # targets and the observer do not care how the lab is reached. Here: the root way, by
    # entering the named namespaces; the docker backend without root overrides them.

    def namespace_of(self, role: str) -> str:
        """The namespace of ``cli``, ``rtr`` or ``srv``."""
        return {"cli": self.client_ns, "rtr": self.router_ns, "srv": self.server_ns}[role]

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               step: str = "") -> subprocess.CompletedProcess[str]:
        """Run a command on the host ``role`` (its network); a failure is a LabError."""
        from harness.lab.netns import run_in

        return run_in(self.namespace_of(role), argv, input=input, step=step)

    def session_loop(self) -> LoopInNamespace:
        """The event loop sessions are opened from (the client's namespace)."""
        from harness.lab.netns import LoopInNamespace

        return LoopInNamespace(self.client_ns)

    def socket_table(self) -> TableReader:
        """The server's socket table (``dump(port)``, ``close``)."""
        from harness.observe.sockdiag import SocketTable

        return SocketTable(self.server_ns)

    def listening(self, port: int, addr: str | None = None) -> bool:
        """Does something listen on ``port`` in the server's network?"""
        from harness.lab.netns import listening

        return listening(self.server_ns, port, addr)

    def server_answers(self, addr: str, port: int, timeout_s: float = 0.5) -> bool:
        """Does a TCP connection to ``addr:port`` from the server's own network succeed?"""
        import socket

        from harness.lab.netns import entered

        try:
            with entered(self.server_ns), socket.create_connection((addr, port), timeout_s):
                return True
        except OSError:
            return False

    def kernel_defaults(self) -> KernelDefaults:
        """The server network's keepalive and retransmission sysctls."""
        from harness.lab.kernel import kernel_defaults

        return kernel_defaults(self.server_ns)

    def session_pids(self, table: dict[Key, SockInfo], keys: list[Key]) -> dict[Key, int]:
        """For each server socket, the oldest process in the server's network holding it."""
        from harness.observe.owners import session_pids

        return session_pids(self.server_ns, table, keys)
