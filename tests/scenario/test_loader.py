"""Loading scenario files: every problem with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import Problem, ScenarioError
from harness.scenario.loader import LoadedScenario, load_file, load_paths, load_text

# The example of DESIGN.md ("Contracts"), verbatim; tests edit it line by line.
EXAMPLE = """\
name: postgres-client-vanishes
about: Clients lose power; Postgres must reclaim their backends through TCP keepalive.
target:
  service: postgres            # postgres | ssh | websocket | tcp
  backend: auto                # auto | local | docker
  settings:                    # the service's own knobs, passed through
    tcp_keepalives_idle: 2
    tcp_keepalives_interval: 1
    tcp_keepalives_count: 3
sessions:
  count: 20
  activity: idle               # idle | in-flight (server holds unacknowledged data at the fault)
  hold: 1s                     # settle time between the last session opened and the fault
fault:
  type: client-vanish
  layer: packet                # packet | proxy
  sessions: all                # all | a fraction like 0.25 | a count like 5
expect:
  reclaimed_within: 8s         # every faulted session reclaimed within this, counted from the fault
  survivors_untouched: true    # sessions that were not faulted are still alive at the end
  # still_held_after: 30s      # the negative form, for scenarios that demonstrate a pitfall
observe:
  deadline: 30s                # give up waiting after this; unreclaimed sessions count as not reclaimed
