"""Process exits, event-driven: a pidfd becomes readable the moment its process ends."""

from __future__ import annotations

import os
import select
import time


class ExitWatcher:
    """Reports when watched processes end, with the time it was seen."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, int] = {}     # fd -> pid
        self.exited: dict[int, float] = {}  # pid -> time.time() of the exit

    def watch(self, pid: int) -> None:
        """Start watching ``pid``; a pid already gone is recorded as exited now."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.exited[pid] = time.time()
            return
        self._fds[fd] = pid
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout_s: float) -> list[int]:
        """Wait up to ``timeout_s`` for exits; returns the pids that ended."""
        ended = []
        for fd, _ in self._poll.poll(max(0, int(timeout_s * 1000))):
            now = time.time()
            pid = self._fds.pop(fd)
            self._poll.unregister(fd)
            os.close(fd)
            self.exited[pid] = now
            ended.append(pid)
        return ended

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
