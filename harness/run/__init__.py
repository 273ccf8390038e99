"""Running scenarios: the one library call behind ``connchaos run``, ``up``, ``explain`` and
the pytest plugin.

Data flows one way: scenario file → checks (``check``) → lab and target up → sessions
opened → fault injected → observer events → facts per session → ``harness.core.assess``
(timeline, prediction, verdict) → records. A plain scenario's sessions are opened by the
harness (``plain``), a load scenario's by Locust's users (``load``); both go through the
same phases (``phases``), and ``RUNNERS`` picks one by the scenario's kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from harness.core.assess import SessionFacts, UpstreamPrediction, assess
from harness.core.prediction import KernelDefaults, Prediction, effective
from harness.core.records import ScenarioRecord
from harness.errors import LabError
from harness.run.check import (
    BACKENDS,
    LAYERS,
    backend_for,
    ensure_images,
    images_needed,
    prepare,
    quiet,
    require_machine,
    support_problems,
)
from harness.run.load import run_load
from harness.run.phases import EventHook, ObserveHook, Planned, Progress, heartbeat_of, make_target
from harness.run.plain import run_plain
from harness.run.results import RunResults, error_record, new_results, new_run_id
from harness.run.up import hold_open as _hold_open
from harness.scenario import LoadedScenario
from harness.targets.base import is_tier


class Runner(Protocol):
    def __call__(self, ls: LoadedScenario, run_id: str, *, progress: Progress,
                 proxy_command: Sequence[str] | None, on_observe: ObserveHook | None,
                 on_event: EventHook | None, backend: str,
                 report_folder: str | None) -> ScenarioRecord: ...


RUNNERS: dict[str, Runner] = {"plain": run_plain, "load": run_load}
"""The runner of each kind of scenario (``kind_of``)."""


def kind_of(ls: LoadedScenario) -> str:
    return "load" if ls.scenario.load is not None else "plain"


def run_scenario(ls: LoadedScenario, run_id: str, *, backend: str, progress: Progress = quiet,
                 proxy_command: Sequence[str] | None = None, on_observe: ObserveHook | None = None,
                 on_event: EventHook | None = None, report_folder: str | None = None) -> ScenarioRecord:
    """One scenario, in a lab of its own on ``backend``, by the runner of its kind."""
    return RUNNERS[kind_of(ls)](ls, run_id, progress=progress, proxy_command=proxy_command,
                                on_observe=on_observe, on_event=on_event, backend=backend,
                                report_folder=report_folder)


def run(loaded: Sequence[LoadedScenario], *, results: RunResults | None = None,
        progress: Progress = quiet, proxy_command: Sequence[str] | None = None,
        on_scenario: Callable[[ScenarioRecord], None] | None = None,
        on_observe: ObserveHook | None = None, on_event: EventHook | None = None,
        backend: str | None = None, report_folder: str | None = None) -> RunResults:
    """Run scenarios one after the other, each in a lab of its own (on its backend, or on
    ``backend`` for all), into ``results``.

    ``on_observe`` is called after each observer sample with (reclaimed, faulted, elapsed_s,
    deadline_s), ``on_event`` with each session event as it is seen (progress views).

    KeyboardInterrupt (Ctrl-C, and SIGTERM as the CLI maps it) tears the current lab down and
    propagates; the scenarios finished so far stay in ``results``. A scenario with ``load:``
    runs under Locust; its Locust files go to ``report_folder/<name>/``.
    """
    require_machine(loaded, backend)
    ensure_images(loaded, backend, progress)
    results = results or new_results()
    for ls in loaded:
        chosen = backend_for(ls, backend)
        progress(f"{ls.scenario.name}: starting on {chosen} ({ls.path})")
        try:
            record = run_scenario(ls, results.run_id, backend=chosen, progress=progress,
                                  proxy_command=proxy_command, on_observe=on_observe,
                                  on_event=on_event, report_folder=report_folder)
        except LabError as exc:
            record = error_record(ls, str(exc), chosen)
        except KeyboardInterrupt:
            results.interrupted = True
            results.scenarios.append(error_record(ls, "interrupted", chosen))
            raise
        results.scenarios.append(record)
        if on_scenario:
            on_scenario(record)
    return results


def scenario_prediction(loaded: LoadedScenario, kernel: KernelDefaults | None = None) -> Prediction:
    """The prediction from the settings alone (``connchaos explain``): the last activity is
    taken as ``hold`` before the fault, in-flight data as sent at the fault. A fresh lab
    namespace starts with the kernel's built-in defaults, whatever the host has set."""
    planned = Planned.of(loaded, "explain")
    spec, target = planned.spec, planned.target
    hold = spec.sessions.hold
    facts = SessionFacts(id=0, faulted=True, opened_s=-hold, last_activity_s=-hold,
                         activity=spec.sessions.activity, data_sent_s=0.0)
    settings = effective(target.socket_settings(), kernel or KernelDefaults())
    done = assess(facts, settings, planned.fault, heartbeat_of(target, planned.fault),
                  fault_type=spec.fault.type, needs_process=False)
    assert done.prediction is not None
    return done.prediction


def upstream_prediction(loaded: LoadedScenario, client: Prediction) -> UpstreamPrediction | None:
    """A tier's prediction of a faulted session's upstream leg (``connchaos explain``), from
    its client leg's ``client``; None for targets that are not tiers."""
    target = make_target(loaded)
    if not is_tier(target):
        return None
    hold = loaded.scenario.sessions.hold
    facts = SessionFacts(id=0, faulted=True, opened_s=-hold, last_activity_s=-hold,
                         activity=loaded.scenario.sessions.activity, data_sent_s=0.0)
    found: UpstreamPrediction = target.predict_upstream(client, facts)
    return found


def hold_open(ls: LoadedScenario, *, inject: bool, show: Callable[[str], None],
              wait: Callable[[], None] | None = None,
              proxy_command: Sequence[str] | None = None, backend: str | None = None) -> int:
    """``connchaos up`` (see ``harness.run.up.hold_open``)."""
    ensure_images([ls], backend, show)
    return _hold_open(ls, inject=inject, show=show, run_id=new_run_id(), wait=wait,
                      proxy_command=proxy_command, backend=backend_for(ls, backend))


__all__ = ["BACKENDS", "LAYERS", "RUNNERS", "EventHook", "ObserveHook", "RunResults", "backend_for",
           "ensure_images", "error_record", "hold_open", "images_needed", "kind_of", "make_target",
           "new_results", "new_run_id", "prepare", "require_machine", "run", "run_scenario",
           "scenario_prediction", "support_problems", "upstream_prediction"]
