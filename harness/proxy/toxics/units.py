"""How a toxic's field maps to its JSON attribute: name, unit and Go type."""

from __future__ import annotations

import dataclasses
from typing import Any

MS = 1e-3   # Toxiproxy's durations are integer milliseconds ...
US = 1e-6   # ... except the slicer's delay, in microseconds


def attribute(name: str, unit: float | None = None, go_type: str = "int64") -> Any:
    """A dataclass field for the JSON attribute ``name``: seconds per unit for durations
    (``MS``, ``US``), None for counts (bytes, KB/s)."""
    default: float | int = 0.0 if unit is not None else 0
    return dataclasses.field(default=default,
                             metadata={"json": name, "unit": unit, "go_type": go_type})
