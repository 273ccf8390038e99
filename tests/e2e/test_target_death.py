"""A target that dies during the run is the run's error, not a measurement (issue 16, item 5):
its sockets going would otherwise read as reclaims (a pass), its sessions' as survivors
killed (a fail)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import LabError
from harness.run.phases import TargetWatch
from harness.testing import write_scenario
from tests.e2e.runs import Run, echo_scenario

# Keepalive off: only the service's death would close the faulted sessions' sockets.
TCP = echo_scenario("tcp-dies", expect="{reclaimed_within: 20s}", deadline="20s", sessions=5)

POSTGRES = """name: pg-dies
target:
  service: postgres
  settings: {tcp_keepalives_idle: 30, tcp_keepalives_interval: 1, tcp_keepalives_count: 3}
sessions: {count: 4, hold: 100ms}
fault: {type: client-vanish, sessions: 2}
expect: {reclaimed_within: 40s, survivors_untouched: true}
observe: {deadline: 40s}
"""


def _echo(run: Run) -> tuple[int, str]:
    """The echo server itself (``python3 ... tcp_echo.py``), and what its death reads as: the
    target's server is the ``sh -c`` that runs the command (dash waits for it), which exits
    with the status a shell gives a killed child."""
    for pid, ppid, argv in run.server_processes():
        if any(a.endswith(b"tcp_echo.py") for a in argv) and not argv[0].endswith(b"sh"):
            return pid, f"the target's server (pid {ppid}) exited with status 137 during the run"
    raise AssertionError("no echo server in the lab")


def _postmaster(run: Run) -> tuple[int, str]:
    """The postmaster: the oldest postgres of the lab's server namespace, the others' parent."""
    procs = run.server_processes()
    pids = {pid for pid, _, _ in procs}
    (pid,) = [pid for pid, ppid, argv in procs if argv[0].endswith(b"postgres") and ppid not in pids]
    return pid, f"the target's server (pid {pid}) exited with signal SIGKILL during the run"


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.slow   # measured about 13 s (tcp 6 s, postgres 7 s)
@pytest.mark.parametrize("body, server", [(TCP, _echo), (POSTGRES, _postmaster)], ids=["tcp", "postgres"])
def test_a_target_killed_mid_run_is_an_error_naming_it(tmp_path: Path, body: str,
                                                       server: Callable[[Run], tuple[int, str]]) -> None:
    run = Run(write_scenario(tmp_path, "dies", body), tmp_path)
    run.wait_for("watching up to")
    pid, reason = server(run)
    time.sleep(0.5)                      # a moment into the observation
    os.kill(pid, signal.SIGKILL)
    assert run.end() == 3, run.out + run.err
    (results,) = (tmp_path / "r").glob("*/results.json")
    scenario = json.loads(results.read_text())["scenarios"][0]
    assert scenario["verdict"] == "error", scenario["reason"]
    assert reason in scenario["reason"]
    assert reason in run.out             # the table says why too


@dataclass
class _Proc:
    pid: int
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_the_watch_raises_on_an_exit_and_keeps_what_the_teardown_saw() -> None:
    server = _Proc(41)
    watch = TargetWatch("tcp", [server], every_s=60)
    watch.look()
    server.code = -9
    watch.look(now=False)                # looked a moment ago: not yet again
    with pytest.raises(LabError, match=r"watching tcp: the target's server \(pid 41\) exited with"
                                       r" signal SIGKILL during the run"):
        watch.look()

    server = _Proc(42)
    watch = TargetWatch("postgres", [server])
    watch.last_look()                    # the teardown looks, then stops the server itself
    server.code = 0
    watch.look()                         # what the lab did is no death
    server = _Proc(43, code=1)
    watch = TargetWatch("postgres", [server])
    watch.last_look()                    # it had died before the teardown came
    with pytest.raises(LabError, match=r"\(pid 43\) exited with status 1"):
        watch.look()
