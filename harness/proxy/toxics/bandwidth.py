"""``bandwidth``: the stream passes at ``rate`` KB/s at most."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import Chunk, Stub
from harness.proxy.toxics.units import attribute

KB = 1000  # Toxiproxy's KB: rate * 1000 bytes per second


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Attribute ``rate`` in KB/s (0 or less: no limit). A chunk larger than 100 ms worth of
    rate is sent in 100 ms slices, as Toxiproxy does."""

    rate: int = attribute("rate")
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Forward each chunk once the time its size costs at ``rate`` has passed."""
        debt = 0.0   # seconds owed for what was forwarded, less the time already waited
        async for item in stub.chunks():
            if self.rate <= 0:
                debt = 0.0
                await stub.send(item)
                continue
            per_second = self.rate * KB
            debt += len(item.data) / per_second
            slice_size = per_second // 10
            while len(item.data) > slice_size:
                await stub.sleep(0.1)
                rest = Chunk(item.data[slice_size:], item.ts)
                await stub.send(Chunk(item.data[:slice_size], item.ts), rest=rest)
                item = rest
                debt -= 0.1
            started = stub.now()
            await stub.sleep(debt)
            debt -= stub.now() - started
            await stub.send(item)
