"""``slicer``: chunks are cut into smaller pieces sent ``delay`` apart."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import Chunk, Stub
from harness.proxy.toxics.units import US, attribute


@dataclass(frozen=True, slots=True)
class Slicer:
    """Attributes ``average_size`` and ``size_variation`` in bytes, ``delay`` in
    microseconds. All bytes arrive, in order, in pieces of about ``average_size``."""

    average_size: int = attribute("average_size", go_type="int")
    size_variation: int = attribute("size_variation", go_type="int")
    delay_s: float = attribute("delay", US, go_type="int")
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    def cuts(self, size: int, rng: random.Random) -> list[int]:
        """Offsets cutting ``size`` bytes into pieces: split in about two (± variation)
        until a piece is within the variation of the average, as Toxiproxy's ``chunk``."""
        average = max(1, self.average_size)
        variation = max(0, self.size_variation)
        bounds, todo = [], [(0, size)]
        while todo:
            start, end = todo.pop()
            if (end - start) - average <= variation or end - start < 2:
                bounds.append(end)
                continue
            offset = rng.randrange(-variation, variation) if variation else 0
            mid = min(end - 1, max(start + 1, start + (end - start) // 2 + offset))
            todo.append((mid, end))
            todo.append((start, mid))
        return bounds

    async def pipe(self, stub: Stub) -> None:
        """Forward each chunk as several, pausing ``delay`` after each piece."""
        async for item in stub.chunks():
            data, start = item.data, 0
            for end in self.cuts(len(data), stub.rng):
                rest = Chunk(data[end:], item.ts) if end < len(data) else None
                await stub.send(Chunk(data[start:end], item.ts), rest=rest)
                start = end
                await stub.sleep(self.delay_s)
