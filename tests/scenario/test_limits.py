"""Hostile and broken scenario files: each is exit 2 at its file:line, in bounded time and memory.

``connchaos check`` runs in a subprocess with a timeout and an address-space limit, so that a
hang or a runaway expansion fails the test instead of the machine.
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.scenario.loader import MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_file, load_text
from harness.scenario.model import MAX_SETTINGS
from harness.testing import CONNCHAOS, REPO

MEMORY = 1024 * 1024 * 1024   # address space for the whole check (Python with pydantic: ~300 MB)
TIMEOUT = 60                   # generous: a check takes ~2 s on a loaded machine

SSH = """\
name: limits
target:
  service: ssh
  settings:
    ClientAliveInterval: 2
sessions:
  count: 5
fault:
  type: client-vanish
expect:
  reclaimed_within: 13s
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONNCHAOS, "check", str(path)], capture_output=True, text=True, cwd=REPO,
                          timeout=TIMEOUT, preexec_fn=_limit_memory, check=False)


def first_problem(tmp_path: Path, text: str | bytes) -> str:
    """The first line ``connchaos check`` prints for a file holding ``text``; asserts exit 2."""
    file = tmp_path / "s.yaml"
    if isinstance(text, bytes):
        file.write_bytes(text)
    else:
        file.write_text(text)
    done = check(file)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stderr.splitlines()[0].replace(str(file), "s.yaml")


def billion_laughs() -> str:
    lines = ["name: laughs", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_a_list_nested_500_deep(tmp_path: Path) -> None:
    text = SSH.replace("name: limits\n", "name: limits\nabout: " + "[" * 500 + "]" * 500 + "\n")
    assert first_problem(tmp_path, text) == (
        f"s.yaml:2: nested more than {MAX_DEPTH} levels deep (lists and mappings inside each other);"
        " a scenario needs 4")


def test_a_5000_digit_number(tmp_path: Path) -> None:
    text = SSH.replace("count: 5", "count: " + "9" * 5000)
    assert first_problem(tmp_path, text) == (
        "s.yaml:7: sessions.count: a number of 5000 characters; no scenario value is longer than 32")


def test_a_long_number_is_one_problem() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_text(SSH.replace("count: 5", "count: " + "9" * 5000), "s.yaml")
    assert [(p.line, p.field) for p in caught.value.problems] == [(7, "sessions.count")]


def test_billion_laughs(tmp_path: Path) -> None:
    # a4 (line 6), 9**5 strings, is the first key that takes the count past the limit
    assert first_problem(tmp_path, billion_laughs()) == (
        f"s.yaml:6: more than {MAX_VALUES} values (each use of an alias counts again);"
        " a scenario has a few dozen")


def test_aliases_nesting_deeper_than_the_limit() -> None:
    # each level is shallow where it is written, deep once its alias is used
    lines = ["a0: &a0 [1]", *(f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 2))]
    with pytest.raises(ScenarioError) as caught:
        load_text("\n".join(lines) + "\n", "s.yaml")
    assert any("levels deep (through aliases)" in p.message for p in caught.value.problems)


def test_a_nul_in_an_ssh_setting(tmp_path: Path) -> None:
    text = SSH.replace("ClientAliveInterval: 2", 'Banner: "a\\0b"')
    assert first_problem(tmp_path, text) == (
        "s.yaml:5: target.settings.Banner: a NUL character (\\0) cannot be passed to a program")


def test_a_nul_in_a_setting_name() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_text(SSH.replace("ClientAliveInterval: 2", '"Ban\\0ner": 2'), "s.yaml")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (5, "a NUL character (\\0) cannot be passed to a program")]


def test_thousands_of_unknown_settings(tmp_path: Path) -> None:
    # each would be one sshd -T and one difflib search: 9000 took 207 s
    keys = "".join(f"    Unknown{i:05d}: 1\n" for i in range(9000))
    text = SSH.replace("    ClientAliveInterval: 2\n", keys)
    assert first_problem(tmp_path, text) == f"s.yaml:4: target.settings: at most {MAX_SETTINGS} settings; got 9000"


