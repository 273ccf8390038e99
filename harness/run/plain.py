"""A plain scenario: the harness opens the sessions itself (a few at a time, from the
client's side), holds them, faults the chosen ones and observes the server until each is
reclaimed or the deadline passes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from harness.core.assess import SessionFacts
from harness.core.prediction import format_seconds
from harness.core.records import ScenarioRecord
from harness.errors import LabError
from harness.faults.syn_blackhole import SynBlackhole
from harness.lab.netns import LoopInNamespace
from harness.observe.sockdiag import Key, TableReader
from harness.observe.watch import Observer, Watched
from harness.run.legs import watch_upstreams
from harness.run.phases import (
    EventHook,
    Lab,
    ObserveHook,
    Planned,
    Progress,
    bring_up,
    expiry_watch,
    inject,
    judge,
    last_activity,
    middlebox_extra,
    new_lab,
    observe,
    server_error,
)
from harness.run.reconnect import Reconnects, client_syn
from harness.run.routing import Routing, flow_tuple, setup_routing
from harness.run.session_host import SessionHost
from harness.scenario import LoadedScenario
from harness.targets.base import Session

# Sessions are opened a few at a time: a burst of thousands would overflow the accept backlog.
OPEN_CONCURRENCY = 32


class OpenSessions(list[Session]):
    """The sessions of a lab, with the client-namespace loop that drives them."""

    def __init__(self, client: LoopInNamespace, sessions: Sequence[Session]) -> None:
        super().__init__(sessions)
        self.client = client
        self.host: SessionHost | None = None     # holds the faulted ones, for some faults


async def _open_all(target: Any, lab: Lab, indices: Sequence[int], routing: Routing) -> list[Session]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(i: int) -> Session:
        async with gate:
            s: Session = await target.open_session(lab, i, via=routing.via(i))
            return s
    tasks = [asyncio.ensure_future(one(i)) for i in indices]
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


def open_sessions(lab: Lab, target: Any, count: int, routing: Routing,
                  hosted: set[int] | None = None) -> OpenSessions:
    """Open ``count`` sessions from the client namespace; closing them is registered with the
    lab. ``hosted``: the ones a session host of their own opens and holds (faults that stop
    the client's process), in a process forked before the harness's own sessions open."""
    host = None
    held: list[Session] = []
    if hosted:
        host = SessionHost.for_lab(lab)
        lab.on_close("session host", host.close)
        held = host.open(target, lab, sorted(hosted), routing.via)
    client = lab.reach.session_loop()
    lab.on_close("client event loop", client.close)
    own = client.run(_open_all(target, lab, [i for i in range(count) if i not in (hosted or ())], routing))
    lab.on_close("sessions", lambda: client.run(_close_all(target, own), timeout=30))
    sessions = OpenSessions(client, sorted([*own, *held], key=lambda s: s.id))
    sessions.host = host
    return sessions


class KeepTalking:
    """Behind a middlebox, sessions that are not faulted keep talking: every ``every_s`` each
    answers one ``target.alive`` on the client loop, so its conntrack entry stays fresh.
    Rounds run one at a time; ``only`` narrows the set between two rounds."""

    def __init__(self, client: LoopInNamespace, target: Any, sessions: Sequence[Session],
                 every_s: float) -> None:
        self.client, self.target, self.every_s = client, target, every_s
        self.sessions = list(sessions)
        self.rounds = 0
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._future: concurrent.futures.Future[None] | None = None

    def start(self) -> None:
        async def setup() -> None:
            self._stop, self._lock = asyncio.Event(), asyncio.Lock()
        self.client.run(setup())
        self._future = asyncio.run_coroutine_threadsafe(self._run(), self.client.loop)

    async def _run(self) -> None:
        assert self._stop is not None and self._lock is not None
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)
            if self._stop.is_set():
                return
            async with self._lock:
                await asyncio.gather(*(self.target.alive(s) for s in self.sessions),
                                     return_exceptions=True)
                self.rounds += 1

    def only(self, sessions: Sequence[Session]) -> None:
        """From now on only ``sessions`` talk (waits for a round in progress)."""
        async def narrow() -> None:
            assert self._lock is not None
            async with self._lock:
                self.sessions = list(sessions)
        self.client.run(narrow(), timeout=30)

    def stop(self) -> None:
        """Stop after the round in progress (bounded)."""
        if self._future is None:
            return
        stop = self._stop
        assert stop is not None
        self.client.loop.call_soon_threadsafe(stop.set)
        with contextlib.suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            self._future.result(timeout=30)
        self._future = None


def _find_session_processes(lab: Lab, target: Any, sessions: Sequence[Session],
                            keys: dict[int, Key], table: TableReader) -> None:
    """For targets that fork a process per connection (sshd), the process is found from the
    server's side: the oldest process holding the session's server socket."""
    missing = [s for s in sessions if s.pid is None]
    if not missing:
        return
    found = lab.reach.session_pids(table.dump(target.port), [keys[s.id] for s in missing])
    for s in missing:
        s.pid = found.get(keys[s.id])
        if s.pid is None:
            raise LabError("finding the server's process of each session",
                           f"no process in {lab.server_ns} holds the socket of session {s.id}")


def run_plain(ls: LoadedScenario, run_id: str, progress: Progress = lambda _: None,
              proxy_command: Sequence[str] | None = None, on_observe: ObserveHook | None = None,
              on_event: EventHook | None = None, backend: str = "local",
              report_folder: str | None = None) -> ScenarioRecord:
    """Run one scenario in a fresh lab and return its record.

    ``on_observe`` and ``on_event`` follow the observation as it happens (progress views)."""
    planned = Planned.of(ls, run_id)
    spec, target, fault = planned.spec, planned.target, planned.fault
    count = spec.sessions.count
    faulted_ids = set(planned.chooser.sample(range(count), spec.fault.pick_count(count)))

    with new_lab(backend, run_id) as lab:
        kernel, table = bring_up(lab, planned)
        routing = setup_routing(lab, target, spec.fault.layer or "packet", faulted_ids, proxy_command,
                                nat=planned.conntrack if planned.nat else None)
        progress(f"{spec.name}: {spec.target.service} up in {lab.server_ns}{routing.shown()}")
        hosted = faulted_ids if getattr(fault, "holds_sessions", False) else None
        sessions = open_sessions(lab, target, count, routing, hosted)
        talking = None
        # behind a middlebox, or for a target whose idle timeout would close the survivors
        # too (redis's timeout), the sessions keep talking until the fault silences the faulted
        every = (planned.middlebox.idle_timeout_s / 3 if planned.middlebox is not None
                 else getattr(target, "keep_talking_s", lambda: None)())
        if every is not None:
            talking = KeepTalking(sessions.client, target, sessions, every)
            lab.on_close("sessions talking", talking.stop)
            talking.start()
        keys = routing.server_keys(target, sessions)
        if target.needs_process:
            _find_session_processes(lab, target, sessions, keys, table)
        progress(f"{spec.name}: {count} sessions open; holding {format_seconds(spec.sessions.hold)} s")
        time.sleep(spec.sessions.hold)
        faulted = [s for s in sessions if s.id in faulted_ids]
        survivors = [s for s in sessions if s.id not in faulted_ids]

        watched = {s.id: Watched(s.id, keys[s.id], s.pid) for s in sessions}
        observer = Observer(table, target.port, list(watched.values()))
        observer.on_event = on_event
        lab.on_close("observer", observer.close)
        expiry = None
        if talking is not None:
            talking.only(survivors)     # the faulted sessions fall silent from here
        if planned.conntrack is not None and planned.middlebox is not None:
            expiry = expiry_watch(planned.conntrack, {s.id: flow_tuple(s.flow) for s in sessions},
                                  observer, planned.middlebox.idle_timeout_s)

        legs = watch_upstreams(lab, target, table, keys)
        before = observer.snapshot()
        sampled_at = time.time()
        missing = [s.id for s in sessions if keys[s.id] not in before]
        if missing:
            raise LabError("before the fault", f"the server holds no socket for sessions {missing}")
        reconnects = None
        if isinstance(fault, SynBlackhole):
            if not lab.reach.enters_networks:
                raise LabError("syn-blackhole", "the clients' reconnects run in the client's network,"
                                                " which needs root on the docker backend")
            fault.client = client_syn(lab)
            reconnects = Reconnects(sessions.client, target, fault)
        site = dataclasses.replace(routing.fault_site(lab, faulted, keys), host=sessions.host)
        t0 = inject(lab, fault, site, observer, before, target)
        if reconnects is not None:
            reconnects.start(faulted, t0)
        if legs is not None:
            legs.start(t0)
        sent_at = None
        if spec.sessions.activity == "in-flight":
            target.send_in_flight(faulted)
            sent_at = time.time()
        progress(f"{spec.name}: {fault.describe()} on {len(faulted)} of {count} sessions;"
                 f" watching up to {format_seconds(spec.deadline_s)} s")
        observed_for = observe(observer, planned, t0, [watched[s.id] for s in faulted], on_observe,
                               legs=legs,
                               also=None if expiry is None else lambda: expiry.poll(now=False))
        again = {} if reconnects is None else reconnects.results(until=t0 + spec.deadline_s)
        observed_for = max(observed_for, max((a[0] + a[1] for a in again.values()), default=0.0))
        if talking is not None:
            talking.stop()
        checks = dict(zip((s.id for s in survivors),
                          sessions.client.run(_alive_all(target, survivors), timeout=60), strict=True))
        observer.sample()  # a survivor dropped during the checks still counts
        errors = target.server_errors()

    facts = []
    for s in sessions:
        w = watched[s.id]
        info = before.get(w.key)
        sent = next((e.t for e in w.events if e.what == "data-sent"), None)
        if sent is None and sent_at is not None:
            sent = sent_at - t0
        check = checks.get(s.id)
        facts.append(SessionFacts(
            id=s.id, faulted=s.id in faulted_ids, opened_s=s.opened_at - t0,
            last_activity_s=last_activity(info, sampled_at, t0), activity=spec.sessions.activity,
            data_sent_s=sent or 0.0, rto_s=info.rto_s if info else None, pid=s.pid,
            events=tuple(w.events), server_error=server_error(errors, s.pid, w.key, t0),
            alive_check=None if check is None else (observed_for, check[0], check[1]),
            client=f"{s.flow.client_addr}:{s.flow.client_port}", server=f"{w.key[0]}:{w.key[1]}",
            server_peer=f"{w.key[2]}:{w.key[3]}", opened_detail=str(s.flow),
            upstream=None if legs is None else legs.facts(s.id), reconnect=again.get(s.id)))
    fault_text = fault.describe() + (f" ({spec.fault.direction})" if spec.fault.direction else "")
    extra = {**routing.describe(), **middlebox_extra(planned)}
    return judge(planned, lab, facts, kernel=kernel, observer=observer, observed_for=observed_for,
                 activity=spec.sessions.activity, fault_text=fault_text, lab_extra=extra)

