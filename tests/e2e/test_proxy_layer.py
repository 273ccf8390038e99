"""The proxy layer on a real PostgreSQL: sessions through a Toxiproxy in the router namespace,
driven through toxiproxy-python, side by side with the packet layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness import run as runner
from harness.lab import naming
from harness.lab.toxiproxy import LabProxy
from harness.testing import run_cli, write_scenario

pytestmark = pytest.mark.usefixtures("no_leftovers")

KEEPALIVE = "{tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 3}"


def _run(path: Path, proxy_command: list[str] | None = None) -> dict[str, Any]:
    loaded = runner.prepare([str(path)])
    return dict(runner.run_plain(loaded[0], runner.new_run_id(), proxy_command=proxy_command).to_json())


def _scenario(tmp_path: Path, name: str, fault: str, expect: str, count: int = 4) -> Path:
    return write_scenario(tmp_path, name, f"""name: {name}
target: {{service: postgres, settings: {KEEPALIVE}}}
sessions: {{count: {count}, hold: 500ms}}
fault:
{fault}
expect: {expect}
""")


@pytest.mark.slow   # measured 18 s
def test_the_same_settings_give_opposite_results_at_the_two_layers(tmp_path: Path) -> None:
    packet = _run(_scenario(tmp_path, "packet", "  type: blackhole",
                            "{reclaimed_within: 8s, mechanism: keepalive}"))
    proxy = _run(_scenario(tmp_path, "proxy", "  type: proxy-stall",
                           "{still_held_after: 8s}"))
    assert packet["verdict"] == proxy["verdict"] == "pass", (packet["reason"], proxy["reason"])
    assert (packet["layer"], proxy["layer"]) == ("packet", "proxy")
    assert all(s["reclaimed"] and s["mechanism"] == "keepalive" for s in packet["sessions"])
    assert not any(s["reclaimed"] for s in proxy["sessions"])
    assert proxy["prediction"]["reclaim_s"] is None
    assert "acknowledges every keepalive probe" in proxy["prediction"]["formula"]
    assert proxy["lab"]["proxy_server"] == "built-in"
    for s in proxy["sessions"]:
        # the server's peer is the proxy's upstream side, not the client
        assert s["server_peer"].startswith(naming.ROUTER_SERVER_ADDR + ":")
        assert s["client"].startswith(naming.CLIENT_ADDR + ":")
        assert not any(e["what"] == "socket-gone" for e in s["events"])


def test_proxy_down_closes_the_faulted_sessions_and_spares_the_rest(tmp_path: Path) -> None:
    result = _run(_scenario(tmp_path, "down", "  type: proxy-down\n  sessions: 0.5",
                            "{reclaimed_within: 2s, survivors_untouched: true, mechanism: closed}",
                            count=6))
    assert result["verdict"] == "pass", result["reason"]
    faulted = [s for s in result["sessions"] if s["faulted"]]
    assert len(faulted) == 3 and all(s["reclaim_s"] < 1.0 for s in faulted)
    assert all(s["alive_at_end"] for s in result["sessions"] if not s["faulted"])


def test_without_the_connections_extension_the_targets_own_view_maps_sessions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real Toxiproxy has no connection listing: pg_stat_activity tells the server's peer.
    monkeypatch.setattr(LabProxy, "connections", lambda self, name: None)
    result = _run(_scenario(tmp_path, "plain", "  type: proxy-down", "{reclaimed_within: 2s}", count=3))
    assert result["verdict"] == "pass", result["reason"]
    assert all(s["server_peer"].startswith(naming.ROUTER_SERVER_ADDR + ":") for s in result["sessions"])


@pytest.mark.slow   # measured 10 s
def test_another_toxiproxy_server_command_is_a_drop_in(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "dropin", "  type: latency\n  attributes: {latency: 300}",
                     "{still_held_after: 3s}", count=2)
    command = f"{sys.executable} -m harness.proxy.server --host 127.0.0.1 --port 8474"
    proc = run_cli("run", "--report-dir", str(tmp_path / "r"), "--toxiproxy-server", command, str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--toxiproxy-url" not in proc.stderr
    refused = run_cli("run", "--toxiproxy-url", "http://127.0.0.1:8474", str(path))
    assert refused.returncode == 2 and "--toxiproxy-server" in refused.stderr


def test_reset_waits_for_data_as_toxiproxy_does(tmp_path: Path) -> None:
    def scenario(name: str, activity: str, expect: str) -> Path:
        return write_scenario(tmp_path, name, f"""name: {name}
target: {{service: postgres, settings: {KEEPALIVE}}}
sessions: {{count: 3, activity: {activity}, hold: 500ms}}
fault: {{type: reset}}
expect: {expect}
""")
    idle = _run(scenario("idle", "idle", "{still_held_after: 4s}"))
    assert idle["verdict"] == "pass", idle["reason"]
    assert idle["prediction"]["reclaim_s"] is None
    busy = _run(scenario("busy", "in-flight", "{reclaimed_within: 2s, mechanism: reset}"))
    assert busy["verdict"] == "pass", busy["reason"]
    assert all(s["predicted_mechanism"] == "reset" for s in busy["sessions"])
