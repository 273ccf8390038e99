"""harness.machine: what scenarios need, and the first missing item as the run's exit-3 message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import machine
from harness.errors import MachineError
from harness.scenario import load_paths

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _needs(name: str, backend: str) -> set[str]:
    return machine.needs_for(load_paths([str(SCENARIOS / name)]), backend)


def test_needs_follow_the_backend_the_service_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _needs("postgres-client-vanishes.yaml", "local") == {"local", "postgres on local"}
    assert _needs("ssh-client-alive.yaml", "local") == {"local", "ssh on local"}
    assert _needs("tcp-raw-service.yaml", "local") == {"local"}
    assert _needs("ssh-client-alive.yaml", "docker") == {"docker", "docker as root"}
    assert _needs("load-websocket-small.yaml", "docker") == {"docker", "docker as root"}
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert _needs("postgres-client-vanishes.yaml", "docker") == {"docker"}


def test_require_raises_the_first_missing_in_the_lists_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MachineError) as raised:
        machine.require({"local", "postgres on local"})
    assert str(raised.value) == ("this machine cannot run it: root (network namespaces and"
                                 " nftables need it) (run as root)")
    assert raised.value.exit_code == 3


def test_a_reason_of_the_check_reaches_the_hint_only_where_asked() -> None:
    engine = next(r for r in machine.REQUIREMENTS if r.name == "Docker engine")
    assert str(engine.error("none answers (refused)")) == ("this machine cannot run it: a Docker"
                                                           " engine (none answers (refused);"
                                                           " start dockerd or set DOCKER_HOST)")
    nft = next(r for r in machine.REQUIREMENTS if r.name == "nftables")
    assert str(nft.error("no nft command")) == ("this machine cannot run it: nftables (the nft"
                                                " command) (apt-get install nftables)")


def test_items_a_run_does_not_stop_for_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "REQUIREMENTS", tuple(
        machine.Requirement(r.name, r.what, lambda: "absent", r.fix, r.needed_for, blocking=r.blocking)
        for r in machine.REQUIREMENTS))
    names = [r.name for r, _ in machine.missing({"docker"})]
    assert names == ["Docker engine"]
