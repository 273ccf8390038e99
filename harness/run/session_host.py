"""Faulted sessions held in a client process of their own, which a fault can stop.

The harness opens its sessions on the client network's event loop in its own process, so
stopping "the client" would stop the harness. For faults that act on the client's process
(``process-pause``: SIGSTOP while its kernel keeps answering; ``slow-reader``: it asks for a
stream and then reads nothing), the faulted sessions are opened instead by a session host: a
child forked from the harness (so it holds the same target, with the same opener and state:
keys, addresses), in the client's network namespace, running its own event loop. The
surviving sessions stay on the harness's loop, untouched by the stop.

The host dies with the harness (PR_SET_PDEATHSIG, and it ignores the terminal's Ctrl-C, which
the harness handles), and ``close`` continues and kills it on every way out; a leftover one
lives in a ``cc-`` namespace, whose processes ``connchaos clean`` ends (continuing a stopped
one first: ``harness.lab.processes.end_processes``).

The harness talks to the host over a socket pair, one JSON object a line: the host answers
the opened sessions (or the error), then runs ``{"op": "stream"}`` (the target's
``request_stream`` on each of its sessions) and answers ``{"ok": true}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import interrupts
from harness.errors import LabError, MachineError
from harness.faults.base import Flow
from harness.lab import owner
from harness.targets.base import Session

PR_SET_PDEATHSIG = 1
OPEN_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 30.0


def _state(pid: int) -> str:
    """The process's state letter in /proc (``T``: stopped), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@dataclass
class SessionHost:
    """A forked client process holding some sessions, in the network ``namespace`` (None:
    the harness's own, for tests)."""

    namespace: str | None
    folder: str = ""            # the lab's: the host's pid is written down there for `clean`
    pid: int | None = None
    stopped: bool = False
    _sock: socket.socket | None = field(default=None, repr=False)
    _buffer: bytes = field(default=b"", repr=False)

    @classmethod
    def for_lab(cls, lab: Any) -> SessionHost:
        """The host for a lab whose client network the harness can enter (root); exit 3
        otherwise: from outside (docker without root) the client side is a forwarder that
        holds every session, and stopping it would not be the client's kernel answering."""
        if not lab.reach.enters_networks:
            raise MachineError("root, to hold the faulted sessions in a client process of their own"
                               " inside the client's network (process-pause, slow-reader)",
                               "run as root (sudo) on the docker backend, or use --backend local")
        return cls(namespace=lab.client_ns, folder=lab.tmpdir)

    def open(self, target: Any, lab: Any, indices: Sequence[int],
             via: Callable[[int], tuple[str, int] | None]) -> list[Session]:
        """Fork the host, which opens the sessions ``indices`` with ``target.open_session``;
        returns them as the harness sees them (their handle stays in the host: None here)."""
        vias = {i: via(i) for i in indices}
        ours, theirs = socket.socketpair()
        parent = os.getpid()
        with interrupts.deferred():      # interrupted between fork and here, the child has no owner
            pid = os.fork()
            if pid == 0:                 # the child: never returns
                ours.close()
                _child(theirs, parent, self.namespace, target, lab, list(indices), vias)
            self.pid = pid
            if self.folder:
                owner.record_process(self.folder, pid, "session host")
        theirs.close()
        self._sock = ours
        answer = self._answer(OPEN_TIMEOUT_S, "opening the faulted sessions in the session host")
        if "error" in answer:
            raise LabError("opening the faulted sessions in the session host", str(answer["error"]))
        return [Session(id=int(s["id"]), flow=Flow(*s["flow"]), pid=s["pid"], handle=None,
                        opened_at=float(s["opened_at"])) for s in answer["sessions"]]

    def request_stream(self) -> None:
        """Have every session of the host ask its server for a large stream (the target's
        ``request_stream``), returning once each request is on its way."""
        self._send({"op": "stream"})
        answer = self._answer(ANSWER_TIMEOUT_S, "asking for the streams in the session host")
        if "error" in answer:
            raise LabError("asking the server to stream to the faulted sessions", str(answer["error"]))

    def pause(self) -> None:
        """SIGSTOP, returning once the kernel reports the process stopped."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True
        deadline = time.monotonic() + 2.0
        while _state(self.pid) not in ("T", "t", "") and time.monotonic() < deadline:
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT (the fault's revert)."""
        if self.pid is not None and self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.stopped = False

    def close(self) -> None:
        """Continue and kill the host and reap it (its sessions' sockets close with it)."""
        pid, self.pid = self.pid, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if pid is None:
            return
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.stopped = False

    def _send(self, message: dict[str, Any]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise LabError("talking to the session host", str(exc)) from exc

    def _answer(self, timeout_s: float, step: str) -> dict[str, Any]:
        assert self._sock is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(step, f"no answer from the session host within {timeout_s:g} s")
            self._sock.settimeout(min(left, 0.25))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                interrupts.check()
                continue
            if not chunk:
                raise LabError(step, "the session host exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer


def _child(sock: socket.socket, parent: int, namespace: str | None, target: Any, lab: Any,
           indices: list[int], vias: dict[int, tuple[str, int] | None]) -> None:
    """The host's whole life; ends the process, whatever happens."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # the terminal's Ctrl-C is the harness's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:                      # the harness died before prctl
            return
        from harness.lab.netns import entered

        # this process's only thread now: the whole process moves into the namespace
        with entered(namespace) if namespace else contextlib.nullcontext():
            asyncio.run(_serve(sock, target, lab, indices, vias))
        code = 0
    except BaseException:   # noqa: BLE001 - the child must end here, never unwind into the harness
        code = 1
    finally:
        os._exit(code)      # no finalizers: the harness's own connections are inherited, not ours


async def _serve(sock: socket.socket, target: Any, lab: Any, indices: list[int],
                 vias: dict[int, tuple[str, int] | None]) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)

    async def say(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()

    sessions: list[Session] = []
    try:
        for i in indices:
            sessions.append(await target.open_session(lab, i, via=vias[i]))
    except Exception as exc:  # the target's LabError or a library's: reported to the harness
        await say({"error": f"{type(exc).__name__}: {exc}"})
        return
    await say({"sessions": [{"id": s.id, "pid": s.pid, "opened_at": s.opened_at,
                             "flow": [s.flow.client_addr, s.flow.client_port,
                                      s.flow.server_addr, s.flow.server_port]} for s in sessions]})
    while line := await reader.readline():
        request = json.loads(line)
        if request.get("op") == "stream":
            try:
                for s in sessions:
                    await target.request_stream(s)
            except Exception as exc:  # reported to the harness, which fails the run
                await say({"error": f"{type(exc).__name__}: {exc}"})
                continue
            await say({"ok": True})
    # the harness closed its end: it is gone or done; the sessions go with this process
