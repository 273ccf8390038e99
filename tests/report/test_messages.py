"""failure_message: expected, seen and why, from a results.json entry alone."""

from __future__ import annotations

from typing import Any

from harness.core.records import ScenarioRecord
from harness.report.messages import failure_message, headline, settings_explained


def _entry(results: dict[str, Any], name: str) -> ScenarioRecord:
    (found,) = [s for s in results["scenarios"] if s["name"] == name]
    return ScenarioRecord.from_json(found)


def test_a_defaults_failure_says_expected_seen_and_why(failing: dict[str, Any]) -> None:
    text = failure_message(_entry(failing, "postgres-defaults-gate"))
    first, expected, seen, counts, why = text.splitlines()
    assert first == ("3 of 3 faulted sessions not reclaimed within 8 s (deadline 8 s); predicted 7874.025 s"
                     " by keepalive from the postgres settings: tcp_keepalives_idle=0 uses the OS default"
                     " 7200 s (net.ipv4.tcp_keepalive_time)")
    assert expected == "expected: every faulted session reclaimed within 8 s; the sessions not faulted untouched"
    assert seen == ("seen: 3 of 3 faulted sessions not reclaimed within 8 s (deadline 8 s): sessions 0, 3, 4"
                    " still held at the deadline")
    assert counts.strip() == "(0 of 3 faulted sessions reclaimed by the deadline 8 s; 0 of 3 survivors killed)"
    assert why.startswith("why: predicted 7874.025 s by keepalive from the postgres settings: ")
    for part in ("tcp_keepalives_interval=0 uses the OS default 75 s (net.ipv4.tcp_keepalive_intvl)",
                 "tcp_keepalives_count=0 uses the OS default 9 probes (net.ipv4.tcp_keepalive_probes)",
                 "last activity -0.975 s + idle 7200 s (OS default) + 9 (OS default) × interval 75 s"):
        assert part in why
    assert "predicted 7874.025 s (keepalive)" not in text  # the reason's copy of it is not repeated


def test_a_service_with_no_keepalive_setting_names_the_os_values(catalogue: dict[str, Any]) -> None:
    entry = _entry(catalogue, "ssh-tcpkeepalive-defaults")
    assert settings_explained(entry) == [
        "ssh sets no keepalive idle: the OS default 7200 s (net.ipv4.tcp_keepalive_time) applies",
        "ssh sets no keepalive interval: the OS default 75 s (net.ipv4.tcp_keepalive_intvl) applies",
        "ssh sets no keepalive count: the OS default 9 probes (net.ipv4.tcp_keepalive_probes) applies"]


def test_tuned_settings_are_quoted_as_set(catalogue: dict[str, Any]) -> None:
    entry = _entry(catalogue, "postgres-client-vanishes").with_verdict(
        "fail", "1 of 20 faulted sessions not reclaimed within 8 s (deadline 15 s): session 4"
                " reclaimed at 9.1 s")
    assert settings_explained(entry) == []
    text = failure_message(entry)
    assert text.splitlines()[0] == ("1 of 20 faulted sessions not reclaimed within 8 s (deadline 15 s);"
                                    " predicted 4.035 s by keepalive")
    assert ("why: predicted 4.035 s by keepalive from the postgres settings: tcp_keepalives_idle=2,"
            " tcp_keepalives_interval=1, tcp_keepalives_count=3, tcp_user_timeout=0; last activity") in text
    assert "expected: every faulted session reclaimed within 8 s; reclaimed by keepalive;" in text


def test_a_prediction_of_never_and_a_window(catalogue: dict[str, Any]) -> None:
    entry = _entry(catalogue, "layers-proxy-stall").with_verdict(
        "fail", "session 2 reclaimed at 3 s, before still_held_after 15 s")
    text = failure_message(entry)
    assert text.splitlines()[0] == "session 2 reclaimed at 3 s, before still_held_after 15 s; predicted never by none"
    assert "expected: every faulted session still held after 15 s" in text


def test_an_error_says_it_could_not_run(error_entry: dict[str, Any]) -> None:
    entry = ScenarioRecord.from_json(error_entry)
    assert headline(entry) == "could not run: start postgres: initdb failed: no space left on device"
    assert failure_message(entry).splitlines()[-1] == ("seen: the scenario could not be run, so nothing"
                                                       " was measured")


def test_a_pass_says_so(catalogue: dict[str, Any]) -> None:
    text = failure_message(ScenarioRecord.from_json(catalogue["scenarios"][0]))
    assert text.startswith("passed: 10 of 10 faulted sessions reclaimed")
