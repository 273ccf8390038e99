"""The scenario file's schema: what a scenario may say, checked before anything starts.

Rules that tie two fields together raise a ``scenario_rule`` error whose context names the
fields (relative to the model that checks them), so the loader can point at the right line
even though pydantic itself would only know the enclosing model.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.registry import FAULT_TYPES, PACKET_FAULTS, SERVICE_TYPES
from harness.scenario.durations import Duration, as_yaml, format_duration

__all__ = [
    "Expect",
    "Fault",
    "FaultSessions",
    "Load",
    "LoadEvery",
    "Middlebox",
    "Observe",
    "RULE_ERROR",
    "Scenario",
    "Sessions",
    "SettingValue",
    "Target",
]

RULE_ERROR = "scenario_rule"
"""Error type of cross-field rules; its context holds ``rules``: ``[(field path, message), ...]``."""

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_NAME_MAX = 80
_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _rules_error(rules: list[tuple[tuple[str, ...], str]]) -> PydanticCustomError:
    """One pydantic error carrying every broken rule, each with the field it belongs to."""
    text = "; ".join(f"{'.'.join(field)}: {message}" for field, message in rules)
    return PydanticCustomError(RULE_ERROR, "{text}", {"text": text, "rules": rules})


def _one_of(names: tuple[str, ...]) -> BeforeValidator:
    """A name from a registry, refused as pydantic refuses a Literal (the loader says
    "expected one of: ...")."""
    expected = ", ".join(repr(n) for n in names)

    def check(value: Any) -> Any:
        if not isinstance(value, str) or value not in names:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value
    return BeforeValidator(check)


ServiceName = Annotated[str, _one_of(tuple(SERVICE_TYPES))]
"""A service of ``harness.registry.SERVICE_TYPES``."""
FaultName = Annotated[str, _one_of(tuple(FAULT_TYPES))]
CLIENT_PROCESS_FAULTS = ("process-pause", "slow-reader")
"""Faults that act on the faulted sessions' own client process (a session host of theirs)."""
"""A fault type of ``harness.registry.FAULT_TYPES``."""


class _Part(BaseModel):
    """Shared configuration: unknown keys are errors, parsed scenarios never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_NUL = "a NUL character (\\0) cannot be passed to a program"


def _no_nul(value: str) -> str:
    # Every text here ends up in a command line, an environment or a config file, where C
    # strings end at NUL: refused now, not as a ValueError from subprocess after the lab is up.
    if "\0" in value:
        raise ValueError(_NUL)
    return value


ProgramText = Annotated[StrictStr, AfterValidator(_no_nul)]
"""Text that reaches a program (a command, an image name): anything but NUL."""

MAX_SETTINGS = 100
"""Most settings in one target: each is checked against the server (sshd -T runs once per
setting), so this bounds ``check``; a real scenario sets a handful."""
MAX_SETTING_NAME = 128      # PostgreSQL's names are at most 63 bytes, twice for ext.name
MAX_SETTING_TEXT = 4096     # a value fits in one command-line argument (Linux: 128 KiB)


def _setting_name(name: str) -> str:
    if len(name) > MAX_SETTING_NAME:
        raise ValueError(f"a setting name is at most {MAX_SETTING_NAME} characters; got {len(name)}")
    return _no_nul(name)


def _setting_value(value: object) -> object:
    # Checked by hand so that one bad value gives one message, not one per union member.
    if isinstance(value, str):
        if len(value) > MAX_SETTING_TEXT:
            raise ValueError(f"a setting value is at most {MAX_SETTING_TEXT} characters; got {len(value)}")
        return _no_nul(value)
    if isinstance(value, (int, float, bool)):
        return value
    raise ValueError(f"expected text, a number, true or false; got {as_yaml(value)}")


def _few_settings(value: object) -> object:
    # Before the items are checked: 9000 unknown names would each be a problem, and a probe.
    if isinstance(value, dict) and len(value) > MAX_SETTINGS:
        raise ValueError(f"at most {MAX_SETTINGS} settings; got {len(value)}")
    return value


SettingName = Annotated[str, AfterValidator(_setting_name)]
"""The name of one of a target's own settings."""
SettingValue = Annotated[str | int | float | bool, BeforeValidator(_setting_value)]
"""One of a target's own settings, passed through; the target module checks its meaning."""


