"""How long one socket-table sample takes at 10,000 sessions: ``connchaos bench sockdiag``.

A lab (``LocalLab``: client, router and server namespaces, removed at the end, on Ctrl-C
too) with 10,000 established connections to one port: this process holds the server's
accepted sockets, a child process in the client namespace holds the clients (each side needs
one descriptor per connection, and the hard RLIMIT_NOFILE here is 20,000 per process).
Then, side by side on the same table, in rounds (this machine's speed drifts by minutes):

- ``Observer.sample()`` watching every connection, what a run does per sample: one dump as
  ``Columns`` and the comparison of every session with its previous row; and the same when
  sockets came or went since the last sample (every session's row is found again);
- ``SocketTable.columns(port)``, that dump alone;
- ``SocketTable.dump(port)``, the same table as a dict of ``SockInfo`` (for the callers that
  want Python objects);
- the pyroute2 reader the project used first (``pyroute2_dump``), fewer samples (about a
  second each);
- the peak RSS of this process after each phase.

The exit status is 0 when the median ``Observer.sample()``, moved or not, is under the
issue's 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.proxy_upstream import raise_nofile
from harness.lab.local import LocalLab
from harness.lab.netns import entered, exec_argv
from harness.lab.processes import stop_process
from harness.observe.sockdiag import SocketTable, open_pyroute2, pyroute2_dump
from harness.observe.watch import Observer, Watched

PORT = 5432
TARGET_MS = 20.0
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    connections: int
    samples: int            # lean dumps and observer samples
    pyroute2_samples: int


FULL = Plan(connections=10_000, samples=50, pyroute2_samples=3)
QUICK = Plan(connections=1_000, samples=20, pyroute2_samples=2)


def _times_ms(fn: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each of ``n`` calls. The CPU time (this thread's,
    the kernel's work in its system calls included) is the figure other processes on a
    shared machine disturb least."""
    wall, cpu = [], []
    for _ in range(n):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - started_cpu) * 1e3)
        wall.append((time.perf_counter() - started) * 1e3)
    return wall, cpu


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clients:
    """The child process in the client namespace that holds the client ends."""

    def __init__(self, namespace: str, address: str, port: int, count: int) -> None:
        argv = [sys.executable, "-m", "benchmarks.sockdiag", "--clients", str(count),
                address, str(port)]
        self.proc = subprocess.Popen(exec_argv(namespace, argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            raise RuntimeError(f"the client process did not connect (said {line!r},"
                               f" status {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()     # the child exits at EOF
        stop_process(self.proc, signal.SIGTERM, grace_s=10)


def _accept(listener: socket.socket, count: int, held: list[socket.socket]) -> None:
    while len(held) < count:
        try:
            conn, _ = listener.accept()
        except OSError:
            return      # the listener was closed: the run is over
        held.append(conn)


def _close_all(held: list[socket.socket]) -> None:
    for s in held:
        s.close()


def _close_listener(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)     # wakes the acceptor if it still waits
    listener.close()


def run(plan: Plan, log: Callable[[str], None]) -> dict[str, float]:
    """Build the lab and the connections, measure, tear everything down."""
    raise_nofile()
    figures: dict[str, float] = {"load": os.getloadavg()[0], "cpus": os.cpu_count() or 0}
    held: list[socket.socket] = []
    with LocalLab(run_id="bench-sockdiag") as lab:
        with entered(lab.server_ns):
            listener = socket.socket()
        lab.on_close("listener", lambda: _close_listener(listener))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # accepted ones inherit
        listener.bind((lab.server_addr, PORT))
        listener.listen(4096)
        acceptor = threading.Thread(target=_accept, args=(listener, plan.connections, held),
                                    daemon=True)
        acceptor.start()
        lab.on_close("accepted connections", lambda: _close_all(held))
        log(f"opening {plan.connections} connections to {lab.server_addr}:{PORT}")
        clients = Clients(lab.client_ns, lab.server_addr, PORT, plan.connections)
        lab.on_close("client process", clients.stop)
        clients.wait_ready(READY_TIMEOUT_S)
        acceptor.join(READY_TIMEOUT_S)
        if len(held) != plan.connections:
            raise RuntimeError(f"accepted {len(held)} of {plan.connections} connections")

        table = SocketTable(lab.server_ns)
        lab.on_close("socket table", table.close)
        for _ in range(3):
            table.columns(PORT)                     # warm up (first-touch of the buffer)
        before = table.dump(PORT)
        seen = len(before)
        watched = [Watched(i, key, None) for i, key in enumerate(before)]
        observer = Observer(table, PORT, watched)
        lab.on_close("observer", observer.close)
        observer.start(time.time(), before)
        log(f"{plan.samples} rounds of: SocketTable.columns, Observer.sample() watching"
            f" {len(watched)} sessions, SocketTable.dump; {seen} sockets")
        def moved() -> None:
            """A sample as if sockets had come or gone since the last one: the observer
            finds every session's row again instead of reusing where they were."""
            observer._seen_codes = None
            observer.sample()

        measured: dict[str, tuple[list[float], list[float]]] = {
            "columns": ([], []), "observer": ([], []), "moved": ([], []), "lean": ([], [])}
        calls: dict[str, Callable[[], object]] = {
            "columns": lambda: table.columns(PORT), "observer": observer.sample,
            "moved": moved, "lean": lambda: table.dump(PORT)}
        for _ in range(plan.samples):               # side by side: this machine is noisy
            for name, call in calls.items():
                wall, cpu = _times_ms(call, 1)
                measured[name][0].extend(wall)
                measured[name][1].extend(cpu)
        for name, (wall, cpu) in measured.items():
            figures.update({f"{name}_p50": statistics.median(wall), f"{name}_p95": _p95(wall),
                            f"{name}_cpu": statistics.median(cpu)})
        figures.update(sockets=seen, rss_lean=_peak_rss_mb(), watched=len(watched),
                       observer_events=sum(len(w.events) for w in watched))

        ds = open_pyroute2(lab.server_ns)
        lab.on_close("pyroute2 socket", ds.close)
        log(f"pyroute2 reader: {plan.pyroute2_samples} samples")
        py_seen = len(pyroute2_dump(ds, PORT))
        slow, slow_cpu = _times_ms(lambda: pyroute2_dump(ds, PORT), plan.pyroute2_samples)
        figures.update(pyroute2_sockets=py_seen, pyroute2_p50=statistics.median(slow),
                       pyroute2_p95=_p95(slow), pyroute2_cpu=statistics.median(slow_cpu),
                       rss_pyroute2=_peak_rss_mb())
    return figures


def report(f: dict[str, float]) -> tuple[list[str], bool]:
    """The table to print, and whether the median sample is under the target."""
    ok = (max(f["observer_p50"], f["moved_p50"]) < TARGET_MS
          and f["sockets"] == f["pyroute2_sockets"])
    n = f["sockets"]

    def row(name: str, key: str, digits: int) -> str:
        return (f"{name:38} {f[key + '_p50']:9.{digits}f} {f[key + '_p95']:9.{digits}f}"
                f" {f[key + '_cpu']:9.{digits}f} {f[key + '_cpu'] * 1e3 / n:11.2f}")

    lines = [
        f"{'per sample of ' + str(int(n)) + ' sockets':38} {'p50 ms':>9} {'p95 ms':>9}"
        f" {'CPU ms':>9} {'CPU µs/sock':>11}",
        row("Observer.sample() (the run's sample)", "observer", 2),
        row("  the same, sockets moved since", "moved", 2),
        row("  SocketTable.columns (its dump)", "columns", 2),
        row("SocketTable.dump (as SockInfo objects)", "lean", 2),
        row("pyroute2 DiagSocket", "pyroute2", 0),
        "",
        f"pyroute2 / Observer.sample(): {f['pyroute2_p50'] / f['observer_p50']:.0f}x the time"
        f" ({f['pyroute2_cpu'] / f['observer_cpu']:.0f}x the CPU)",
        f"observer watching {int(f['watched'])} sessions: its comparison"
        f" {f['observer_p50'] - f['columns_p50']:.2f} ms per sample"
        f" ({f['observer_cpu'] - f['columns_cpu']:.2f} ms CPU),"
        f" {f['moved_p50'] - f['columns_p50']:.2f} ms when sockets moved;"
        f" {int(f['observer_events'])} events",
        f"peak RSS of this process: {f['rss_lean']:.0f} MB after the lean samples,"
        f" {f['rss_pyroute2']:.0f} MB after the pyroute2 ones",
        f"machine: load average {f['load']:.1f} on {int(f['cpus'])} CPUs at the start",
        f"target: one sample < {TARGET_MS:.0f} ms (p50 of Observer.sample(), moved or not):"
        f" {'met' if ok else 'NOT met'}",
    ]
    return lines, ok


def hold_clients(count: int, address: str, port: int) -> int:
    """The child: connect ``count`` clients, say ``ready``, hold them until stdin closes."""
    raise_nofile()
    held = []
    for _ in range(count):
        s = socket.socket()
        s.connect((address, port))
        held.append(s)
    print("ready", flush=True)
    sys.stdin.buffer.read()
    for s in held:
        s.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; 0 when the target is met."""
    parser = argparse.ArgumentParser(prog="connchaos bench sockdiag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 connections, fewer samples")
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("target", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients is not None:
        return hold_clients(args.clients, args.target[0], int(args.target[1]))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    lines, ok = report(run(QUICK if args.quick else FULL, log))
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
