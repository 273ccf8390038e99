"""Everything that can be checked before anything starts: the scenario against what this
version supports, the backend each scenario runs on, what this machine must have (exit 3),
and the images the docker scenarios need."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from harness import __version__, machine
from harness.errors import Problem, ScenarioError
from harness.faults import FAULTS
from harness.registry import FAULT_TYPES, SERVICE_TYPES
from harness.scenario import LoadedScenario, load_paths
from harness.targets import available, target_class

BACKENDS = ("local", "docker")
LAYERS = ("packet", "proxy")

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that shows nothing."""


# -- preparing: everything that can be checked before anything starts ------------------------

def support_problems(loaded: LoadedScenario, backend: str | None = None) -> list[Problem]:
    """What this version cannot do with a valid scenario, reported against the file."""
    spec = loaded.scenario
    problems = []
    services = available()
    if spec.target.service not in services:
        problems.append(loaded.problem(("target", "service"),
                        f"service {spec.target.service!r} is not available in connchaos {__version__}"
                        f" (available: {', '.join(services)})"))
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
    problems.extend(_toxic_problems(loaded))
    problems.extend(_session_problems(loaded))
    problems.extend(_stream_problems(loaded))
    problems.extend(_backend_problems(loaded, backend))
    problems.extend(_load_problems(loaded))
    target = target_class(spec.target.service) if spec.target.service in services else None
    if target is not None:
        for name, message in target.check_settings(spec.target.settings):
            problems.append(loaded.problem(("target", "settings", name), message))
    up = spec.target.upstream
    if up is not None and up.service in services:
        for name, message in target_class(up.service).check_settings(up.settings):
            problems.append(loaded.problem(("target", "upstream", "settings", name), message))
    backend_service = SERVICE_TYPES[spec.target.service].backend_service
    if backend_service is not None and spec.target.backend_settings and backend_service in services:
        for name, message in target_class(backend_service).check_settings(spec.target.backend_settings):
            problems.append(loaded.problem(("target", "backend_settings", name), message))
    return problems


def _session_problems(loaded: LoadedScenario) -> list[Problem]:
    """Openers are for services of the user's own; in-flight needs a service connchaos can
    make talk."""
    from harness.targets import openers

    spec = loaded.scenario
    service = spec.target.session_target.service    # a tier's sessions are its upstream's
    problems = []
    if spec.sessions.opener is not None:
        if service != "tcp":
            problems.append(loaded.problem(("sessions", "opener"),
                            f"openers are for service: tcp; {service} opens its own sessions"))
        elif spec.sessions.opener not in openers.known():
            problems.append(loaded.problem(("sessions", "opener"),
                            f"no opener {spec.sessions.opener!r} (known: {', '.join(openers.known())})"))
    if service == "tcp" and spec.sessions.activity == "in-flight":
        problems.append(loaded.problem(("sessions", "activity"),
                        "in-flight needs a service connchaos can make send data; use idle with service: tcp"))
    if service == "mqtt" and spec.sessions.activity == "in-flight":
        problems.append(loaded.problem(("sessions", "activity"),
                        "the mqtt target runs idle sessions only (its keepalive check reads only"
                        " what the broker hears from the client, not what it sends)"))
    if service == "redis" and spec.sessions.activity == "in-flight":
        problems.append(loaded.problem(("sessions", "activity"),
                        "in-flight is not available for redis (its sessions are idle clients); use idle"))
    return problems


def _stream_problems(loaded: LoadedScenario) -> list[Problem]:
    """slow-reader needs a target that can make its server stream to one session."""
    spec = loaded.scenario
    if spec.fault.type != "slow-reader" or spec.target.service not in available():
        return []
    cls = target_class(spec.target.service)
    if SERVICE_TYPES[spec.target.service].tier or not hasattr(cls, "request_stream"):
        able = [n for n in available() if not SERVICE_TYPES[n].tier
                and hasattr(target_class(n), "request_stream")]
        return [loaded.problem(("fault", "type"), f"slow-reader needs a service connchaos can make"
                               f" stream to a session (available: {', '.join(able)});"
                               f" {spec.target.service} cannot")]
    return []


def _backend_problems(loaded: LoadedScenario, backend: str | None) -> list[Problem]:
    """What the chosen backend cannot run: an image on the local backend, a command of the
    user's own on docker (a command runs on this machine; in Docker the image is the server)."""
    spec = loaded.scenario
    chosen = backend or spec.target.backend
    problems = []
    for where, t in ((("target",), spec.target),
                     *([(("target", "upstream"), spec.target.upstream)] if spec.target.upstream else [])):
        if t.image is not None and chosen == "local":
            problems.append(loaded.problem((*where, "image"), "image: runs on the docker backend,"
                                           " not with --backend local"))
        if chosen == "docker" and t.command is not None and t.image is None:
            problems.append(loaded.problem((*where, "command"), "on the docker backend your server"
                                           " runs from an image: add image: (the command then runs in it)"))
    if chosen == "docker" and spec.middlebox is not None and spec.target.backend != "docker":
        # (backend: docker in the file is the schema's to report, at the same line)
        problems.append(loaded.problem(("middlebox",), "the middlebox is the local lab's router"
                                       " namespace (its own conntrack); not with --backend docker"))
    return problems


