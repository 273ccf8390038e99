"""One scenario, executed: lab and target up, sessions opened, fault injected, sessions
observed until reclaimed or the deadline, then timeline, prediction and verdict per session.

Sessions reach the target directly (packet layer) or through the lab's proxy (proxy layer):
the faulted ones through one proxy and the others through another, so a proxy fault hits
exactly the chosen sessions. ``Routing`` hides that difference from the rest.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.core.prediction import Prediction, combine, effective, format_seconds, predict, predict_proxy
from harness.core.stats import summarize
from harness.core.timeline import Event, outcome, sort_events
from harness.core.verdict import Expectations, SessionResult, judge
from harness.errors import LabError
from harness.faults import ProxyFault, build
from harness.faults.base import Flow
from harness.lab import naming
from harness.lab.docker import DockerLab
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.lab.toxiproxy import FAULTED, SPARED, LabProxy
from harness.observe.sockdiag import Key, SockInfo, TableReader
from harness.observe.watch import Observer, Watched
from harness.scenario import LoadedScenario
from harness.targets import target_class
from harness.targets.base import Session

# Sessions are opened a few at a time: a burst of thousands would overflow the accept backlog.
OPEN_CONCURRENCY = 32
Progress = Callable[[str], None]
ObserveHook = Callable[[int, int, float, float], None]
"""Called after each observer sample: (reclaimed, faulted, elapsed_s, deadline_s)."""
EventHook = Callable[[int, float, str, str], None]
"""Called for each observed event: (session id, seconds after the fault, what, detail)."""


Lab = LocalLab | DockerLab


def new_lab(backend: str, run_id: str) -> Lab:
    """A lab of ``backend`` (``local`` or ``docker``), to use as a context manager."""
    return DockerLab(run_id=run_id) if backend == "docker" else LocalLab(run_id=run_id)


def make_target(loaded: LoadedScenario) -> Any:
    """The scenario's target, built by its own class from the whole scenario. A service the
    user starts by command runs in the scenario file's folder (``workdir``)."""
    target = target_class(loaded.scenario.target.service).from_scenario(loaded.scenario)
    if hasattr(target, "workdir"):
        target.workdir = os.path.dirname(os.path.abspath(loaded.path))
    return target


# -- routing: where sessions connect, and how the server sees them ------------------------------

@dataclass
class Routing:
    """Direct: sessions connect to the server, which sees the client's own address."""

    def via(self, index: int) -> tuple[str, int] | None:
        return None

    def server_keys(self, target: Any, sessions: Sequence[Session]) -> dict[int, Key]:
        return {s.id: (s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port)
                for s in sessions}

    def describe(self) -> dict[str, Any]:
        return {}

    def fault_flows(self, sessions: Sequence[Session], keys: dict[int, Key]) -> list[Flow]:
        """The connections a packet fault acts on: the sessions' own."""
        return [s.flow for s in sessions]


@dataclass
class ProxyRouting(Routing):
    """Through the lab's proxy: faulted sessions via one proxy, the others via another."""

    proxy: LabProxy = field(default=None)  # type: ignore[assignment]
    faulted: set[int] = field(default_factory=set)
    listen: dict[str, tuple[str, int]] = field(default_factory=dict)

    def open(self, upstream: tuple[str, int]) -> None:
        for name in (FAULTED, SPARED):
            self.listen[name] = self.proxy.create(name, upstream)

    def via(self, index: int) -> tuple[str, int] | None:
        return self.listen[FAULTED if index in self.faulted else SPARED]

    def server_keys(self, target: Any, sessions: Sequence[Session]) -> dict[int, Key]:
        """The server's peer for each session is the proxy's upstream-side socket: the
        built-in proxy lists it; with a real Toxiproxy the target's own view tells."""
        by_client: dict[str, str] = {}
        for name in (FAULTED, SPARED):
            for conn in self.proxy.connections(name) or []:
                by_client[conn["client"]] = conn["upstream_local"]
        keys = {}
        for s in sessions:
            server = (target.server_addr_of(s), target.port)
            peer = by_client.get(f"{s.flow.client_addr}:{s.flow.client_port}")
            if peer is not None:
                addr, _, port = peer.rpartition(":")
                keys[s.id] = (*server, addr, int(port))
            else:
                seen = target.server_peer(s)
                if seen is None:
                    raise LabError("mapping sessions through the proxy",
                                   f"cannot tell which server socket serves session {s.id}")
                keys[s.id] = (*server, *seen)
        return keys

    def describe(self) -> dict[str, Any]:
        return {"proxy_server": self.proxy.server,
                "proxies": {n: f"{h}:{p}" for n, (h, p) in self.listen.items()}}


