"""Running scenarios: the one library call behind ``connchaos run`` (and the pytest plugin).

Data flows one way: scenario file → lab and target up → sessions opened → fault injected →
observer events → timeline per session → prediction and verdict → results.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from harness import __version__
from harness.core.prediction import (KernelDefaults, Prediction, effective, format_seconds,
                                     predict)
from harness.core.stats import summarize
from harness.core.timeline import Event, outcome, sort_events
from harness.core.verdict import Expectations, SessionResult, judge
from harness.errors import LabError, MachineError, Problem, ScenarioError
from harness.faults import FAULTS, build
from harness.faults.base import PacketFault
from harness.faults.nft import nft_binary
from harness.lab import naming
from harness.lab.kernel import kernel_defaults
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import SockInfo, SocketTable
from harness.observe.watch import Observer, Watched
from harness.scenario import LoadedScenario, load_paths
from harness.targets import TARGETS
from harness.targets.base import Session

SCHEMA = "connchaos.results/1"
BACKENDS = ("local",)
LAYERS = ("packet",)
# Sessions are opened a few at a time: a burst of thousands would hit the accept backlog.
OPEN_CONCURRENCY = 32

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- preparing: everything that can be checked before anything starts ------------------------

def support_problems(loaded: LoadedScenario, backend: str | None = None) -> list[Problem]:
    """What this version cannot do with a valid scenario, reported against the file."""
    spec = loaded.scenario
    problems = []
    if spec.target.service not in TARGETS:
        problems.append(loaded.problem(("target", "service"),
                        f"service {spec.target.service!r} is not available in connchaos {__version__}"
                        f" (available: {', '.join(TARGETS)})"))
    chosen = backend or spec.target.backend
    if chosen not in ("auto", *BACKENDS):
        problems.append(loaded.problem(("target", "backend"),
                        f"backend {chosen!r} is not available in connchaos {__version__}"
                        f" (available: auto, {', '.join(BACKENDS)})"))
    if spec.fault.layer not in LAYERS:
        problems.append(loaded.problem(("fault", "layer"),
                        f"layer {spec.fault.layer!r} is not available in connchaos {__version__}"
                        f" (available: {', '.join(LAYERS)})"))
    if spec.fault.type not in FAULTS:
        problems.append(loaded.problem(("fault", "type"),
                        f"fault {spec.fault.type!r} is not available (available: {', '.join(FAULTS)})"))
    target = TARGETS.get(spec.target.service)
    if target is not None:
        for name, message in target.check_settings(spec.target.settings):
            problems.append(loaded.problem(("target", "settings", name), message))
    return problems


def prepare(paths: Iterable[str], backend: str | None = None) -> list[LoadedScenario]:
    """Load and fully validate scenario files; raises ScenarioError (exit 2) listing every problem."""
    loaded = load_paths(paths)
    problems = [p for ls in loaded for p in support_problems(ls, backend)]
    if problems:
        raise ScenarioError(problems)
    return loaded


def require_machine(loaded: Sequence[LoadedScenario]) -> None:
    """Raise MachineError (exit 3) naming the first thing this machine lacks for the local lab."""
    if os.geteuid() != 0:
        raise MachineError("root (network namespaces and nftables need it)", "run as root")
    for tool, package in (("ip", "iproute2"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            raise MachineError(f"the {tool} command", f"apt-get install {package}")
    if nft_binary() is None:
        raise MachineError("nftables (the nft command)", "apt-get install nftables")
    if not os.path.isdir("/proc/self/ns") or not os.path.exists("/proc/self/ns/net"):
        raise MachineError("network namespaces in this kernel")
    from harness.targets.postgres import require_bindir
    if any(ls.scenario.target.service == "postgres" for ls in loaded):
        require_bindir()


# -- predicting -----------------------------------------------------------------------------

def scenario_prediction(loaded: LoadedScenario, kernel: KernelDefaults | None = None) -> Prediction:
    """The prediction from the settings alone (``connchaos explain``): the last activity is
    taken as ``hold`` before the fault, in-flight data as sent at the fault. A fresh lab
    namespace starts with the kernel's built-in defaults, whatever the host has set."""
    spec = loaded.scenario
    target = make_target(loaded)
    eff = effective(target.socket_settings(), kernel or KernelDefaults())
    peer = FAULTS[spec.fault.type].peer
    return predict(eff, activity=spec.sessions.activity, peer=peer,
                   last_activity_s=-spec.sessions.hold, data_sent_s=0.0)


