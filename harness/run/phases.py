"""The phases every scenario goes through, whoever feeds it sessions: bring the lab and
target up, open (or let Locust open) the sessions, inject the fault, observe, judge.

The plain runner (``plain.py``) opens the sessions itself; the load runner (``load.py``) has
Locust's users open them. Both call these phases, and both judge through
``harness.core.assess``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import interrupts
from harness.core.assess import Conditions, Heartbeat, ScenarioHead, SessionFacts, assess_all, scenario_record
from harness.core.prediction import Effective, KernelDefaults, Prediction, effective, format_seconds
from harness.core.records import (
    KernelRecord,
    LoadRecord,
    ObserverRecord,
    ScenarioRecord,
    SessionRecord,
    TargetRecord,
)
from harness.core.verdict import Expectations
from harness.errors import LabError
from harness.faults import build
from harness.faults.site import Fault, Site
from harness.lab.docker import DockerLab
from harness.lab.local import LocalLab
from harness.lab.middlebox import MiddleboxConfig, install
from harness.lab.server import ServerProcess
from harness.observe.conntrack import ConntrackTable, Entry, ExpiryWatch, Tuple
from harness.observe.sockdiag import Key, SockInfo, TableReader
from harness.observe.watch import Observer, Watched
from harness.run.legs import UpstreamWatch, released_times
from harness.scenario import LoadedScenario
from harness.targets import target_class

Progress = Callable[[str], None]
ObserveHook = Callable[[int, int, float, float], None]
"""Called after each observer sample: (reclaimed, faulted, elapsed_s, deadline_s)."""
EventHook = Callable[[int, float, str, str], None]
"""Called for each observed event: (session id, seconds after the fault, what, detail)."""

Lab = LocalLab | DockerLab
LABS: dict[str, type[LocalLab] | type[DockerLab]] = {"local": LocalLab, "docker": DockerLab}
"""The lab of each backend."""


def new_lab(backend: str, run_id: str) -> Lab:
    """A lab of ``backend`` (``local`` or ``docker``), to use as a context manager."""
    return LABS[backend](run_id=run_id)


def make_target(loaded: LoadedScenario) -> Any:
    """The scenario's target, built by its own class from the whole scenario. A service the
    user starts by command runs in the scenario file's folder (``workdir``)."""
    target = target_class(loaded.scenario.target.service).from_scenario(loaded.scenario)
    if hasattr(target, "workdir"):
        target.workdir = os.path.dirname(os.path.abspath(loaded.path))
    return target


@dataclass
class TargetWatch:
    """The target's own server processes (what it started with ``lab.start_server``),
    watched through the run: a target that dies under the harness has not reclaimed
    anything, its death is the run's error."""

    service: str
    procs: Sequence[ServerProcess]
    every_s: float = 0.5
    exited: str | None = None       # what was seen: "the target's server (pid N) exited with ..."
    _next: float = 0.0
    _last: bool = False             # the teardown has looked (then the lab stopped it itself)

    def look(self, *, now: bool = True) -> None:
        """A LabError naming the server if one has exited; ``now`` False looks at most once
        every ``every_s`` (a container's state is an engine call). After the teardown's
        look, what it saw."""
        if not self._last and (now or time.monotonic() >= self._next):
            self._next = time.monotonic() + self.every_s
            self._poll()
        if self.exited is not None:
            raise LabError(f"watching {self.service}", self.exited)

    def last_look(self) -> None:
        """Note an exit without raising: the teardown's look, just before the lab stops the
        target itself."""
        self._poll()
        self._last = True

    def _poll(self) -> None:
        for proc in self.procs:
            code = proc.poll()
            if code is not None and self.exited is None:
                how = f"signal {_signal_name(-code)}" if code < 0 else f"status {code}"
                self.exited = f"the target's server (pid {proc.pid}) exited with {how} during the run"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass
class Planned:
    """A scenario about to run: its target and fault built, its random choices seeded."""

    loaded: LoadedScenario
    target: Any
    fault: Fault
    chooser: random.Random
    started: float
    watch: TargetWatch | None = None    # set once the target is up (``bring_up``)
    middlebox: MiddleboxConfig | None = None
    conntrack: ConntrackTable | None = None    # the middlebox's table, once it is up

    @classmethod
    def of(cls, ls: LoadedScenario, run_id: str) -> Planned:
        mb = ls.scenario.middlebox
        return cls(ls, make_target(ls), build(ls.scenario.fault, mb),
                   random.Random(f"{run_id}/{ls.scenario.name}"), time.monotonic(),
                   middlebox=None if mb is None else MiddleboxConfig(
                       idle_timeout_s=mb.idle_timeout, on_expiry=mb.on_expiry, nat=mb.nat))

    @property
    def spec(self) -> Any:
        return self.loaded.scenario

    @property
    def nat(self) -> bool:
        """The server sees the clients behind the middlebox's NAT."""
        return self.middlebox is not None and self.middlebox.nat


