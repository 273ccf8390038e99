"""``proxy-down``: the proxy is disabled: it closes every connection and stops listening."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.core.prediction import ProxyEffect
from harness.errors import LabError
from harness.faults.proxy_base import ProxyFault

if TYPE_CHECKING:
    from harness.faults.site import Site


@dataclass
class ProxyDown(ProxyFault):
    """Disable the faulted proxy; re-enable it on revert."""

    def toxics(self) -> list[dict[str, Any]]:
        return []

    def apply(self, site: Site) -> None:
        control, proxy_name = site.proxy, site.proxy_name
        if control is None:
            raise LabError(f"applying {self.describe()}", "the sessions do not go through a proxy")
        self._control = control
        control.call(lambda: self._proxy(proxy_name).disable())
        self._undo.append(lambda: self._proxy(proxy_name).enable())

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        return "closes", 0.0

    def describe(self) -> str:
        return "proxy disabled: every connection closed"
