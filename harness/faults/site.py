"""What every fault is to the runners (the ``Fault`` Protocol), and where it acts (``Site``).

A packet fault acts on the lab's flows (nftables in the client's or router's namespace); a
proxy fault adds toxics to the proxy the faulted sessions go through. The runner's routing
builds the site, so no runner asks which kind of fault it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from harness.core.assess import Heartbeat, SessionFacts
from harness.core.prediction import Effective, Prediction
from harness.faults import nft
from harness.faults.base import Flow
from harness.faults.proxy_base import ProxyControl

if TYPE_CHECKING:
    from harness.run.session_host import SessionHost


@dataclass(frozen=True)
class Site:
    """Where a fault acts: the lab and the faulted sessions' flows (packet faults), and the
    proxy the faulted sessions go through, by name (proxy faults; None on direct routes)."""

    lab: nft.RunsIn
    flows: Sequence[Flow] = ()
    proxy: ProxyControl | None = None
    proxy_name: str = ""
    host: SessionHost | None = None   # the faulted sessions' own client process (process-pause, slow-reader)


class Fault(Protocol):
    """A fault: applied at a site, reverted, described in one line, and predicting what the
    server does with a faulted session."""

    @property
    def layer(self) -> str: ...

    def apply(self, site: Site) -> None: ...

    def revert(self) -> None: ...

    def describe(self) -> str: ...

    def predict(self, settings: Effective, facts: SessionFacts, heartbeat: Heartbeat) -> Prediction: ...
