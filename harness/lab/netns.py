"""Entering network namespaces from threads, and running commands inside them.

pyroute2's ``pushns``/``popns`` keep a process-global stack and read ``/proc/self`` (the main
thread's namespace), so they are not safe per thread. ``setns(2)`` itself is per thread:
a socket keeps the namespace of the thread that created it, which is how sessions are opened
from the client namespace and the observer reads the server namespace's socket table.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from harness.errors import LabError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError("entering a network namespace", os.strerror(err))


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into namespace ``name`` for the block, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
        except OSError as exc:
            raise LabError(f"entering namespace {name}", str(exc)) from exc
        # the way back is taken in a finally that already covers the way in: an interrupt
        # just after setns must not leave the thread (the main one: the teardown's) inside
        try:
            try:
                _setns(target)
            finally:
                os.close(target)
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


class LoopInNamespace:
    """An asyncio event loop on a thread that lives in one network namespace.

    Every socket the loop's coroutines create belongs to that namespace: the client side of a
    lab runs here, so libpq/asyncio connections come from the client host.
    """

    def __init__(self, name: str | None) -> None:
        """``name`` None: the loop stays in the harness's own namespace (the docker backend
        without root reaches the lab over the host's bridges)."""
        self.name = name or "host"
        self._enter = name is not None
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"netns-{name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            if self._enter:
                fd = os.open(os.path.join(NETNS_RUN_DIR, self.name), os.O_RDONLY)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
        except BaseException as exc:  # reported to the constructor's caller
            self._error = exc if isinstance(exc, LabError) else LabError(
                f"entering namespace {self.name}", str(exc))
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the namespace's loop and wait for its result."""
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain callable on the namespace's thread."""
        async def wrapper() -> T:
            return fn()
        return self.run(wrapper())

    def close(self, grace_s: float = 2.0) -> None:
        """Cancel what still runs on the loop (bounded by ``grace_s``), stop it, join the thread."""
        if not self._thread.is_alive():
            return

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            if rest:
                await asyncio.wait(rest, timeout=grace_s)

        # an abandoned task that will not finish; the loop stops regardless
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(cancel_rest(), timeout=grace_s + 1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside namespace ``name``."""
    return ["ip", "netns", "exec", name, *argv]


def run_in(name: str, argv: Sequence[str], *, input: str | None = None, cwd: str | None = None,
           step: str = "") -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (in folder ``cwd``); a failure becomes a LabError
    naming the step."""
    cmd = exec_argv(name, argv)
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(step or " ".join(argv), str(exc)) from exc
    if proc.returncode != 0:
        raise LabError(step or " ".join(argv), (proc.stderr or proc.stdout).strip())
    return proc


def read_sysctl(name: str, key: str) -> str:
    """A sysctl as seen inside namespace ``name`` (``net.ipv4.tcp_keepalive_time``)."""
    path = "/proc/sys/" + key.replace(".", "/")
    # /proc/sys/net resolves against the opening thread's namespace.
    with entered(name), open(path) as f:
        return f.read().strip()


def write_sysctl(name: str, key: str, value: str) -> None:
    """Set a sysctl inside namespace ``name``."""
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(name), open(path, "w") as f:
        f.write(value)


def list_namespaces() -> list[str]:
    """Names of the named network namespaces on this machine."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def pids_in(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``name`` (or the namespace file at
    an absolute path: ``/proc/self/ns/net`` is the caller's own)."""
    try:
        target = os.stat(os.path.join(NETNS_RUN_DIR, name))
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def listening(name: str, port: int, addr: str | None = None) -> bool:
    """Does a TCP socket listen on ``port`` (on ``addr``, or any address) in namespace
    ``name``? Read from the kernel's table, so it works whatever runs the service."""
    with entered(name):
        return listening_here(port, addr)


def listening_here(port: int, addr: str | None = None) -> bool:
    """``listening`` in the calling thread's own namespace (the observer's agent)."""
    want_port = f"{port:04X}"
    want_addr = None if addr is None else "{:08X}".format(
        int.from_bytes(bytes(int(p) for p in reversed(addr.split("."))), "big"))
    # /proc/thread-self/net is the calling thread's namespace (/proc/net the process's)
    with open("/proc/thread-self/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_addr, _, local_port = fields[1].partition(":")
            if fields[3] == "0A" and local_port == want_port and (
                    want_addr is None or local_addr in (want_addr, "00000000")):
                return True
    return False


def netlink_socket(protocol: int, namespace: str | None, rcvbuf: int, what: str) -> socket.socket:
    """A bound netlink socket of ``protocol`` in ``namespace`` (None: the caller's own), with a
    receive buffer of ``rcvbuf`` bytes; a LabError naming ``what`` (sock_diag, ctnetlink) if it
    cannot be had."""
    where = namespace or "this namespace"
    try:
        with entered(namespace) if namespace else contextlib.nullcontext():
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    except OSError as exc:
        raise LabError(f"opening {what} in {where}", str(exc)) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
    except OSError as exc:
        sock.close()
        raise LabError(f"opening {what} in {where}", str(exc)) from exc
    return sock