def test_50_mb_of_unknown_keys(tmp_path: Path) -> None:
    keys = "".join(f"unknown{i:07d}: 1\n" for i in range(50 * 1024 * 1024 // 17))
    line = (SSH + keys).count("\n", 0, MAX_BYTES) + 1
    assert first_problem(tmp_path, SSH + keys) == (
        f"s.yaml:{line}: the file is larger than 256 KiB, the limit for a scenario file"
        " (a scenario is about 1 KB); reading stopped here")


def test_thousands_of_unknown_keys_within_the_size(tmp_path: Path) -> None:
    keys = "".join(f"unknown{i:05d}: 1\n" for i in range(MAX_VALUES // 2))
    assert first_problem(tmp_path, SSH + keys) == (
        f"s.yaml:{SSH.count(chr(10)) + 1}: unknown00000: unknown key 'unknown00000' (expected one of:"
        " name, about, target, sessions, fault, expect, observe, load, middlebox, tags)")


def test_an_endless_file_is_read_only_to_the_limit() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_file("/dev/zero")
    (problem,) = caught.value.problems
    assert (problem.line, problem.message.split(",")[0]) == (1, "the file is larger than 256 KiB")


def test_text_over_the_limit() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_text("# padding\n" * (MAX_BYTES // 10 + 1), "s.yaml")
    assert caught.value.problems[0].line == MAX_BYTES // 10 + 1


def test_an_impossible_date_is_a_problem_at_its_line() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_text(SSH.replace("name: limits", "name: 2024-13-45"), "s.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.field, problem.message) == (1, "name", "cannot read this value: month must be in 1..12")


def test_crlf_files_read_as_before(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_bytes(SSH.replace("\n", "\r\n").encode())
    loaded = load_file(file)
    assert (loaded.scenario.name, loaded.line_of(("expect", "reclaimed_within"))) == ("limits", 11)


# --- what check passed and run refused after building the lab (issue 16, item 7) -------------

TCP = """\
name: own-server
target:
  service: tcp
  command: "python3 server.py\\0 --port {port}"
  port: 7000
sessions:
  count: 2
fault:
  type: blackhole
expect:
  reclaimed_within: 8s
"""


def test_a_hold_of_a_billion_billion_hours(tmp_path: Path) -> None:
    text = SSH.replace("  count: 5\n", "  count: 5\n  hold: 99999999999999999999999h\n")
    assert first_problem(tmp_path, text) == (
        "s.yaml:8: sessions.hold: a duration is at most 168h (a week); got '99999999999999999999999h'")


def test_a_nul_in_the_command(tmp_path: Path) -> None:
    assert first_problem(tmp_path, TCP) == (
        "s.yaml:4: target.command: a NUL character (\\0) cannot be passed to a program")


@pytest.mark.parametrize(("after", "text"), [
    ("  port: 7000", '  ready: "nc -z\\0 x"'),
    ("  port: 7000", '  image: "me/srv\\0"'),
    ("  count: 2", '  opener: "raw\\0"'),
])
def test_a_nul_in_what_reaches_a_program(after: str, text: str) -> None:
    lines = TCP.replace("\\0", "").splitlines()
    at = lines.index(after) + 1
    lines.insert(at, text)
    with pytest.raises(ScenarioError) as caught:
        load_text("\n".join(lines) + "\n", "s.yaml")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (at + 1, "a NUL character (\\0) cannot be passed to a program")]


def test_a_greeting_may_hold_any_byte() -> None:
    body = TCP.replace("\\0", "").replace("  count: 2\n", '  count: 2\n  greeting: "\\0\\x01"\n')
    assert load_text(body).scenario.sessions.greeting == "\0\x01"