class Target(_Part):
    """The service under test and where it runs."""

    service: ServiceName
    backend: Literal["auto", "local", "docker"] = "auto"
    settings: Annotated[dict[SettingName, SettingValue], BeforeValidator(_few_settings)] = {}
    # a tier's backend (pgbouncer's PostgreSQL): its own settings, checked as that service's
    backend_settings: Annotated[dict[SettingName, SettingValue], BeforeValidator(_few_settings)] = {}
    command: ProgramText | None = None   # the user's own server: {host} and {port} are filled in
    port: StrictInt | None = Field(default=None, ge=1, le=65535)   # where that server listens
    ready: ProgramText | None = None     # readiness: "port" (it accepts) or a command that exits 0
    image: ProgramText | None = None     # the user's own image (docker backend)
    # a tier's (service: haproxy) backend: another target, started behind it in the same lab
    upstream: Target | None = None

    @property
    def session_target(self) -> Target:
        """The target whose sessions are opened: a tier's upstream (through the tier's port),
        else this one."""
        return self.upstream if self.upstream is not None else self

    @model_validator(mode="after")
    def _own_server_fields_fit(self) -> Target:
        rules: list[tuple[tuple[str, ...], str]] = []
        fronts = SERVICE_TYPES[self.service].fronts
        if fronts and self.upstream is None:
            rules.append((("upstream",), f"service: {self.service} needs the upstream it stands"
                                         " in front of (upstream: {service: websocket, ...})"))
        if not fronts and self.upstream is not None:
            takers = ", ".join(name for name, s in SERVICE_TYPES.items() if s.fronts)
            rules.append((("upstream",), f"only a tier in front of another service ({takers}) takes"
                                         f" an upstream, not {self.service}"))
        up = self.upstream
        if up is not None and SERVICE_TYPES[up.service].tier:
            services = ", ".join(name for name, s in SERVICE_TYPES.items() if not s.tier)
            rules.append((("upstream", "service"), f"a tier's upstream is a service ({services}),"
                                                   f" not another tier ({up.service})"))
        if up is not None and "backend" in up.model_fields_set:
            rules.append((("upstream", "backend"), "the upstream runs where the tier runs:"
                                                   " set backend on target"))
        if SERVICE_TYPES[self.service].started_by_connchaos:
            for name in ("command", "ready", "port"):
                if getattr(self, name) is not None:
                    rules.append(((name,), f"{self.service} is started by connchaos; {name} is for"
                                           " service: tcp or websocket (image: picks the image it"
                                           " runs on the docker backend)"))
        backend_service = SERVICE_TYPES[self.service].backend_service
        if self.backend_settings and backend_service is None:
            tiers = ", ".join(n for n, s in SERVICE_TYPES.items() if s.backend_service)
            rules.append((("backend_settings",), f"{self.service} runs no backend of its own;"
                                                 f" backend_settings is for a tier ({tiers})"))
        if self.service == "tcp" and self.command is None and self.image is None:
            rules.append((("command",), "service: tcp needs the command that starts your server"
                                        " (with {host} and {port}), or an image"))
        serves_own = self.command is not None or self.image is not None
        if self.service == "tcp" and serves_own and self.port is None:
            rules.append((("port",), "say which port your server listens on"))
        if self.image is not None and self.backend == "local":
            rules.append((("image",), "image: runs on the docker backend; this target says backend: local"))
        if rules:
            raise _rules_error(rules)
        return self


class Sessions(_Part):
    """The client sessions held open against the target."""

    count: StrictInt = Field(ge=1, le=10_000)
    activity: Literal["idle", "in-flight"] = "idle"
    hold: Duration = 1.0
    # how sessions are opened: raw, postgres, ssh, websocket, or a plugin's
    opener: ProgramText | None = None
    greeting: StrictStr | None = None    # raw opener: text sent once connected (bytes, NUL too)


_FAULT_SESSIONS = "expected 'all', a fraction like 0.25 or a count like 5"


