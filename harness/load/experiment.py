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
import random
import resource
import time
from collections.abc import Callable
from typing import Any

from harness.core.prediction import Prediction, combine, effective, format_seconds, predict
from harness.core.stats import summarize
from harness.core.timeline import Event, outcome, sort_events
from harness.core.verdict import SessionResult
from harness.errors import LabError
from harness.experiment import judged_entry, new_lab
from harness.faults import build
from harness.faults.base import Flow, PacketFault
from harness.lab.kernel import kernel_defaults
from harness.load.locust import USERS, LocustRun
from harness.load.resources import ResourceSampler
from harness.observe.owners import session_pids
from harness.observe.sockdiag import Key, SocketTable, SockInfo
from harness.observe.watch import Observer, Watched
from harness.scenario import LoadedScenario

Progress = Callable[[str], None]
CHECK_WAIT_S = 15.0          # the users' check takes at most CONNCHAOS_LOAD_CHECK_TIMEOUT (5 s)
RESOURCE_INTERVAL_S = 1.0


def _sessions_of(table: dict[Key, SockInfo], client_addr: str) -> list[Key]:
    return sorted(k for k, i in table.items() if i.state == "ESTABLISHED" and k[2] == client_addr)


def _wait_for_users(locust: LocustRun, table: SocketTable, port: int, client_addr: str,
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
             report_folder: str | None = None, backend: str = "local") -> dict[str, Any]:
    """Run one scenario with a ``load:`` section and return its results.json entry."""
    from harness.experiment import make_target

    spec = ls.scenario
    load = spec.load
    assert load is not None
    service = spec.target.service
    if service not in USERS:
        raise LabError("starting the load", f"no Locust user for service {service}")
    target = make_target(ls)
    fault = build(spec.fault)
    if not isinstance(fault, PacketFault):  # the schema admits only packet faults with load:
        raise LabError("applying the fault", f"{spec.fault.type} is not a packet fault")
    started = time.monotonic()
    spawn_s = load.users / load.spawn_rate
    with new_lab(backend, run_id) as lab:
        kernel = kernel_defaults(lab.server_ns)
        target.start(lab)
        table = SocketTable(lab.server_ns)
        lab.on_close("socket table", table.close)
        sampler = ResourceSampler(lab.server_ns, target.port, lab.client_addr, RESOURCE_INTERVAL_S)
        sampler.start()
        lab.on_close("resource sampler", sampler.stop)
        folder = os.path.join(lab.tmpdir, "locust")
        os.makedirs(folder)
        locust = LocustRun(client_ns=lab.client_ns, folder=folder, user_class=USERS[service],
                           env=locust_env(spec, target, lab.server_addr, folder), users=load.users,
                           spawn_rate=float(load.spawn_rate), workers=load.workers,
                           run_time_s=spawn_s + load.hold + spec.deadline_s + 300)
        locust.start()
        lab.on_close("locust", lambda: locust.stop(settle=False))
        progress(f"{spec.name}: {service} up in {lab.server_ns}; Locust"
                 f" ({'local' if not load.workers else f'master + {load.workers} workers'}) spawning"
                 f" {load.users} users at {load.spawn_rate:g}/s in {lab.client_ns}")
        open_failed = _wait_for_users(locust, table, target.port, lab.client_addr, load.users,
                                      max(120.0, 3 * spawn_s) + 5 * load.workers, progress)
        progress(f"{spec.name}: {load.users - len(open_failed)} sessions held"
                 + (f" ({len(open_failed)} could not be opened)" if open_failed else "")
                 + f"; holding {format_seconds(load.hold)} s")
        time.sleep(load.hold)

        before = table.dump(target.port)
        sampled_at = time.time()
        keys = _sessions_of(before, lab.client_addr)
        chooser = random.Random(f"{run_id}/{spec.name}")
        faulted_keys = set(chooser.sample(keys, spec.fault.pick_count(len(keys))))
        pids = session_pids(lab.server_ns, before, keys) if target.needs_process else {}
        if target.needs_process and len(pids) < len(keys):
            raise LabError("finding the server's process of each session",
                           f"{len(keys) - len(pids)} sessions have no process holding their socket")
        watched = [Watched(i, key, pids.get(key)) for i, key in enumerate(keys)]
        observer = Observer(table, target.port, watched)
        lab.on_close("observer", observer.close)
        fault.apply(lab, [Flow(k[2], k[3], k[0], k[1]) for k in sorted(faulted_keys)])
        lab.on_close("fault", fault.revert)
        t0 = time.time()
        observer.start(t0, before)
        progress(f"{spec.name}: {fault.describe()} on {len(faulted_keys)} of {len(keys)} sessions;"
                 f" watching up to {format_seconds(spec.deadline_s)} s")
        faulted_watch = [w for w in watched if w.key in faulted_keys]
        observer.run(interval_s=spec.observe.interval, until=t0 + spec.deadline_s,
                     done=lambda: all(w.released() for w in faulted_watch))
        observed_for = time.time() - t0
        survivors = {f"{w.key[2]}:{w.key[3]}" for w in watched if w.key not in faulted_keys}
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

    eff = effective(target.socket_settings(), kernel)
    opened = {e["client"]: float(e["at"]) for e in events if e.get("what") == "opened"}
    broken = {e["client"]: e for e in events if e.get("what") == "broken"}
    entries: list[dict[str, Any]] = []
    results: list[SessionResult] = []
    predictions: list[Prediction] = []
    for w in watched:
        client = f"{w.key[2]}:{w.key[3]}"
        info = before.get(w.key)
        last = 0.0 if info is None else sampled_at - min(info.last_ack_recv_s, info.last_data_recv_s) - t0
        evs = list(w.events)
        opened_s = opened.get(client, sampled_at) - t0
        evs.append(Event(round(opened_s, 4), "opened", client))
        evs.append(Event(round(last, 4), "last-activity"))
        is_faulted = w.key in faulted_keys
        if is_faulted:
            evs.append(Event(0.0, "fault", spec.fault.type))
        err = (errors.get(w.pid) if w.pid is not None else None) or errors.get((w.key[2], w.key[3]))
        if err is not None:
            evs.append(Event(round(err.at - t0, 4), "server-error", err.kind))
        alive = None
        if not is_faulted:
            check = checks.get(client)
            alive = bool(check and check.get("ok"))
            detail = "ok" if alive else f"failed: {check.get('detail') if check else 'the user never answered'}"
            evs.append(Event(round(observed_for, 4), "alive-check", detail))
        evs = sort_events(evs)
        out = outcome(evs, needs_process=target.needs_process, user_timeout_set=eff.user_timeout_s > 0)
        pred = None
        if is_faulted:
            in_flight = bool(info and info.unacked)
            sent = sampled_at - info.last_data_sent_s - t0 if info and in_flight else 0.0
            app, first_send = target.heartbeat(last_activity_s=last, opened_s=opened_s)
            tcp = predict(eff, activity="in-flight" if in_flight else "idle", peer=fault.peer,
                          last_activity_s=last, data_sent_s=sent, rto_s=info.rto_s if info else None)
            blinded = None if first_send is None else predict(
                eff, activity="in-flight", peer=fault.peer, data_sent_s=first_send,
                rto_s=info.rto_s if info else None)
            pred = combine(tcp, app, app_first_send_s=first_send, tcp_in_flight=blinded)
            predictions.append(pred)
        result = SessionResult(id=w.id, faulted=is_faulted, reclaimed=out.reclaimed,
                               reclaim_s=out.reclaim_s, predicted_s=pred.reclaim_s if pred else None,
                               mechanism=out.mechanism, alive_at_end=alive)
        results.append(result)
        if is_faulted or result.survivor_killed:
            entries.append(_entry(w, out, pred, alive, is_faulted, evs, broken.get(client)))

    headline = max(predictions, key=lambda p: float("inf") if p.reclaim_s is None else p.reclaim_s,
                   default=None)
    client_broken = [e for c, e in broken.items() if c in survivors]
    return {
        **judged_entry(ls, results, headline, lab=lab, fault=fault, fault_text=fault.describe(),
                       target=target,
                       activity="idle" if load.every_s is None else f"every {format_seconds(load.every_s)} s",
                       kernel=kernel, observer=observer, observed_for=observed_for, started=started),
        "load": {
            "users": load.users, "workers": load.workers, "spawn_rate": load.spawn_rate,
            "held": len(keys), "faulted": len(faulted_keys), "open_failed": len(open_failed),
            **({"open_failed_first": open_failed[0].get("detail")} if open_failed else {}),
            "survivors_checked_ok": sum(1 for c in survivors if checks.get(c, {}).get("ok")),
            "survivors_broken_at_client": len(client_broken),
            "sessions_listed": "faulted sessions and killed survivors; untouched survivors are counted only",
            "locust": {"stats": stats["requests"], "failures": stats["failures"],
                       "files": [os.path.join(spec.name, "locust", f) for f in copied]},
            "usage": usage,
            "resources": {"interval_s": RESOURCE_INTERVAL_S, "series": sampler.relative_to(t0),
                          **({"error": sampler.error} if sampler.error else {})},
        },
        "sessions": entries,
        "summary": summarize(results),
    }


def _entry(w: Watched, out: Any, pred: Prediction | None, alive: bool | None, is_faulted: bool,
           events: list[Event], broken: dict[str, Any] | None) -> dict[str, Any]:
    entry = {
        "id": w.id, "faulted": is_faulted, "client": f"{w.key[2]}:{w.key[3]}",
        "server": f"{w.key[0]}:{w.key[1]}", "server_pid": w.pid,
        "reclaimed": out.reclaimed,
        "reclaim_s": None if out.reclaim_s is None else round(out.reclaim_s, 3),
        "predicted_s": None if pred is None or pred.reclaim_s is None else round(pred.reclaim_s, 3),
        "mechanism": out.mechanism, "predicted_mechanism": pred.mechanism if pred else None,
        "alive_at_end": alive,
        "events": [{"t": e.t, "what": e.what, **({"detail": e.detail} if e.detail else {})} for e in events],
    }
    if broken is not None:
        entry["client_error"] = broken.get("detail")
    return entry
