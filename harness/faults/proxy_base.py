"""What every proxy fault shares: toxics added to (and removed from) one proxy, through
toxiproxy-python, wherever the proxy's API is reachable (``ProxyControl.call``).

Only the sessions routed through the *faulted* proxy are hit: the lab gives the spared
sessions a proxy of their own, so a fault never needs per-connection targeting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.core.assess import Heartbeat, SessionFacts, predict_with_heartbeat
from harness.core.prediction import Effective, Prediction, ProxyEffect, predict_proxy
from harness.errors import LabError

if TYPE_CHECKING:
    from harness.faults.site import Site

T = TypeVar("T")


class ProxyControl(Protocol):
    """Runs toxiproxy-python calls where the proxy's API can be reached."""

    def call(self, fn: Callable[[], T]) -> T: ...


def _destroyer(proxy: Any, name: str) -> Callable[[], None]:
    def destroy() -> None:
        proxy.destroy_toxic(name)
    return destroy


@dataclass
class ProxyFault:
    """Base of the proxy faults: subclasses say which toxics they add and what follows."""

    stream: str | None = None
    toxicity: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    layer: ClassVar[str] = "proxy"
    _undo: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)
    _control: ProxyControl | None = field(default=None, init=False, repr=False)

    def toxics(self) -> list[dict[str, Any]]:
        """The toxics to add: each a toxiproxy-python ``add_toxic`` keyword set."""
        raise NotImplementedError

    def effect(self, activity: str) -> tuple[ProxyEffect, float]:
        """What the server's connection will see, and how many seconds after the fault, for
        sessions that are ``idle`` or have server data ``in-flight`` (sent at the fault)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction:
        """What the proxy does to the server's connection; a stalled proxy drops the
        service's heartbeats too, so they still decide when they come first."""
        effect, delay = self.effect(facts.activity)
        proxied = predict_proxy(effect, what=self.describe(), delay_s=delay)
        return predict_with_heartbeat(proxied, facts, heartbeat, None)

    def _proxy(self, name: str) -> Any:
        proxy = Toxiproxy().get_proxy(name)
        if proxy is None:
            raise LabError("proxy fault", f"the proxy {name!r} does not exist")
        return proxy

    def apply(self, site: Site) -> None:
        """Add the toxics to the site's proxy."""
        control, proxy_name = site.proxy, site.proxy_name
        if control is None:
            raise LabError(f"applying {self.describe()}", "the sessions do not go through a proxy")
        self._control = control

        def add() -> None:
            proxy = self._proxy(proxy_name)
            for toxic in self.toxics():
                proxy.add_toxic(**toxic)
                self._undo.append(_destroyer(proxy, toxic["name"]))
        try:
            control.call(add)
        except (InvalidToxic, NotFound, ProxyExists) as exc:
            raise LabError(f"adding toxics for {self.describe()}", str(exc)) from exc

    def revert(self) -> None:
        """Remove what ``apply`` added (a proxy already gone is fine)."""
        undo, self._undo = self._undo, []
        if self._control is not None and undo:
            def remove() -> None:
                for fn in reversed(undo):
                    with contextlib.suppress(NotFound):
                        fn()
            self._control.call(remove)

    def toxic(self, type_: str, stream: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """One toxic's keywords, with this fault's toxicity; named after our table."""
        spec: dict[str, Any] = {"type": type_, "stream": stream, "name": f"connchaos_{type_}_{stream}",
                                "attributes": attributes}
        if self.toxicity is not None:
            spec["toxicity"] = self.toxicity
        return spec
