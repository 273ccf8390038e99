"""``proxy-down``: the proxy is disabled: it closes every connection and stops listening."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.prediction import ProxyEffect
from harness.faults.proxy_base import ProxyControl, ProxyFault


@dataclass
class ProxyDown(ProxyFault):
    """Disable the faulted proxy; re-enable it on revert."""

    def toxics(self) -> list[dict[str, Any]]:
        return []

    def apply(self, control: ProxyControl, proxy_name: str) -> None:
        self._control = control
        control.call(lambda: self._proxy(proxy_name).disable())
        self._undo.append(lambda: self._proxy(proxy_name).enable())

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        return "closes", 0.0

    def describe(self) -> str:
        return "proxy disabled: every connection closed"
