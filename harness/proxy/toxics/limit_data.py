"""``limit_data``: the connection closes once ``bytes`` have passed on this stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import Chunk, Stub
from harness.proxy.toxics.units import attribute


@dataclass(frozen=True, slots=True)
class LimitData:
    """Attribute ``bytes``. What passed is counted per connection and survives updates of
    the toxic; the chunk that crosses the limit is cut to fit, then the stream closes."""

    bytes: int = attribute("bytes")
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Forward up to the limit, then close."""
        stub.state.setdefault("sent", 0)
        async for item in stub.chunks():
            remaining = max(0, self.bytes - stub.state["sent"])
            if remaining < len(item.data):
                item = Chunk(item.data[:remaining], item.ts)
            if item.data:
                stub.state["sent"] += len(item.data)
                await stub.send(item)
            else:
                stub.discard()
            if self.bytes - stub.state["sent"] <= 0:
                stub.close()
                return