@dataclass
class ForwarderRouting(ProxyRouting):
    """The docker backend without root: the harness cannot open sockets in the client's
    namespace, so sessions go from here to a forwarder there (the built-in proxy, no toxics),
    whose upstream-side sockets are the clients the server sees; packet faults act on those
    upstream legs, in the client's or router's container."""

    def fault_flows(self, sessions: Sequence[Session], keys: dict[int, Key]) -> list[Flow]:
        return [Flow(keys[s.id][2], keys[s.id][3], keys[s.id][0], keys[s.id][1]) for s in sessions]

    def describe(self) -> dict[str, Any]:
        return {"forwarders": {n: f"{h}:{p}" for n, (h, p) in self.listen.items()}}


# -- sessions ---------------------------------------------------------------------------------

class OpenSessions(list[Session]):
    """The sessions of a lab, with the client-namespace loop that drives them."""

    def __init__(self, client: LoopInNamespace, sessions: Sequence[Session]) -> None:
        super().__init__(sessions)
        self.client = client


async def _open_all(target: Any, lab: Lab, count: int, routing: Routing) -> list[Session]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(i: int) -> Session:
        async with gate:
            s: Session = await target.open_session(lab, i, via=routing.via(i))
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


def open_sessions(lab: Lab, target: Any, count: int, routing: Routing) -> OpenSessions:
    """Open ``count`` sessions from the client namespace; closing them is registered with the lab."""
    client = lab.session_loop()
    lab.on_close("client event loop", client.close)
    sessions = OpenSessions(client, client.run(_open_all(target, lab, count, routing)))
    lab.on_close("sessions", lambda: client.run(_close_all(target, sessions), timeout=30))
    return sessions


def setup_routing(lab: Lab, target: Any, layer: str, faulted: set[int],
                  proxy_command: Sequence[str] | None) -> Routing:
    if layer != "proxy" and not lab.rootless:
        return Routing()
    if layer != "proxy":
        proxy = LabProxy(lab, beside="cli")
        proxy.start()
        routing: ProxyRouting = ForwarderRouting(proxy=proxy, faulted=faulted)
        routing.open((lab.server_addr, target.port))
        return routing
    proxy = LabProxy(lab, command=proxy_command)
    proxy.start()
    routing = ProxyRouting(proxy=proxy, faulted=faulted)
    routing.open((lab.server_addr, target.port))
    return routing


def _find_session_processes(lab: Lab, target: Any, sessions: Sequence[Session],
                            keys: dict[int, Key], table: TableReader) -> None:
    """For targets that fork a process per connection (sshd), the process is found from the
    server's side: the oldest process holding the session's server socket."""
    missing = [s for s in sessions if s.pid is None]
    if not missing:
        return
    found = lab.session_pids(table.dump(target.port), [keys[s.id] for s in missing])
    for s in missing:
        s.pid = found.get(keys[s.id])
        if s.pid is None:
            raise LabError("finding the server's process of each session",
                           f"no process in {lab.server_ns} holds the socket of session {s.id}")


def _last_activity(info: SockInfo | None, sampled_at: float, t0: float) -> float:
    """When the server last heard from the client (the keepalive timer's reference)."""
    if info is None:
        return 0.0
    return sampled_at - min(info.last_ack_recv_s, info.last_data_recv_s) - t0


# -- one scenario -----------------------------------------------------------------------------

