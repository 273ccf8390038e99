"""The run's results as typed, frozen records: what the runners produce and what every
report, the CLI and the pytest plugin read. ``to_json``/``from_json`` map them to and from
results.json (schema ``connchaos.results/1``, declared here once; the JSON Schema file is
harness/report/results.schema.json).

Fields the schema names are typed; the free-form blocks (a target's settings, the lab's
description, a load run's Locust statistics) stay JSON values. Keys a record does not know
(written by a later version) are kept in ``extra`` and written back unchanged, so reading
and writing a results file loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

SCHEMA = "connchaos.results/1"

Json: TypeAlias = "str | int | float | bool | None | Sequence[Json] | Mapping[str, Json]"
JsonObject: TypeAlias = Mapping[str, Json]
VerdictName = Literal["pass", "fail", "error"]

_R = TypeVar("_R")
_F = TypeVar("_F", bound="_Flat")


def _split(data: Mapping[str, Any], cls: type,
           skip: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data``'s keys that are plain fields of ``cls``, and the rest (``skip``: neither)."""
    names = {f.name for f in fields(cls)} - {"extra", *skip}
    known, extra = {}, {}
    for key, value in data.items():
        if key in names:
            known[key] = value
        elif key not in skip:
            extra[key] = value
    return known, extra


def _maybe(read: Callable[[Mapping[str, Any]], _R], data: Mapping[str, Any] | None) -> _R | None:
    return None if data is None else read(data)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _Flat:
    """A record whose JSON is its fields in order (``extra`` after them)."""

    extra: JsonObject
    _absent_when_none: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Json]:
        plain = {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                 if f.name != "extra"
                 and not (f.name in self._absent_when_none and getattr(self, f.name) is None)}
        return {**plain, **self.extra}

    @classmethod
    def from_json(cls: type[_F], data: Mapping[str, Any]) -> _F:
        known, extra = _split(data, cls)
        make: Callable[..., _F] = cls
        return make(**known, extra=extra)


@dataclass(frozen=True)
class EventRecord:
    """One thing seen about a session, ``t`` seconds after the fault."""

    t: float
    what: str
    detail: str = ""

    def to_json(self) -> dict[str, Json]:
        return {"t": self.t, "what": self.what, **({"detail": self.detail} if self.detail else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        return cls(t=float(data["t"]), what=str(data["what"]), detail=str(data.get("detail") or ""))


@dataclass(frozen=True)
class LegRecord(_Flat):
    """A session's upstream leg (a tier's connection to its backend): what became of it,
    against what the tier's settings predict; times in seconds from the fault."""

    server: str                        # the backend's address, as the backend's socket has it
    peer: str                          # the tier's end of the leg, as the backend sees it
    outcome: Literal["closed", "pooled", "held"]
    closed_s: float | None = None      # when the backend's socket (and process) went
    pooled_s: float | None = None      # when the tier put it back in its pool
    pid: int | None = None             # the backend's process serving it
    predicted_outcome: str | None = None
    predicted_s: float | None = None
    mechanism: str | None = None       # what the prediction says closes or keeps it
    formula: str | None = None
    extra: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRecord:
    """One session: what the server did with it, against what its settings predict."""

    id: int
    faulted: bool
    reclaimed: bool
    reclaim_s: float | None
    predicted_s: float | None
    mechanism: str | None
    events: tuple[EventRecord, ...] = ()
    client: str | None = None
    server: str | None = None
    server_peer: str | None = None
    server_pid: int | None = None
    predicted_mechanism: str | None = None
    alive_at_end: bool | None = None
    client_error: str | None = None
    upstream: LegRecord | None = None   # a tier's session: its upstream leg
    # syn-blackhole: the client's reconnect attempt, from its start: how long, how it ended
    reconnect_s: float | None = None
    reconnect_outcome: str | None = None           # timed-out | connected | failed
    predicted_reconnect_s: float | None = None
    predicted_reconnect_mechanism: str | None = None   # syn-retries | connect-timeout
    extra: JsonObject = field(default_factory=dict)

    @property
    def survivor_killed(self) -> bool:
        """An unfaulted session that the server dropped or that no longer answers."""
        return not self.faulted and (self.reclaimed or self.alive_at_end is False)

    def times(self, what: str) -> list[float]:
        """When each event ``what`` (``probe``, ``retransmit``, ``socket-gone``...) happened,
        in seconds after the fault."""
        return [e.t for e in self.events if e.what == what]

    def to_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"id": self.id, "faulted": self.faulted}
        if self.client is not None:
            out["client"] = self.client
        if self.server is not None:
            out["server"] = self.server
        if self.server_peer is not None:
            out["server_peer"] = self.server_peer
        out.update({"server_pid": self.server_pid, "reclaimed": self.reclaimed,
                    "reclaim_s": _seconds(self.reclaim_s), "predicted_s": _seconds(self.predicted_s),
                    "mechanism": self.mechanism, "predicted_mechanism": self.predicted_mechanism,
                    "alive_at_end": self.alive_at_end,
                    "events": [e.to_json() for e in self.events]})
        if self.client_error is not None:
            out["client_error"] = self.client_error
        if self.upstream is not None:
            out["upstream"] = self.upstream.to_json()
        if self.reconnect_outcome is not None:
            out.update({"reconnect_s": _seconds(self.reconnect_s),
                        "reconnect_outcome": self.reconnect_outcome,
                        "predicted_reconnect_s": _seconds(self.predicted_reconnect_s),
                        "predicted_reconnect_mechanism": self.predicted_reconnect_mechanism})
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionRecord:
        known, extra = _split(data, cls, skip=("upstream",))
        known["events"] = tuple(EventRecord.from_json(e) for e in data.get("events") or ())
        return cls(**known, upstream=_maybe(LegRecord.from_json, data.get("upstream")), extra=extra)


@dataclass(frozen=True)
class PredictionRecord:
    """The scenario's headline prediction: the latest of its faulted sessions'."""

    reclaim_s: float | None
    mechanism: str
    formula: str
    slack_s: float = 0.0
    # packet-loss: reclaim_s is the earliest possible reclaim and this says the rest (kind,
    # loss, p_by_deadline, binomial_range...): a bound or a distribution, not a point
    bound: JsonObject | None = None
    # syn-blackhole: how the faulted clients' reconnect attempts end (outcome, at_s, mechanism, formula)
    reconnect: JsonObject | None = None

    @property
    def is_bound(self) -> bool:
        """The prediction is a bound or distribution (random loss), not a point."""
        return self.bound is not None

    def to_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"reclaim_s": _seconds(self.reclaim_s), "mechanism": self.mechanism,
                                "formula": self.formula, "slack_s": round(self.slack_s, 3)}
        if self.bound is not None:
            out["bound"] = dict(self.bound)
        if self.reconnect is not None:
            out["reconnect"] = dict(self.reconnect)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PredictionRecord:
        return cls(reclaim_s=data.get("reclaim_s"), mechanism=str(data["mechanism"]),
                   formula=str(data["formula"]), slack_s=float(data.get("slack_s") or 0.0),
                   bound=data.get("bound"), reconnect=data.get("reconnect"))


