"""The target misbehaving (issue 15, part 5): a service that exits at once, a command that does
not exist, one that never listens, one that crashes mid-run. Each is the run's error (exit 3,
verdict ``error`` in results.json) with a reason naming what happened, and nothing is left.

Killed mid-run by a signal from outside: tests/e2e/test_target_death.py (tcp and postgres).
Here the crash is the service's own: it accepts, then exits 1 a moment later."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from harness.testing import run_cli, write_scenario

pytestmark = pytest.mark.usefixtures("no_leftovers")

# listens, greets the sessions, and exits 1 one second later (mid-observation)
CRASHER = f"""{sys.executable} -c "
import socket, threading, time, sys
s = socket.create_server(('{{host}}', {{port}}))
def serve():
    while True:
        c, _ = s.accept(); c.sendall(b'hello\\\\n'); held.append(c)
held = []
threading.Thread(target=serve, daemon=True).start()
time.sleep(2.5); sys.exit(1)"
"""


def _scenario(command: str, deadline: str = "5s") -> str:
    return f"""name: misbehaves
target: {{service: tcp, command: {json.dumps(command.strip())}, port: 7000}}
sessions: {{count: 2, hold: 100ms, greeting: "hello\\n"}}
fault: {{type: blackhole}}
expect: {{still_held_after: {deadline}}}
observe: {{deadline: {deadline}}}
"""


CASES = {
    "exits-at-once": ("sh -c 'exit 3'", r"starting the service.*exited"),
    "no-such-command": ("/nonexistent/server --port {port}", r"exited.*/nonexistent/server.*not found"),
    "crashes-mid-run": (CRASHER, r"exited with status 1 during the run"),
}


@pytest.mark.parametrize("name", CASES)
def test_a_misbehaving_target_is_the_runs_error_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    command, reason = CASES[name]
    path = write_scenario(tmp_path, name, _scenario(command))
    done = run_cli("run", "--report-dir", str(tmp_path / "r"), str(path), timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    (results,) = (tmp_path / "r").glob("*/results.json")
    (entry,) = json.loads(results.read_text())["scenarios"]
    assert entry["verdict"] == "error", entry

    assert re.search(reason, entry["reason"], re.S), entry["reason"]


@pytest.mark.slow   # the service's 30 s to be ready, as a run waits for it
def test_a_target_that_never_listens_is_an_error_naming_the_wait(tmp_path: Path) -> None:
    """Also at 1 s in tests/targets/test_tcp.py (the target alone)."""
    path = write_scenario(tmp_path, "never", _scenario("sleep 600"))
    done = run_cli("run", "--report-dir", str(tmp_path / "r"), str(path), timeout=90)
    assert done.returncode == 3, done.stdout + done.stderr
    (results,) = (tmp_path / "r").glob("*/results.json")
    (entry,) = json.loads(results.read_text())["scenarios"]
    assert entry["verdict"] == "error"
    assert "not ready after 30 s" in entry["reason"], entry["reason"]
