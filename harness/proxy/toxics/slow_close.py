"""``slow_close``: the end of the stream is passed on only after ``delay``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import End, Stub
from harness.proxy.toxics.units import MS, attribute


@dataclass(frozen=True, slots=True)
class SlowClose:
    """Attribute ``delay`` in milliseconds. Data flows unchanged; the close waits."""

    delay_s: float = attribute("delay", MS)
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Forward data at once; hold the end of the stream for ``delay``."""
        while True:
            item = await stub.recv()
            if isinstance(item, End):
                await stub.sleep(self.delay_s)   # still held: an interrupt passes it on
                stub.close(item)
                return
            if item is not None:
                await stub.send(item)
