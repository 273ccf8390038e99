"""``noop``: passes everything through unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.proxy.pipeline import Stub, passthrough


@dataclass(frozen=True, slots=True)
class Noop:
    """No parameters, no effect (useful to test a client against the pipeline itself)."""

    buffer_size: ClassVar[int] = 0
    closes_on_removal: ClassVar[bool] = False

    async def pipe(self, stub: Stub) -> None:
        """Forward every chunk and the end of the stream."""
        await passthrough(stub)
