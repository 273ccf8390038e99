"""The user's own TCP service: started by command, sessions by openers (built-in and plugin)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from harness import run as runner
from harness.errors import LabError
from harness.lab.local import LocalLab
from harness.targets import openers
from harness.targets.tcp import TcpTarget
from harness.testing import REPO, ours, write_scenario

ECHO = f"{sys.executable} {REPO}/scenarios/services/tcp_echo.py --host {{host}} --port {{port}}"


def test_declared_settings_are_checked_and_feed_the_prediction() -> None:
    problems = dict(TcpTarget.check_settings({"tcp_keepalive": "yes", "tcp_keepalive_idle": -1,
                                              "so_keepalive": True}))
    assert set(problems) == {"tcp_keepalive", "tcp_keepalive_idle", "so_keepalive"}
    s = TcpTarget(command="x", port=1, settings={"tcp_keepalive": True, "tcp_keepalive_idle": 5,
                                                 "tcp_user_timeout": 2500}).socket_settings()
    assert (s.keepalive, s.idle_s, s.interval_s, s.user_timeout_s) == (True, 5.0, None, 2.5)
    assert TcpTarget(command="x", port=1).socket_settings().keepalive is False


@pytest.mark.usefixtures("no_leftovers")
def test_a_service_that_never_listens_is_a_lab_error_and_is_stopped() -> None:
    target = TcpTarget(command="sleep 60", port=7001)
    with LocalLab() as lab, pytest.raises(LabError, match="not ready"):
        target._wait_ready = lambda lab, timeout_s=1.0: TcpTarget._wait_ready(target, lab, 1.0)  # type: ignore[method-assign]
        target.start(lab)
    assert not any("sleep 60" in o for o in ours())


PLUGIN = '''
import asyncio

class LineOpener:
    """A third-party opener: says HELLO, expects the echo, holds."""
    def __init__(self, greeting=None):
        self.greeting = greeting
    async def open(self, host, port, index):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"HELLO %d\\n" % index)
        assert (await reader.readline()).startswith(b"HELLO")
        return reader, writer
    def local_address(self, handle):
        return handle[1].get_extra_info("sockname")[:2]
    async def alive(self, handle):
        handle[1].write(b"ping\\n")
        try:
            line = await asyncio.wait_for(handle[0].readline(), 5)
        except asyncio.TimeoutError:
            return False, "no echo"
        return line == b"ping\\n", "echo"
    async def close(self, handle):
        handle[1].close()
'''


@pytest.mark.usefixtures("no_leftovers")
def test_a_plugin_opener_from_the_entry_point_group_runs_a_scenario(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cc_line_opener.py").write_text(PLUGIN)
    dist = tmp_path / "cc_line_opener-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cc-line-opener\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[connchaos.openers]\nline = cc_line_opener:LineOpener\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "line" in openers.known()
    path = write_scenario(tmp_path, "plugin", textwrap.dedent(f"""\
        name: plugin
        target:
          service: tcp
          command: {ECHO} --keepalive-idle 2 --keepalive-interval 1 --keepalive-count 3
          port: 7002
          settings: {{tcp_keepalive: true, tcp_keepalive_idle: 2, tcp_keepalive_interval: 1, tcp_keepalive_count: 3}}
        sessions: {{count: 4, hold: 300ms, opener: line}}
        fault: {{type: blackhole, sessions: 2}}
        expect: {{reclaimed_within: 8s, survivors_untouched: true, mechanism: keepalive}}
        """))
    loaded = runner.prepare([str(path)])
    result = dict(runner.run_plain(loaded[0], runner.new_run_id()).to_json())
    assert result["verdict"] == "pass", result["reason"]
    faulted = [s for s in result["sessions"] if s["faulted"]]
    assert len(faulted) == 2
    for s in faulted:
        assert abs(s["reclaim_s"] - s["predicted_s"]) <= 0.25, s
    assert all(s["alive_at_end"] for s in result["sessions"] if not s["faulted"])


def test_an_unknown_opener_and_openers_for_other_services_are_scenario_errors(tmp_path: Path) -> None:
    from harness.errors import ScenarioError

    path = write_scenario(tmp_path, "bad", textwrap.dedent("""\
        name: bad
        target: {service: tcp, command: "x {port}", port: 7003}
        sessions:
          count: 2
          opener: carrier-pigeon
        fault: {type: blackhole}
        expect: {reclaimed_within: 5s}
        """))
    with pytest.raises(ScenarioError) as caught:
        runner.prepare([str(path)])
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (5, "sessions.opener")
    assert "carrier-pigeon" in problem.message and "raw" in problem.message
