"""What every lab shares, whatever its backend: an undo list and a private folder.

A lab creates its objects in ``_build`` (called by ``__enter__``) and registers how to
release each one with ``on_close`` (before creating it); ``close`` releases them newest
first, keeps going past a failed step, and runs for exceptions, Ctrl-C and SIGTERM (the CLI
turns SIGTERM into an exception); no signal cuts it short (``harness.interrupts``). The
folder holds the owner record (``harness.lab.owner``), which tells ``connchaos clean`` what
is this lab's and whether the run that made it is still alive.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from harness import interrupts
from harness.errors import LabError, MachineError
from harness.lab import naming, owner

if TYPE_CHECKING:
    import subprocess

    from harness.lab.reach import Reach
    from harness.lab.server import ServerProcess, ServerSpec

ROLES = ("cli", "rtr", "srv")


@dataclass
class LabBase:
    lab_id: str = field(default_factory=naming.new_lab_id)
    run_id: str = ""
    tmpdir: str = ""
    secret: str = ""     # the owner record's, for the proof labels of the lab's docker objects
    client_ns: str = ""
    router_ns: str = ""
    server_ns: str = ""
    reach: Reach = field(init=False, repr=False)    # how the harness gets in: set by _build
    servers: list[ServerProcess] = field(default_factory=list)   # what start_server started, in order
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def __enter__(self) -> Any:
        try:
            self._build()
            interrupts.check()   # a signal whose interrupt was lost while building
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
        """Register a release step; steps run in reverse order of registration. Register it
        before the thing exists (the step must accept that it does not): an interrupt
        between creating and registering would leave it behind."""
        self._undo.append((what, fn))

    def close(self) -> None:
        """Release everything this lab created, newest first; keep going past failures.

        Uninterruptible: Ctrl-C or SIGTERM during it waits until every step has run, then
        raises KeyboardInterrupt (``harness.interrupts.deferred``)."""
        errors: list[str] = []
        interrupted = False
        while self._undo:
            try:
                with interrupts.deferred():
                    self._release(errors)
            except KeyboardInterrupt:
                # raised at the block's end (the steps all ran), or by a signal that came
                # just before the block began: then the steps are still to run
                interrupted = True
        if interrupted:
            raise KeyboardInterrupt
        if errors:
            raise LabError("tearing down the lab", "; ".join(errors))

    def _release(self, errors: list[str]) -> None:
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as exc:  # one failed release must not leak the rest
                errors.append(f"{what}: {exc}")

    def _make_folder(self, **created: Any) -> None:
        """The lab's ``connchaos-<lab>-`` folder with its owner record (``harness.lab.owner``:
        who we are and the names we are about to create), before anything else of the lab.
        Its removal is registered first, and the making held against signals: interrupted
        inside, the folder would have no name to remove it by."""
        self.on_close("temporary folder", self._remove_folder)
        with interrupts.deferred():
            self.tmpdir = owner.make_folder(self.lab_id, self.run_id, **created)
        record = owner.read(self.tmpdir)
        self.secret = record.secret if record is not None else ""

    def _remove_folder(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- reaching inside the lab ------------------------------------------------------------
    # Everything the harness does inside the lab's hosts goes through ``self.reach``
    # (``harness.lab.reach``), set by ``_build``: faults, targets and the observer do not
    # care how the lab is reached.

    def run_in(self, role: str, argv: list[str], *, input: str | None = None,
               step: str = "") -> subprocess.CompletedProcess[str]:
        """Run a command on the host ``role`` (a fault's rules): ``reach.run_in``."""
        return self.reach.run_in(role, argv, input=input, step=step)

    # -- servers ----------------------------------------------------------------------------

    def image_for(self, name: str, own: str | None) -> str | None:
        """The image this lab runs ``name``'s server from (``own``, the user's, first); None
        when it runs servers as commands of this machine (the local backend)."""
        return None

    def start_server(self, spec: ServerSpec) -> ServerProcess:
        """Start ``spec`` beside ``spec.beside``: an image in a container of its own, else a
        command of this machine inside that host's namespace (which needs root). The caller
        registers its stop; a container is also removed with the lab. Each is kept in
        ``servers`` (the runner watches the target's own)."""
        if spec.image is not None:
            proc: ServerProcess = self._start_image(spec)
        else:
            from harness.lab.reach import NamespaceReach
            from harness.lab.server import start_here

            if not isinstance(self.reach, NamespaceReach):
                raise MachineError(f"root, to run {spec.name} on this machine inside the lab", "run as root")
            proc = start_here(self.reach.namespace_of(spec.beside), spec)
        self.servers.append(proc)
        return proc

    def _start_image(self, spec: ServerSpec) -> ServerProcess:
        raise LabError(f"starting {spec.name}", f"this lab runs no images ({spec.image})")
