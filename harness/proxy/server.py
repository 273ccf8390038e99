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
``harness.proxy.bench``), asyncio's otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from aiohttp import web

from harness.proxy import gojson
from harness.proxy.api import build_app, decode_proxy
from harness.proxy.errors import MISSING_FIELD, PROXY_ALREADY_EXISTS, PROXY_NOT_FOUND, ApiError
from harness.proxy.proxy import Proxy, ProxyConfig, Settings, join_host_port, resolve_listen

log = logging.getLogger(__name__)


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """A new loop: ``uvloop``, ``asyncio``, or ``auto`` (uvloop when it is installed)."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (each connection needs two descriptors);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ProxyServer:
    """Proxies by name and the API that manages them (Toxiproxy's ``ApiServer`` and
    ``ProxyCollection``).

    ``listen_host`` is where a proxy created without ``listen`` binds (default: ``host``);
    ``keepalive_s`` the TCP keepalive the proxy sets on its sockets as Go does (None: off);
    ``seed`` makes toxicity rolls, jitter and slicing reproducible; ``spin_s`` is how long
    the loop keeps polling after traffic (``link.Spinner``; 0: never).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, *,
                 listen_host: str | None = None, keepalive_s: float | None = 15.0,
                 seed: int | None = None, spin_s: float = 50e-6) -> None:
        self.host = host
        self.port = port
        self.listen_host = listen_host or host
        self.keepalive_s = keepalive_s
        self.spin_s = spin_s
        self.rng = random.Random(seed)
        self.proxies: dict[str, Proxy] = {}
        self._settings: Settings | None = None
        self._runner: web.AppRunner | None = None

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

    # Lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the API on the running loop (``port`` 0 picks a free one)."""
        self._settings = Settings(asyncio.get_running_loop(), self.listen_host,
                                  self.keepalive_s, self.rng, self.spin_s)
        runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("API listening on %s", self.url)

    async def stop(self) -> None:
        """Close every proxy and stop serving."""
        for proxy in list(self.proxies.values()):
            proxy.close()
        self.proxies.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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

    # The collection --------------------------------------------------------------------

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``; 404 otherwise."""
        try:
            return self.proxies[name]
        except KeyError:
            raise PROXY_NOT_FOUND from None

    def create(self, config: ProxyConfig) -> Proxy:
        """A new proxy, listening at once when enabled; 409 when the name is taken."""
        if config.name in self.proxies:
            raise PROXY_ALREADY_EXISTS
        proxy = Proxy(self.settings, config.name, config.listen, config.upstream)
        if config.enabled:
            proxy.start()
        self.proxies[config.name] = proxy
        return proxy

    def remove(self, name: str) -> None:
        """Stop and forget a proxy; 404 when there is none."""
        self.get(name).stop()
        del self.proxies[name]

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
                seed: int | None = None, spin_s: float = 50e-6) -> None:
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
                               seed=seed, spin_s=spin_s) as server:
            if config:
                server.populate_file(config)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(server: ProxyServer) -> None:
        print(f"connchaos proxy listening on {server.url}", flush=True)

    try:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(args.loop)) as runner:
            runner.run(serve(args.host, args.port, ready=ready, config=args.config,
                             listen_host=args.listen_host,
                             keepalive_s=args.keepalive or None, seed=args.seed,
                             spin_s=max(0.0, args.spin_us) / 1e6))
    except OSError as exc:
        print(f"connchaos proxy: cannot serve on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
