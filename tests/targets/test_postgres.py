"""The PostgreSQL target: settings checked against the real server, sessions, the alive check."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.scenario.model import Fault
from harness.targets.base import Scalar
from harness.targets.postgres import PostgresTarget, pg_seconds
from harness.testing import keepalive_scenario, run_cli, write_scenario


def build(kind: str):  # type: ignore[no-untyped-def]
    return build_spec(Fault.model_validate({"type": kind}))


def test_socket_settings_follow_postgres_units_and_zero_means_os_default() -> None:
    t = PostgresTarget(settings={"tcp_keepalives_idle": "1min", "tcp_keepalives_interval": 5,
                                 "tcp_keepalives_count": 0, "tcp_user_timeout": "2s"})
    s = t.socket_settings()
    assert s.keepalive is True           # PostgreSQL sets SO_KEEPALIVE on every TCP client
    assert s.idle_s == 60.0
    assert s.interval_s == 5.0
    assert s.count is None               # 0: the kernel's default applies
    assert s.user_timeout_s == 2.0       # tcp_user_timeout's bare unit is milliseconds
    assert PostgresTarget().socket_settings().idle_s is None
    assert pg_seconds(3000, 1e-3) == 3.0
    assert pg_seconds("250ms", 1.0) == 0.25


@pytest.mark.usefixtures("lab_machine")
def test_settings_are_checked_against_the_servers_own_list() -> None:
    problems = dict(PostgresTarget.check_settings({
        "tcp_keepalive_idle": 2,            # typo
        "tcp_keepalives_count": "many",     # not a number
        "tcp_keepalives_interval": -1,      # below the minimum
        "log_connections": "perhaps",       # not a boolean
        "port": 5433,                       # the lab decides
        "work_mem": "4MB", "tcp_user_timeout": 3000, "jit": False,   # fine
    }))
    assert "did you mean tcp_keepalives_idle" in problems["tcp_keepalive_idle"]
    assert "expected a number" in problems["tcp_keepalives_count"]
    assert "from 0 to 2147483647" in problems["tcp_keepalives_interval"]
    assert "boolean" in problems["log_connections"]
    assert "set by connchaos" in problems["port"]
    assert set(problems) == {"tcp_keepalive_idle", "tcp_keepalives_count",
                             "tcp_keepalives_interval", "log_connections", "port"}


@pytest.mark.usefixtures("lab_machine")
def test_every_value_is_checked_by_the_servers_own_parsing() -> None:
    settings: dict[str, Scalar] = {
        "log_min_messages": "banana",               # not one of its values
        "TimeZone": "Mars/Base",                    # no such zone
        "block_size": 1,                            # fixed when the server was built
        "shared_buffers": "10TB",                   # past its maximum, in its own units
        "Port": 5433,                               # the lab's, whatever the case
        "application_name": "from-the-scenario",    # left out of --describe-config: fine
        "timezone": "UTC", "search_path": '"a b", public', "log_min_duration_statement": "250ms",
        "custom.placeholder": "x",                  # an extension's: the server takes it
    }
    problems = dict(PostgresTarget.check_settings(settings))
    assert problems == {
        "log_min_messages": 'invalid value for parameter "log_min_messages": "banana"; Available values:'
                            " debug5, debug4, debug3, debug2, debug1, info, notice, warning, error, log,"
                            " fatal, panic.",
        "TimeZone": 'invalid value for parameter "TimeZone": "Mars/Base"',
        "block_size": 'parameter "block_size" cannot be changed',
        "shared_buffers": '1342177280 8kB is outside the valid range for parameter "shared_buffers"'
                          " (16 .. 1073741823)",
        "Port": "is set by connchaos to run the lab; remove it",
    }
    assert [name for name, _ in PostgresTarget.check_settings(settings)] == [
        "log_min_messages", "TimeZone", "block_size", "shared_buffers", "Port"]   # the file's order


@pytest.mark.usefixtures("lab_machine")
def test_check_refuses_what_run_would_and_takes_what_the_server_takes(tmp_path: Path) -> None:
    body = keepalive_scenario("pg-settings")
    bad = write_scenario(tmp_path, "bad", body.replace("tcp_keepalives_count: 3",
                                                       "tcp_keepalives_count: 3\n    log_min_messages: banana"))
    done = run_cli("check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{bad}:9" in done.stderr and 'invalid value for parameter "log_min_messages"' in done.stderr
    good = write_scenario(tmp_path, "good", body.replace("tcp_keepalives_count: 3",
                                                         "tcp_keepalives_count: 3\n    application_name: mine"))
    done = run_cli("check", str(good))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.usefixtures("no_leftovers")
def test_sessions_carry_their_4_tuple_and_backend_and_the_alive_check_can_fail() -> None:
    target = PostgresTarget(sessions=2)
    with LocalLab() as lab:
        target.start(lab)
        client = LoopInNamespace(lab.client_ns)
        lab.on_close("client", client.close)
        sessions = [client.run(target.open_session(lab, i)) for i in range(2)]
        lab.on_close("sessions", lambda: [client.run(target.close_session(s)) for s in sessions])
        assert len({s.pid for s in sessions}) == 2
        assert all(s.flow.client_addr == lab.client_addr and s.flow.server_port == 5432
                   for s in sessions)
        assert client.run(target.alive(sessions[0])) == (True, "SELECT 1 -> (1,)")
        fault = build("blackhole")
        fault.apply(Site(lab, [sessions[0].flow]))
        lab.on_close("fault", fault.revert)
        started = time.monotonic()
        ok, detail = client.run(target.alive(sessions[0]))
        assert not ok and "no answer" in detail
        assert time.monotonic() - started < 8
        assert client.run(target.alive(sessions[1]))[0]
