"""One load scenario: the target under Locust's users, a packet fault on a fraction of them.

Flow: lab and target up; the resource sampler starts; Locust starts in the client namespace
and spawns ``load.users`` users, each holding one session; once the server holds that many
established sockets from the client (one table dump per poll), and ``load.hold`` later, the
faulted sessions are chosen with the run's seeded RNG *from the server's table* (the harness
never holds the sessions itself) and the packet fault loads them into one nftables set; the
observer follows every session with one dump per sample; then the users check their own
sessions (SIGUSR1), the fault is reverted, Locust stops and writes its statistics.

results.json stays a reasonable size at 10,000 sessions: the ``sessions`` list holds every
faulted session (with its events) and every survivor that was killed; the untouched
survivors are counted in ``summary`` and ``load`` only.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from harness.core.assess import SessionFacts
from harness.core.prediction import format_seconds
from harness.core.records import LoadRecord, ScenarioRecord
from harness.errors import LabError
from harness.faults.base import Flow
from harness.faults.site import Site
from harness.lab import naming
from harness.load.locust import USERS, LocustRun
from harness.load.resources import ResourceSampler
from harness.observe.conntrack import Tuple, reverse_map
from harness.observe.sockdiag import Key, SockInfo, TableReader
from harness.observe.watch import Observer, Watched
from harness.run import phases
from harness.run.legs import watch_upstreams
from harness.run.phases import Progress
from harness.scenario import LoadedScenario

QUIET_SETTLE_S = 0.5        # a request in flight when the users are told to go quiet ends
CHECK_WAIT_S = 15.0          # the users' check takes at most CONNCHAOS_LOAD_CHECK_TIMEOUT (5 s)
RESOURCE_INTERVAL_S = 1.0


def _sessions_of(table: dict[Key, SockInfo], client_addr: str) -> list[Key]:
    return sorted(k for k, i in table.items() if i.state == "ESTABLISHED" and k[2] == client_addr)


def _client_views(planned: phases.Planned, keys: list[Key]) -> dict[Key, Flow]:
    """Each server-side socket's flow as its client sees it: the same addresses, or behind
    the middlebox's NAT, the original direction of the router's conntrack entry."""
    if not planned.nat:
        return {k: Flow(k[2], k[3], k[0], k[1]) for k in keys}
    assert planned.conntrack is not None
    back = reverse_map(planned.conntrack)
    views = {}
    for k in keys:
        orig = back.get(k)
        if orig is None:
            raise LabError("mapping sessions through the middlebox's NAT",
                           f"no conntrack entry in {planned.conntrack.namespace} for {k[2]}:{k[3]}")
        views[k] = Flow(orig.src, orig.sport, orig.dst, orig.dport)
    return views


def _wait_for_users(locust: LocustRun, table: TableReader, port: int, client_addr: str,
                    users: int, timeout_s: float, progress: Progress) -> list[dict[str, Any]]:
    """Wait until every user has opened its session or failed to (the users' events files:
    cheap to read, where a table dump of thousands of sockets would load the machine while
    it spawns), then until the server's table holds the opened ones (one dump per try).

    Sessions that could not be opened are a fact of the load (an overloaded server refuses
    handshakes), reported and left out; none opened at all is a LabError. Returns the
    ``open-failed`` events."""
    deadline = time.monotonic() + timeout_s
    settled: float | None = None
    shown = -1
    while True:
        locust.check_running("spawning the load")
        events = locust.events()
        opened = sum(1 for e in events if e.get("what") == "opened")
        failed = [e for e in events if e.get("what") == "open-failed"]
        held = opened
        if opened + len(failed) >= users:
            held = table.columns(port).established_to(client_addr)
            settled = settled or time.monotonic()
            if held >= opened or time.monotonic() - settled > 5:
                if held == 0:
                    raise LabError("spawning the load", f"no session could be opened; first failure:"
                                                        f" {failed[0].get('detail') if failed else '?'}")
                return failed
        if time.monotonic() > deadline:
            raise LabError("spawning the load", f"the server holds {held} of {users} sessions"
                                                f" after {timeout_s:.0f} s")
        if held // 1000 != shown // 1000:
            progress(f"  {held} of {users} sessions open" + (f", {len(failed)} failed" if failed else ""))
            shown = held
        time.sleep(0.5)


def _wait_for_checks(locust: LocustRun, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The users' own check of each session, by client address, once all of ``wanted`` came."""
    locust.ask_check()
    deadline = time.monotonic() + CHECK_WAIT_S
    while True:
        checks = {e["client"]: e for e in locust.events() if e.get("what") == "check"}
        if wanted <= checks.keys() or time.monotonic() > deadline:
            return checks
        time.sleep(0.2)