def _fault_sessions(value: object) -> object:
    # YAML's own types decide the meaning: 5 is a count, 0.5 a fraction, 1.0 a fraction (all).
    if value == "all" and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{_FAULT_SESSIONS}; got {as_yaml(value)}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{_FAULT_SESSIONS}; got {value} (a count is at least 1)")
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError(f"{_FAULT_SESSIONS}; got {value} (a fraction is above 0 and at most 1)")
    return value


FaultSessions = Annotated[Literal["all"] | StrictInt | float, BeforeValidator(_fault_sessions)]
"""Which sessions a fault hits: ``"all"``, a fraction (float in (0, 1]) or a count (int >= 1)."""

_LOSS = "expected a share of packets like 30% or 0.3 (above 0, at most 100%)"


def _loss(value: object) -> object:
    # "30%" or 0.3; a bare integer is refused: is 1 all packets or one percent?
    share: float
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{_LOSS}; got {as_yaml(value)}") from None
    elif isinstance(value, float):
        share = value
    else:
        raise ValueError(f"{_LOSS}; got {as_yaml(value)}")
    if not 0 < share <= 1 or math.isnan(share):
        raise ValueError(f"{_LOSS}; got {as_yaml(value)}")
    if share * 10_000 != round(share * 10_000):
        raise ValueError(f"{_LOSS} in steps of 0.01% (nftables numgen draws 0 to 9999);"
                         f" got {as_yaml(value)}")
    return share


LossShare = Annotated[float, BeforeValidator(_loss)]
"""``packet-loss``: the share of packets dropped in each direction, 0 < share <= 1."""


class Fault(_Part):
    """What happens to some of the sessions, and where it acts."""

    type: FaultName
    layer: Literal["packet", "proxy"] | None = None     # filled from the type when not given
    sessions: FaultSessions = "all"
    direction: Literal["to-server", "to-client"] | None = None
    # proxy faults: which direction the toxic acts on
    stream: Literal["upstream", "downstream"] | None = None
    toxicity: float | None = Field(default=None, ge=0, le=1)  # proxy faults: share of connections affected
    attributes: dict[str, StrictInt | float] = {}              # the toxic's own attributes (Toxiproxy units)
    loss: LossShare | None = None                             # packet-loss: share dropped each way
    # syn-blackhole: the reconnecting socket's TCP_SYNCNT (default: the client's tcp_syn_retries)
    syn_retries: StrictInt | None = Field(default=None, ge=1, le=127)
    connect_timeout: Duration | None = None                   # syn-blackhole: the client's own connect timer

    @model_validator(mode="after")
    def _fields_fit_type(self) -> Fault:
        rules: list[tuple[tuple[str, ...], str]] = []
        kind = FAULT_TYPES[self.type]
        own_layer = kind.layer
        if self.layer is not None and self.layer != own_layer:
            where = ("packet layer (nftables in the lab)" if own_layer == "packet"
                     else "proxy layer (a Toxiproxy between client and server)")
            rules.append((("layer",), f"{self.type} acts at the {where};"
                                      f" set layer: {own_layer} or leave it out"))
        if self.type == "one-way-drop" and self.direction is None:
            rules.append((("direction",), "one-way-drop needs direction: to-server or to-client"))
        if self.type != "one-way-drop" and self.direction is not None:
            rules.append((("direction",), f"only one-way-drop takes a direction, not {self.type}"))
        if not kind.takes_stream:
            for name in ("stream", "toxicity"):
                if getattr(self, name) is not None:
                    rules.append(((name,), f"only toxics at the proxy layer take {name}, not {self.type}"))
        if self.attributes and kind.toxic is None:
            rules.append((("attributes",), f"{self.type} takes no attributes"))
        if self.type == "packet-loss" and self.loss is None:
            rules.append((("type",), "packet-loss needs loss: the share of packets dropped (like loss: 30%)"))
        if self.type != "packet-loss" and self.loss is not None:
            rules.append((("loss",), f"only packet-loss takes loss, not {self.type}"))
        for name in ("syn_retries", "connect_timeout"):
            if self.type != "syn-blackhole" and getattr(self, name) is not None:
                rules.append(((name,), f"only syn-blackhole takes {name}, not {self.type}"))
        if self.connect_timeout is not None and self.connect_timeout <= 0:
            rules.append((("connect_timeout",), "must be longer than 0s"))
        if rules:
            raise _rules_error(rules)
        if self.layer is None:
            object.__setattr__(self, "layer", own_layer)  # still being built: see Scenario
        return self

    def pick_count(self, total: int) -> int:
        """How many of ``total`` sessions this fault hits."""
        if self.sessions == "all":
            return total
        if isinstance(self.sessions, float):
            # Half rounds up (Python's round() would make 2.5 into 2), and a fault hits someone.
            return max(1, math.floor(total * self.sessions + 0.5))
        return self.sessions


