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


# -- capacity: open files and memory for the sessions -------------------------------------------


def _postgres(sessions: int) -> machine.Capacity:
    return machine.Capacity.of("postgres", sessions, needs_process=True, load=False)


def test_a_session_of_postgres_costs_two_descriptors_and_a_backends_memory() -> None:
    assert _postgres(10).descriptors == 20          # its socket and its backend's pidfd
    assert machine.Capacity.of("websocket", 10, needs_process=False, load=False).descriptors == 10
    assert machine.Capacity.of("postgres", 10, needs_process=True, load=True).descriptors == 10
    assert _postgres(1000).memory_bytes == 1000 * (machine.SERVER_SESSION_BYTES["postgres"]
                                                   + machine.HARNESS_SESSION_BYTES)


def test_the_soft_open_files_limit_is_raised_when_the_hard_one_allows() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000 + machine.DESCRIPTOR_MARGIN:
        pytest.skip(f"the hard open-files limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        machine.require_capacity([_postgres(1000)])
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (2000 + machine.DESCRIPTOR_MARGIN, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_sessions_than_the_hard_limit_allows_is_exit_3_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "descriptor_limits", lambda: (1024, 4096))
    with pytest.raises(MachineError) as raised:
        machine.require_capacity([_postgres(100), _postgres(10_000)])
    assert raised.value.exit_code == 3
    assert str(raised.value) == (
        "this machine cannot run it: open files for 10000 postgres sessions (about 20256 open files"
        " are needed and the hard limit (RLIMIT_NOFILE) is 4096; raise the hard limit (as root"
        " `ulimit -Hn 20256`, LimitNOFILE= for a service, nofile in limits.conf) or hold at most"
        " 1920 sessions here)")


def test_more_sessions_than_memory_holds_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "descriptor_limits", lambda: (1 << 20, 1 << 20))
    monkeypatch.setattr(machine, "available_memory", lambda: (4 * machine.GIB, machine.GIB))
    machine.require_capacity([_postgres(1900)])         # 2.9 GiB of the 3 GiB to spare
    with pytest.raises(MachineError) as raised:
        machine.require_capacity([_postgres(2100)])
    assert raised.value.exit_code == 3
    assert str(raised.value) == (
        "this machine cannot run it: memory for 2100 postgres sessions (about 3.2 GiB of memory is"
        " needed and 4.0 GiB is available, of which 1.0 GiB stays free; free memory or hold at"
        " most 1966 sessions here)")


def test_doctor_shows_the_room_for_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.doctor import _look

    monkeypatch.setattr(machine, "descriptor_limits", lambda: (1024, 4096))
    monkeypatch.setattr(machine, "available_memory", lambda: (4 * machine.GIB, machine.GIB))
    found = {r.name: _look(r) for r in machine.REQUIREMENTS if r.name in ("open files", "memory")}
    assert found["open files"].ok and found["open files"].detail == (
        "soft 1024, hard 4096: room for 1920 postgres sessions (a run raises the soft limit to what it needs)")
    assert found["memory"].ok and found["memory"].detail == (
        "4.0 GiB available, 1.0 GiB kept free: room for 1966 postgres sessions")
    assert not any(r.blocking for r in machine.REQUIREMENTS if r.name in found)


def test_ten_thousand_sessions_over_the_limit_stop_before_any_lab(tmp_path: Path, no_leftovers: None) -> None:
    import resource
    import subprocess
    import time

    from harness.testing import CONNCHAOS, REPO, keepalive_scenario, write_scenario

    scenario = write_scenario(tmp_path, "pg-huge", keepalive_scenario("pg-huge").replace(
        "count: 6", "count: 10000"))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    started = time.monotonic()
    done = subprocess.run([*CONNCHAOS, "run", str(scenario), "--report-dir", str(tmp_path / "reports")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=low_limit)
    assert done.returncode == 3, done.stderr
    assert "open files for 10000 postgres sessions" in done.stderr
    assert "hard limit (RLIMIT_NOFILE) is 4096" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "reports").exists()


def test_haproxy_scenarios_need_haproxy_and_their_upstreams_and_name_it_when_missing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _needs("haproxy-clitcpka.yaml", "local") == {"local", "haproxy on local", "postgres on local"}
    assert _needs("haproxy-tunnel-timeout-websocket.yaml", "local") == {"local", "haproxy on local"}
    assert _needs("haproxy-tunnel-timeout-websocket.yaml", "docker") == {"docker", "docker as root"}
    monkeypatch.setattr("harness.targets.haproxy.config.find_haproxy", lambda: None)
    with pytest.raises(MachineError) as raised:
        machine.require({"haproxy on local"})
    assert raised.value.exit_code == 3 and "HAProxy (haproxy)" in str(raised.value)
    assert "apt-get install haproxy" in str(raised.value)
    from harness.run.check import images_needed

    loaded = load_paths([str(SCENARIOS / "haproxy-clitcpka.yaml")])
    assert images_needed(loaded, "docker") == ["client", "haproxy", "postgres"]