def heartbeat_of(target: Any, fault: Any = None) -> Heartbeat:
    """The target's own heartbeat, as assessment calls it. Under a fault whose client kernel
    still answers (``kernel_answers``: process-pause, slow-reader), the target's rule for an
    acknowledged but unanswered heartbeat (``heartbeat_answered``) where it has one."""
    rule = target.heartbeat
    if getattr(fault, "kernel_answers", False) and hasattr(target, "heartbeat_answered"):
        rule = target.heartbeat_answered

    def heartbeat(last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        found: tuple[Prediction | None, float | None] = rule(
            last_activity_s=last_activity_s, opened_s=opened_s)
        return found
    return heartbeat


# -- bring up ---------------------------------------------------------------------------------

def bring_up(lab: Lab, planned: Planned) -> tuple[KernelDefaults, TableReader]:
    """The lab kernel's defaults (read before the target changes anything), the target
    started and watched (``planned.watch``), and the server's socket table opened (closed
    with the lab)."""
    interrupts.check()
    kernel = lab.reach.kernel_defaults()
    if planned.middlebox is not None:
        start_middlebox(lab, planned)
    target = planned.target
    first = len(lab.servers)
    target.start(lab)
    watch = planned.watch = TargetWatch(target.service, lab.servers[first:])
    # the teardown's look runs before the target's own stop (registered before it)
    lab.on_close("watching the target", watch.last_look)
    table = lab.reach.socket_table()
    lab.on_close("socket table", table.close)
    interrupts.check()
    return kernel, table


def start_middlebox(lab: Lab, planned: Planned) -> None:
    """The router becomes the scenario's middlebox; its conntrack table is opened (closed
    with the lab)."""
    assert planned.middlebox is not None
    if not isinstance(lab, LocalLab):   # the schema and check refuse it before
        raise LabError("building the middlebox", "a middlebox needs the local backend")
    install(lab, planned.middlebox)
    planned.conntrack = table = ConntrackTable(lab.router_ns)
    lab.on_close("conntrack table", table.close)


# -- inject and observe -----------------------------------------------------------------------

def inject(lab: Lab, fault: Fault, site: Site, observer: Observer,
           before: dict[Key, SockInfo], target: Any = None) -> float:
    """Apply the fault (reverted with the lab) and start the observer from the state
    ``before`` it; returns the fault's time, t0 of every timeline. A target that predicts
    from its own clock (``fault_at``: Mosquitto's whole-second checks) is told t0."""
    interrupts.check()
    fault.apply(site)
    lab.on_close("fault", fault.revert)
    t0 = time.time()
    observer.start(t0, before)
    if hasattr(target, "fault_at"):
        target.fault_at(t0)
    return t0


def observe(observer: Observer, planned: Planned, t0: float, faulted: Sequence[Watched],
            on_observe: ObserveHook | None = None, legs: UpstreamWatch | None = None,
            also: Callable[[], None] | None = None) -> float:
    """Sample until every faulted session is released (a tier's: and what became of its
    upstream leg is seen) or the deadline; returns how long. The target's own death ends it
    with a LabError (its sockets going would read as reclaims). ``also`` runs after each
    sample (the middlebox's expiry watch)."""
    spec, watch = planned.spec, planned.watch

    def sampled() -> None:
        interrupts.check()
        if legs is not None:
            legs.sample()
        if also is not None:
            also()
        if watch is not None:
            watch.look(now=False)
        if on_observe is not None:
            on_observe(sum(1 for w in faulted if w.released()), len(faulted),
                       time.time() - t0, spec.deadline_s)

    def done() -> bool:
        if not all(w.released() for w in faulted):
            return False
        return legs is None or legs.settled(released_times(faulted), time.time())
    observer.run(interval_s=spec.observe.interval, until=t0 + spec.deadline_s, done=done,
                 on_sample=sampled)
    if watch is not None:
        watch.look()
    return time.time() - t0


def _expiry_detail(entry: Entry, idle_timeout_s: float) -> str:
    seen = entry.reply.dst != entry.orig.src
    nat = f" (the server sees {entry.reply.dst}:{entry.reply.dport})" if seen else ""
    return f"conntrack entry {entry.orig}{nat} expired after {format_seconds(idle_timeout_s)} s idle"


def expiry_watch(conntrack: ConntrackTable, flows: dict[int, Tuple], observer: Observer,
                 idle_timeout_s: float) -> ExpiryWatch:
    """The middlebox's entry of every session's flow (``flows``: by session id, as the client
    sent it) watched; its expiry becomes an event of the session's timeline. Every entry
    must be there now."""
    def expired(sid: int, at: float, entry: Entry) -> None:
        observer.record(sid, at, "middlebox-expired", _expiry_detail(entry, idle_timeout_s))
    watch = ExpiryWatch(conntrack, flows, expired)
    watch.start()
    return watch


def middlebox_extra(planned: Planned) -> dict[str, Any]:
    """What a record's ``lab`` says of the middlebox."""
    return {} if planned.middlebox is None else {"middlebox": planned.middlebox.describe()}


# -- facts ------------------------------------------------------------------------------------

def last_activity(info: SockInfo | None, sampled_at: float, t0: float) -> float:
    """When the server last heard from the client (the keepalive timer's reference), in
    seconds from the fault, from its socket as sampled at ``sampled_at``."""
    if info is None:
        return 0.0
    return sampled_at - min(info.last_ack_recv_s, info.last_data_recv_s) - t0


def server_error(errors: dict[Any, Any], pid: int | None, key: Key, t0: float) -> tuple[float, str] | None:
    """The service's own log line about this session (by its process, else its peer)."""
    err = (errors.get(pid) if pid is not None else None) or errors.get((key[2], key[3]))
    return None if err is None else (err.at - t0, err.kind)


# -- judge ------------------------------------------------------------------------------------

def judge(planned: Planned, lab: Lab, facts: Sequence[SessionFacts], *, kernel: KernelDefaults,
          observer: Observer, observed_for: float, activity: str, fault_text: str | None = None,
          lab_extra: dict[str, Any] | None = None, listed: Callable[[SessionRecord], bool] = lambda _: True,
          load: LoadRecord | None = None) -> ScenarioRecord:
    """The scenario's record: every session assessed against its prediction, the verdict on
    the scenario's expectations, and what ran (``listed`` chooses the sessions written)."""
    interrupts.check()
    if planned.watch is not None:
        planned.watch.look()   # as the teardown last saw it: an exit after observing counts too
    spec, target, fault = planned.spec, planned.target, planned.fault
    eff: Effective = effective(target.socket_settings(), kernel)
    exp = spec.expect
    conditions = Conditions(settings=eff, fault=fault, heartbeat=heartbeat_of(target, fault),
                            fault_type=spec.fault.type, needs_process=target.needs_process,
                            upstream=getattr(target, "predict_upstream", None))
    assessment = assess_all(facts, conditions,
                            Expectations(reclaimed_within=exp.reclaimed_within,
                                         still_held_after=exp.still_held_after,
                                         survivors_untouched=exp.survivors_untouched,
                                         mechanism=exp.mechanism, upstream=exp.upstream,
                                         reconnect_within=exp.reconnect_within),
                            deadline_s=spec.deadline_s)
    head = ScenarioHead(
        name=spec.name, file=planned.loaded.path, about=spec.about.strip(), backend=lab.backend,
        layer=fault.layer, fault=spec.fault.type, fault_detail=fault_text or fault.describe(),
        target=TargetRecord(service=spec.target.service, settings=target.describe_settings()),
        activity=activity, expect={k: v for k, v in exp.model_dump().items() if v is not None},
        deadline_s=spec.deadline_s, observed_s=round(observed_for, 3),
        kernel=KernelRecord(tcp_keepalive_time=kernel.keepalive_time_s,
                            tcp_keepalive_intvl=kernel.keepalive_intvl_s,
                            tcp_keepalive_probes=kernel.keepalive_probes,
                            tcp_retries2=kernel.tcp_retries2, hz=kernel.hz),
        lab={**{k: v for k, v in lab.describe().items() if k != "tmpdir"}, **(lab_extra or {})},
        observer=ObserverRecord(
            interval_s=spec.observe.interval, samples=observer.samples,
            mean_sample_ms=round(1000 * observer.sample_cost_s / max(1, observer.samples), 3)),
        duration_s=round(time.monotonic() - planned.started, 3))
    return scenario_record(head, assessment, listed, load=load)