def _positive(value: float | None) -> float | None:
    # A zero wait can never be met nor watched: it is always a typo.
    if value is not None and value <= 0:
        raise ValueError(f"must be longer than 0s; got {format_duration(value)}")
    return value


class Expect(_Part):
    """The scenario's gate: what must be true for it to pass."""

    reclaimed_within: Duration | None = None
    still_held_after: Duration | None = None
    survivors_untouched: StrictBool = True
    mechanism: Literal["keepalive", "retransmission", "user-timeout", "reset", "closed",
                       "heartbeat"] | None = None
    # a tier's faulted sessions (pgbouncer, haproxy): what became of their upstream legs
    upstream: Literal["closed", "pooled", "held"] | None = None
    # syn-blackhole: every faulted client's reconnect attempt has its outcome within this
    reconnect_within: Duration | None = None

    @field_validator("reclaimed_within", "still_held_after", "reconnect_within")
    @classmethod
    def _longer_than_zero(cls, value: float | None) -> float | None:
        return _positive(value)

    @model_validator(mode="after")
    def _has_a_gate(self) -> Expect:
        if self.reclaimed_within is None and self.still_held_after is None:
            raise _rules_error([((), "needs reclaimed_within, still_held_after, or both")])
        if (
            self.reclaimed_within is not None
            and self.still_held_after is not None
            and self.still_held_after >= self.reclaimed_within
        ):
            rule = (
                f"must be shorter than reclaimed_within ({format_duration(self.reclaimed_within)});"
                f" got {format_duration(self.still_held_after)}"
            )
            raise _rules_error([(("still_held_after",), rule)])
        return self


class Observe(_Part):
    """How the observer watches the sessions."""

    deadline: Duration | None = None
    interval: Duration = 0.01

    @field_validator("deadline")
    @classmethod
    def _deadline_longer_than_zero(cls, value: float | None) -> float | None:
        return _positive(value)

    @field_validator("interval")
    @classmethod
    def _interval_in_range(cls, value: float) -> float:
        # Below 1ms the sampling itself loads the machine; above 1s it blurs what it measures.
        if not 0.001 <= value <= 1:
            raise ValueError(f"must be between 1ms and 1s; got {format_duration(value)}")
        return value


def _tag(value: str) -> str:
    # Tags become pytest markers (``-m slow``), which must be Python identifiers.
    if not _TAG.fullmatch(value):
        raise ValueError(f"a tag is a word of letters, digits and _ (a pytest marker); got {as_yaml(value)}")
    return value


Tag = Annotated[StrictStr, AfterValidator(_tag)]
"""A scenario tag: a Python identifier, applied as a pytest marker."""


class LoadEvery(_Part):
    """A load session's activity: one small request every ``every``."""

    every: Duration

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        # Below 100ms per session the load generator, not the server, is what gets measured.
        if value < 0.1:
            raise ValueError(f"must be at least 100ms; got {format_duration(value)}")
        return value


def _load_activity(value: object) -> object:
    # "idle" is None (no requests); a mapping is checked by LoadEvery. Checked by hand so
    # that a bad value gives one message, not one per union member.
    if value == "idle" or value is None:
        return None
    if isinstance(value, dict):
        return value
    raise ValueError(f"expected idle, or every: <duration> (like every: 2s); got {as_yaml(value)}")


