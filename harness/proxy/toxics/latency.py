"""``latency``: each chunk leaves ``latency ± jitter`` after it arrived."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import Stub
from harness.proxy.toxics.units import MS, attribute


@dataclass(frozen=True, slots=True)
class Latency:
    """Attributes ``latency`` and ``jitter`` in milliseconds. Chunks queue (up to 1024) and
    are delayed from their arrival, so latency does not cut throughput; several latency
    toxics add up."""

    latency_s: float = attribute("latency", MS)
    jitter_s: float = attribute("jitter", MS)
    buffer_size: ClassVar[int] = 1024
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Hold each chunk until its arrival time plus the delay, then forward it."""
        async for item in stub.chunks():
            delay = self.latency_s
            if self.jitter_s > 0:
                delay += stub.rng.uniform(-self.jitter_s, self.jitter_s)
            await stub.sleep(item.ts + delay - stub.now())
            item.ts += max(0.0, delay)
            await stub.send(item)
