"""The nat-idle-expiry prediction: which setting decides whether an idle session survives
the middlebox, and what the first packet after expiry meets (pure: no lab)."""

from __future__ import annotations

import pytest

from harness.core.assess import SessionFacts
from harness.core.prediction import Effective, KernelDefaults, Prediction, SocketSettings, effective
from harness.faults import NatIdleExpiry, build
from harness.scenario.model import Fault, Middlebox

FACTS = SessionFacts(id=0, faulted=True, opened_s=-1.5, last_activity_s=-0.5)


def eff(idle: float | None = 2, interval: float = 1, count: int = 2, keepalive: bool = True) -> Effective:
    return effective(SocketSettings(keepalive=keepalive, idle_s=idle, interval_s=interval, count=count),
                     KernelDefaults())


def no_heartbeat(last: float, opened: float) -> tuple[Prediction | None, float | None]:
    return None, None


def heartbeat_at(first_send: float, gives_up: float):  # type: ignore[no-untyped-def]
    def beat(last: float, opened: float) -> tuple[Prediction | None, float | None]:
        return Prediction(gives_up, "heartbeat", "heartbeat gives up"), first_send
    return beat


def test_keepalive_idle_below_the_timeout_keeps_the_session() -> None:
    p = NatIdleExpiry(idle_timeout_s=3).predict(eff(idle=2), FACTS, no_heartbeat)
    assert p.reclaim_s is None and p.mechanism == "none"
    assert "tcp keepalive idle 2 s < middlebox idle_timeout 3 s" in p.formula
    assert "probes refresh the entry" in p.formula


@pytest.mark.parametrize("idle", [1, 2])
def test_keepalive_idle_at_or_above_the_timeout_dies_by_the_probe_count(idle: float) -> None:
    p = NatIdleExpiry(idle_timeout_s=1, on_expiry="drop").predict(eff(idle=idle), FACTS, no_heartbeat)
    assert p.mechanism == "keepalive"
    assert p.reclaim_s == pytest.approx(-0.5 + idle + 2 * 1)
    assert f"tcp keepalive idle {idle} s >= middlebox idle_timeout 1 s" in p.formula
    assert "the entry expires at last activity -0.5 s + 1 s = 0.5 s" in p.formula
    assert p.slack_s > 0


def test_reset_kills_at_the_first_probe() -> None:
    p = NatIdleExpiry(idle_timeout_s=1, on_expiry="reset").predict(eff(idle=2, count=5), FACTS, no_heartbeat)
    assert p.mechanism == "reset"
    assert p.reclaim_s == pytest.approx(1.5)
    assert "first keepalive probe" in p.formula and "reset" in p.formula


@pytest.mark.parametrize("on_expiry", ["drop", "reset"])
def test_keepalive_off_holds_the_dead_session_forever(on_expiry: str) -> None:
    p = NatIdleExpiry(idle_timeout_s=1, on_expiry=on_expiry).predict(  # type: ignore[arg-type]
        eff(keepalive=False), FACTS, no_heartbeat)
    assert p.reclaim_s is None and p.mechanism == "none"
    assert "keepalive is off" in p.formula


def test_os_default_idle_is_named_as_the_deciding_setting() -> None:
    p = NatIdleExpiry(idle_timeout_s=350).predict(eff(idle=None), FACTS, no_heartbeat)
    assert "tcp keepalive idle 7200 s (OS default) >= middlebox idle_timeout 350 s" in p.formula
    assert p.reclaim_s == pytest.approx(-0.5 + 7200 + 2)


def test_a_heartbeat_before_the_expiry_refreshes_the_entry() -> None:
    p = NatIdleExpiry(idle_timeout_s=5).predict(eff(idle=7200), FACTS, heartbeat_at(2.0, 6.0))
    assert p.reclaim_s is None and "heartbeat goes out at 2 s, before the entry expires at 4.5 s" in p.formula


def test_a_heartbeat_after_the_expiry_decides_when_it_comes_first() -> None:
    drop = NatIdleExpiry(idle_timeout_s=1).predict(eff(idle=7200), FACTS, heartbeat_at(2.0, 6.0))
    assert drop.mechanism == "heartbeat" and drop.reclaim_s == 6.0
    reset = NatIdleExpiry(idle_timeout_s=1, on_expiry="reset").predict(eff(idle=7200), FACTS,
                                                                       heartbeat_at(2.0, 6.0))
    assert reset.mechanism == "reset" and reset.reclaim_s == 2.0
    assert "first heartbeat" in reset.formula


def test_build_takes_the_middlebox() -> None:
    fault = build(Fault(type="nat-idle-expiry"), Middlebox(idle_timeout="4s", on_expiry="reset"))
    assert isinstance(fault, NatIdleExpiry)
    assert (fault.idle_timeout_s, fault.on_expiry, fault.layer) == (4, "reset", "packet")
    assert "4 s" in fault.describe() and "reset" in fault.describe()
