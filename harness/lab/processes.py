"""Ending the processes the lab started, and reading their logs.

Every service the lab runs (a server, the proxy, a user's command, a session's process)
goes the same way: its own clean-shutdown signal first, SIGKILL if it lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def end_processes(still_running: Callable[[], Iterable[int]], grace_s: float = 3.0) -> None:
    """SIGTERM to every pid ``still_running()`` names, then SIGKILL to those left after
    ``grace_s``; returns once it names none (or the second grace ran out)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = list(still_running())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                # a stopped process (a session host left by process-pause) takes SIGTERM only
                # once continued
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = list(still_running())
        if not pids:
            return


def run_whole(argv: list[str], *, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, in a session of its own (a Ctrl-C in the terminal reaches
    the harness only). Should the wait be cut short (an interrupt), the command's whole
    process group is killed and gone before the exception goes on: what it started
    (initdb's bootstrap backend) must not still write into a folder the teardown removes."""
    from harness import interrupts

    with interrupts.deferred():   # interrupted between fork and return, the child has no owner
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate()
    except BaseException:
        with interrupts.deferred():
            end_group(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def end_group(proc: subprocess.Popen[str], grace_s: float = 5.0) -> None:
    """SIGKILL to the process group ``proc`` leads, then wait (up to ``grace_s``) until no
    process of the group runs: the leader reaped, the rest gone (or zombies of init's)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    deadline = time.monotonic() + grace_s
    while _group_members(proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.01)


def _group_members(pgid: int) -> list[int]:
    """The running (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(pgid) and fields[0] != "Z":
            found.append(int(entry))
    return found


def stop_process(proc: Any, sig: int, grace_s: float = 10.0) -> None:
    """End a process the lab started: ``sig`` (the service's own clean shutdown), then
    SIGKILL if it is still there after ``grace_s``. A ``Popen``, or a container seen as one
    (``harness.lab.docker.ContainerProcess``: docker signals its main process)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_process_group(proc: Any, grace_s: float = 5.0) -> None:
    """End a command started in its own session (``sh -c`` and whatever it started):
    SIGTERM to the whole group, then SIGKILL to the group."""
    if proc is None:
        return
    if not isinstance(proc, subprocess.Popen):  # a container: its processes go with it
        stop_process(proc, signal.SIGTERM, grace_s)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # the leader is gone; what it started in its group goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        break


def stop_process_tree(proc: Any, grace_s: float = 3.0) -> None:
    """End a server that forks a process per connection and leaves them running when it
    stops (sshd): every process below it, deepest first (a parent that goes first leaves
    its children to init), then the server. A container: its main process, then the rest
    go with the container."""
    if proc is None:
        return
    if not isinstance(proc, subprocess.Popen):
        stop_process(proc, signal.SIGTERM, grace_s)
        return
    if proc.poll() is None:
        tree = _descendants(proc.pid)
        for depth in sorted(set(tree.values()), reverse=True):
            _end([pid for pid, d in tree.items() if d == depth], grace_s)
        _end([proc.pid], grace_s)
    proc.wait(5)


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root``, with its depth (1 = a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: dict[int, int] = {}
    todo = [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        for child in children.get(pid, []):
            found[child] = depth + 1
            todo.append((child, depth + 1))
    return found


def _end(pids: list[int], grace_s: float) -> None:
    """SIGTERM (an sshd monitor passes it on to its session child), then SIGKILL; returns
    when none of ``pids`` runs any more and their parents have reaped them (a parent ended
    before it reaps leaves the child to init)."""
    end_processes(lambda: [p for p in pids if running(p)], grace_s)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.01)


def wait_ready(proc: Any, is_ready: Callable[[], bool], *, step: str,
               what: str, log: str | Callable[[], str], timeout_s: float = 30.0) -> None:
    """Poll ``is_ready`` until it says yes; a process (or container) that exits first, or a
    wait past ``timeout_s``, is a LabError quoting the end of its log (a file, or a callable
    that returns the text)."""
    from harness.errors import LabError

    def tail() -> str:
        return log()[-800:].strip() if callable(log) else log_tail(log)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(step, f"{what} exited: {tail()}")
        if is_ready():
            return
        time.sleep(0.05)
    raise LabError(step, f"not ready after {timeout_s:.0f} s: {tail()}")


def log_tail(path: str, chars: int = 800) -> str:
    """The end of a log file, for error messages; empty when it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:].strip()
    except OSError:
        return ""
