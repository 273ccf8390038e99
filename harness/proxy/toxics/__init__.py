"""The toxics, one module each: a frozen parameter dataclass with one method, ``pipe``.

``TOXICS`` is the registry, an explicit table from Toxiproxy's type name to the class. The
API speaks Toxiproxy's units (integer milliseconds, microseconds, KB/s, bytes); the
dataclasses hold durations as float seconds. Each field names its JSON attribute and unit
with ``attribute(...)``; ``decode`` and ``encode`` convert at the boundary.

Class variables a toxic may set: ``buffer_size`` (how many chunks may queue in front of it;
Toxiproxy gives the latency toxic 1024) and ``closes_on_removal`` (removing the timeout
toxic closes the connection, as Toxiproxy's ``Cleanup`` does).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

from harness.proxy import gojson
from harness.proxy.pipeline import Stub
from harness.proxy.toxics.bandwidth import Bandwidth
from harness.proxy.toxics.latency import Latency
from harness.proxy.toxics.limit_data import LimitData
from harness.proxy.toxics.noop import Noop
from harness.proxy.toxics.reset_peer import ResetPeer
from harness.proxy.toxics.slicer import Slicer
from harness.proxy.toxics.slow_close import SlowClose
from harness.proxy.toxics.timeout import Timeout
from harness.proxy.toxics.units import attribute


class Toxic(Protocol):
    """A toxic's parameters and behaviour."""

    buffer_size: ClassVar[int]
    closes_on_removal: ClassVar[bool]

    async def pipe(self, stub: Stub) -> None:
        """Move the stream from ``stub.input`` to ``stub.output``, doing harm on the way."""


TOXICS: dict[str, type[Any]] = {
    "latency": Latency,
    "bandwidth": Bandwidth,
    "slow_close": SlowClose,
    "timeout": Timeout,
    "reset_peer": ResetPeer,
    "slicer": Slicer,
    "limit_data": LimitData,
    "noop": Noop,
}


GO_NAMES = {
    "latency": "LatencyToxic", "bandwidth": "BandwidthToxic", "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic", "reset_peer": "ResetToxic", "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic", "noop": "NoopToxic",
}
"""The Go struct of each toxic type (toxics/*.go), as Go's decoding errors name it."""


def decode(kind: str, attributes: object, base: Any = None,
           base_values: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    """Parameters of toxic type ``kind`` from the API's ``attributes`` object, starting from
    ``base`` and its API values ``base_values`` (an update merges) or from the defaults, and
    the API values (exact integers in Toxiproxy's units, as Go keeps and prints them: a float
    of seconds cannot hold ``2**63 - 1`` milliseconds). Raises BAD_REQUEST_BODY as Go would."""
    cls = TOXICS[kind]
    current = base if base is not None else cls()
    values = dict(base_values) if base_values is not None else encode(current)
    if attributes is None:
        return current, values
    go_name = GO_NAMES[kind]
    if not isinstance(attributes, dict):
        # toxic_collection.go, AddToxicJson: attributes decode into the toxic's struct,
        # inside an anonymous struct (hence the empty struct name before ".attributes")
        raise gojson.mismatch(attributes, ".attributes", f"toxics.{go_name}")
    changes: dict[str, object] = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        name, unit, go_type = meta["json"], meta["unit"], meta["go_type"]
        raw = gojson.lookup(attributes, name)
        if raw is None:
            continue
        value = gojson.int64(raw, f"{go_name}.attributes.{name}", go_type)
        changes[field.name] = value * unit if unit is not None else value
        values[name] = value
    return (dataclasses.replace(current, **changes) if changes else current), values


def encode(toxic: Any) -> dict[str, int]:
    """The API's ``attributes`` object for ``toxic``, in Toxiproxy's units (exact for values
    a float holds; ``decode`` keeps the exact ones)."""
    out: dict[str, int] = {}
    for field in dataclasses.fields(toxic):
        unit = field.metadata["unit"]
        value = getattr(toxic, field.name)
        out[field.metadata["json"]] = round(value / unit) if unit is not None else int(value)
    return out


__all__ = ["GO_NAMES", "TOXICS", "Toxic", "attribute", "decode", "encode"]
