"""pytest plugin (entry point ``pytest11``): scenario files as test items, and the
``connchaos_lab`` fixture for scenarios written in Python.

``pytest scenarios/`` collects each YAML file that is a scenario (a top-level mapping with
``target`` and ``fault``; any other YAML is left alone), one item per file named after the
scenario, marked ``connchaos``, with its service and its ``tags``. Items run through the same
library call as ``connchaos run`` (``harness.run.prepare`` and ``run``); a failed
expectation reads as the JUnit message does. Without root, nftables or the service, items
skip with the reason (``CONNCHAOS_REQUIRE_LAB=1`` makes them fail instead).

This module holds only options, hooks and fixtures; the machinery is imported when used, so
the plugin costs nothing in test runs that collect no scenario.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from harness.core.records import Json, PredictionRecord, ScenarioRecord, SessionRecord
    from harness.run import RunResults
    from harness.scenario import LoadedScenario

_RESULTS = pytest.StashKey["RunResults"]()
_TOP_KEY = re.compile(r"^(target|fault)\s*:", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("connchaos", "connchaos scenarios")
    group.addoption("--connchaos-report-dir", metavar="DIR", default=None,
                    help="write the scenarios' results.json to DIR/<run id>/")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "connchaos: a connchaos scenario (a scenario file or connchaos_lab)")
    from harness.registry import SERVICES

    for service in SERVICES:
        config.addinivalue_line("markers", f"{service}: a connchaos scenario on the {service} target")


def looks_like_scenario(path: Path) -> bool:
    """A top-level mapping with ``target`` and ``fault``; broken YAML that has both keys at
    the top counts too, so that its problems are reported rather than silently skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {m.group(1) for m in _TOP_KEY.finditer(text)} == {"target", "fault"}
    return isinstance(data, dict) and "target" in data and "fault" in data


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and looks_like_scenario(file_path):
        node: ScenarioFile = ScenarioFile.from_parent(parent, path=file_path)
        return node
    return None


