"""The pytest plugin, driven through pytester: collection, selection, markers, bad files,
real scenarios passing and failing, and the connchaos_lab fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Imported here, before any in-process pytester run: pytester drops the modules first imported
# inside a run from sys.modules, and psycopg's C extension cannot be imported twice (a fresh
# psycopg would no longer catch the errors the extension raises: a later test's postgres then
# never looks ready).
import harness.targets.postgres  # noqa: F401
from harness import run as runner
from harness.errors import MachineError

pytest_plugins = ["pytester"]

PASSING = """name: pg-quick
about: keepalive tuned to 1 s / 1 s / 1 probe
tags: [fast, nightly]
target:
  service: postgres
  settings: {tcp_keepalives_idle: 1, tcp_keepalives_interval: 1, tcp_keepalives_count: 1}
sessions: {count: 2, hold: 500ms}
fault: {type: blackhole}
expect: {reclaimed_within: 5s, mechanism: keepalive}
"""
FAILING = """name: pg-defaults
target: {service: postgres}
sessions: {count: 2, hold: 500ms}
fault: {type: blackhole}
expect: {reclaimed_within: 2s}
"""
COMPOSE = """services:
  db:
    image: postgres:15
    ports: ["5432:5432"]
"""
NOT_A_SCENARIO = """target: somewhere
note: has a target but no fault
"""


def _scenarios(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", quick=PASSING)
    pytester.makefile(".yml", defaults=FAILING)
    pytester.mkdir("compose")
    (pytester.path / "compose" / "docker-compose.yml").write_text(COMPOSE)
    pytester.makefile(".yaml", other=NOT_A_SCENARIO)


def test_scenario_files_are_items_named_after_the_scenario(pytester: pytest.Pytester) -> None:
    _scenarios(pytester)
    result = pytester.runpytest("--collect-only", "-q")
    assert sorted(line for line in result.outlines if "::" in line) == [
        "defaults.yml::pg-defaults", "quick.yaml::pg-quick"]
    result.stdout.fnmatch_lines(["2 tests collected*"])
    result.stdout.no_fnmatch_line("*compose*")
    result.stdout.no_fnmatch_line("*other.yaml*")
    assert result.ret == 0


def test_k_selects_by_name(pytester: pytest.Pytester) -> None:
    _scenarios(pytester)
    result = pytester.runpytest("--collect-only", "-q", "-k", "pg-defaults")
    result.stdout.fnmatch_lines(["defaults.yml::pg-defaults", "1/2 tests collected (1 deselected)*"])
    result.stdout.no_fnmatch_line("*pg-quick*")


@pytest.mark.parametrize("expr, selected", [
    ("fast", ["pg-quick"]), ("nightly and not fast", []),
    ("postgres", ["pg-quick", "pg-defaults"]), ("connchaos", ["pg-quick", "pg-defaults"]),
])
def test_markers_come_from_tags_and_the_service(pytester: pytest.Pytester, expr: str,
                                                selected: list[str]) -> None:
    _scenarios(pytester)
    result = pytester.runpytest("--collect-only", "-q", "--strict-markers", "-m", expr)
    ids = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert sorted(ids) == sorted(selected)
    assert result.ret == (0 if selected else 5)


def test_a_bad_scenario_file_is_a_collection_error_at_its_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad=PASSING.replace("count: 2", "count: 0").replace("[fast, nightly]", "[fast, 2x]"))
    result = pytester.runpytest("-q")
    result.stdout.fnmatch_lines(["*ERROR collecting bad.yaml*",
                                 "*bad.yaml:3: tags.1: a tag is a word of letters, digits and _*",
                                 "*bad.yaml:7: sessions.count: must be at least 1; got 0*",
                                 "*2 problem(s) in this scenario file*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_broken_yaml_with_scenario_keys_is_reported_not_ignored(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", broken="name: x\ntarget: {service: postgres\nfault: {type: blackhole}\n")
    result = pytester.runpytest("-q")
    result.stdout.fnmatch_lines(["*broken.yaml:*YAML syntax*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


@pytest.mark.parametrize("require, outcome", [("", "skipped"), ("1", "failed")])
def test_a_machine_without_the_lab_skips_or_fails_under_require_lab(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: str, outcome: str) -> None:
    def lacking(_: object) -> None:
        raise MachineError("root (network namespaces and nftables need it)", "run as root")
    # the module object itself: pytester drops modules imported during a test from sys.modules
    monkeypatch.setattr(runner, "require_machine", lacking)
    monkeypatch.setenv("CONNCHAOS_REQUIRE_LAB", require)
    pytester.makefile(".yaml", quick=PASSING)
    result = pytester.runpytest("-rsf")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*this machine cannot run it: root*"])


@pytest.mark.slow   # real scenarios in a pytest subprocess
@pytest.mark.usefixtures("no_leftovers")
def test_real_scenarios_pass_and_fail_with_the_verdicts_message(pytester: pytest.Pytester,
                                                               tmp_path: Path) -> None:
    _scenarios(pytester)
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess("-v", f"--connchaos-report-dir={reports}", timeout=240)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*quick.yaml::pg-quick PASSED*"])
    result.stdout.fnmatch_lines(["*defaults.yml::pg-defaults FAILED*"])
    result.stdout.fnmatch_lines([
        "*_ connchaos scenario pg-defaults _*",
        "2 of 2 faulted sessions not reclaimed within 2 s (deadline 2 s)*predicted 7874.* s by keepalive*",
        "(scenario pg-defaults in *defaults.yml: fail)",
        "*short test summary info*",
        "FAILED defaults.yml::pg-defaults - 2 of 2 faulted sessions not reclaimed*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    written = list(reports.glob("*/results.json"))
    assert len(written) == 1
    data = json.loads(written[0].read_text())
    assert {s["name"]: s["verdict"] for s in data["scenarios"]} == {"pg-quick": "pass", "pg-defaults": "fail"}


@pytest.mark.slow   # real scenarios in a pytest subprocess
@pytest.mark.usefixtures("no_leftovers")
def test_connchaos_lab_fixture_runs_a_scenario_written_in_python(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lab="""
        import pytest
        from harness.errors import ScenarioError

        def test_keepalive(connchaos_lab):
            result = connchaos_lab.run(
                service="postgres", sessions=3, faulted=2, fault="blackhole", hold="500ms",
                settings={"tcp_keepalives_idle": 1, "tcp_keepalives_interval": 1,
                          "tcp_keepalives_count": 2},
                deadline="6s")
            assert result.verdict == "pass"
            assert len(result.faulted) == 2 and len(result.survivors) == 1
            for s in result.faulted:
                assert s.reclaimed and s.mechanism == "keepalive"
                assert len(s.times("probe")) == 2
                assert s.times("probe")[-1] < s.reclaim_s
                assert abs(s.reclaim_s - s.predicted_s) < 0.5
            assert result.survivors[0].alive_at_end is True
            assert result.survivors[0].reclaimed is False

        def test_bad_settings_name_the_field(connchaos_lab):
            with pytest.raises(ScenarioError, match="sessions.count"):
                connchaos_lab.scenario(service="postgres", sessions=0)
    """)
    result = pytester.runpytest_subprocess("-v", timeout=240)
    result.assert_outcomes(passed=2)


@pytest.mark.slow   # a real scenario in a pytest subprocess
@pytest.mark.usefixtures("no_leftovers")
def test_connchaos_lab_fixture_runs_a_tier_with_its_backends_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lab="""
        import pytest
        from harness.errors import ScenarioError

        def test_pgbouncer(connchaos_lab):
            result = connchaos_lab.run(
                service="pgbouncer", sessions=3, faulted=2, fault="blackhole", hold="1s",
                settings={"tcp_keepidle": 1, "tcp_keepintvl": 1, "tcp_keepcnt": 2},
                backend_settings={"work_mem": "8MB"}, backend="local", deadline="6s")
            assert result.verdict == "pass", result.record.reason
            for s in result.faulted:
                assert s.reclaimed and s.mechanism == "keepalive"
                assert abs(s.reclaim_s - s.predicted_s) < 0.3
            assert result.survivors[0].alive_at_end is True

        def test_bad_backend_settings_name_the_field(connchaos_lab):
            with pytest.raises(ScenarioError, match="backend_settings.work_mem"):
                connchaos_lab.scenario(service="pgbouncer", backend_settings={"work_mem": "lots"})
    """)
    result = pytester.runpytest_subprocess("-v", timeout=240)
    result.assert_outcomes(passed=2)


@pytest.mark.slow   # a load run and a docker run in a pytest subprocess
@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers", "docker_machine")
def test_connchaos_lab_runs_load_and_docker_scenarios_through_the_runner(pytester: pytest.Pytester) -> None:
    """The fixture goes through harness.run: a ``load`` mapping runs under Locust, and
    ``backend="docker"`` prepares the images and runs in containers."""
    pytester.makepyfile(test_lab="""
        def test_load(connchaos_lab):
            result = connchaos_lab.run(
                service="websocket", fault="blackhole", faulted=0.5, deadline="10s",
                settings={"ping_interval": 1, "ping_timeout": 1, "close_timeout": 1},
                load={"users": 8, "spawn_rate": 8, "hold": "1s"},
                expect={"reclaimed_within": "8s", "survivors_untouched": True})
            assert result.verdict == "pass", result.record.reason
            assert result.record.load is not None and result.record.load.held == 8
            assert result.record.load.faulted == 4 and len(result.faulted) == 4

        def test_docker(connchaos_lab):
            result = connchaos_lab.run(
                service="postgres", backend="docker", sessions=2, faulted=1, hold="500ms",
                settings={"tcp_keepalives_idle": 1, "tcp_keepalives_interval": 1,
                          "tcp_keepalives_count": 2},
                deadline="8s")
            assert result.verdict == "pass", result.record.reason
            assert result.record.backend == "docker"
            assert result.faulted[0].mechanism == "keepalive"
    """)
    result = pytester.runpytest_subprocess("-v", timeout=300)
    result.assert_outcomes(passed=2)
