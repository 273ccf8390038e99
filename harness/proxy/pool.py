"""The API process's side of a multi-process data plane: the worker processes
(``python -m harness.proxy.worker``) and their control channels.

Why processes: a proxied connection holds two descriptors, and RLIMIT_NOFILE is per process
(its hard limit cannot be raised without CAP_SYS_RESOURCE), so one process cannot hold more
than about half its limit in connections. N members hold N times as many.

Each worker gets one end of a Unix socketpair as ``--control-fd``; the other end is only
ever in the API process. So a worker sees end of file when the API process closes the pool
or dies in any way, even SIGKILL, and exits: there are no orphans to clean up. ``send``
writes a request to every worker at once, in the caller's order, without awaiting, so that
concurrent API calls reach the workers in the order they changed the API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.proxy.errors import WorkerError
from harness.proxy.worker import LINE_LIMIT

log = logging.getLogger(__name__)
Reply = dict[str, Any]


@dataclass
class Worker:
    """One worker process and the API process's end of its control channel."""

    member: int
    proc: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    alive: bool = True

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid


class WorkerPool:
    """``count`` worker processes, members 1 to ``count`` (the API process is member 0).
    ``options`` are the worker's command-line options besides the control channel."""

    def __init__(self, count: int, options: Sequence[str], *, ready_timeout_s: float = 30.0,
                 reply_timeout_s: float = 10.0) -> None:
        self.count = count
        self.options = list(options)
        self.ready_timeout_s = ready_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.workers: list[Worker] = []
        self._ids = itertools.count(1)
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers still running."""
        return [worker.pid for worker in self.workers if worker.alive]

    # Lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each has said it is ready; on any failure
        end those started and raise WorkerError."""
        try:
            for member in range(1, self.count + 1):
                self.workers.append(await self._spawn(member))
            waited = await asyncio.gather(*(self._ready(worker) for worker in self.workers),
                                          return_exceptions=True)
            for outcome in waited:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            await self.stop(timeout_s=0.0)
            raise
        for worker in self.workers:
            worker.task = asyncio.get_running_loop().create_task(self._read_replies(worker))
        log.info("%d worker processes ready: pids %s", self.count, self.pids)

    async def _spawn(self, member: int) -> Worker:
        proc, parent = self._popen(member)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent, limit=LINE_LIMIT)
        except BaseException:
            parent.close()
            await _end(proc, 0.0)
            raise
        return Worker(member, proc, reader, writer)

    def _popen(self, member: int) -> tuple[subprocess.Popen[bytes], socket.socket]:
        """The worker process, and the API process's end of its control channel."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "harness.proxy.worker", "--control-fd",
                str(child.fileno()), "--member", str(member), *self.options]
        try:
            proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL)
        except OSError as exc:
            parent.close()
            raise WorkerError(member, None, f"cannot start: {exc}") from exc
        finally:
            child.close()
        return proc, parent

    async def _ready(self, worker: Worker) -> None:
        """Wait for the worker's ``{"ready": pid}``."""
        try:
            line = await asyncio.wait_for(worker.reader.readline(), self.ready_timeout_s)
            ready = json.loads(line) if line else None
        except (TimeoutError, ValueError, ConnectionError):
            ready = None
        if not isinstance(ready, dict) or ready.get("ready") != worker.pid:
            raise WorkerError(worker.member, worker.pid,
                              f"did not start (exit status {worker.proc.poll()})")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Close every control channel (each worker closes its proxies and exits), wait for
        the workers, and end any still there after ``timeout_s``."""
        self._stopping = True
        for worker in self.workers:
            worker.writer.close()
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            await _end(worker.proc, max(0.0, deadline - time.monotonic()))
            if worker.task is not None:
                worker.task.cancel()
                with contextlib.suppress(BaseException):
                    await worker.task
            self._fail_pending(worker, "the pool stopped")
            worker.alive = False
        self.workers = []

    # Requests ------------------------------------------------------------------------

    def send(self, request: dict[str, object]) -> list[tuple[Worker, asyncio.Future[Reply]]]:
        """Write ``request`` to every live worker now; the futures of their replies."""
        loop = asyncio.get_running_loop()
        sent = []
        for worker in self.workers:
            if not worker.alive or worker.writer.is_closing():
                continue
            ident = next(self._ids)
            future: asyncio.Future[Reply] = loop.create_future()
            worker.pending[ident] = future
            worker.writer.write(json.dumps({"id": ident, **request}).encode() + b"\n")
            sent.append((worker, future))
        return sent

    async def _replies(self, sent: list[tuple[Worker, asyncio.Future[Reply]]]
                       ) -> list[tuple[Worker, Reply | None]]:
        async def one(worker: Worker, future: asyncio.Future[Reply]) -> tuple[Worker,
                                                                                Reply | None]:
            try:
                return worker, await asyncio.wait_for(future, self.reply_timeout_s)
            except (TimeoutError, WorkerError) as exc:
                log.error("worker %d (pid %d) did not answer: %s", worker.member, worker.pid,
                          exc or "timed out")
                return worker, None
        return list(await asyncio.gather(*(one(w, f) for w, f in sent)))

    async def apply(self, ops: list[dict[str, object]]) -> None:
        """Have every worker apply ``ops`` (see ``replica``); returns once all have."""
        if not ops:
            return
        for worker, reply in await self._replies(self.send({"apply": ops})):
            for error in (reply or {}).get("errors") or []:
                log.warning("worker %d: %s", worker.member, error)

    async def connections(self, name: str) -> list[list[dict[str, object]]]:
        """Each worker's live connections of proxy ``name``, in member order."""
        found = []
        for _, reply in await self._replies(self.send({"connections": name})):
            listed = (reply or {}).get("connections")
            found.append(listed if isinstance(listed, list) else [])
        return found

    async def _read_replies(self, worker: Worker) -> None:
        try:
            while line := await worker.reader.readline():
                reply = json.loads(line)
                future = worker.pending.pop(reply.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (ConnectionError, ValueError) as exc:
            log.error("worker %d: control channel broken: %s", worker.member, exc)
        worker.alive = False
        self._fail_pending(worker, "the worker exited")
        if not self._stopping:
            log.error("worker %d (pid %d) exited unexpectedly; its connections are gone and "
                      "new ones go to the other members", worker.member, worker.pid)
            worker.writer.close()

    @staticmethod
    def _fail_pending(worker: Worker, why: str) -> None:
        pending, worker.pending = worker.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerError(worker.member, worker.pid, why))


async def _end(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``proc`` to exit, then SIGTERM, then SIGKILL; reaped."""
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for signal_it in (proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal_it()
        give_up = time.monotonic() + 2.0
        while proc.poll() is None and time.monotonic() < give_up:
            await asyncio.sleep(0.02)
    if proc.poll() is None:
        await asyncio.to_thread(proc.wait)