def _usage_self() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "peak_rss_mib": round(ru.ru_maxrss / 1024, 1)}


def locust_env(spec: Any, target: Any, server_addr: str, folder: str = "") -> dict[str, str]:
    """What ``harness/load/users.py`` reads: where the target is, the activity, and what the
    target gives its clients (an ssh account's key: ``load_env``)."""
    every = spec.load.every_s
    extra = target.load_env(folder) if hasattr(target, "load_env") else {}
    return {"CONNCHAOS_LOAD_HOST": server_addr, "CONNCHAOS_LOAD_PORT": str(target.port),
            "CONNCHAOS_LOAD_EVERY": "" if every is None else repr(every),
            "CONNCHAOS_LOAD_PG_USER": "connchaos", **extra}


def run_load(ls: LoadedScenario, run_id: str, progress: Progress = lambda _: None,
             report_folder: str | None = None, backend: str = "local", **_: Any) -> ScenarioRecord:
    """Run one scenario with a ``load:`` section and return its record."""
    planned = phases.Planned.of(ls, run_id)
    spec, target, fault = planned.spec, planned.target, planned.fault
    load = spec.load
    assert load is not None
    service = spec.target.session_target.service   # a tier's users: its upstream's, at its port
    if service not in USERS:
        raise LabError("starting the load", f"no Locust user for service {service}")
    if fault.layer != "packet":  # the schema admits only packet faults with load:
        raise LabError("applying the fault", f"{spec.fault.type} is not a packet fault")
    spawn_s = load.users / load.spawn_rate
    with phases.new_lab(backend, run_id) as lab:
        kernel, table = phases.bring_up(lab, planned)
        # the clients as the server sees them: their own address, or the router's behind NAT
        seen_as = naming.ROUTER_SERVER_ADDR if planned.nat else lab.client_addr
        sampler = ResourceSampler(lab.reach, target.port, seen_as, RESOURCE_INTERVAL_S)
        sampler.start()
        lab.on_close("resource sampler", sampler.stop)
        folder = os.path.join(lab.tmpdir, "locust")
        os.makedirs(folder)
        locust = LocustRun(lab=lab, folder=folder, user_class=USERS[service],
                           env=locust_env(spec, target, lab.server_addr, folder), users=load.users,
                           spawn_rate=float(load.spawn_rate), workers=load.workers,
                           run_time_s=spawn_s + load.hold + spec.deadline_s + 300)
        locust.start()
        lab.on_close("locust", lambda: locust.stop(settle=False))
        progress(f"{spec.name}: {service} up in {lab.server_ns}; Locust"
                 f" ({'local' if not load.workers else f'master + {load.workers} workers'}) spawning"
                 f" {load.users} users at {load.spawn_rate:g}/s in {lab.client_ns}")
        open_failed = _wait_for_users(locust, table, target.port, seen_as, load.users,
                                      max(120.0, 3 * spawn_s) + 5 * load.workers, progress)
        progress(f"{spec.name}: {load.users - len(open_failed)} sessions held"
                 + (f" ({len(open_failed)} could not be opened)" if open_failed else "")
                 + f"; holding {format_seconds(load.hold)} s")
        time.sleep(load.hold)

        before = table.dump(target.port)
        sampled_at = time.time()
        keys = _sessions_of(before, seen_as)
        faulted_keys = set(planned.chooser.sample(keys, spec.fault.pick_count(len(keys))))
        views = _client_views(planned, keys)
        if getattr(fault, "silences_sessions", False):
            # the faulted sessions fall idle (their users stop); the others keep talking
            locust.ask_quiet(f"{views[k].client_addr}:{views[k].client_port}" for k in sorted(faulted_keys))
            time.sleep(QUIET_SETTLE_S)
            before = table.dump(target.port)
            sampled_at = time.time()
        pids = lab.reach.session_pids(before, keys) if target.needs_process else {}
        if target.needs_process and len(pids) < len(keys):
            raise LabError("finding the server's process of each session",
                           f"{len(keys) - len(pids)} sessions have no process holding their socket")
        watched = [Watched(i, key, pids.get(key)) for i, key in enumerate(keys)]
        observer = Observer(table, target.port, watched)
        lab.on_close("observer", observer.close)
        legs = watch_upstreams(lab, target, table, {w.id: w.key for w in watched})
        flows = [views[k] for k in sorted(faulted_keys)]
        expiry = None
        if planned.conntrack is not None and planned.middlebox is not None:
            expiry = phases.expiry_watch(planned.conntrack, {w.id: _tuple(views[w.key]) for w in watched},
                                         observer, planned.middlebox.idle_timeout_s)
            expiry.every_s = spec.observe.interval
        t0 = phases.inject(lab, fault, Site(lab=lab, flows=flows), observer, before, target)
        if legs is not None:
            legs.start(t0)
        progress(f"{spec.name}: {fault.describe()} on {len(faulted_keys)} of {len(keys)} sessions;"
                 f" watching up to {format_seconds(spec.deadline_s)} s")
        observed_for = phases.observe(observer, planned, t0, [w for w in watched if w.key in faulted_keys],
                                      legs=legs,
                                      also=None if expiry is None else lambda: expiry.poll(now=False))
        survivors = {_client(views[w.key]) for w in watched if w.key not in faulted_keys}
        checks = _wait_for_checks(locust, survivors)
        observer.sample()   # a survivor dropped during the checks still counts
        usage = {"harness": _usage_self(), "locust": locust.usage()}
        fault.revert()      # the faulted clients then meet resets and end at once
        locust.stop()
        sampler.stop()
        events = locust.events()
        stats = locust.stats()
        copied = locust.collect(os.path.join(report_folder, spec.name, "locust")) if report_folder else []
        errors = target.server_errors()

    opened = {e["client"]: float(e["at"]) for e in events if e.get("what") == "opened"}
    broken = {e["client"]: e for e in events if e.get("what") == "broken"}
    facts = []
    for w in watched:
        client = _client(views[w.key])
        info = before.get(w.key)
        is_faulted = w.key in faulted_keys
        in_flight = bool(info and info.unacked)
        alive_check = None
        if not is_faulted:
            check = checks.get(client)
            detail = check.get("detail") if check else "the user never answered"
            alive_check = (observed_for, bool(check and check.get("ok")), str(detail))
        facts.append(SessionFacts(
            id=w.id, faulted=is_faulted, opened_s=opened.get(client, sampled_at) - t0,
            last_activity_s=phases.last_activity(info, sampled_at, t0),
            activity="in-flight" if in_flight else "idle",
            data_sent_s=sampled_at - info.last_data_sent_s - t0 if info and in_flight else 0.0,
            rto_s=info.rto_s if info else None, pid=w.pid, events=tuple(w.events),
            server_error=phases.server_error(errors, w.pid, w.key, t0), alive_check=alive_check,
            client=client, server=f"{w.key[0]}:{w.key[1]}", server_peer=f"{w.key[2]}:{w.key[3]}",
            client_error=broken[client].get("detail") if client in broken else None,
            upstream=None if legs is None else legs.facts(w.id)))
    client_broken = [e for c, e in broken.items() if c in survivors]
    record = LoadRecord(
        users=load.users, workers=load.workers, spawn_rate=load.spawn_rate, held=len(keys),
        faulted=len(faulted_keys), open_failed=len(open_failed),
        open_failed_first=open_failed[0].get("detail") if open_failed else None,
        survivors_checked_ok=sum(1 for c in survivors if checks.get(c, {}).get("ok")),
        survivors_broken_at_client=len(client_broken),
        sessions_listed="faulted sessions and killed survivors; untouched survivors are counted only",
        locust={"stats": stats["requests"], "failures": stats["failures"],
                "files": [os.path.join(spec.name, "locust", f) for f in copied]},
        usage=usage,
        resources={"interval_s": RESOURCE_INTERVAL_S, "series": sampler.relative_to(t0),
                   **({"error": sampler.error} if sampler.error else {})})
    return phases.judge(planned, lab, facts, kernel=kernel, observer=observer, observed_for=observed_for,
                 activity="idle" if load.every_s is None else f"every {format_seconds(load.every_s)} s",
                 lab_extra=phases.middlebox_extra(planned),
                 listed=lambda s: s.faulted or s.survivor_killed, load=record)


def _client(flow: Flow) -> str:
    """A session's client address as its user writes it."""
    return f"{flow.client_addr}:{flow.client_port}"


def _tuple(flow: Flow) -> Tuple:
    return Tuple(flow.client_addr, flow.client_port, flow.server_addr, flow.server_port)
