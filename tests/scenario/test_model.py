"""The scenario schema on plain Python values (file lines are the loader's tests)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from harness.scenario.model import RULE_ERROR, Fault, Observe, Scenario, Sessions, Target


def minimal(**parts: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tcp-blackhole",
        "target": {"service": "tcp", "command": "./server --bind {host}:{port}", "port": 7000},
        "sessions": {"count": 20},
        "fault": {"type": "blackhole"},
        "expect": {"reclaimed_within": "8s"},
    }
    data.update(parts)
    return data


def errors_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        Scenario.model_validate(data)
    return [dict(error) for error in caught.value.errors(include_url=False)]


def rules_of(data: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    (error,) = errors_of(data)
    assert error["type"] == RULE_ERROR
    return list(error["ctx"]["rules"])


def test_defaults() -> None:
    scenario = Scenario.model_validate(minimal())
    assert scenario.about == ""
    assert scenario.target == Target(service="tcp", backend="auto", settings={},
                                     command="./server --bind {host}:{port}", port=7000)
    assert scenario.sessions == Sessions.model_validate({"count": 20, "activity": "idle", "hold": "1s"})
    assert (scenario.fault.layer, scenario.fault.sessions, scenario.fault.direction) == ("packet", "all", None)
    assert scenario.expect.survivors_untouched is True
    assert scenario.expect.mechanism is None
    assert scenario.observe.interval == 0.01


def test_deadline_defaults_to_the_latest_expectation() -> None:
    scenario = Scenario.model_validate(minimal(expect={"reclaimed_within": "8s", "still_held_after": "2s"}))
    assert scenario.observe.deadline == 8.0
    assert scenario.deadline_s == 8.0
    held = Scenario.model_validate(minimal(expect={"still_held_after": "30s"}))
    assert held.deadline_s == 30.0


def test_given_deadline_is_kept() -> None:
    scenario = Scenario.model_validate(minimal(observe={"deadline": "30s"}))
    assert scenario.deadline_s == 30.0


def test_default_observe_is_not_shared_state() -> None:
    Scenario.model_validate(minimal())
    assert Observe().deadline is None


def test_dump_validates_again() -> None:
    scenario = Scenario.model_validate(
        minimal(fault={"type": "blackhole", "sessions": 0.25}, target={"service": "postgres", "settings": {"a": 1}})
    )
    assert Scenario.model_validate(scenario.model_dump()) == scenario


def test_models_are_frozen() -> None:
    scenario = Scenario.model_validate(minimal())
    with pytest.raises(ValidationError):
        scenario.name = "other"  # type: ignore[misc]


def test_settings_keep_their_yaml_types() -> None:
    target = Target.model_validate({"service": "postgres", "settings": {"i": 2, "f": 0.5, "b": True, "s": "on"}})
    assert [type(v) for v in target.settings.values()] == [int, float, bool, str]


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_settings_refuse_structures(value: object) -> None:
    with pytest.raises(ValidationError, match="expected text, a number, true or false"):
        Target.model_validate({"service": "tcp", "settings": {"x": value}})


@pytest.mark.parametrize("name", ["a", "pg-15.keepalive_idle", "0day", "x" * 80])
def test_good_names(name: str) -> None:
    assert Scenario.model_validate(minimal(name=name)).name == name


@pytest.mark.parametrize("name", ["", "Upper", "-leading", ".hidden", "a b", "x" * 81, "ünï"])
def test_bad_names(name: str) -> None:
    (error,) = errors_of(minimal(name=name))
    assert error["loc"] == ("name",)
    assert "lowercase letters, digits, '.', '_' or '-'" in error["msg"]


@pytest.mark.parametrize(
    ("count", "kind"), [(True, "int_type"), (0, "greater_than_equal"), (10_001, "less_than_equal"), (2.0, "int_type")]
)
def test_session_count_bounds_and_no_booleans(count: object, kind: str) -> None:
    (error,) = errors_of(minimal(sessions={"count": count}))
    assert (error["loc"], error["type"]) == (("sessions", "count"), kind)


@pytest.mark.parametrize(("value", "expected"), [("all", "all"), (0.25, 0.25), (5, 5), (1.0, 1.0), (1, 1)])
def test_fault_sessions_forms(value: object, expected: object) -> None:
    fault = Fault.model_validate({"type": "blackhole", "sessions": value})
    assert fault.sessions == expected
    assert type(fault.sessions) is type(expected)


@pytest.mark.parametrize(
    ("value", "tail"),
    [
        (0, "got 0 (a count is at least 1)"),
        (-3, "got -3 (a count is at least 1)"),
        (1.5, "got 1.5 (a fraction is above 0 and at most 1)"),
        (0.0, "got 0.0 (a fraction is above 0 and at most 1)"),
        ("most", "got 'most'"),
        (True, "got true"),
        (None, "got nothing"),
    ],
)
def test_fault_sessions_refused(value: object, tail: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Fault.model_validate({"type": "blackhole", "sessions": value})
    (error,) = caught.value.errors()
    assert str(error["ctx"]["error"]) == f"expected 'all', a fraction like 0.25 or a count like 5; {tail}"


@pytest.mark.parametrize(
    ("sessions", "total", "picked"),
    [("all", 20, 20), (0.25, 20, 5), (0.01, 20, 1), (0.5, 5, 3), (0.25, 10, 3), (1.0, 7, 7), (5, 20, 5)],
)
def test_pick_count(sessions: object, total: int, picked: int) -> None:
    assert Fault.model_validate({"type": "blackhole", "sessions": sessions}).pick_count(total) == picked


def test_one_way_drop_needs_a_direction() -> None:
    assert rules_of(minimal(fault={"type": "one-way-drop"})) == [
        (("direction",), "one-way-drop needs direction: to-server or to-client")
    ]
    fault = Fault.model_validate({"type": "one-way-drop", "direction": "to-client"})
    assert fault.direction == "to-client"


def test_direction_only_for_one_way_drop() -> None:
    assert rules_of(minimal(fault={"type": "blackhole", "direction": "to-server"})) == [
        (("direction",), "only one-way-drop takes a direction, not blackhole")
    ]


def test_expect_needs_a_gate() -> None:
    assert rules_of(minimal(expect={"survivors_untouched": True})) == [
        ((), "needs reclaimed_within, still_held_after, or both")
    ]


def test_still_held_after_must_come_first() -> None:
    assert rules_of(minimal(expect={"reclaimed_within": "8s", "still_held_after": "10s"})) == [
        (("still_held_after",), "must be shorter than reclaimed_within (8s); got 10s")
    ]


@pytest.mark.parametrize("field", ["reclaimed_within", "still_held_after"])
def test_zero_waits_are_refused(field: str) -> None:
    (error,) = errors_of(minimal(expect={field: "0s"}))
    assert error["loc"] == ("expect", field)
    assert str(error["ctx"]["error"]) == "must be longer than 0s; got 0s"


def test_fault_count_within_sessions() -> None:
    assert rules_of(minimal(fault={"type": "blackhole", "sessions": 21})) == [
        (("fault", "sessions"), "asks for 21 sessions but sessions.count is 20")
    ]


def test_deadline_must_cover_expectations() -> None:
    assert rules_of(minimal(observe={"deadline": "5s"})) == [
        (("observe", "deadline"), "must be at least expect.reclaimed_within (8s); got 5s")
    ]
    assert rules_of(minimal(expect={"still_held_after": "30s"}, observe={"deadline": "10s"})) == [
        (("observe", "deadline"), "must be at least expect.still_held_after (30s); got 10s")
    ]


def test_scenario_rules_are_collected_together() -> None:
    data = minimal(fault={"type": "blackhole", "sessions": 21}, observe={"deadline": "5s"})
    assert [field for field, _ in rules_of(data)] == [("fault", "sessions"), ("observe", "deadline")]


@pytest.mark.parametrize(("interval", "ok"), [("1ms", True), ("1s", True), ("500us", False), ("2s", False)])
def test_interval_range(interval: str, ok: bool) -> None:
    if ok:
        assert Observe.model_validate({"interval": interval}).interval > 0
    else:
        with pytest.raises(ValidationError, match="must be between 1ms and 1s"):
            Observe.model_validate({"interval": interval})


@pytest.mark.parametrize("section", ["target", "sessions", "fault", "expect", "observe"])
def test_unknown_keys_are_errors_everywhere(section: str) -> None:
    data = minimal()
    data[section] = {**data.get(section, {}), "surprise": 1}
    errors = errors_of(data)
    assert [(e["loc"], e["type"]) for e in errors] == [((section, "surprise"), "extra_forbidden")]


def test_survivors_untouched_is_strictly_boolean() -> None:
    (error,) = errors_of(minimal(expect={"reclaimed_within": "8s", "survivors_untouched": 1}))
    assert error["type"] == "bool_type"


# --- the proxy layer -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "layer"), [("blackhole", "packet"), ("peer-reboot", "packet"),
                                             ("proxy-stall", "proxy"), ("reset", "proxy"),
                                             ("latency", "proxy"), ("limit_data", "proxy")])
def test_the_layer_follows_the_fault_when_left_out(kind: str, layer: str) -> None:
    assert Fault.model_validate({"type": kind}).layer == layer


def test_a_layer_that_contradicts_the_fault_is_an_error() -> None:
    assert rules_of(minimal(fault={"type": "proxy-stall", "layer": "packet"})) == [
        (("layer",), "proxy-stall acts at the proxy layer (a Toxiproxy between client and"
                             " server); set layer: proxy or leave it out")]
    assert rules_of(minimal(fault={"type": "blackhole", "layer": "proxy"}))[0][0] == ("layer",)


def test_toxic_options_belong_to_proxy_faults_only() -> None:
    fault = Fault.model_validate({"type": "latency", "stream": "upstream", "toxicity": 0.5,
                                  "attributes": {"latency": 100, "jitter": 10}})
    assert (fault.stream, fault.toxicity, fault.attributes) == ("upstream", 0.5, {"latency": 100, "jitter": 10})
    rules = rules_of(minimal(fault={"type": "blackhole", "stream": "upstream", "attributes": {"x": 1}}))
    assert [field for field, _ in rules] == [("stream",), ("attributes",)]
    assert rules_of(minimal(fault={"type": "proxy-down", "toxicity": 0.5})) == [
        (("toxicity",), "only toxics at the proxy layer take toxicity, not proxy-down")]


@pytest.mark.parametrize("toxicity", [-0.1, 1.5])
def test_toxicity_is_a_share(toxicity: float) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate({"type": "latency", "toxicity": toxicity})


# --- the user's own services -----------------------------------------------------------------


def test_a_tcp_service_needs_its_command_and_port() -> None:
    assert rules_of(minimal(target={"service": "tcp"})) == [
        (("command",), "service: tcp needs the command that starts your server (with {host} and"
                       " {port}), or an image")]
    assert rules_of(minimal(target={"service": "tcp", "command": "srv"})) == [
        (("port",), "say which port your server listens on")]
    assert rules_of(minimal(target={"service": "tcp", "image": "me/srv:1"})) == [
        (("port",), "say which port your server listens on")]


def test_an_image_runs_on_docker() -> None:
    Scenario.model_validate(minimal(target={"service": "postgres", "image": "postgres:16"}))
    assert rules_of(minimal(target={"service": "postgres", "image": "postgres:16", "backend": "local"})) == [
        (("image",), "image: runs on the docker backend; this target says backend: local")]


def test_services_connchaos_starts_take_no_command() -> None:
    rules = rules_of(minimal(target={"service": "postgres", "command": "x", "port": 5}))
    assert [field for field, _ in rules] == [("command",), ("port",)]


def test_openers_and_greeting_are_session_options() -> None:
    scenario = Scenario.model_validate(minimal(sessions={"count": 2, "opener": "raw", "greeting": "HELLO\n"}))
    assert (scenario.sessions.opener, scenario.sessions.greeting) == ("raw", "HELLO\n")


def test_the_schema_reads_the_registries() -> None:
    """Every service and fault type of harness.registry is one the schema accepts, with the
    layer the registry gives it; nothing else is."""
    from harness.faults import FAULTS
    from harness.load.locust import USERS
    from harness.registry import FAULT_TYPES, SERVICE_TYPES
    from harness.scenario.model import Fault, Target
    from harness.targets import available

    for name, kind in FAULT_TYPES.items():
        extra: dict[str, object] = {"direction": "to-client"} if name == "one-way-drop" else {}
        if name == "packet-loss":
            extra = {"loss": 0.3}
        assert Fault(type=name, **extra).layer == kind.layer
    assert set(FAULTS) == set(FAULT_TYPES)
    for name in SERVICE_TYPES:
        extra: dict[str, Any] = {"command": "x {host} {port}", "port": 1} if name == "tcp" else {}
        if SERVICE_TYPES[name].fronts:   # a tier in front of another service
            extra = {"upstream": {"service": "websocket"}}
        assert Target(service=name, **extra).service == name
    # a tier in front of another service: its Locust users are its upstream's
    assert set(available()) <= set(SERVICE_TYPES)
    # grpc has no Locust user yet: grpcio's sync client under Locust's gevent hung its requests
    assert set(USERS) == {name for name, s in SERVICE_TYPES.items() if not s.fronts} - {"grpc"}
    with pytest.raises(ValueError, match="literal_error|Input should be"):
        Target(service="mysql")
