"""The pgbouncer target: its settings as pgbouncer reads and checks them, both legs'
predictions, and the real thing: sessions through pgbouncer, the client leg reclaimed when
predicted, its server connection pooled then closed by server_idle_timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.core.assess import SessionFacts
from harness.core.prediction import Prediction
from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import Key, SockInfo
from harness.scenario.model import Fault, Target
from harness.targets.pgbouncer import PgbouncerTarget
from harness.targets.pgbouncer.config import JANITOR_PERIOD_S, Settings, own_problems
from harness.targets.pgbouncer.upstream import client_idle, predict_upstream
from harness.testing import run_cli, write_scenario

REPO = Path(__file__).resolve().parent.parent.parent
FACTS = SessionFacts(id=0, faulted=True, opened_s=-2.0, last_activity_s=-1.0)


def _client(at: float | None) -> Prediction:
    return Prediction(reclaim_s=at, mechanism="keepalive" if at else "none", formula="", slack_s=0.01)


# -- pure: settings, both legs' predictions ---------------------------------------------------

def test_socket_settings_follow_pgbouncer_units_and_its_keepalive_default() -> None:
    s = PgbouncerTarget(settings={"tcp_keepidle": 2, "tcp_keepintvl": "1", "tcp_keepcnt": 0,
                                  "tcp_user_timeout": 2500}).socket_settings()
    assert (s.keepalive, s.idle_s, s.interval_s, s.count, s.user_timeout_s) == (True, 2.0, 1.0, None, 2.5)
    default = PgbouncerTarget().socket_settings()    # tcp_keepalive = 1 is pgbouncer's default
    assert default.keepalive and default.idle_s is None and default.user_timeout_s is None
    assert PgbouncerTarget(settings={"tcp_keepalive": 0}).socket_settings().keepalive is False
    assert PgbouncerTarget(settings={"tcp_keepalive": False}).socket_settings().keepalive is False


def test_the_labs_own_keys_and_values_the_kernel_refuses_are_ours_to_refuse() -> None:
    found = own_problems({"listen_port": 7000, "auth_type": "md5", "admin_users": "me", "logfile": "x",
                          "tcp_keepidle": 40000, "tcp_keepcnt": -1, "server_idle_timeout": -2,
                          "pool_mode": "x\nlisten_port = 1", "tcp_keepintvl": 5})
    assert all("set by connchaos" in found[k] for k in ("listen_port", "auth_type", "admin_users", "logfile"))
    assert "at most 32767" in found["tcp_keepidle"]
    assert "negative" in found["tcp_keepcnt"] and "negative" in found["server_idle_timeout"]
    assert "line breaks" in found["pool_mode"]
    assert "tcp_keepintvl" not in found


def test_client_idle_timeout_is_a_client_leg_reclaim_except_for_linked_session_clients() -> None:
    assert client_idle(Settings.of({"client_idle_timeout": 3}), -1.0) == (None, None)   # session pooling
    pred, first = client_idle(Settings.of({"client_idle_timeout": 2.5, "pool_mode": "transaction"}), -1.0)
    assert pred is not None and pred.reclaim_s == first == pytest.approx(1.5 + JANITOR_PERIOD_S / 2)
    assert pred.mechanism == "heartbeat" and pred.slack_s == JANITOR_PERIOD_S
    target = PgbouncerTarget(settings={"client_idle_timeout": 2, "pool_mode": "statement"})
    assert target.heartbeat(last_activity_s=-0.5, opened_s=-1)[1] == pytest.approx(1.5 + JANITOR_PERIOD_S / 2)


def test_upstream_leg_is_pooled_at_the_client_reclaim_then_closed_by_server_idle_timeout() -> None:
    up = predict_upstream(Settings.of({"server_idle_timeout": 3}), _client(4.0), FACTS)
    assert (up.outcome, up.mechanism) == ("closed", "server_idle_timeout")
    assert up.at_s == pytest.approx(7.0 + JANITOR_PERIOD_S / 2)   # the janitor's round, on average half late
    assert up.slack_s == pytest.approx(JANITOR_PERIOD_S + 0.01)
    assert "server_idle_timeout 3 s" in up.formula
    # no reset query: the server is idle since the session's last activity, closed at once
    up = predict_upstream(Settings.of({"server_idle_timeout": 3, "server_reset_query": ""}), _client(4.0), FACTS)
    assert up.outcome == "closed" and up.at_s == pytest.approx(4.0 + JANITOR_PERIOD_S / 2)
    # the lifetime may come first
    up = predict_upstream(Settings.of({"server_idle_timeout": 30, "server_lifetime": 5}), _client(4.0), FACTS)
    assert (up.outcome, up.mechanism) == ("closed", "server_lifetime")
    assert up.at_s == pytest.approx(4.0 + JANITOR_PERIOD_S / 2)
    for kept in ({"server_idle_timeout": 0, "server_lifetime": 0}, {"min_pool_size": 2}):
        up = predict_upstream(Settings.of(kept), _client(4.0), FACTS)
        assert (up.outcome, up.at_s) == ("pooled", 4.0)


def test_upstream_leg_is_held_while_the_client_leg_lives_and_pooled_in_transaction_pooling() -> None:
    for never in (None, _client(None)):
        up = predict_upstream(Settings.of({}), never, FACTS)
        assert (up.outcome, up.at_s) == ("held", None)
    up = PgbouncerTarget(settings={"pool_mode": "transaction"}).predict_upstream(_client(4.0), FACTS)
    assert (up.outcome, up.at_s, up.mechanism) == ("pooled", -1.0, "pool")


def test_backend_settings_are_only_for_a_tier() -> None:
    assert Target.model_validate({"service": "pgbouncer", "backend_settings": {"work_mem": "4MB"}})
    with pytest.raises(ValidationError, match="backend_settings is for a tier"):
        Target.model_validate({"service": "postgres", "backend_settings": {"work_mem": "4MB"}})


# -- pgbouncer itself ----------------------------------------------------------------------

@pytest.mark.usefixtures("lab_machine")
def test_settings_are_checked_by_pgbouncer_itself_each_at_its_name() -> None:
    problems = dict(PgbouncerTarget.check_settings({
        "tcp_keepidel": 2,                  # typo
        "pool_mode": "sessions",            # not one of its modes
        "tcp_keepalive": "yes",             # pgbouncer's booleans are numbers
        "server_idle_timeout": "3s",        # pgbouncer takes no units
        "listen_addr": "*",                 # the lab's
        "tcp_keepidle": 2, "client_idle_timeout": 2.5, "pool_mode_x": 1,
        "server_reset_query": "DISCARD ALL", "tcp_user_timeout": 3000,
    }))
    assert problems == {
        "tcp_keepidel": "pgbouncer has no setting 'tcp_keepidel' (it said: unknown parameter)",
        "pool_mode": 'pgbouncer refuses it: invalid value "sessions" for parameter pool_mode',
        "tcp_keepalive": 'pgbouncer refuses it: invalid value "yes" for parameter tcp_keepalive',
        "server_idle_timeout": 'pgbouncer refuses it: invalid value "3s" for parameter server_idle_timeout',
        "listen_addr": "is set by connchaos to run the lab; remove it",
        "pool_mode_x": "pgbouncer has no setting 'pool_mode_x' (it said: unknown parameter)",
    }


@pytest.mark.usefixtures("lab_machine")
def test_check_points_at_the_line_pgbouncer_or_postgres_refuses(tmp_path: Path) -> None:
    body = (REPO / "scenarios" / "pgbouncer-client-keepalive.yaml").read_text()
    bad = write_scenario(tmp_path, "bad", body.replace("    tcp_keepcnt: 3\n", "    tcp_keepcnt: 3\n"
                                                       "    pool_mode_typo: 1\n"))
    done = run_cli("check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    line = body.splitlines().index("    tcp_keepcnt: 3") + 2
    assert f"{bad}:{line}" in done.stderr and "pgbouncer has no setting 'pool_mode_typo'" in done.stderr
    backend = write_scenario(tmp_path, "backend", body.replace(
        "sessions:\n", "  backend_settings:\n    log_min_messages: banana\nsessions:\n", 1))
    done = run_cli("check", str(backend))
    assert done.returncode == 2, done.stdout + done.stderr
    line = backend.read_text().splitlines().index("    log_min_messages: banana") + 1
    assert f"{backend}:{line}" in done.stderr and "backend_settings" in done.stderr
    assert run_cli("check", str(REPO / "scenarios" / "pgbouncer-client-keepalive.yaml")).returncode == 0


def test_pgbouncer_and_its_backend_are_what_a_local_run_needs() -> None:
    from harness import machine
    from harness.scenario import load_paths

    loaded = load_paths([str(REPO / "scenarios" / "pgbouncer-client-keepalive.yaml")])
    assert {"pgbouncer on local", "postgres on local"} <= machine.needs_for(loaded, "local")
    assert "pgbouncer on local" not in machine.needs_for(loaded, "docker")


@pytest.mark.lab   # runs the CLI in a process of its own
def test_a_machine_without_pgbouncer_is_exit_3_naming_it() -> None:
    done = run_cli("run", "--backend", "local", str(REPO / "scenarios" / "pgbouncer-client-keepalive.yaml"),
                   env={"CONNCHAOS_PGBOUNCER": "/nonexistent/pgbouncer"})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PgBouncer (the pgbouncer command)" in done.stderr and "apt-get install pgbouncer" in done.stderr


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def _released(table: dict[Key, SockInfo], key: Key) -> bool:
    """As the observer counts it: gone from the table, held by no process, or in TIME_WAIT
    (both ends of the upstream leg close at once: either may be the one left waiting)."""
    info = table.get(key)
    return info is None or info.inode == 0 or info.state == "TIME_WAIT"


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers")
def test_dead_client_leg_goes_at_keepalive_and_its_server_is_pooled_then_closed() -> None:
    """Both legs measured on the real thing: blackhole one session through pgbouncer with
    keepalive 2/1/3 and server_idle_timeout 3; the client leg must go 5 s after its last
    activity, its server connection be pooled then and closed 3 s (+ the janitor) later,
    its PostgreSQL backend with it; the other session keeps both legs."""
    target = PgbouncerTarget(settings={"tcp_keepidle": 2, "tcp_keepintvl": 1, "tcp_keepcnt": 3,
                                       "server_idle_timeout": 3}, sessions=2)
    with LocalLab() as lab:
        target.start(lab)
        client = LoopInNamespace(lab.client_ns)
        lab.on_close("client", client.close)
        sessions = [client.run(target.open_session(lab, i)) for i in range(2)]
        last_activity = time.time()
        lab.on_close("sessions", lambda: [client.run(target.close_session(s)) for s in sessions])
        assert all(s.pid is None and s.flow.server_port == 6432 for s in sessions)
        peers = [(s.flow.client_addr, s.flow.client_port) for s in sessions]
        ups = target.upstreams(lab, peers)
        assert set(ups) == set(peers)
        assert all(u.key[:2] == (lab.server_addr, 5432) and u.pid for u in ups.values())
        assert target.server_peer(sessions[1]) == peers[1]
        dead, alive = ups[peers[0]], ups[peers[1]]
        assert target.pool_states(lab) == {dead.key[2:4]: "linked", alive.key[2:4]: "linked"}
        table = lab.reach.socket_table()
        lab.on_close("table", table.close)
        time.sleep(1)    # the hold: the client's delayed ACK of SELECT 1 goes first
        fault = build_spec(Fault.model_validate({"type": "blackhole"}))
        fault.apply(Site(lab, [sessions[0].flow]))
        lab.on_close("fault", fault.revert)
        client_key = (lab.server_addr, 6432, *peers[0])
        seen: dict[str, float] = {}
        deadline = time.time() + 14
        while time.time() < deadline and len(seen) < 4:
            now = time.time()
            if _released(table.dump(6432), client_key):
                seen.setdefault("client-gone", now)
            if target.pool_states(lab).get(dead.key[2:4]) == "pooled":
                seen.setdefault("pooled", now)
            if _released(table.dump(5432), dead.key):
                seen.setdefault("upstream-gone", now)
            assert dead.pid is not None
            if _gone(dead.pid):
                seen.setdefault("backend-exit", now)
            time.sleep(0.02)
        assert set(seen) == {"client-gone", "pooled", "upstream-gone", "backend-exit"}, seen
        print({k: round(v - last_activity, 3) for k, v in seen.items()})
        assert seen["client-gone"] - last_activity == pytest.approx(5.0, abs=0.3)
        # pgbouncer releases the server as it closes the client: the two are seen within a
        # poll of each other, in either order
        assert abs(seen["pooled"] - seen["client-gone"]) < 0.3
        closed_after = seen["upstream-gone"] - seen["client-gone"]
        assert 3.0 <= closed_after <= 3.0 + JANITOR_PERIOD_S + 0.3, closed_after
        assert abs(seen["backend-exit"] - seen["upstream-gone"]) < 0.3
        assert target.pool_states(lab).get(alive.key[2:4]) == "linked"
        assert not _released(table.dump(5432), alive.key) and alive.pid is not None and not _gone(alive.pid)
        assert client.run(target.alive(sessions[1])) == (True, "SELECT 1 -> (1,)")
        print(target.log_tail(6))
