"""``proxy-stall``: the proxy stops passing data and closes nothing (Toxiproxy's ``timeout``
toxic with timeout 0), in both directions unless a stream is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.prediction import ProxyEffect
from harness.faults.proxy_base import ProxyFault


@dataclass
class ProxyStall(ProxyFault):
    """Data dropped inside the proxy, connections left open."""

    def toxics(self) -> list[dict[str, Any]]:
        streams = [self.stream] if self.stream else ["upstream", "downstream"]
        return [self.toxic("timeout", s, {"timeout": 0}) for s in streams]

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        return "holds", 0.0

    def describe(self) -> str:
        return f"proxy drops data {self.stream or 'both ways'} and closes nothing"