class Load(_Part):
    """A load run: the sessions are Locust users, in processes of their own (``harness.load``)."""

    users: StrictInt = Field(ge=1, le=10_000)
    spawn_rate: StrictInt | float = Field(default=100, gt=0, le=10_000)   # users started per second
    hold: Duration = 1.0                 # after every user holds its session, before the fault
    activity: Annotated[LoadEvery | None, BeforeValidator(_load_activity)] = None   # None: idle
    workers: StrictInt = Field(default=0, ge=0, le=32)   # 0: one local Locust process; N: master + N workers

    @property
    def every_s(self) -> float | None:
        """Seconds between two requests of a session; None when idle."""
        return None if self.activity is None else self.activity.every


MIDDLEBOX_MAX_IDLE_S = 7 * 86400   # a week: past any cloud load balancer's (AWS NLB 350 s)


class Middlebox(_Part):
    """A NAT / load balancer in the router: its connection-tracking entries expire after
    ``idle_timeout`` without a packet; then the flow's packets are dropped or reset."""

    nat: StrictBool = True
    idle_timeout: Duration
    on_expiry: Literal["drop", "reset"] = "drop"

    @field_validator("idle_timeout")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        # The kernel's conntrack timeouts are whole seconds (a sysctl, or an nft ct timeout).
        if value < 1 or not float(value).is_integer() or value > MIDDLEBOX_MAX_IDLE_S:
            raise ValueError("conntrack counts whole seconds: expected 1s to"
                             f" {format_duration(MIDDLEBOX_MAX_IDLE_S)} in whole seconds;"
                             f" got {format_duration(value)}")
        return value


