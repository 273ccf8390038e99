"""Any Toxiproxy toxic by name, with its own attributes (Toxiproxy's units), stream and
toxicity: ``latency``, ``bandwidth``, ``slow_close``, ``timeout``, ``reset_peer``, ``slicer``,
``limit_data``, ``noop``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.prediction import ProxyEffect
from harness.faults.proxy_base import ProxyFault
from harness.faults.reset import reset_peer_effect


@dataclass
class Toxic(ProxyFault):
    """One toxic of ``kind`` on the faulted proxy."""

    kind: str = "noop"

    def toxics(self) -> list[dict[str, Any]]:
        return [self.toxic(self.kind, self.stream or "downstream", dict(self.attributes))]

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        # Only these toxics end a connection by themselves; the rest slow or cut data while
        # the proxy's kernel keeps the server's TCP connection healthy. (limit_data closes
        # once its byte count passes: the prediction does not count bytes.)
        ms = float(self.attributes.get("timeout", 0))
        if self.kind == "timeout" and ms > 0:
            return "closes", ms / 1000
        if self.kind == "reset_peer":
            return reset_peer_effect(self.stream or "downstream", self.attributes, activity)
        return "holds", 0.0

    def describe(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attributes.items())
        return f"toxic {self.kind} on {self.stream or 'downstream'}" + (f" ({attrs})" if attrs else "")