def backend_for(loaded: LoadedScenario, backend: str | None = None) -> str:
    """``local`` or ``docker`` for this scenario. ``auto`` is docker when the scenario names an
    image, else local when this machine can build a local lab for it, else docker when a
    Docker engine answers, else local (whose check then names what is missing)."""
    spec = loaded.scenario
    chosen = backend or spec.target.backend
    if chosen != "auto":
        return chosen
    own = spec.target.session_target    # a tier runs where its upstream's own server can
    if spec.target.image is not None or own.image is not None:
        return "docker"
    if own.command is not None or spec.middlebox is not None:
        return "local"
    if not machine.missing(machine.needs_for([loaded], "local")):
        return "local"
    from harness.lab.docker import engine_problem
    return "docker" if engine_problem() is None else "local"


def _load_problems(loaded: LoadedScenario) -> list[Problem]:
    """What a load run cannot do with this target (the schema checked the rest)."""
    from harness.load.locust import USERS

    spec = loaded.scenario
    if spec.load is None:
        return []
    own = spec.target.session_target    # a tier's users are its upstream's, through its port
    if own.service not in USERS:
        return [loaded.problem(("target", "service"), f"load runs have Locust users for"
                               f" {', '.join(USERS)}; {own.service} is not in this version")]
    limit = own.settings.get("max_connections")
    if own.service == "postgres" and isinstance(limit, int) and limit <= spec.load.users:
        where = ("target", "upstream") if own is not spec.target else ("target",)
        return [loaded.problem((*where, "settings", "max_connections"),
                               f"must exceed load.users ({spec.load.users}) so every user gets a"
                               f" backend; leave it out and connchaos sets users + 20")]
    return []


def _toxic_problems(loaded: LoadedScenario) -> list[Problem]:
    """Toxiproxy ignores attributes it does not know; a scenario naming one has a typo."""
    import dataclasses

    from harness.proxy.toxics import TOXICS

    fault = loaded.scenario.fault
    kind = FAULT_TYPES[fault.type].toxic if fault.type in FAULT_TYPES else None
    if kind is None:
        return []
    known = [f.metadata["json"] for f in dataclasses.fields(TOXICS[kind])]
    problems = []
    for name, value in fault.attributes.items():
        where = ("fault", "attributes", name)
        if name not in known:
            problems.append(loaded.problem(where, f"the {kind} toxic has no attribute {name!r}"
                                                  f" (it has: {', '.join(known) or 'none'})"))
        elif isinstance(value, float) and not value.is_integer():
            problems.append(loaded.problem(
                where, f"expected a whole number (Toxiproxy's units); got {value}"))
    return problems


def prepare(paths: Iterable[str], backend: str | None = None) -> list[LoadedScenario]:
    """Load and fully validate scenario files; raises ScenarioError (exit 2) listing every problem."""
    loaded = load_paths(paths)
    problems = [p for ls in loaded for p in support_problems(ls, backend)]
    if problems:
        raise ScenarioError(problems)
    return loaded


def require_machine(loaded: Sequence[LoadedScenario], backend: str | None = None) -> None:
    """Raise MachineError (exit 3) naming the first thing this machine lacks for the
    scenarios, each on its backend (harness.machine's list), then whether it can hold their
    sessions (open files, memory: raising the soft open-files limit when the hard one allows)."""
    by_backend: dict[str, list[LoadedScenario]] = {}
    for ls in loaded:
        by_backend.setdefault(backend_for(ls, backend), []).append(ls)
    machine.require({need for chosen, group in by_backend.items()
                     for need in machine.needs_for(group, chosen)})
    machine.require_capacity(capacity_of(ls) for ls in loaded)


def capacity_of(loaded: LoadedScenario) -> machine.Capacity:
    """What the scenario's sessions need of this machine (open files, memory)."""
    spec = loaded.scenario
    needs_process = bool(getattr(target_class(spec.target.service), "needs_process", False))
    return machine.Capacity.of(spec.target.service, spec.sessions.count,
                               needs_process=needs_process, load=spec.load is not None)


def images_needed(loaded: Sequence[LoadedScenario], backend: str | None = None) -> list[str]:
    """The project's images the docker scenarios run (the client's always; a service's own
    unless the scenario names an image; the proxy's at the proxy layer, decided at start)."""
    names = set()
    for ls in loaded:
        if backend_for(ls, backend) != "docker":
            continue
        names.add("client")
        if os.geteuid() != 0:
            names.add("toxiproxy")   # the forwarder and the observer's agent, without root
        # tcp, and a command of the user's own, run from the user's image (_backend_problems)
        target = ls.scenario.target
        for t in (target, *([target.upstream] if target.upstream else [])):
            if t.image is None and t.service != "tcp":
                names.add(t.service)
        backend_service = SERVICE_TYPES[target.service].backend_service
        if backend_service is not None:
            names.add(backend_service)   # a tier's backend runs from our image of it
    return sorted(names)


def ensure_images(loaded: Sequence[LoadedScenario], backend: str | None = None,
                  progress: Progress = quiet) -> None:
    """Build the images the docker scenarios need and are missing (a cache: once built,
    nothing happens); without a registry the base image is built first (see images.py)."""
    names = images_needed(loaded, backend)
    if not names:
        return
    from harness.lab.images import connect, ensure

    client = connect()
    try:
        ensure(client, names, progress)
    finally:
        client.close()
