"""A Toxiproxy-compatible server, built in: Toxiproxy 2.12's HTTP API (toxiproxy-python,
Toxiproxy's own CLI and client libraries cannot tell the difference), its eight toxics with
their semantics and units, and a data plane that leaves the bytes to the kernel (splice) on
any stream without a toxic.

Modules: ``server`` (the server, ``serve`` and ``main``), ``api`` (routes, handlers, error
rendering), ``proxy`` (one proxy: listener, toxics, connections), ``connection`` and ``link``
(one connection and its two streams), ``pipeline`` (the toxic chain of a stream),
``toxics`` (one module per toxic, and the registry), ``gojson`` (Go's JSON rules),
``errors`` (API errors with their status);
for a data plane over several processes (``--workers``): ``listener`` (addresses, and
listeners shared with SO_REUSEPORT), ``pool`` (the worker processes, from the API process),
``worker`` (a worker process), ``replica`` (a worker's copy of the proxies), ``runtime``
(event loop and descriptor limit of any member).

Extension, ours and not Toxiproxy's: ``GET /proxies/{name}/connections`` lists the live
connections of a proxy with their four addresses and byte counts, so that a client session
can be matched to the socket the server sees (its ``upstream_local``).

Its benchmark against direct loopback is ``benchmarks/proxy.py`` (``connchaos bench proxy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.proxy.errors import ApiError

if TYPE_CHECKING:
    from harness.proxy.server import ProxyServer, main, serve

__all__ = ["ApiError", "ProxyServer", "main", "serve"]


def __getattr__(name: str) -> Any:
    # The server (and aiohttp with it) is imported when asked for, so that a worker process,
    # which runs ``python -m harness.proxy.worker`` and never serves HTTP, does without it.
    if name in ("ProxyServer", "main", "serve"):
        from harness.proxy import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
