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


def decode(kind: str, attributes: object, base: Any = None) -> Any:
    """Parameters of toxic type ``kind`` from the API's ``attributes`` object, starting from
    ``base`` (an update merges) or from the defaults. Raises BAD_REQUEST_BODY as Go would."""
    cls = TOXICS[kind]
    current = base if base is not None else cls()
    if attributes is None:
        return current
    if not isinstance(attributes, dict):
        raise gojson.mismatch(attributes, ".attributes", f"toxics.{cls.__name__}")
    changes: dict[str, object] = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        name, unit, go_type = meta["json"], meta["unit"], meta["go_type"]
        raw = gojson.lookup(attributes, name)
        if raw is None:
            continue
        value = gojson.int64(raw, f".attributes.{name}", go_type)
        changes[field.name] = value * unit if unit is not None else value
    return dataclasses.replace(current, **changes) if changes else current


def encode(toxic: Any) -> dict[str, int]:
    """The API's ``attributes`` object for ``toxic``, in Toxiproxy's units."""
    out: dict[str, int] = {}
    for field in dataclasses.fields(toxic):
        unit = field.metadata["unit"]
        value = getattr(toxic, field.name)
        out[field.metadata["json"]] = round(value / unit) if unit is not None else int(value)
    return out


__all__ = ["TOXICS", "Toxic", "attribute", "decode", "encode"]
