"""What every process of the proxy's data plane sets up first: its event loop and its
descriptor limit. Kept apart from ``server`` so that a worker process does not import the
HTTP stack it never serves."""

from __future__ import annotations

import asyncio
import contextlib
import resource


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


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what ``new_event_loop`` must be asked for to get a loop
    like ``loop`` (workers run the same loop as the API process)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (each connection needs two descriptors);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
