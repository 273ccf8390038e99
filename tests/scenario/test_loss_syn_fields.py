"""The fields of packet-loss and syn-blackhole: refused at their own line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.scenario.loader import load_text
from harness.testing import run_cli

BASE = """\
name: s
target:
  service: postgres
sessions:
  count: 2
fault:
  type: {type}
{extra}
expect:
  reclaimed_within: 5s
"""


def problem(fault_type: str, extra: str, expect: str = "") -> tuple[int | None, str, str]:
    text = BASE.format(type=fault_type, extra=extra) + expect
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    assert caught.value.exit_code == 2
    (p,) = caught.value.problems
    return p.line, p.field, p.message


@pytest.mark.parametrize("value", ["30%", "0.3", "100%", "0.0001", "12.5%"])
def test_loss_accepted(value: str) -> None:
    loaded = load_text(BASE.format(type="packet-loss", extra=f"  loss: {value}"), "s.yaml")
    assert 0 < (loaded.scenario.fault.loss or 0) <= 1


@pytest.mark.parametrize("value", ["0", "0%", "150%", "1.5", "-0.2", "30", "lots", "30 percent", "0.00001"])
def test_loss_refused_at_its_line(value: str) -> None:
    line, field, message = problem("packet-loss", f"  loss: {value}")
    assert (line, field) == (8, "fault.loss"), message
    assert "share of packets" in message


def test_packet_loss_needs_loss() -> None:
    line, field, message = problem("packet-loss", "  sessions: all")
    assert (line, field) == (7, "fault.type") and "needs loss" in message


def test_loss_only_for_packet_loss() -> None:
    line, field, message = problem("blackhole", "  loss: 30%")
    assert (line, field) == (8, "fault.loss") and "only packet-loss" in message


@pytest.mark.parametrize(("extra", "field"), [("  syn_retries: 0", "fault.syn_retries"),
                                              ("  syn_retries: 300", "fault.syn_retries"),
                                              ("  syn_retries: two", "fault.syn_retries"),
                                              ("  connect_timeout: soon", "fault.connect_timeout")])
def test_syn_fields_refused_at_their_line(extra: str, field: str) -> None:
    line, where, _ = problem("syn-blackhole", extra)
    assert (line, where) == (8, field)


def test_syn_fields_only_for_syn_blackhole() -> None:
    line, field, message = problem("blackhole", "  syn_retries: 2")
    assert (line, field) == (8, "fault.syn_retries") and "only syn-blackhole" in message


def test_reconnect_within_only_for_syn_blackhole() -> None:
    line, field, message = problem("blackhole", "", "  reconnect_within: 8s\n")
    assert field == "expect.reconnect_within" and line == 11, message


def test_cli_exits_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.format(type="packet-loss", extra="  loss: 150%"))
    done = run_cli("check", str(bad))
    assert done.returncode == 2
    assert f"{bad}:8" in done.stderr + done.stdout and "loss" in done.stderr + done.stdout


def test_syn_blackhole_is_not_for_load_runs() -> None:
    text = BASE.format(type="syn-blackhole", extra="").replace("sessions:\n  count: 2\n", "") \
        + "load:\n  users: 2\n"
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    (p,) = caught.value.problems
    assert p.field == "fault.type" and "without load" in p.message and p.line == 5
