"""A target that dies during the run is the run's error, not a measurement (issue 16, item 5):
its sockets going would otherwise read as reclaims (a pass), its sessions' as survivors
killed (a fail)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import LabError
from harness.lab.netns import pids_in
from harness.run.phases import TargetWatch
from harness.testing import CONNCHAOS, REPO, ours, write_scenario

ECHO = f"{sys.executable} {REPO}/scenarios/services/tcp_echo.py --host {{host}} --port {{port}}"

# Keepalive off: only the service's death would close the faulted sessions' sockets.
TCP = f"""name: tcp-dies
target: {{service: tcp, command: "{ECHO}", port: 7000}}
sessions: {{count: 5, hold: 100ms, greeting: "hello\\n"}}
fault: {{type: blackhole}}
expect: {{reclaimed_within: 20s}}
observe: {{deadline: 20s}}
"""

POSTGRES = """name: pg-dies
target:
  service: postgres
  settings: {tcp_keepalives_idle: 30, tcp_keepalives_interval: 1, tcp_keepalives_count: 3}
sessions: {count: 4, hold: 100ms}
fault: {type: client-vanish, sessions: 2}
expect: {reclaimed_within: 40s, survivors_untouched: true}
observe: {deadline: 40s}
"""


def _server_namespace(before: set[str]) -> str:
    """The server namespace of the lab built since ``before`` (``ours()`` then: an older
    one may be a leftover)."""
    (ns,) = [o.split()[1] for o in ours() - before if o.startswith("netns cc-") and o.endswith("-srv")]
    return ns


def _echo(before: set[str]) -> tuple[int, str]:
    """The echo server itself (``python3 ... tcp_echo.py``), and what its death reads as: the
    target's server is the ``sh -c`` that runs the command (dash waits for it), which exits
    with the status a shell gives a killed child."""
    for pid in pids_in(_server_namespace(before)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if any(a.endswith(b"tcp_echo.py") for a in argv) and not argv[0].endswith(b"sh"):
            return pid, f"the target's server (pid {ppid}) exited with status 137 during the run"
    raise AssertionError("no echo server in the lab")


def _postmaster(before: set[str]) -> tuple[int, str]:
    """The postmaster, from its data folder's postmaster.pid (in the lab's new folder)."""
    (found,) = [p for p in glob.glob("/tmp/connchaos-*/postgres/data/postmaster.pid")
                if f"folder {p.split('/postgres/')[0]}" not in before]
    pid = int(Path(found).read_text().split()[0])
    return pid, f"the target's server (pid {pid}) exited with signal SIGKILL during the run"


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.slow   # measured about 12 s (tcp 3 s, postgres 6 s)
@pytest.mark.parametrize("body, server", [(TCP, _echo), (POSTGRES, _postmaster)], ids=["tcp", "postgres"])
def test_a_target_killed_mid_run_is_an_error_naming_it(tmp_path: Path, body: str,
                                                       server: Callable[[set[str]], tuple[int, str]]) -> None:
    path = write_scenario(tmp_path, "dies", body)
    before = ours()
    proc = subprocess.Popen([*CONNCHAOS, "run", "--report-dir", str(tmp_path / "r"), str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    while "watching up to" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    pid, reason = server(before)
    time.sleep(0.5)                      # a moment into the observation
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    (results,) = (tmp_path / "r").glob("*/results.json")
    scenario = json.loads(results.read_text())["scenarios"][0]
    assert scenario["verdict"] == "error", scenario["reason"]
    assert reason in scenario["reason"]
    assert reason in out + err           # the table says why too


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
