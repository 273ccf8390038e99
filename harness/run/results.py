"""The run being made: its id, when it started, the scenarios' records so far."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

from harness import __version__
from harness.core.records import RunRecord, ScenarioRecord, SummaryRecord
from harness.core.verdict import exit_code
from harness.scenario import LoadedScenario


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()


@dataclass
class RunResults:
    """The whole run as it is made; ``record()`` is results.json."""

    run_id: str
    started_at: str
    scenarios: list[ScenarioRecord] = field(default_factory=list)
    interrupted: bool = False

    def record(self) -> RunRecord:
        return RunRecord(run_id=self.run_id, started_at=self.started_at,
                         finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         connchaos=__version__, host=socket.gethostname(), kernel=os.uname().release,
                         interrupted=self.interrupted, scenarios=tuple(self.scenarios))

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 an expectation failed, 3 a scenario could not be run."""
        return exit_code(s.verdict for s in self.scenarios)


def new_results(run_id: str | None = None) -> RunResults:
    return RunResults(run_id=run_id or new_run_id(),
                      started_at=datetime.now(UTC).isoformat(timespec="seconds"))


def error_record(ls: LoadedScenario, reason: str, backend: str) -> ScenarioRecord:
    """A scenario that could not be run (verdict error), and why."""
    spec = ls.scenario
    return ScenarioRecord(name=spec.name, file=ls.path, about=spec.about, verdict="error",
                          reason=reason, backend=backend, layer=spec.fault.layer,
                          fault=spec.fault.type, prediction=None, sessions=(),
                          summary=SummaryRecord())
