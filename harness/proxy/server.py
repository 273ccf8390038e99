"""The Toxiproxy-compatible server: the collection of proxies and the HTTP API over it.

In a process of its own::

    python -m harness.proxy.server --host 127.0.0.1 --port 8474

prints ``connchaos proxy listening on http://HOST:PORT`` once it answers, and exits 0 on
SIGINT or SIGTERM after closing every proxy. In-process, on the caller's loop::

    async with ProxyServer(port=0) as server:      # server.url, server.port
        ...

or, for synchronous code such as tests, on a loop thread of its own::

    with ProxyServer(port=0).running() as server:
        Toxiproxy().update_api_consumer("127.0.0.1", server.port)

The loop is uvloop when it is installed (it halves the proxy's per-hop latency, see
``benchmarks.proxy``), asyncio's otherwise.

``--workers N`` (``ProxyServer(workers=N)``) spreads the data plane over N processes: this one
(API and data plane) and N-1 workers (``pool``, ``worker``), every one listening on every
proxy's address with SO_REUSEPORT, so that N times as many connections fit under a per-process
descriptor limit. Each change the API makes is journaled and applied by every worker before
the API answers (``replica``); ``connections`` lists every member's. With 1, the default,
there is no other process and nothing changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from aiohttp import web

from harness.proxy import gojson
from harness.proxy.api import build_app, decode_proxy
from harness.proxy.errors import MISSING_FIELD, PROXY_ALREADY_EXISTS, PROXY_NOT_FOUND, ApiError, WorkerError
from harness.proxy.listener import ALONE, LEAD, join_host_port, resolve_listen
from harness.proxy.pool import WorkerPool
from harness.proxy.proxy import Proxy, ProxyConfig, Settings
from harness.proxy.runtime import loop_kind, new_event_loop, raise_fd_limit
from harness.proxy.site import READ_TIMEOUT_S, DeadlineSite, OneLineErrors

log = logging.getLogger(__name__)


class ProxyServer:
    """Proxies by name and the API that manages them (Toxiproxy's ``ApiServer`` and
    ``ProxyCollection``).

    ``listen_host`` is where a proxy created without ``listen`` binds (default: ``host``);
    ``keepalive_s`` the TCP keepalive the proxy sets on its sockets as Go does (None: off);
    ``seed`` makes toxicity rolls, jitter and slicing reproducible; ``spin_s`` is how long
    the loop keeps polling after traffic (``link.Spinner``; 0: never); ``workers`` is how
    many processes make up the data plane, this one included; ``read_timeout_s`` how long an
    API request may take to arrive (Toxiproxy's 15 s; see ``site``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, *,
                 listen_host: str | None = None, keepalive_s: float | None = 15.0,
                 seed: int | None = None, spin_s: float = 50e-6, workers: int = 1,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.host = host
        self.port = port
        self.listen_host = listen_host or host
        self.keepalive_s = keepalive_s
        self.spin_s = spin_s
        self.seed = seed
        self.workers = workers
        self.read_timeout_s = read_timeout_s
        self.rng = random.Random(seed)
        self.proxies: dict[str, Proxy] = {}
        self._settings: Settings | None = None
        self._runner: web.AppRunner | None = None
        self._pool: WorkerPool | None = None
        self._journal: list[dict[str, object]] = []   # changes the workers have not seen

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://{join_host_port(self.host, self.port)}"

    @property
    def settings(self) -> Settings:
        """What the proxies share; exists once the server has started."""
        if self._settings is None:
            raise RuntimeError("the proxy server is not started")
        return self._settings

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the running worker processes (none with ``workers=1``)."""
        return self._pool.pids if self._pool is not None else []

    # Lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers, if any, then serve the API on the running loop (``port`` 0
        picks a free one). Raises WorkerError when a worker cannot start."""
        loop = asyncio.get_running_loop()
        self._settings = Settings(loop, self.listen_host, self.keepalive_s, self.rng,
                                  self.spin_s, share=LEAD if self.workers > 1 else ALONE)
        if self.workers > 1:
            options = ["--listen-host", self.listen_host, "--keepalive",
                       str(self.keepalive_s or 0), "--spin-us", str(self.spin_s * 1e6),
                       "--loop", loop_kind(loop)]
            if self.seed is not None:
                options += ["--seed", str(self.seed)]
            pool = WorkerPool(self.workers - 1, options)
            await pool.start()
            self._pool = pool
        runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False,
                               logger=OneLineErrors(logging.getLogger("aiohttp.server")))
        try:
            await runner.setup()
            site = DeadlineSite(runner, self.host, self.port, read_timeout_s=self.read_timeout_s)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._stop_pool()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("API listening on %s", self.url)

    async def stop(self) -> None:
        """Close every proxy, stop serving, and stop the workers (each closes its own)."""
        for proxy in list(self.proxies.values()):
            proxy.journal = None
            proxy.close()
        self.proxies.clear()
        self._journal.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._stop_pool()

    async def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProxyServer]:
        """Serve from a loop thread of its own for the duration of the ``with``."""
        loop = new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        thread = threading.Thread(target=run, name="connchaos-proxy", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    # Replication ---------------------------------------------------------------------

    def _adopt(self, proxy: Proxy) -> None:
        """``proxy`` joined the collection: journal its changes from now on, starting with
        its creation (workers create it as it is now: listening, on a concrete port)."""
        if self._pool is not None:
            proxy.journal = self._record
            self._record({"op": "create", "proxy": proxy.name, "listen": proxy.listen,
                          "upstream": proxy.upstream, "enabled": proxy.enabled})

    def _record(self, op: dict[str, object]) -> None:
        self._journal.append(op)
        if op["op"] == "stop":    # until the workers stop too, they still listen there
            self.settings.rejoin[str(op["listen"])] += 1

    async def replicate(self) -> None:
        """Have every worker apply what changed since the last call; returns once all have.
        The API calls it after every request (a no-op when nothing changed)."""
        ops = self._journal[:]
        self._journal.clear()
        if not ops or self._pool is None:
            return
        try:
            await self._pool.apply(ops)
        finally:
            rejoin = self.settings.rejoin
            for op in ops:
                if op["op"] == "stop":
                    address = str(op["listen"])
                    rejoin[address] -= 1
                    if rejoin[address] <= 0:
                        del rejoin[address]

    async def connections(self, name: str) -> list[list[dict[str, object]]]:
        """The live connections of proxy ``name``, per member (this process first); 404
        when there is no such proxy."""
        own = self.get(name).connections_json()
        if self._pool is None:
            return [own]
        return [own, *await self._pool.connections(name)]

    # The collection --------------------------------------------------------------------

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``; 404 otherwise."""
        try:
            return self.proxies[name]
        except KeyError:
            raise PROXY_NOT_FOUND() from None

    def create(self, config: ProxyConfig) -> Proxy:
        """A new proxy, listening at once when enabled; 409 when the name is taken."""
        if config.name in self.proxies:
            raise PROXY_ALREADY_EXISTS()
        proxy = Proxy(self.settings, config.name, config.listen, config.upstream)
        if config.enabled:
            proxy.start()
        self.proxies[config.name] = proxy
        self._adopt(proxy)
        return proxy

    def remove(self, name: str) -> None:
        """Stop and forget a proxy; 404 when there is none."""
        self.get(name).stop()
        del self.proxies[name]
        if self._pool is not None:
            self._journal.append({"op": "delete", "proxy": name})

    def populate(self, body: object) -> tuple[list[Proxy], ApiError | None]:
        """Toxiproxy's ``PopulateJson``: check the whole list first, then create or replace
        each proxy in turn (one with the same listen and upstream is kept, toxics and all).
        Returns the proxies, and the error that stopped the work, if any."""
        if not isinstance(body, list):
            raise gojson.mismatch(body, "", "[]toxiproxy.Proxy")
        configs = [decode_proxy(item, "Proxy", ProxyConfig("", "", "", True)) for item in body]
        for index, config in enumerate(configs, start=1):
            if not config.name:
                raise MISSING_FIELD.joined(f"name at proxy {index}")
            if not config.upstream:
                raise MISSING_FIELD.joined(f"upstream at proxy {index}")
        done: list[Proxy] = []
        for config in configs:
            existing = self.proxies.get(config.name)
            if existing is not None:
                if not self._differs(existing, config):
                    done.append(existing)
                    continue
                existing.stop()
            proxy = Proxy(self.settings, config.name, config.listen, config.upstream)
            if config.enabled:
                try:
                    proxy.start()
                except ApiError as exc:
                    return done, exc
            self.proxies[config.name] = proxy
            self._adopt(proxy)
            done.append(proxy)
        return done, None

    def _differs(self, existing: Proxy, config: ProxyConfig) -> bool:
        try:
            _, host, port = resolve_listen(config.listen, self.listen_host)
        except ValueError:
            return True
        return (existing.listen != join_host_port(host, port)
                or existing.upstream != config.upstream)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        for proxy in list(self.proxies.values()):
            proxy.start()
            proxy.reset_toxics()

    def populate_file(self, path: str) -> None:
        """Toxiproxy's ``-config``: populate from a JSON file, logging what went wrong."""
        try:
            with open(path, "rb") as handle:
                proxies, error = self.populate(gojson.decode(handle.read()))
        except (OSError, ApiError) as exc:
            log.error("cannot populate proxies from %s: %s", path, exc)
            return
        if error is not None:
            log.error("populating proxies from %s: %s", path, error)
        log.info("populated %d proxies from %s", len(proxies), path)


async def serve(host: str = "127.0.0.1", port: int = 8474, *,
                ready: Callable[[ProxyServer], None] | None = None, config: str | None = None,
                listen_host: str | None = None, keepalive_s: float | None = 15.0,
                seed: int | None = None, spin_s: float = 50e-6, workers: int = 1,
                read_timeout_s: float = READ_TIMEOUT_S) -> None:
    """Serve until SIGINT or SIGTERM (or until cancelled), then close every proxy."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
            installed.append(signum)
    try:
        async with ProxyServer(host, port, listen_host=listen_host, keepalive_s=keepalive_s,
                               seed=seed, spin_s=spin_s, workers=workers,
                               read_timeout_s=read_timeout_s) as server:
            if config:
                server.populate_file(config)
                await server.replicate()
            if ready is not None:
                ready(server)
            await stopping.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.proxy.server``: Toxiproxy's server flags, single or double dash."""
    parser = argparse.ArgumentParser(prog="python -m harness.proxy.server", description=(
        "A Toxiproxy-compatible server (Toxiproxy 2.12's HTTP API)."))
    parser.add_argument("--host", "-host", default="127.0.0.1", help="API address")
    parser.add_argument("--port", "-port", type=int, default=8474, help="API port (0: any)")
    parser.add_argument("--config", "-config", help="JSON file of proxies to create at start")
    parser.add_argument("--seed", "-seed", type=int, help="seed for toxicity, jitter, slicing")
    parser.add_argument("--listen-host", help="where proxies without 'listen' bind "
                        "(default: the API's host)")
    parser.add_argument("--keepalive", type=float, default=15.0, metavar="SECONDS",
                        help="TCP keepalive on proxied sockets, as Go sets it (0: off)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="event loop (auto: uvloop when installed)")
    parser.add_argument("--spin-us", type=float, default=50.0, metavar="MICROSECONDS",
                        help="keep polling this long after traffic instead of sleeping "
                        "(lower round-trip latency; 0: off)")
    parser.add_argument("--workers", "-workers", type=int, default=1, metavar="N",
                        help="processes in the data plane, this one included, sharing each "
                        "proxy's port (SO_REUSEPORT): N times the connections one process's "
                        "descriptor limit allows (default 1: no other process)")
    parser.add_argument("--read-timeout", type=float, default=READ_TIMEOUT_S, metavar="SECONDS",
                        help="close an API connection whose request has not arrived whole this long"
                        f" after its first byte (default {READ_TIMEOUT_S:g}, Toxiproxy's)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.read_timeout > 0:
        parser.error("--read-timeout must be more than 0")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(server: ProxyServer) -> None:
        print(f"connchaos proxy listening on {server.url}", flush=True)

    try:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(args.loop)) as runner:
            runner.run(serve(args.host, args.port, ready=ready, config=args.config,
                             listen_host=args.listen_host,
                             keepalive_s=args.keepalive or None, seed=args.seed,
                             spin_s=max(0.0, args.spin_us) / 1e6, workers=args.workers,
                             read_timeout_s=args.read_timeout))
    except WorkerError as exc:
        print(f"connchaos proxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"connchaos proxy: cannot serve on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
