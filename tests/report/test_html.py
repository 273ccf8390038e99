"""The HTML report: rendered from a real results.json (five scenarios of the catalogue run of
2026-11-26), checked as text, at load-run size, and in a real headless Chromium."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.records import RunRecord, SessionRecord
from harness.report import html, plots
from harness.testing import skip_or_fail

DATA = Path(__file__).parent / "data" / "results.json"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    failing = copy.deepcopy(next(s for s in data["scenarios"] if s["name"] == "postgres-partial-blackhole"))
    failing.update(name="pg-fails-its-gate", verdict="fail",
                   reason="5 of 5 faulted sessions reclaimed, but not within 2 s (max 4.097 s)",
                   about="An <about> with <script>alert(1)</script> markup & an ampersand.")
    failing["expect"] = {"reclaimed_within": "2s", "survivors_untouched": True}
    data["scenarios"].append(failing)
    return data


@pytest.fixture(scope="module")
def page(results: dict[str, Any]) -> str:
    return html.render(RunRecord.from_json(results))


def test_the_page_has_every_scenario_its_verdict_and_figures(results: dict[str, Any], page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    for sc in results["scenarios"]:
        section = page[page.index(f'<section id="sc-{sc["name"]}">'):]
        section = section[:section.index("</section>")]
        assert f'<span class="badge {sc["verdict"]}">{sc["verdict"]}</span>' in section
        assert section.count('<svg role="img"') == 2
    ssh = page[page.index('id="sc-ssh-client-alive"'):]
    assert "11.03 s" in ssh and "p50 10.994 s" in ssh and "max 10.996 s" in ssh
    assert "ClientAliveInterval" in ssh
    assert "5 of 5 faulted sessions reclaimed" in ssh
    assert "1 fail" in page and "5 pass" in page


def test_the_page_needs_nothing_from_outside_and_escapes_what_it_shows(page: str) -> None:
    # SVG namespaces are names, not fetches; anything else with a URL would be
    outside = re.findall(r'(?:src|href|url)\s*[=(]\s*["\']?(?!#|data:)([^"\')\s>]+)', page)
    assert [u for u in outside if not u.startswith("http://www.w3.org/")] == []
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_never_reclaimed_sessions_and_predictions_off_the_chart_are_said(page: str) -> None:
    defaults = page[page.index('id="sc-postgres-defaults-hold-dead-sessions"'):]
    defaults = defaults[:defaults.index("</section>")]
    assert "5 not reclaimed by the deadline (30 s)" in defaults
    assert "predicted 7874.04 s (off the chart)" in defaults
    assert "still_held_after 30 s" in defaults
    never = page[page.index('id="sc-websocket-pings-off"'):]
    assert "predicted: never" in never[:never.index("</section>")]


def _load_entry(sessions: int, events_each: int) -> dict[str, Any]:
    """A load run's scenario: thousands of sessions with many events each."""
    out = []
    for i in range(sessions):
        reclaim = 4.0 + (i % 97) / 100
        evs = [{"t": -1.0, "what": "opened"}, {"t": -0.9, "what": "last-activity"},
               {"t": 0.0, "what": "fault", "detail": "blackhole"}]
        evs += [{"t": 0.5 + k * 3.4 / events_each, "what": "retransmit", "detail": str(k)}
                for k in range(events_each)]
        evs.append({"t": reclaim, "what": "socket-gone"})
        out.append({"id": i, "faulted": i % 10 != 0, "reclaimed": i % 10 != 0 and i % 500 != 1,
                    "reclaim_s": reclaim if i % 10 != 0 and i % 500 != 1 else None,
                    "predicted_s": 4.03, "mechanism": "user-timeout", "events": evs})
    return {"name": "load-big", "verdict": "pass", "reason": "ok", "backend": "local", "layer": "packet",
            "fault": "blackhole", "deadline_s": 8.0, "observed_s": 8.0,
            "prediction": {"reclaim_s": 4.03, "mechanism": "user-timeout", "formula": "f"},
            "expect": {"reclaimed_within": "6s"}, "sessions": out,
            "summary": {"sessions": sessions, "faulted": sessions - sessions // 10}}


def test_a_load_run_renders_with_capped_lanes(capsys: pytest.CaptureFixture[str]) -> None:
    entry = _load_entry(5000, 200)
    started = time.perf_counter()
    page = html.render(RunRecord.from_json({"run_id": "big", "started_at": "-", "scenarios": [entry]}))
    took = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nHTML report of 5000 sessions x 203 events: {took:.2f} s, {len(page) / 1e6:.2f} MB")
    assert f"{plots.MAX_LANES} session(s); {5000 - plots.MAX_LANES} more not shown" in page
    assert f"{5000 - plots.MAX_LANES} session(s) not shown." in page
    assert "10 not reclaimed by the deadline (8 s)" in page
    assert len(page) < 5_000_000


def test_lanes_put_faulted_sessions_first() -> None:
    sessions = [SessionRecord(id=i, faulted=i % 2 == 1, reclaimed=False, reclaim_s=None, predicted_s=None,
                              mechanism=None) for i in range(6)]
    shown, omitted = plots.lanes(sessions, cap=4)
    assert [s.id for s in shown] == [1, 3, 5, 0] and omitted == 2


def _browser_or_skip() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "needs playwright (pip install -e '.[test]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK) and shutil.which("chromium") is None:
        reason = "needs Debian's chromium (apt-get install chromium)"
    if reason:
        skip_or_fail(reason)
    return sync_playwright


@pytest.mark.lab   # starts chromium
def test_a_person_sees_the_report_in_chromium_offline(results: dict[str, Any], page: str,
                                                      tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    attempted: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"),
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})

            def guard(route: Any) -> None:
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    attempted.append(route.request.url)
                    route.abort()
            tab.route("**/*", guard)
            tab.goto(report.as_uri(), wait_until="load")
            assert tab.title() == f"connchaos run {results['run_id']}"
            assert tab.locator("h1").inner_text() == f"connchaos run {results['run_id']}"
            assert "6 scenario(s): 5 pass, 1 fail" in tab.locator("p.tally").inner_text()
            for sc in results["scenarios"]:
                section = tab.locator(f"section#sc-{sc['name']}")
                assert section.is_visible()
                assert section.locator("h2").inner_text() == sc["name"]
                assert section.locator(".badge").inner_text() == sc["verdict"]
                plots_in = section.locator("svg.plot")
                assert plots_in.count() == 2
                for k in range(2):
                    box = plots_in.nth(k).bounding_box()
                    assert box is not None and box["width"] > 300 and box["height"] > 100, (sc["name"], box)
            ssh = tab.locator("section#sc-ssh-client-alive table.versus").inner_text()
            assert "11.03 s" in ssh and "p50 10.994 s" in ssh and "heartbeat" in ssh
            failing = tab.locator("section#sc-pg-fails-its-gate")
            assert "not within 2 s" in failing.locator(".reason").inner_text()
            assert "<script>alert(1)</script>" in failing.locator(".about").inner_text()
            legend = tab.locator("section#sc-ssh-client-alive figure.timeline").inner_text()
            assert "retransmission" in legend and "reclaimed" in legend
            shot = tmp_path / "report.png"
            tab.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert attempted == []
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