def run_one(ls: LoadedScenario, run_id: str, progress: Progress = lambda _: None,
            proxy_command: Sequence[str] | None = None, on_observe: ObserveHook | None = None,
            on_event: EventHook | None = None, backend: str = "local") -> dict[str, Any]:
    """Run one scenario in a fresh lab and return its results.json entry.

    ``on_observe`` and ``on_event`` follow the observation as it happens (progress views)."""
    spec = ls.scenario
    target = make_target(ls)
    fault = build(spec.fault)
    count = spec.sessions.count
    started = time.monotonic()
    chooser = random.Random(f"{run_id}/{spec.name}")
    faulted_ids = set(chooser.sample(range(count), spec.fault.pick_count(count)))

    with new_lab(backend, run_id) as lab:
        kernel = lab.kernel_defaults()
        target.start(lab)
        routing = setup_routing(lab, target, spec.fault.layer or "packet", faulted_ids, proxy_command)
        progress(f"{spec.name}: {spec.target.service} up in {lab.server_ns}"
                 + (f"; proxy ({routing.describe()['proxy_server']}) in {lab.router_ns}"
                    if type(routing) is ProxyRouting else "")
                 + ("; sessions through a forwarder in the client's container (no root)"
                    if isinstance(routing, ForwarderRouting) else ""))
        sessions = open_sessions(lab, target, count, routing)
        client = sessions.client
        keys = routing.server_keys(target, sessions)
        table = lab.socket_table()
        lab.on_close("socket table", table.close)
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

        before = observer.snapshot()
        sampled_at = time.time()
        missing = [s.id for s in sessions if keys[s.id] not in before]
        if missing:
            raise LabError("before the fault", f"the server holds no socket for sessions {missing}")
        if isinstance(fault, ProxyFault):
            assert isinstance(routing, ProxyRouting)
            fault.apply(routing.proxy, FAULTED)
        else:
            fault.apply(lab, routing.fault_flows(faulted, keys))
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

        def sampled() -> None:
            if on_observe is not None:
                on_observe(sum(1 for w in faulted_watch if w.released()), len(faulted_watch),
                           time.time() - t0, spec.deadline_s)
        observer.run(interval_s=spec.observe.interval, until=t0 + spec.deadline_s,
                     done=lambda: all(w.released() for w in faulted_watch), on_sample=sampled)
        observed_for = time.time() - t0
        checks = dict(zip((s.id for s in survivors),
                          client.run(_alive_all(target, survivors), timeout=60)))
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
        err = errors.get(s.pid) if s.pid is not None else None
        err = err or errors.get((w.key[2], w.key[3]))
        if err is not None:
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
            app, first_send = target.heartbeat(last_activity_s=last, opened_s=s.opened_at - t0)
            if isinstance(fault, ProxyFault):
                # A stalled proxy drops the service's heartbeats too: they still decide.
                effect, delay = fault.effect(spec.sessions.activity)
                proxied = predict_proxy(effect, what=fault.describe(), delay_s=delay)
                pred = combine(proxied, app, app_first_send_s=first_send)
            else:
                sent = next((e.t for e in events if e.what == "data-sent"), None)
                if sent is None and sent_at is not None:
                    sent = sent_at - t0
                info = before.get(w.key)
                rto = info.rto_s if info else None
                tcp = predict(eff, activity=spec.sessions.activity, peer=fault.peer,
                              last_activity_s=last, data_sent_s=sent or 0.0, rto_s=rto)
                blinded = None if first_send is None else predict(
                    eff, activity="in-flight", peer=fault.peer, data_sent_s=first_send, rto_s=rto)
                pred = combine(tcp, app, app_first_send_s=first_send, tcp_in_flight=blinded)
            predictions.append(pred)
        results.append(SessionResult(id=s.id, faulted=is_faulted, reclaimed=out.reclaimed,
                                     reclaim_s=out.reclaim_s,
                                     predicted_s=pred.reclaim_s if pred else None,
                                     mechanism=out.mechanism, alive_at_end=alive))
        entries.append(_session_entry(s, w.key, out, pred, alive, is_faulted, events))

    headline = _headline(predictions)
    fault_text = fault.describe() + (f" ({spec.fault.direction})" if spec.fault.direction else "")
    return {
        **judged_entry(ls, results, headline, lab=lab, fault=fault, fault_text=fault_text,
                       target=target, activity=spec.sessions.activity, kernel=kernel,
                       observer=observer, observed_for=observed_for, started=started,
                       lab_extra=routing.describe()),
        "sessions": entries,
        "summary": summarize(results),
    }