"""

TOP_KEYS = "name, about, target, sessions, fault, expect, observe, load, middlebox, tags"


def edited(changes: dict[int, str | None], text: str = EXAMPLE) -> str:
    """``text`` with 1-based line N replaced by ``changes[N]`` (which may hold several lines) or dropped."""
    lines = text.splitlines()
    for number, replacement in changes.items():
        lines[number - 1] = replacement if replacement is not None else "\0"
    return "\n".join(line for line in lines if line != "\0") + "\n"


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    assert caught.value.exit_code == 2
    assert all(p.path == "s.yaml" for p in caught.value.problems)
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def one_problem(text: str) -> tuple[int | None, str, str]:
    (problem,) = problems(text)
    return problem


def write(folder: Path, relative: str, text: str) -> Path:
    file = folder / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def named(name: str) -> str:
    return edited({1: f"name: {name}"})


# --- the good file ----------------------------------------------------------------------------


def test_design_example_loads() -> None:
    loaded = load_text(EXAMPLE, "example.yaml")
    scenario = loaded.scenario
    assert loaded.path == "example.yaml"
    assert scenario.name == "postgres-client-vanishes"
    assert scenario.target.service == "postgres"
    assert scenario.target.settings == {
        "tcp_keepalives_idle": 2,
        "tcp_keepalives_interval": 1,
        "tcp_keepalives_count": 3,
    }
    assert (scenario.sessions.count, scenario.sessions.activity, scenario.sessions.hold) == (20, "idle", 1.0)
    assert (scenario.fault.type, scenario.fault.layer, scenario.fault.sessions) == ("client-vanish", "packet", "all")
    assert scenario.expect.reclaimed_within == 8.0
    assert scenario.expect.still_held_after is None
    assert scenario.deadline_s == 30.0


def test_lines_of_keys() -> None:
    loaded = load_text(EXAMPLE)
    assert loaded.lines[("fault", "sessions")] == 17
    assert loaded.lines[("target",)] == 3
    assert loaded.line_of(("target", "settings", "tcp_keepalives_idle")) == 7
    assert loaded.line_of(["expect", "reclaimed_within"]) == 19


def test_line_of_unwritten_field_is_its_parents() -> None:
    loaded = load_text(EXAMPLE)
    assert loaded.line_of(("observe", "interval")) == 22
    assert loaded.line_of(("target", "settings", "tcp_user_timeout")) == 6
    assert loaded.line_of(("nowhere", "at", "all")) == 1


def test_problem_for_later_checks() -> None:
    loaded = load_text(EXAMPLE, "pg.yaml")
    problem = loaded.problem(("target", "settings", "tcp_keepalives_idle"), "must be at least 1")
    assert problem == Problem("pg.yaml", 7, "target.settings.tcp_keepalives_idle", "must be at least 1")
    assert str(problem) == "pg.yaml:7: target.settings.tcp_keepalives_idle: must be at least 1"


def test_load_file(tmp_path: Path) -> None:
    file = write(tmp_path, "pg.yaml", EXAMPLE)
    loaded = load_file(file)
    assert isinstance(loaded, LoadedScenario)
    assert loaded.path == str(file)
    assert loaded.scenario.name == "postgres-client-vanishes"


def test_byte_order_mark_is_fine(tmp_path: Path) -> None:
    file = tmp_path / "bom.yaml"
    file.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode())
    assert load_file(file).lines[("name",)] == 1


def test_comments_before_the_first_key_shift_lines() -> None:
    loaded = load_text("# header\n\n" + EXAMPLE)
    assert loaded.line_of(("fault", "sessions")) == 19


# --- wrong keys and values --------------------------------------------------------------------


def test_unknown_key() -> None:
    assert one_problem(edited({11: "  count: 20\n  count_: 3"})) == (
        12,
        "sessions.count_",
        "unknown key 'count_' (expected one of: count, activity, hold, opener, greeting)",
    )


def test_unknown_top_level_key() -> None:
    assert one_problem(EXAMPLE + "extras: 1\n") == (24, "extras", f"unknown key 'extras' (expected one of: {TOP_KEYS})")


def test_wrong_literal() -> None:
    assert one_problem(edited({4: "  service: postgress"})) == (
        4,
        "target.service",
        "expected one of: postgres, ssh, websocket, tcp, haproxy, pgbouncer, grpc; got 'postgress'",
    )


def test_wrong_literal_of_an_optional_field() -> None:
    assert one_problem(edited({20: "  mechanism: magic"})) == (
        20,
        "expect.mechanism",
        "expected one of: keepalive, retransmission, user-timeout, reset, closed, heartbeat; got 'magic'",
    )


@pytest.mark.parametrize(
    ("line", "value", "got"),
    [
        (19, "  reclaimed_within: 8", "8 (add a unit, such as s or ms)"),
        (13, "  hold: 5 parsecs", "'5 parsecs'"),
        (23, "  deadline: true", "true"),
    ],
)
def test_bad_duration(line: int, value: str, got: str) -> None:
    field = {19: "expect.reclaimed_within", 13: "sessions.hold", 23: "observe.deadline"}[line]
    assert one_problem(edited({line: value})) == (line, field, f"expected a duration like 250ms, 5s or 2m; got {got}")


def test_missing_section_points_at_the_top() -> None:
    assert one_problem(edited({14: None, 15: None, 16: None, 17: None})) == (1, "fault", "missing (required)")


def test_missing_field_points_at_its_section() -> None:
    assert one_problem(edited({15: None})) == (14, "fault.type", "missing (required)")


def test_empty_section() -> None:
    assert one_problem(edited({11: None, 12: None, 13: None})) == (
        10,
        "sessions",
        "expected a mapping of keys (count, activity, hold, opener, greeting); got nothing",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "expected a whole number; got true"),
        ("'20'", "expected a whole number; got '20'"),
        ("2.5", "expected a whole number; got 2.5"),
        ("0", "must be at least 1; got 0"),
        ("10001", "must be at most 10000; got 10001"),
    ],
)
def test_session_count(value: str, message: str) -> None:
    assert one_problem(edited({11: f"  count: {value}", 17: "  sessions: 1"})) == (11, "sessions.count", message)


def test_setting_value_must_be_a_scalar() -> None:
    assert one_problem(edited({8: "    tcp_keepalives_interval: [1, 2]"})) == (
        8,
        "target.settings.tcp_keepalives_interval",
        "expected text, a number, true or false; got a list",
    )


def test_setting_key_must_be_text() -> None:
    assert one_problem(edited({9: "    3: 3"})) == (9, "target.settings.3", "expected text; got 3")


def test_bad_name() -> None:
    line, field, message = one_problem(named("Postgres Vanish"))
    assert (line, field) == (1, "name")
    assert message.startswith("expected lowercase letters, digits, '.', '_' or '-'")
    assert message.endswith("got 'Postgres Vanish'")


def test_bad_interval() -> None:
    assert one_problem(edited({23: "  interval: 5s"})) == (23, "observe.interval", "must be between 1ms and 1s; got 5s")


# --- fault.sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("all", "all"), ("0.25", 0.25), ("5", 5), ("1.0", 1.0)])
def test_fault_sessions_forms(value: str, expected: object) -> None:
    assert load_text(edited({17: f"  sessions: {value}"})).scenario.fault.sessions == expected


@pytest.mark.parametrize(
    ("value", "tail"),
    [
        ("0", "got 0 (a count is at least 1)"),
        ("1.5", "got 1.5 (a fraction is above 0 and at most 1)"),
        ("most", "got 'most'"),
        ("true", "got true"),
        ("25%", "got '25%'"),
    ],
)
def test_fault_sessions_refused(value: str, tail: str) -> None:
    assert one_problem(edited({17: f"  sessions: {value}"})) == (
        17,
        "fault.sessions",
        f"expected 'all', a fraction like 0.25 or a count like 5; {tail}",
    )


def test_fault_count_above_sessions_count() -> None:
    assert one_problem(edited({17: "  sessions: 21"})) == (
        17,
        "fault.sessions",
        "asks for 21 sessions but sessions.count is 20",
    )


# --- rules between fields ---------------------------------------------------------------------


def test_one_way_drop_without_direction() -> None:
    assert one_problem(edited({15: "  type: one-way-drop"})) == (
        14,
        "fault.direction",
        "one-way-drop needs direction: to-server or to-client",
    )


def test_one_way_drop_with_direction() -> None:
    text = edited({15: "  type: one-way-drop", 17: "  sessions: all\n  direction: to-server"})
    assert load_text(text).scenario.fault.direction == "to-server"


def test_direction_on_blackhole() -> None:
    text = edited({15: "  type: blackhole", 17: "  sessions: all\n  direction: to-client"})
    assert one_problem(text) == (18, "fault.direction", "only one-way-drop takes a direction, not blackhole")


def test_deadline_before_reclaimed_within() -> None:
    assert one_problem(edited({23: "  deadline: 5s"})) == (
        23,
        "observe.deadline",
        "must be at least expect.reclaimed_within (8s); got 5s",
    )


def test_still_held_after_not_before_reclaimed_within() -> None:
    assert one_problem(edited({21: "  still_held_after: 8s"})) == (
        21,
        "expect.still_held_after",
        "must be shorter than reclaimed_within (8s); got 8s",
    )


def test_still_held_after_alone_is_an_expectation() -> None:
    loaded = load_text(edited({19: None, 21: "  still_held_after: 30s"}))
    assert loaded.scenario.expect.still_held_after == 30.0


def test_no_expectation() -> None:
    assert one_problem(edited({19: None})) == (18, "expect", "needs reclaimed_within, still_held_after, or both")


# --- the YAML itself --------------------------------------------------------------------------


def test_duplicate_key() -> None:
    assert one_problem(edited({15: "  type: client-vanish\n  type: blackhole"})) == (
        16,
        "fault.type",
        "duplicate key 'type' (first at line 15)",
    )


def test_duplicate_section() -> None:
    assert one_problem(EXAMPLE + "observe:\n  deadline: 40s\n") == (
        24,
        "observe",
        "duplicate key 'observe' (first at line 22)",
    )


def test_yaml_syntax_error_line() -> None:
    assert one_problem(edited({13: "  hold: 1s: 2"})) == (13, "", "YAML syntax: mapping values are not allowed here")


def test_yaml_tab_indentation() -> None:
    line, field, message = one_problem(edited({12: "\tactivity: idle"}))
    assert (line, field) == (12, "")
    assert message.startswith("YAML syntax: found character '\\t'")


def test_unclosed_flow_list() -> None:
    line, _, message = one_problem(edited({4: "  service: [postgres"}))
    assert line == 5
    assert message.startswith("YAML syntax:")


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n", "~\n"])
def test_empty_file(text: str) -> None:
    assert one_problem(text) == (1, "", f"empty file: expected a scenario ({TOP_KEYS})")


def test_two_documents() -> None:
    assert one_problem(EXAMPLE + "---\n" + named("second")) == (
        24,
        "",
        "one scenario per file: a second document starts here",
    )


@pytest.mark.parametrize(("text", "got"), [("- name: x\n", "a list"), ("just words\n", "'just words'")])
def test_top_level_not_a_mapping(text: str, got: str) -> None:
    assert one_problem(text) == (1, "", f"expected a mapping of keys ({TOP_KEYS}); got {got}")


def test_merge_keys_are_refused() -> None:
    text = edited({22: "observe:\n  <<: {deadline: 30s}", 23: None})
    assert one_problem(text) == (23, "observe", "merge keys (<<) are not supported; write the keys out")


def test_many_problems_in_one_file_sorted_by_line() -> None:
    text = edited(
        {
            4: "  service: postgress",
            11: "  count: true",
            13: "  hold: 1",
            17: "  sessions: most",
            20: "  survivors_untouched: yes\n  survivors_untouched: 1",
        }
    )
    assert [(line, field) for line, field, _ in problems(text)] == [
        (4, "target.service"),
        (11, "sessions.count"),
        (13, "sessions.hold"),
        (17, "fault.sessions"),
        (21, "expect.survivors_untouched"),
        (21, "expect.survivors_untouched"),
    ]


def test_error_text_is_file_line_field_message() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_text(edited({4: "  service: postgress", 13: "  hold: 8"}), "pg.yaml")
    assert str(caught.value).splitlines() == [
        "pg.yaml:4: target.service: expected one of: postgres, ssh, websocket, tcp, haproxy, pgbouncer, grpc; got 'postgress'",
        "pg.yaml:13: sessions.hold: expected a duration like 250ms, 5s or 2m; got 8 (add a unit, such as s or ms)",
    ]


# --- files and folders ------------------------------------------------------------------------


def test_load_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_file(tmp_path / "gone.yaml")
    assert caught.value.problems == [Problem(str(tmp_path / "gone.yaml"), None, "", "no such file or folder")]


def test_load_paths_folder_sorted_and_recursive(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", named("b"))
    write(tmp_path, "a.yml", named("a"))
    write(tmp_path, "sub/deeper/c.yaml", named("c"))
    write(tmp_path, "sub/d.YAML", named("d"))
    write(tmp_path, "notes.txt", "not a scenario")
    write(tmp_path, ".hidden/e.yaml", named("e"))
    loaded = load_paths([str(tmp_path)])
    assert [Path(item.path).relative_to(tmp_path).as_posix() for item in loaded] == [
        "a.yml",
        "b.yaml",
        "sub/d.YAML",
        "sub/deeper/c.yaml",
    ]
    assert [item.scenario.name for item in loaded] == ["a", "b", "d", "c"]


def test_load_paths_files_in_given_order(tmp_path: Path) -> None:
    second = write(tmp_path, "z.yaml", named("z"))
    first = write(tmp_path, "a.yaml", named("a"))
    assert [item.scenario.name for item in load_paths([second, first])] == ["z", "a"]


def test_a_file_named_twice_loads_once(tmp_path: Path) -> None:
    file = write(tmp_path, "one.yaml", named("one"))
    assert [item.scenario.name for item in load_paths([tmp_path, file])] == ["one"]


def test_load_paths_missing_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ScenarioError) as caught:
        load_paths([missing])
    assert caught.value.problems == [Problem(missing, None, "", "no such file or folder")]


def test_load_paths_folder_without_scenarios(tmp_path: Path) -> None:
    write(tmp_path, "readme.md", "# hi")
    with pytest.raises(ScenarioError) as caught:
        load_paths([tmp_path])
    assert caught.value.problems == [
        Problem(str(tmp_path), None, "", "no scenario files (*.yaml, *.yml) in this folder")
    ]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", named("same"))
    second = write(tmp_path, "b.yaml", "# copy\n" + named("same"))
    with pytest.raises(ScenarioError) as caught:
        load_paths([tmp_path])
    assert caught.value.problems == [Problem(str(second), 2, "name", f"name 'same' is already used by {first}:1")]


def test_all_problems_across_files_in_one_error(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", named("good"))
    bad = write(tmp_path, "bad.yaml", edited({4: "  service: postgress", 15: "  type: vanish"}))
    empty = write(tmp_path, "empty.yml", "")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ScenarioError) as caught:
        load_paths([tmp_path, missing])
    assert [(p.path, p.line, p.field) for p in caught.value.problems] == [
        (str(bad), 4, "target.service"),
        (str(bad), 15, "fault.type"),
        (str(empty), 1, ""),
        (str(missing), None, ""),
    ]
    assert caught.value.exit_code == 2


def test_no_paths_no_scenarios() -> None:
    assert load_paths([]) == []