class Scenario(_Part):
    """One scenario file: a target, its sessions, a fault, and what must follow."""

    name: StrictStr
    about: StrictStr = ""
    target: Target
    sessions: Sessions
    fault: Fault
    expect: Expect
    observe: Observe = Observe()
    load: Load | None = None
    middlebox: Middlebox | None = None

    @model_validator(mode="before")
    @classmethod
    def _load_fills_sessions(cls, data: Any) -> Any:
        """With ``load:``, the sessions are ``load.users``: ``sessions:`` may be left out."""
        if isinstance(data, dict) and isinstance(data.get("load"), dict) and "sessions" not in data:
            users = data["load"].get("users")
            ok = isinstance(users, int) and not isinstance(users, bool) and 1 <= users <= 10_000
            # a bad users value is reported at load.users; the placeholder keeps it the only report
            return {**data, "sessions": {"count": users if ok else 1}}
        return data
    tags: list[Tag] = []                 # pytest markers for this scenario (the pytest plugin)

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        # Names become file names and JUnit test ids, so they are kept to a safe alphabet.
        if not (1 <= len(value) <= _NAME_MAX and _NAME.fullmatch(value)):
            raise ValueError(
                "expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit,"
                f" at most {_NAME_MAX} characters; got {as_yaml(value)}"
            )
        return value

    @model_validator(mode="after")
    def _parts_agree(self) -> Scenario:
        rules: list[tuple[tuple[str, ...], str]] = []
        if self.load is not None:
            rules.extend(self._load_rules(self.load))
        rules.extend(self._middlebox_rules())
        rules.extend(self._client_process_rules())
        picked = self.fault.sessions
        if isinstance(picked, int) and picked > self.sessions.count:
            message = f"asks for {picked} sessions but sessions.count is {self.sessions.count}"
            rules.append((("fault", "sessions"), message))
        if self.expect.reconnect_within is not None and self.fault.type != "syn-blackhole":
            rules.append((("expect", "reconnect_within"), "is for syn-blackhole, whose clients reconnect;"
                                                          f" {self.fault.type} has no reconnect"))
        if self.expect.upstream is not None and not SERVICE_TYPES[self.target.service].tier:
            tiers = ", ".join(n for n, t in SERVICE_TYPES.items() if t.tier)
            rules.append((("expect", "upstream"), f"is for tiers ({tiers}), which have an upstream leg;"
                                                  f" {self.target.service} has none"))
        deadline = self.observe.deadline
        if deadline is not None:
            for name in ("reclaimed_within", "still_held_after"):
                limit: float | None = getattr(self.expect, name)
                if limit is not None and deadline < limit:
                    rules.append(
                        (
                            ("observe", "deadline"),
                            f"must be at least expect.{name} ({format_duration(limit)});"
                            f" got {format_duration(deadline)}",
                        )
                    )
                    break
        if rules:
            raise _rules_error(rules)
        if deadline is None:
            # The effective deadline belongs to the validated model; frozen models allow it only here,
            # while the instance is still being built.
            filled = self.observe.model_copy(update={"deadline": self._gate_end()})
            object.__setattr__(self, "observe", filled)
        return self

    def _middlebox_rules(self) -> list[tuple[tuple[str, ...], str]]:
        rules: list[tuple[tuple[str, ...], str]] = []
        mb = self.middlebox
        if self.fault.type == "nat-idle-expiry":
            if mb is None:
                rules.append((("fault", "type"), "nat-idle-expiry needs a middlebox: section"
                                                 " (middlebox: {idle_timeout: 5s}) whose entries expire"))
            if self.sessions.activity != "idle":
                rules.append((("sessions", "activity"), "nat-idle-expiry makes the sessions idle;"
                                                        " use activity: idle"))
        if mb is None:
            return rules
        if self.target.backend == "docker":
            rules.append((("middlebox",), "the middlebox is the local lab's router namespace"
                                          " (its own conntrack); not on backend: docker"))
        if self.fault.layer == "proxy":
            rules.append((("middlebox",), f"a middlebox is on the packet path; {self.fault.type}"
                                          " acts in a proxy (a packet fault goes with it)"))
        every = self.load.every_s if self.load is not None else None
        if self.load is not None and (every is None or every >= mb.idle_timeout):
            rules.append((("load", "activity") if self.load.activity is not None else ("load",),
                          "with a middlebox the survivors must talk more often than its idle_timeout"
                          f" ({format_duration(mb.idle_timeout)}): activity: {{every: ...}} shorter"))
        return rules

    def _client_process_rules(self) -> list[tuple[tuple[str, ...], str]]:
        """process-pause and slow-reader stop the faulted sessions' own client process."""
        kind = self.fault.type
        if kind not in CLIENT_PROCESS_FAULTS:
            return []
        rules: list[tuple[tuple[str, ...], str]] = []
        if self.sessions.activity != "idle":
            what = ("stops the client with its sessions idle" if kind == "process-pause"
                    else "makes the server send itself (the stream the client asks for)")
            rules.append((("sessions", "activity"), f"{kind} {what}; use activity: idle"))
        if self.load is not None:
            rules.append((("fault", "type"), f"{kind} stops the faulted sessions' own client process;"
                                             " a load run's sessions are Locust's users, many to a"
                                             " process: run it without load:"))
        if self.middlebox is not None:
            rules.append((("middlebox",), f"{kind} needs no middlebox; leave it out"))
        return rules

    def _load_rules(self, load: Load) -> list[tuple[tuple[str, ...], str]]:
        rules: list[tuple[tuple[str, ...], str]] = []
        if self.sessions.count != load.users:
            rules.append((("sessions", "count"), f"with load:, the sessions are load.users ({load.users});"
                                                 " leave sessions.count out or make it equal"))
        for name in sorted(self.sessions.model_fields_set - {"count"}):
            rules.append((("sessions", name), f"with load:, sessions takes only count; {name} is"
                                              " load's to say (load.hold, load.activity)"))
        if self.fault.type not in PACKET_FAULTS:
            rules.append((("fault", "type"), f"load runs take packet faults ({', '.join(PACKET_FAULTS)});"
                                             f" got {self.fault.type}"))
        elif self.fault.type == "syn-blackhole":
            rules.append((("fault", "type"), "syn-blackhole has the harness's own clients reconnect;"
                                             " Locust's users do not: run it without load:"))
        return rules

    def _gate_end(self) -> float:
        """The latest moment an expectation is decided at."""
        limits = [t for t in (self.expect.reclaimed_within, self.expect.still_held_after) if t is not None]
        return max(limits)

    @property
    def deadline_s(self) -> float:
        """Seconds after the fault at which observation stops (``observe.deadline``, filled if not given)."""
        deadline = self.observe.deadline
        return deadline if deadline is not None else self._gate_end()