def judged_entry(ls: LoadedScenario, results: Sequence[SessionResult], headline: Prediction | None, *,
                 lab: Any, fault: Any, fault_text: str, target: Any, activity: str, kernel: Any,
                 observer: Observer, observed_for: float, started: float,
                 lab_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict on ``results`` and the head of the scenario's results.json entry (all but
    its sessions and summary), shared by plain and load runs."""
    spec = ls.scenario
    exp = spec.expect
    verdict = judge(Expectations(reclaimed_within=exp.reclaimed_within,
                                 still_held_after=exp.still_held_after,
                                 survivors_untouched=exp.survivors_untouched,
                                 mechanism=exp.mechanism),
                    list(results), deadline_s=spec.deadline_s, prediction=headline)
    return {
        "name": spec.name, "file": ls.path, "about": spec.about.strip(),
        "verdict": verdict.verdict, "reason": verdict.reason,
        "backend": lab.backend, "layer": fault.layer, "fault": spec.fault.type,
        "fault_detail": fault_text,
        "target": {"service": spec.target.service, "settings": target.describe_settings()},
        "activity": activity,
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
        "lab": {**{k: v for k, v in lab.describe().items() if k != "tmpdir"}, **(lab_extra or {})},
        "observer": {"interval_s": spec.observe.interval, "samples": observer.samples,
                     "mean_sample_ms": round(1000 * observer.sample_cost_s / max(1, observer.samples), 3)},
        "duration_s": round(time.monotonic() - started, 3),
    }


def _session_entry(s: Session, key: Key, out: Any, pred: Prediction | None, alive: bool | None,
                   is_faulted: bool, events: Sequence[Event]) -> dict[str, Any]:
    return {
        "id": s.id, "faulted": is_faulted,
        "client": f"{s.flow.client_addr}:{s.flow.client_port}",
        "server": f"{key[0]}:{key[1]}", "server_peer": f"{key[2]}:{key[3]}", "server_pid": s.pid,
        "reclaimed": out.reclaimed,
        "reclaim_s": None if out.reclaim_s is None else round(out.reclaim_s, 3),
        "predicted_s": None if pred is None or pred.reclaim_s is None else round(pred.reclaim_s, 3),
        "mechanism": out.mechanism,
        "predicted_mechanism": pred.mechanism if pred else None,
        "alive_at_end": alive,
        "events": [{"t": e.t, "what": e.what, **({"detail": e.detail} if e.detail else {})}
                   for e in events],
    }


def _headline(predictions: Sequence[Prediction]) -> Prediction | None:
    """The scenario's prediction: the latest of its faulted sessions' (never = latest)."""
    if not predictions:
        return None
    return max(predictions, key=lambda p: float("inf") if p.reclaim_s is None else p.reclaim_s)


def hold_open(ls: LoadedScenario, *, inject: bool, show: Callable[[str], None],
              run_id: str, wait: Callable[[], None] | None = None,
              proxy_command: Sequence[str] | None = None, backend: str = "local") -> int:
    """``connchaos up``: build the lab, start the target, open the sessions (and optionally
    inject the fault), then hold everything until Ctrl-C or SIGTERM, and tear it down."""
    spec = ls.scenario
    target = make_target(ls)
    count = spec.sessions.count
    faulted_ids = set(range(spec.fault.pick_count(count)))
    with new_lab(backend, run_id) as lab:
        target.start(lab)
        routing = setup_routing(lab, target, spec.fault.layer or "packet", faulted_ids, proxy_command)
        sessions = open_sessions(lab, target, count, routing)
        d = lab.describe()
        show(f"lab {lab.lab_id} is up ({lab.backend}): {spec.target.service} at"
             f" {d['server_addr']}:{target.port} in {d['server_ns']}; clients in {d['client_ns']}"
             f" ({d['client_addr']}); router {d['router_ns']}")
        if "containers" in d:
            show(f"containers: {d['containers']}; networks: {d['networks']}")
        if type(routing) is ProxyRouting:
            show(f"proxies in {lab.router_ns}: " + ", ".join(
                f"{n} {h}:{p}" for n, (h, p) in routing.listen.items())
                + f"; API: ip netns exec {lab.router_ns} curl -s 127.0.0.1:8474/proxies")
        show(f"{len(sessions)} sessions held open: " + ", ".join(
            f"#{s.id} {s.flow.client_addr}:{s.flow.client_port} (server pid {s.pid})" for s in sessions[:10])
            + (" ..." if len(sessions) > 10 else ""))
        if lab.rootless:
            show(f"client shell:  docker exec -it {d['client_ns']} bash")
            show(f"server table:  docker exec {d['server_ns']} ss -tnoi sport = :{target.port}")
        else:
            show(f"client shell:  ip netns exec {d['client_ns']} bash")
            show(f"server table:  ip netns exec {d['server_ns']} ss -tnoi sport = :{target.port}")
        if inject:
            time.sleep(spec.sessions.hold)
            fault = build(spec.fault)
            if isinstance(fault, ProxyFault):
                assert isinstance(routing, ProxyRouting)
                fault.apply(routing.proxy, FAULTED)
                where = f"proxy {FAULTED}"
            else:
                chosen = [s for s in sessions if s.id in faulted_ids]
                fault.apply(lab, routing.fault_flows(chosen, routing.server_keys(target, chosen)))
                ns = lab.router_ns if fault.where == "router" else lab.client_ns
                enter = "docker exec" if lab.rootless else "ip netns exec"
                where = f"rules: {enter} {ns} nft list table inet {naming.NFT_TABLE}"
            lab.on_close("fault", fault.revert)
            show(f"fault {spec.fault.type} ({fault.describe()}) applied to sessions"
                 f" {sorted(faulted_ids)[:10]}{' ...' if len(faulted_ids) > 10 else ''}; {where}")
        show("holding; Ctrl-C tears the lab down")
        try:
            (wait or _forever)()
        except KeyboardInterrupt:
            show("tearing down")
    return 0


def _forever() -> None:
    while True:
        time.sleep(3600)