@dataclass(frozen=True)
class SummaryRecord(_Flat):
    """Counts, and reclaim percentiles over the faulted sessions."""

    sessions: int = 0
    faulted: int = 0
    reclaimed: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None
    survivors_killed: int = 0
    extra: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class KernelRecord(_Flat):
    """The lab kernel's TCP defaults the prediction used."""

    tcp_keepalive_time: float
    tcp_keepalive_intvl: float
    tcp_keepalive_probes: int
    tcp_retries2: int
    hz: int | None = None
    extra: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class ObserverRecord(_Flat):
    """How the server's socket table was sampled."""

    interval_s: float
    samples: int
    mean_sample_ms: float
    extra: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class TargetRecord:
    """The service and the settings it ran with (as the target describes them)."""

    service: str
    settings: JsonObject = field(default_factory=dict)

    def to_json(self) -> dict[str, Json]:
        return {"service": self.service, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TargetRecord:
        return cls(service=str(data["service"]), settings=dict(data.get("settings") or {}))


@dataclass(frozen=True, kw_only=True)
class LoadRecord(_Flat):
    """A load run's figures: users, what was held and faulted, Locust's statistics, the
    machine's resources over time."""

    users: int
    workers: int
    spawn_rate: float
    held: int
    faulted: int
    open_failed: int
    open_failed_first: str | None = None
    survivors_checked_ok: int
    survivors_broken_at_client: int
    sessions_listed: str
    locust: JsonObject = field(default_factory=dict)
    usage: JsonObject = field(default_factory=dict)
    resources: JsonObject = field(default_factory=dict)
    extra: JsonObject = field(default_factory=dict)
    _absent_when_none: ClassVar[tuple[str, ...]] = ("open_failed_first",)


@dataclass(frozen=True)
class ScenarioRecord:
    """One scenario's results: its verdict and why, what ran, and every session listed."""

    name: str
    verdict: VerdictName
    reason: str
    backend: str
    layer: str | None
    fault: str
    prediction: PredictionRecord | None
    sessions: tuple[SessionRecord, ...]
    summary: SummaryRecord
    file: str | None = None
    about: str | None = None
    fault_detail: str | None = None
    target: TargetRecord | None = None
    activity: str | None = None
    expect: JsonObject = field(default_factory=dict)
    deadline_s: float | None = None
    observed_s: float | None = None
    kernel: KernelRecord | None = None
    lab: JsonObject = field(default_factory=dict)
    observer: ObserverRecord | None = None
    duration_s: float | None = None
    load: LoadRecord | None = None
    extra: JsonObject = field(default_factory=dict)

    @property
    def faulted(self) -> tuple[SessionRecord, ...]:
        return tuple(s for s in self.sessions if s.faulted)

    @property
    def survivors(self) -> tuple[SessionRecord, ...]:
        return tuple(s for s in self.sessions if not s.faulted)

    @property
    def mechanisms(self) -> list[str]:
        """What reclaimed the faulted sessions, each named once, sorted."""
        return sorted({s.mechanism for s in self.sessions if s.faulted and s.mechanism})

    @property
    def service(self) -> str | None:
        return None if self.target is None else self.target.service

    def with_verdict(self, verdict: VerdictName, reason: str) -> ScenarioRecord:
        return replace(self, verdict=verdict, reason=reason)

    def to_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"name": self.name}
        for key in ("file", "about"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update({"verdict": self.verdict, "reason": self.reason, "backend": self.backend,
                    "layer": self.layer, "fault": self.fault})
        if self.fault_detail is not None:
            out["fault_detail"] = self.fault_detail
        if self.target is not None:
            out["target"] = self.target.to_json()
        if self.activity is not None:
            out["activity"] = self.activity
        if self.target is not None:   # a scenario that ran (an error entry has no expect block)
            out["expect"] = dict(self.expect)
        for key in ("deadline_s", "observed_s"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["prediction"] = None if self.prediction is None else self.prediction.to_json()
        if self.kernel is not None:
            out["kernel"] = self.kernel.to_json()
        if self.lab:
            out["lab"] = dict(self.lab)
        if self.observer is not None:
            out["observer"] = self.observer.to_json()
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        if self.load is not None:
            out["load"] = self.load.to_json()
        out["sessions"] = [s.to_json() for s in self.sessions]
        out["summary"] = self.summary.to_json()
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScenarioRecord:
        nested = ("prediction", "sessions", "summary", "target", "kernel", "observer", "load")
        known, extra = _split(data, cls, skip=nested)
        return cls(
            **known,
            prediction=_maybe(PredictionRecord.from_json, data.get("prediction")),
            sessions=tuple(SessionRecord.from_json(s) for s in data.get("sessions") or ()),
            summary=SummaryRecord.from_json(data.get("summary") or {}),
            target=_maybe(TargetRecord.from_json, data.get("target")),
            kernel=_maybe(KernelRecord.from_json, data.get("kernel")),
            observer=_maybe(ObserverRecord.from_json, data.get("observer")),
            load=_maybe(LoadRecord.from_json, data.get("load")),
            extra=extra)


@dataclass(frozen=True)
class RegressionRecord:
    """One way a scenario got worse than in the baseline (``what``: verdict, p95 or
    survivors_killed), with its one-line ``text``."""

    scenario: str
    what: str
    was: str
    now: str
    text: str = ""

    def to_json(self) -> dict[str, Json]:
        return {"scenario": self.scenario, "what": self.what, "was": self.was, "now": self.now,
                "text": self.text}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegressionRecord:
        return cls(scenario=str(data["scenario"]), what=str(data["what"]), was=str(data["was"]),
                   now=str(data["now"]), text=str(data.get("text") or ""))


@dataclass(frozen=True)
class BaselineRecord:
    """This run against an earlier one (``--baseline``)."""

    file: str
    run_id: str
    p95_tolerance: str
    regressions: tuple[RegressionRecord, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Json]:
        return {"file": self.file, "run_id": self.run_id, "p95_tolerance": self.p95_tolerance,
                "regressions": [r.to_json() for r in self.regressions], "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaselineRecord:
        return cls(file=str(data["file"]), run_id=str(data["run_id"]),
                   p95_tolerance=str(data["p95_tolerance"]),
                   regressions=tuple(RegressionRecord.from_json(r) for r in data.get("regressions") or ()),
                   notes=tuple(str(n) for n in data.get("notes") or ()))


@dataclass(frozen=True)
class RunRecord:
    """A whole run: results.json."""

    run_id: str
    started_at: str
    scenarios: tuple[ScenarioRecord, ...] = ()
    finished_at: str | None = None
    connchaos: str | None = None
    host: str | None = None
    kernel: str | None = None
    interrupted: bool = False
    baseline: BaselineRecord | None = None
    schema: str = SCHEMA
    extra: JsonObject = field(default_factory=dict)

    @property
    def verdicts(self) -> list[VerdictName]:
        return [s.verdict for s in self.scenarios]

    def to_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"schema": self.schema, "run_id": self.run_id, "started_at": self.started_at}
        for key in ("finished_at", "connchaos", "host", "kernel"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["interrupted"] = self.interrupted
        out["scenarios"] = [s.to_json() for s in self.scenarios]
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_json()
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        known, extra = _split(data, cls, skip=("scenarios", "baseline"))
        return cls(**known,
                   scenarios=tuple(ScenarioRecord.from_json(s) for s in data.get("scenarios") or ()),
                   baseline=_maybe(BaselineRecord.from_json, data.get("baseline")),
                   extra=extra)
