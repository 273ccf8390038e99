"""The scenario file's load: section: what it accepts and how it refuses, at the right line."""

from __future__ import annotations

import pytest

from harness.errors import ScenarioError
from harness.run import prepare
from harness.scenario import load_text

BASE = """name: l
target: {service: websocket}
fault: {type: blackhole, sessions: 0.1}
expect: {reclaimed_within: 8s}
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ScenarioError) as info:
        load_text(text, "f.yaml")
    return [(p.line, p.field, p.message) for p in info.value.problems]


def test_load_fills_sessions_from_users() -> None:
    spec = load_text(BASE + "load:\n  users: 300\n  workers: 2\n  activity: {every: 2s}\n").scenario
    assert spec.load is not None and spec.load.users == 300 and spec.load.workers == 2
    assert spec.sessions.count == 300
    assert spec.load.every_s == 2.0
    assert spec.fault.pick_count(spec.sessions.count) == 30


def test_idle_is_the_default_activity_and_local_runner_the_default() -> None:
    spec = load_text(BASE + "load: {users: 5, activity: idle}\n").scenario
    assert spec.load is not None and spec.load.every_s is None and spec.load.workers == 0
    assert load_text(BASE + "load: {users: 5}\n").scenario.load.every_s is None  # type: ignore[union-attr]


def test_sessions_count_equal_to_users_is_accepted() -> None:
    assert load_text(BASE + "sessions: {count: 7}\nload: {users: 7}\n").scenario.sessions.count == 7


@pytest.mark.parametrize(("extra", "line", "field", "words"), [
    ("sessions: {count: 5}\nload:\n  users: 300\n", 5, "sessions.count", "load.users (300)"),
    ("sessions:\n  count: 3\n  hold: 2s\nload: {users: 3}\n", 7, "sessions.hold", "load.hold"),
    ("load:\n  users: 3\n  activity: busy\n", 7, "load.activity", "expected idle, or every"),
    ("load:\n  users: 3\n  activity: {every: 10ms}\n", 7, "load.activity.every", "at least 100ms"),
    ("load:\n  users: 3\n  activity: {evry: 1s}\n", 7, "load.activity.evry", "expected one of: every"),
    ("load:\n  users: 0\n", 6, "load.users", "at least 1"),
    ("load:\n  users: 20000\n", 6, "load.users", "at most 10000"),
    ("load:\n  users: 3\n  spawn_rate: 0\n", 7, "load.spawn_rate", "more than 0"),
    ("load:\n  users: 3\n  wrkers: 2\n", 7, "load.wrkers", "unknown key"),
    ("load:\n  users: 3\n  workers: -1\n", 7, "load.workers", "at least 0"),
])
def test_bad_load_sections_are_refused_at_their_line(extra: str, line: int, field: str, words: str) -> None:
    found = problems(BASE + extra)
    assert all(p[0] == line for p in found), found
    assert any(p[1] == field and words in p[2] for p in found), found


def test_a_proxy_fault_is_refused_with_load() -> None:
    text = BASE.replace("type: blackhole", "type: proxy-stall") + "load: {users: 3}\n"
    [(line, field, message)] = problems(text)
    assert (line, field) == (3, "fault.type") and "packet faults" in message


def test_every_service_has_a_locust_user_and_a_small_max_connections_is_exit_2(tmp_path: object) -> None:
    import pathlib
    folder = pathlib.Path(str(tmp_path))
    for service in ("ssh", "postgres", "tcp"):
        extra = ", command: 'x {port}', port: 7000" if service == "tcp" else ""
        body = BASE.replace("{service: websocket}", f"{{service: {service}{extra}}}")
        (folder / f"{service}.yaml").write_text(body + "load: {users: 3}\n")
        assert prepare([str(folder / f"{service}.yaml")])[0].scenario.load is not None
    pg = BASE.replace("{service: websocket}", "\n  service: postgres\n  settings: {max_connections: 50}")
    (folder / "pg.yaml").write_text(pg + "load: {users: 100}\n")
    with pytest.raises(ScenarioError) as info:
        prepare([str(folder / "pg.yaml")])
    found = [(p.field, p.message) for p in info.value.problems]
    assert found[0][0] == "target.settings.max_connections" and "load.users (100)" in found[0][1]
