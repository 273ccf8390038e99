"""``reset_peer``: once the stream carries anything, reset the connection (RST)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import RESET, Stub
from harness.proxy.toxics.units import MS, attribute


@dataclass(frozen=True, slots=True)
class ResetPeer:
    """Attribute ``timeout`` in milliseconds: after the first data (or end) on the stream,
    wait that long, then close both sockets with SO_LINGER 0 so both peers get an RST."""

    timeout_s: float = attribute("timeout", MS)
    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Wait for input, drop it, wait ``timeout``, reset."""
        await stub.recv()
        stub.discard()
        await stub.sleep(self.timeout_s)
        stub.close(RESET)