def make_target(loaded: LoadedScenario) -> Any:
    spec = loaded.scenario
    cls = TARGETS[spec.target.service]
    return cls(settings=dict(spec.target.settings), sessions=spec.sessions.count,
               listen_for_in_flight=spec.sessions.activity == "in-flight")


# -- running --------------------------------------------------------------------------------

def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()


@dataclass
class RunResults:
    """The whole run, in the shape of results.json."""

    run_id: str
    started_at: str
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "run_id": self.run_id, "started_at": self.started_at,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "connchaos": __version__, "host": socket.gethostname(),
                "kernel": os.uname().release, "interrupted": self.interrupted,
                "scenarios": self.scenarios}

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 an expectation failed, 3 a scenario could not be run."""
        verdicts = {s["verdict"] for s in self.scenarios}
        if "error" in verdicts:
            return 3
        return 1 if "fail" in verdicts else 0


def new_results(run_id: str | None = None) -> RunResults:
    return RunResults(run_id=run_id or new_run_id(),
                      started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def run(loaded: Sequence[LoadedScenario], *, results: RunResults | None = None,
        progress: Progress = _quiet,
        on_scenario: Callable[[dict[str, Any]], None] | None = None) -> RunResults:
    """Run scenarios one after the other, each in a lab of its own, into ``results``.

    KeyboardInterrupt (Ctrl-C, and SIGTERM as the CLI maps it) tears the current lab down and
    propagates; the scenarios finished so far stay in ``results``.
    """
    require_machine(loaded)
    results = results or new_results()
    for ls in loaded:
        progress(f"{ls.scenario.name}: starting ({ls.path})")
        try:
            entry = run_one(ls, results.run_id, progress=progress)
        except LabError as exc:
            entry = _error_entry(ls, str(exc))
        except KeyboardInterrupt:
            results.interrupted = True
            results.scenarios.append(_error_entry(ls, "interrupted"))
            raise
        results.scenarios.append(entry)
        if on_scenario:
            on_scenario(entry)
    return results


def _error_entry(ls: LoadedScenario, reason: str) -> dict[str, Any]:
    spec = ls.scenario
    return {"name": spec.name, "file": ls.path, "about": spec.about, "verdict": "error",
            "reason": reason, "backend": "local", "layer": spec.fault.layer,
            "fault": spec.fault.type, "prediction": None, "sessions": [],
            "summary": summarize([])}


async def _open_all(target: Any, lab: LocalLab, count: int) -> list[Session]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(i: int) -> Session:
        async with gate:
            s: Session = await target.open_session(lab, i)
            return s
    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        opened = [t.result() for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
        await asyncio.gather(*(target.close_session(s) for s in opened), return_exceptions=True)
        raise


async def _close_all(target: Any, sessions: Sequence[Session]) -> None:
    await asyncio.gather(*(target.close_session(s) for s in sessions), return_exceptions=True)


async def _alive_all(target: Any, sessions: Sequence[Session]) -> list[tuple[bool, str]]:
    return list(await asyncio.gather(*(target.alive(s) for s in sessions)))


class OpenSessions(list[Session]):
    """The sessions of a lab, with the client-namespace loop that drives them."""

    def __init__(self, client: LoopInNamespace, sessions: Sequence[Session]) -> None:
        super().__init__(sessions)
        self.client = client


def _open_sessions(lab: LocalLab, target: Any, count: int) -> OpenSessions:
    """Open ``count`` sessions from the client namespace; closing them is registered with the lab."""
    client = LoopInNamespace(lab.client_ns)
    lab.on_close("client event loop", client.close)
    sessions = OpenSessions(client, client.run(_open_all(target, lab, count)))
    lab.on_close("sessions", lambda: client.run(_close_all(target, sessions), timeout=30))
    return sessions


def _server_key(s: Session) -> tuple[str, int, str, int]:
    return (s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port)


def _last_activity(info: SockInfo | None, sampled_at: float, t0: float) -> float:
    """When the server last heard from the client (the keepalive timer's reference)."""
    if info is None:
        return 0.0
    return sampled_at - min(info.last_ack_recv_s, info.last_data_recv_s) - t0


def run_one(ls: LoadedScenario, run_id: str, progress: Progress = _quiet) -> dict[str, Any]:
    """Run one scenario in a fresh lab and return its results.json entry."""
    spec = ls.scenario
    target = make_target(ls)
    fault: PacketFault = build(spec.fault.type, spec.fault.direction)
    count = spec.sessions.count
    started = time.monotonic()

    with LocalLab(run_id=run_id) as lab:
        kernel = kernel_defaults(lab.server_ns)
        target.start(lab)
        progress(f"{spec.name}: {spec.target.service} up in {lab.server_ns}")
        sessions = _open_sessions(lab, target, count)
        client = sessions.client
        progress(f"{spec.name}: {count} sessions open; holding {format_seconds(spec.sessions.hold)} s")
        time.sleep(spec.sessions.hold)

        chooser = random.Random(f"{run_id}/{spec.name}")
        faulted_ids = set(chooser.sample(range(count), spec.fault.pick_count(count)))
        faulted = [s for s in sessions if s.id in faulted_ids]
        survivors = [s for s in sessions if s.id not in faulted_ids]

        table = SocketTable(lab.server_ns)
        lab.on_close("socket table", table.close)
        watched = {s.id: Watched(s.id, _server_key(s), s.pid) for s in sessions}
        observer = Observer(table, target.port, list(watched.values()))
        lab.on_close("observer", observer.close)

        before = observer.snapshot()
        sampled_at = time.time()
        missing = [s.id for s in sessions if _server_key(s) not in before]
        if missing:
            raise LabError("before the fault", f"the server holds no socket for sessions {missing}")
        fault.apply(lab, [s.flow for s in faulted])
        lab.on_close("fault", fault.revert)
        t0 = time.time()
        observer.start(t0, before)
        sent_at = None
        if spec.sessions.activity == "in-flight":
            target.send_in_flight(faulted)
            sent_at = time.time()
        progress(f"{spec.name}: {fault.describe()} on {len(faulted)} of {count} sessions;"
                 f" watching up to {format_seconds(spec.deadline_s)} s")

        faulted_watch = [watched[s.id] for s in faulted]
        observer.run(interval_s=spec.observe.interval, until=t0 + spec.deadline_s,
                     done=lambda: all(w.released() for w in faulted_watch))
        observed_for = time.time() - t0
        checks = dict(zip((s.id for s in survivors), client.run(_alive_all(target, survivors), timeout=60)))
        observer.sample()  # a survivor dropped during the checks still counts
        errors = target.server_errors()

    eff = effective(target.socket_settings(), kernel)
    entries: list[dict[str, Any]] = []
    results: list[SessionResult] = []
    predictions: list[Prediction] = []
    for s in sessions:
        w = watched[s.id]
        events = list(w.events)
        events.append(Event(round(s.opened_at - t0, 4), "opened", str(s.flow)))
        last = _last_activity(before.get(w.key), sampled_at, t0)
        events.append(Event(round(last, 4), "last-activity"))
        is_faulted = s.id in faulted_ids
        if is_faulted:
            events.append(Event(0.0, "fault", spec.fault.type))
        if s.pid is not None and s.pid in errors:
            err = errors[s.pid]
            events.append(Event(round(err.at - t0, 4), "server-error", err.kind))
        alive = None
        if s.id in checks:
            alive, detail = checks[s.id]
            events.append(Event(round(observed_for, 4), "alive-check", "ok" if alive else f"failed: {detail}"))
        events = sort_events(events)
        out = outcome(events, needs_process=target.needs_process,
                      user_timeout_set=eff.user_timeout_s > 0)
        pred = None
        if is_faulted:
            sent = next((e.t for e in events if e.what == "data-sent"), None)
            if sent is None and sent_at is not None:
                sent = sent_at - t0
            info = before.get(w.key)
            pred = predict(eff, activity=spec.sessions.activity, peer=fault.peer,
                           last_activity_s=last, data_sent_s=sent or 0.0,
                           rto_s=info.rto_s if info else None)
            predictions.append(pred)
        results.append(SessionResult(id=s.id, faulted=is_faulted, reclaimed=out.reclaimed,
                                     reclaim_s=out.reclaim_s,
                                     predicted_s=pred.reclaim_s if pred else None,
                                     mechanism=out.mechanism, alive_at_end=alive))
        entries.append({
            "id": s.id, "faulted": is_faulted,
            "client": f"{s.flow.client_addr}:{s.flow.client_port}",
            "server": f"{s.flow.server_addr}:{s.flow.server_port}", "server_pid": s.pid,
            "reclaimed": out.reclaimed,
            "reclaim_s": None if out.reclaim_s is None else round(out.reclaim_s, 3),
            "predicted_s": None if pred is None or pred.reclaim_s is None else round(pred.reclaim_s, 3),
            "mechanism": out.mechanism,
            "predicted_mechanism": pred.mechanism if pred else None,
            "alive_at_end": alive,
            "events": [{"t": e.t, "what": e.what, **({"detail": e.detail} if e.detail else {})}
                       for e in events],
        })

    headline = _headline(predictions)
    exp = spec.expect
    verdict = judge(Expectations(reclaimed_within=exp.reclaimed_within,
                                 still_held_after=exp.still_held_after,
                                 survivors_untouched=exp.survivors_untouched,
                                 mechanism=exp.mechanism),
                    results, deadline_s=spec.deadline_s, prediction=headline)
    return {
        "name": spec.name, "file": ls.path, "about": spec.about.strip(),
        "verdict": verdict.verdict, "reason": verdict.reason,
        "backend": lab.backend, "layer": fault.layer, "fault": spec.fault.type,
        "fault_detail": fault.describe() + (f" ({spec.fault.direction})" if spec.fault.direction else ""),
        "target": {"service": spec.target.service, "settings": target.describe_settings()},
        "activity": spec.sessions.activity,
        "expect": {k: v for k, v in exp.model_dump().items() if v is not None},
        "deadline_s": spec.deadline_s,
        "observed_s": round(observed_for, 3),
        "prediction": None if headline is None else {
            "reclaim_s": None if headline.reclaim_s is None else round(headline.reclaim_s, 3),
            "mechanism": headline.mechanism, "formula": headline.formula,
            "slack_s": round(headline.slack_s, 3)},
        "kernel": {"tcp_keepalive_time": kernel.keepalive_time_s,
                   "tcp_keepalive_intvl": kernel.keepalive_intvl_s,
                   "tcp_keepalive_probes": kernel.keepalive_probes,
                   "tcp_retries2": kernel.tcp_retries2, "hz": kernel.hz},
        "lab": {k: v for k, v in lab.describe().items() if k != "tmpdir"},
        "observer": {"interval_s": spec.observe.interval, "samples": observer.samples,
                     "mean_sample_ms": round(1000 * observer.sample_cost_s / max(1, observer.samples), 3)},
        "duration_s": round(time.monotonic() - started, 3),
        "sessions": entries,
        "summary": summarize(results),
    }


def _headline(predictions: Sequence[Prediction]) -> Prediction | None:
    """The scenario's prediction: the latest of its faulted sessions' (never = latest)."""
    if not predictions:
        return None
    return max(predictions, key=lambda p: float("inf") if p.reclaim_s is None else p.reclaim_s)


def hold_open(ls: LoadedScenario, *, inject: bool, show: Callable[[str], None],
              wait: Callable[[], None] | None = None) -> int:
    """``connchaos up``: build the lab, start the target, open the sessions (and optionally
    inject the fault), then hold everything until Ctrl-C or SIGTERM, and tear it down."""
    spec = ls.scenario
    target = make_target(ls)
    with LocalLab(run_id=new_run_id()) as lab:
        target.start(lab)
        sessions = _open_sessions(lab, target, spec.sessions.count)
        d = lab.describe()
        show(f"lab {lab.lab_id} is up: {spec.target.service} at {d['server_addr']}:{target.port}"
             f" in {d['server_ns']}; clients in {d['client_ns']} ({d['client_addr']});"
             f" router {d['router_ns']}")
        show(f"{len(sessions)} sessions held open: " + ", ".join(
            f"#{s.id} {s.flow.client_addr}:{s.flow.client_port} (server pid {s.pid})" for s in sessions[:10])
            + (" ..." if len(sessions) > 10 else ""))
        show(f"client shell:  ip netns exec {d['client_ns']} bash")
        show(f"server table:  ip netns exec {d['server_ns']} ss -tnoi sport = :{target.port}")
        if inject:
            time.sleep(spec.sessions.hold)
            fault = build(spec.fault.type, spec.fault.direction)
            count = spec.fault.pick_count(len(sessions))
            fault.apply(lab, [s.flow for s in sessions[:count]])
            lab.on_close("fault", fault.revert)
            show(f"fault {spec.fault.type} ({fault.describe()}) applied to sessions 0..{count - 1};"
                 f" rules: ip netns exec {lab.router_ns if fault.where == 'router' else lab.client_ns}"
                 f" nft list table inet {naming.NFT_TABLE}")
        show("holding; Ctrl-C tears the lab down")
        try:
            (wait or _forever)()
        except KeyboardInterrupt:
            show("tearing down")
    return 0


def _forever() -> None:
    while True:
        time.sleep(3600)
