"""How the built-in proxy compares with direct loopback: ``connchaos bench proxy``.

Processes, all on 127.0.0.1: this one (the clients), an upstream server (echo for round
trips, a sink for throughput, a holder for idle connections; ``proxy_upstream``), and the
proxy (``python -m harness.proxy.server``), so that the proxy's memory is its own. Each
figure is measured side by side in the same run, direct and through the proxy:

- throughput: 1 MiB writes to the sink until ``total`` bytes are acknowledged; the median of
  several runs, direct and proxied runs interleaved;
- round trip: 64-byte ping-pong on one connection (TCP_NODELAY), p50 and p99;
- memory: the RSS growth of every proxy process divided by the idle connections they hold,
  with the number of connections held (a connection counts once the upstream holder has
  accepted it).

Throughput and round trips use a one-process proxy: one connection lives in one process
whatever the number of workers. The idle connections go to a second proxy with as many
processes (``--workers``) as this machine's hard RLIMIT_NOFILE needs for them: each proxied
connection takes two descriptors in the process holding it.

Targets are the brief's, set against real Toxiproxy 2.12.0 on this kind of machine (0.19x
throughput, 2.4x round trip, about 38 kB per idle connection). Every process this starts is
stopped before it returns; the exit status is 0 when every target is met.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from benchmarks import proxy_upstream
from benchmarks.proxy_upstream import BLOCK, HOST, raise_nofile

PING = 64
TARGETS = {"throughput": 0.40, "rtt": 2.0, "memory_kb": 19.0, "held": 10_000}
TOXIPROXY = {"throughput": 0.19, "rtt": 2.4, "memory_kb": 38.0}
FD_RESERVE = 64   # descriptors a proxy process needs besides its connections' sockets
SPREAD_HEADROOM = 0.8   # SO_REUSEPORT hashes connections over members: near even, not exact


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    total: int          # bytes per throughput run
    runs: int           # throughput runs per path
    pings: int          # round trips per path
    idle: int           # idle connections to open


FULL = Plan(total=1 << 30, runs=5, pings=20_000, idle=10_000)
QUICK = Plan(total=256 << 20, runs=3, pings=3_000, idle=2_000)


# Measuring ------------------------------------------------------------------------------

def throughput(port: int, total: int) -> float:
    """MB/s (10^6 bytes) of 1 MiB writes to the sink at ``port``, until acknowledged."""
    block = memoryview(bytes(BLOCK))
    with socket.create_connection((HOST, port)) as sock:
        started = time.perf_counter()
        sock.sendall(struct.pack("!Q", total))
        left = total
        while left > 0:
            chunk = block[:min(left, BLOCK)]
            sock.sendall(chunk)
            left -= len(chunk)
        if sock.recv(1) != b"k":
            raise RuntimeError("the sink did not acknowledge")
        return total / (time.perf_counter() - started) / 1e6


def round_trips(port: int, count: int) -> list[float]:
    """Microseconds for each of ``count`` 64-byte round trips to the echo at ``port``."""
    message = b"p" * PING
    samples = []
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter_ns()
            sock.sendall(message)
            got = 0
            while got < PING:
                data = sock.recv(PING - got)
                if not data:
                    raise RuntimeError("the echo closed the connection")
                got += len(data)
            samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid``, in kB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """How many descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a proxy's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return sorted(found)


