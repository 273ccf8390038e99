"""A worker process of the data plane: ``python -m harness.proxy.worker``, started by the API
process (``pool.WorkerPool``), never by hand.

It runs the same data plane as the API process (proxies, connections, toxics) without the
HTTP API, listening on every proxy's address with SO_REUSEPORT. Its one link to the API
process is the control channel, a Unix socket inherited as ``--control-fd``, carrying one JSON
object per line:

    worker -> API    {"ready": pid}                                    once, at start
    API -> worker    {"id": n, "apply": [op, ...]}                     see ``replica``
    worker -> API    {"id": n, "errors": ["...", ...]}                 once all are applied
    API -> worker    {"id": n, "connections": name}
    worker -> API    {"id": n, "connections": [entry, ...] | null}

Requests are answered in order. End of file on the channel (the API process stopped it, or
died however it died) makes the worker close every proxy and exit 0; so does SIGTERM.
SIGINT is ignored: a Ctrl-C reaches the whole process group, and the API process decides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Sequence

from harness.proxy.listener import JOIN
from harness.proxy.proxy import Settings
from harness.proxy.replica import Replica
from harness.proxy.runtime import new_event_loop, raise_fd_limit

log = logging.getLogger(__name__)
LINE_LIMIT = 256 * 1024 * 1024   # a populate of many proxies is one line


def answer(replica: Replica, request: dict[str, object]) -> dict[str, object]:
    """The reply to one request from the API process."""
    reply: dict[str, object] = {"id": request.get("id")}
    if "apply" in request:
        ops = request["apply"]
        reply["errors"] = replica.apply(ops if isinstance(ops, list) else [])
    elif "connections" in request:
        reply["connections"] = replica.connections(str(request["connections"]))
    else:
        reply["errors"] = [f"unknown request {sorted(request)}"]
    return reply


async def run(control: socket.socket, *, listen_host: str = "127.0.0.1",
              keepalive_s: float | None = 15.0, rng: random.Random | None = None,
              spin_s: float = 50e-6) -> None:
    """Serve the control channel ``control`` until it ends (or SIGTERM), then close every
    proxy of this worker."""
    loop = asyncio.get_running_loop()
    settings = Settings(loop, listen_host, keepalive_s, rng or random.Random(), spin_s,
                        share=JOIN)
    replica = Replica(settings)
    reader, writer = await asyncio.open_unix_connection(sock=control, limit=LINE_LIMIT)
    stopping = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
    stop_wait = asyncio.ensure_future(stopping.wait())
    try:
        writer.write(json.dumps({"ready": os.getpid()}).encode() + b"\n")
        while True:
            line_wait = asyncio.ensure_future(reader.readline())
            await asyncio.wait([line_wait, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if not line_wait.done():
                line_wait.cancel()
                break
            try:
                line = line_wait.result()
            except (ConnectionError, ValueError):   # reset, or a line over the limit
                break
            if not line:
                break
            writer.write(json.dumps(answer(replica, json.loads(line))).encode() + b"\n")
    finally:
        stop_wait.cancel()
        replica.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """The worker's entry point; its options are the API process's business."""
    parser = argparse.ArgumentParser(prog="python -m harness.proxy.worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--member", type=int, required=True)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--keepalive", type=float, default=15.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--spin-us", type=float, default=50.0)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=(
        f"%(asctime)s %(levelname)s worker {args.member} %(name)s: %(message)s"))
    raise_fd_limit()
    control = socket.socket(fileno=args.control_fd)
    # Member 0 (the API process) seeds with the seed itself; each worker rolls its own.
    rng = random.Random(None if args.seed is None else f"{args.seed}/{args.member}")
    with asyncio.Runner(loop_factory=lambda: new_event_loop(args.loop)) as runner:
        runner.run(run(control, listen_host=args.listen_host, keepalive_s=args.keepalive or None,
                       rng=rng, spin_s=max(0.0, args.spin_us) / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
