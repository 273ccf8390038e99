"""``timeout``: no data passes; the connection closes after ``timeout`` (never, for 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import End, Stub
from harness.proxy.toxics.units import MS, attribute


@dataclass(frozen=True, slots=True)
class Timeout:
    """Attribute ``timeout`` in milliseconds. Data is dropped on the ground; after the
    timeout the connection closes. With 0 the connection stalls until the toxic is removed,
    and removing it closes the connection (Toxiproxy's ``Cleanup``)."""

    timeout_s: float = attribute("timeout", MS)
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = True

    async def pipe(self, stub: Stub) -> None:
        """Swallow the stream until the deadline, then close it."""
        deadline = stub.now() + self.timeout_s if self.timeout_s > 0 else None
        while True:
            remaining = None if deadline is None else deadline - stub.now()
            if remaining is not None and remaining <= 0:
                stub.close()
                return
            item = await stub.recv(remaining)
            if isinstance(item, End):
                stub.close(item)
                return
            stub.discard()