def members_for(connections: int, hard_limit: int) -> tuple[int, int]:
    """(processes, connections one process can hold) for ``connections`` idle connections
    under a hard RLIMIT_NOFILE of ``hard_limit`` (RLIM_INFINITY: one process)."""
    if hard_limit == resource.RLIM_INFINITY:
        return 1, connections
    per_process = max(1, (hard_limit - FD_RESERVE) // 2)
    return max(1, math.ceil(connections / (per_process * SPREAD_HEADROOM))), per_process


class Upstream:
    """The upstream server process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.proxy_upstream"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.ports: dict[str, int] = json.loads(self.proc.stdout.readline())

    def held(self) -> int:
        """How many idle connections the holder has accepted."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write("count\n")
        stdin.flush()
        return int(stdout.readline())

    def stop(self) -> None:
        """End the process."""
        _stop(self.proc, self.proc.stdin)


class ProxyProcess:
    """``python -m harness.proxy.server`` on a free port, and its API."""

    def __init__(self, loop: str, spin_us: float, workers: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.proxy.server", "--host", HOST, "--port", "0",
             "--loop", loop, "--spin-us", str(spin_us), "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("connchaos proxy listening on http://"):
            _stop(self.proc, None)
            raise RuntimeError(f"the proxy did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.pids = [self.proc.pid, *children(self.proc.pid)]   # the API process first
        if len(self.pids) != workers:
            _stop(self.proc, None)
            raise RuntimeError(f"the proxy runs {len(self.pids)} processes, not {workers}")

    def call(self, method: str, path: str, body: object = None) -> Any:
        """One API request; the decoded answer."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {data!r}")
            return json.loads(data) if data else None
        finally:
            conn.close()

    def proxy_to(self, name: str, port: int) -> int:
        """A proxy to ``port``; its listening port."""
        made = self.call("POST", "/proxies", {"name": name, "upstream": f"{HOST}:{port}",
                                              "listen": f"{HOST}:0"})
        return int(made["listen"].rsplit(":", 1)[1])

    def stop(self) -> None:
        """SIGTERM, then wait."""
        _stop(self.proc, None)


def _stop(proc: subprocess.Popen[str], stdin: IO[str] | None) -> None:
    if proc.poll() is None:
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def hold_idle(proxy: ProxyProcess, upstream: Upstream, port: int, target: int,
              log: Any) -> tuple[int, int]:
    """Open up to ``target`` idle connections through the proxy at ``port``; returns
    (connections held, RSS growth of every proxy process in kB). The client sockets are
    closed on return."""
    before = {pid: rss_kb(pid) for pid in proxy.pids}
    fds = {pid: open_fds(pid) for pid in proxy.pids}
    clients: list[socket.socket] = []
    held = last = 0
    stalled_since = time.monotonic()
    try:
        while len(clients) < target:
            for _ in range(min(1000, target - len(clients))):
                try:
                    clients.append(socket.create_connection((HOST, port), timeout=5))
                except OSError:
                    break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                held = upstream.held()
                if held >= len(clients):
                    break
                if held != last:
                    last, stalled_since = held, time.monotonic()
                elif time.monotonic() - stalled_since > 2:
                    break
                time.sleep(0.05)
            log(f"  idle connections opened {len(clients)}, held {held}")
            if held < len(clients):
                break
        time.sleep(1.0)
        held = upstream.held()
        growth = {pid: rss_kb(pid) - before[pid] for pid in proxy.pids}
        spread = ", ".join(f"{'API' if i == 0 else f'worker {i}'} {(open_fds(pid) - fds[pid]) // 2}"
                           f" ({growth[pid]} kB)" for i, pid in enumerate(proxy.pids))
        log(f"  idle connections per process (RSS growth): {spread}")
        return held, sum(growth.values())
    finally:
        for sock in clients:
            sock.close()


def run(plan: Plan, loop: str, spin_us: float, log: Any) -> dict[str, Any]:
    """Every measurement; the figures by name."""
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    members, per_process = members_for(plan.idle, hard_limit)
    upstream = Upstream()
    proxy: ProxyProcess | None = None
    try:
        proxy = ProxyProcess(loop, spin_us)
        echo, sink, hold = (upstream.ports[k] for k in ("echo", "sink", "hold"))
        via = {"echo": proxy.proxy_to("echo", echo), "sink": proxy.proxy_to("sink", sink)}
        throughput(sink, plan.total // 8)                 # warm both paths up
        throughput(via["sink"], plan.total // 8)
        direct_tp, proxied_tp = [], []
        for _ in range(plan.runs):
            direct_tp.append(throughput(sink, plan.total))
            proxied_tp.append(throughput(via["sink"], plan.total))
        log(f"  throughput runs: direct {[round(x) for x in direct_tp]}, "
            f"proxied {[round(x) for x in proxied_tp]} MB/s")
        round_trips(echo, 500)
        round_trips(via["echo"], 500)
        direct_rtt: list[float] = []
        proxied_rtt: list[float] = []
        for _ in range(4):
            direct_rtt += round_trips(echo, plan.pings // 4)
            proxied_rtt += round_trips(via["echo"], plan.pings // 4)
        proxy.stop()
        log(f"  idle connections: --workers {members} (proxy processes) for "
            f"{plan.idle}, about {per_process} per process under the hard RLIMIT_NOFILE "
            f"{hard_limit}")
        proxy = ProxyProcess(loop, spin_us, workers=members)
        held, growth = hold_idle(proxy, upstream, proxy.proxy_to("hold", hold), plan.idle, log)
        return {"direct_tp": statistics.median(direct_tp),
                "proxied_tp": statistics.median(proxied_tp),
                "direct_p50": percentile(direct_rtt, 0.5),
                "direct_p99": percentile(direct_rtt, 0.99),
                "proxied_p50": percentile(proxied_rtt, 0.5),
                "proxied_p99": percentile(proxied_rtt, 0.99),
                "held": held, "kb_per_conn": growth / held if held else float("inf"),
                "fd_limit": hard_limit, "members": members}
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.stop()


def report(figures: dict[str, Any], plan: Plan, loop: str) -> tuple[list[str], bool]:
    """The table, and whether every target was met."""
    tp_ratio = figures["proxied_tp"] / figures["direct_tp"]
    p50_ratio = figures["proxied_p50"] / figures["direct_p50"]
    p99_ratio = figures["proxied_p99"] / figures["direct_p99"]
    checks = {"throughput": tp_ratio >= TARGETS["throughput"],
              "rtt": p50_ratio <= TARGETS["rtt"],
              "memory": figures["kb_per_conn"] <= TARGETS["memory_kb"],
              "held": figures["held"] >= min(plan.idle, TARGETS["held"])}

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = [
        f"connchaos proxy benchmark: 127.0.0.1, {os.cpu_count()} cores, proxy loop {loop}, "
        f"{plan.total >> 20} MiB x {plan.runs} runs, {plan.pings} round trips",
        f"{'':28}{'direct':>10}{'proxied':>10}{'ratio':>8}   {'target':<12}result",
        f"{'throughput MB/s':28}{figures['direct_tp']:>10.0f}{figures['proxied_tp']:>10.0f}"
        f"{tp_ratio:>7.2f}x   {'>= 0.40x':<12}{verdict(checks['throughput'])}",
        f"{'round trip p50 us':28}{figures['direct_p50']:>10.1f}{figures['proxied_p50']:>10.1f}"
        f"{p50_ratio:>7.2f}x   {'<= 2.00x':<12}{verdict(checks['rtt'])}",
        f"{'round trip p99 us':28}{figures['direct_p99']:>10.1f}{figures['proxied_p99']:>10.1f}"
        f"{p99_ratio:>7.2f}x   {'-':<12}info",
        f"{'memory per idle conn kB':28}{'':>10}{figures['kb_per_conn']:>10.2f}{'':>8}   "
        f"{'<= 19':<12}{verdict(checks['memory'])}",
        f"{'idle connections held':28}{'':>10}{figures['held']:>10d}{'':>8}   "
        f"{f'{plan.idle}':<12}{verdict(checks['held'])}",
        f"real Toxiproxy 2.12.0 on this kind of machine: {TOXIPROXY['throughput']}x throughput, "
        f"{TOXIPROXY['rtt']}x round trip, {TOXIPROXY['memory_kb']:.0f} kB per idle connection",
    ]
    members = int(figures.get("members", 1))
    limit = int(figures["fd_limit"])
    _, per_process = members_for(plan.idle, limit)
    if limit != resource.RLIM_INFINITY:
        lines.append(
            f"idle connections through {members} proxy process{'es' if members > 1 else ''} "
            f"(--workers {members}, memory summed over all): a proxied connection takes two "
            f"descriptors and the hard RLIMIT_NOFILE is {limit} (raising it needs "
            f"CAP_SYS_RESOURCE), so one process holds about {per_process}; {plan.idle} need "
            f"{members} with {1 - SPREAD_HEADROOM:.0%} headroom for SO_REUSEPORT's uneven spread")
    if not checks["held"] and limit < 2 * plan.idle / members + FD_RESERVE:
        lines.append(f"note: {members} process{'es' if members > 1 else ''} cannot hold "
                     f"{plan.idle}: about {members * per_process} at most")
    return lines, all(checks.values())


def loop_name(choice: str) -> str:
    """The loop the proxy runs for ``--loop choice``."""
    if choice != "auto":
        return choice
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; 0 when every target is met."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a shorter run (fewer bytes, "
                        "round trips and idle connections)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="the proxy's event loop")
    parser.add_argument("--spin-us", type=float, default=50.0,
                        help="the proxy's --spin-us (0: never poll after traffic)")
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream:         # the upstream server's former spelling
        return proxy_upstream.main()
    raise_nofile()
    plan = QUICK if args.quick else FULL

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    figures = run(plan, args.loop, args.spin_us, log)
    lines, ok = report(figures, plan, loop_name(args.loop))
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