class ScenarioFile(pytest.File):
    """One scenario file: one item, or a collection error naming file:line: field."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness.errors import ScenarioError
        from harness.run import prepare

        try:
            loaded = prepare([str(self.path)])[0]
        except ScenarioError as exc:
            raise self.CollectError(f"{exc}\n{len(exc.problems)} problem(s) in this scenario file") from None
        spec = loaded.scenario
        item: ScenarioItem = ScenarioItem.from_parent(self, name=spec.name, loaded=loaded)
        for mark in ("connchaos", spec.target.service, *spec.tags):
            self.config.addinivalue_line("markers", f"{mark}: from a scenario's tags")
            item.add_marker(mark)
        yield item


class ScenarioFailed(Exception):
    """The scenario ran and an expectation failed (or the lab broke): its record."""

    def __init__(self, record: ScenarioRecord) -> None:
        super().__init__(record.reason)
        self.record = record


def require_lab(loaded: list[LoadedScenario]) -> None:
    """``harness.run.require_machine``, with 'this machine cannot' as a skip (a failure
    under CONNCHAOS_REQUIRE_LAB=1, as in CI)."""
    from harness import run
    from harness.errors import MachineError

    try:
        run.require_machine(loaded)
    except MachineError as exc:
        if os.environ.get("CONNCHAOS_REQUIRE_LAB") == "1":
            pytest.fail(f"CONNCHAOS_REQUIRE_LAB=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))


def _session_results(config: pytest.Config) -> RunResults:
    from harness.run import new_results

    if _RESULTS not in config.stash:
        config.stash[_RESULTS] = new_results()
    return config.stash[_RESULTS]


class ScenarioItem(pytest.Item):
    """One scenario, run in a lab of its own through ``harness.run.run``."""

    def __init__(self, *, loaded: LoadedScenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded

    def runtest(self) -> None:
        from harness import run

        results = _session_results(self.config)
        require_lab([self.loaded])
        run.run([self.loaded], results=results)
        record = results.scenarios[-1]
        self.user_properties.append(("verdict", record.verdict))
        if record.verdict != "pass":
            raise ScenarioFailed(record)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ScenarioFailed):
            from harness.report.messages import failure_message

            record = excinfo.value.record
            # the message first: pytest's short summary shows the first line
            return f"{failure_message(record)}\n(scenario {record.name} in {self.path}: {record.verdict})"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"connchaos scenario {self.name}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = session.config.getoption("connchaos_report_dir")
    results = session.config.stash.get(_RESULTS, None)
    if folder and results is not None:
        from harness.report import results as results_file

        results_file.write(results.record(), results_file.run_folder(folder, results.run_id))


# -- scenarios written in Python ---------------------------------------------------------------

@dataclass(frozen=True)
class LabRun:
    """The outcome of ``connchaos_lab.run``: the scenario's record, and its sessions (each a
    ``SessionRecord``, whose ``times(what)`` says when each event ``what`` happened)."""

    record: ScenarioRecord

    @property
    def entry(self) -> dict[str, Json]:
        """The scenario as results.json has it."""
        return self.record.to_json()

    @property
    def verdict(self) -> str:
        return self.record.verdict

    @property
    def prediction(self) -> PredictionRecord | None:
        return self.record.prediction

    @property
    def sessions(self) -> tuple[SessionRecord, ...]:
        return self.record.sessions

    @property
    def faulted(self) -> tuple[SessionRecord, ...]:
        return self.record.faulted

    @property
    def survivors(self) -> tuple[SessionRecord, ...]:
        return self.record.survivors


class ConnchaosLab:
    """Build a lab, start a target, open sessions, inject a fault, observe: from Python."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._count = 0

    def scenario(self, *, service: str, settings: dict[str, Any] | None = None, sessions: int = 1,
                 fault: str | dict[str, Any] = "blackhole", faulted: str | int | float = "all",
                 activity: str = "idle", hold: str = "1s", deadline: str = "10s",
                 expect: dict[str, Any] | None = None, load: dict[str, Any] | None = None,
                 middlebox: dict[str, Any] | None = None, **target: Any) -> LoadedScenario:
        """The scenario these arguments describe, validated as a file would be (bad values
        raise ``ScenarioError`` naming the field). ``load`` (a mapping as in a file) makes it
        a load run under Locust; ``middlebox`` (as in a file) puts the router's NAT in the
        path; ``backend`` among the target keys picks the backend."""
        from harness.errors import ScenarioError
        from harness.run import support_problems
        from harness.scenario import load_text

        self._count += 1
        base = re.sub(r"[^a-z0-9._-]+", "-", self._request.node.name.lower()).strip("-._") or "scenario"
        name = f"{base[:70]}-{self._count}"
        fault_map: dict[str, Any] = {"type": fault} if isinstance(fault, str) else dict(fault)
        fault_map.setdefault("sessions", faulted)
        # with load:, the sessions are Locust's users (load.users, load.hold, load.activity)
        held = {"load": load} if load is not None else {
            "sessions": {"count": sessions, "activity": activity, "hold": hold}}
        data = {"name": name,
                "target": {"service": service, "settings": settings or {}, **target},
                **held,
                "fault": fault_map,
                "expect": expect or {"reclaimed_within": deadline},
                "observe": {"deadline": deadline},
                **({"middlebox": middlebox} if middlebox is not None else {})}
        # the test's folder is the scenario's folder (a tcp service's command runs there)
        loaded = load_text(yaml.safe_dump(data, sort_keys=False), f"{self._request.path}::{name}")
        problems = support_problems(loaded)
        if problems:
            raise ScenarioError(problems)
        return loaded

    def run(self, **kwargs: Any) -> LabRun:
        """Run the scenario of ``scenario(**kwargs)`` until every faulted session is
        reclaimed or the deadline passes; skips when the machine cannot build a lab."""
        from harness import run

        loaded = self.scenario(**kwargs)
        require_lab([loaded])
        run.ensure_images([loaded])
        return LabRun(run.run_scenario(loaded, run.new_run_id(), backend=run.backend_for(loaded)))


@pytest.fixture
def connchaos_lab(request: pytest.FixtureRequest) -> ConnchaosLab:
    """Scenarios written in Python: ``connchaos_lab.run(service="postgres", settings={...},
    sessions=5, fault="blackhole", deadline="10s")`` returns every session's outcome and events."""
    return ConnchaosLab(request)
