"""Property-based fuzzing of the scenario loader (issue 15, part 3): every shipped scenario,
mutated by hypothesis (benchmarks/fuzz_loader.py has the strategies and the judge), either
loads or is refused with a ScenarioError whose every problem names the file, a line in it and
the field; never another exception, each load within 2 s and 64 MiB (tracemalloc).

Reproducible: every @given here is ``derandomize=True`` (the examples follow from the test's
name, no database), so CI and this machine see the same files; ``connchaos bench fuzz-loader``
runs the same strategies for longer. The subprocess tests run ``connchaos check`` and
``connchaos run`` on a handful of generated invalid files: exit 2, file:line, no traceback,
and ``run`` creates nothing.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from benchmarks.fuzz_loader import (
    SENTINEL,
    Case,
    Outcome,
    _bomb,
    _nest,
    _with_raw,
    cases,
    large,
    run_case,
    shipped,
)
from harness.errors import ScenarioError
from harness.scenario.loader import MAX_BYTES, MAX_VALUES, load_file, load_text
from harness.testing import CONNCHAOS, REPO

BASES = shipped()
# derandomized: the examples follow from each test's name, the same in CI as here (no database);
# no deadline: a loaded machine is slow, and time and memory are the benchmark's (bench fuzz-loader)
CI = settings(derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-loader")


def faultless(outcome: Outcome) -> None:
    assert not outcome.faults, (outcome.case.kind, outcome.case.source, outcome.case.data[:2000],
                                outcome.faults)


def test_every_shipped_scenario_is_fuzzed() -> None:
    names = {base.name for base in BASES}
    assert len(names) == len(list((REPO / "scenarios").rglob("*.yaml"))) > 0


@settings(CI, max_examples=300)
@given(case=cases(BASES))
def test_mutants_load_or_are_refused_at_their_line(case: Case, folder: Path) -> None:
    faultless(run_case(case, folder, "load_text"))


@settings(CI, max_examples=40)
@given(case=cases(BASES))
def test_mutants_through_check_s_own_checks(case: Case, folder: Path) -> None:
    # prepare(): the file as check reads it, then the target's own checks (sshd -T, postgres)
    faultless(run_case(case, folder, "prepare"))


@settings(CI, max_examples=5, phases=[Phase.generate])
@given(case=cases(BASES, [large]))
def test_large_files_in_bounded_time_and_memory(case: Case, folder: Path) -> None:
    faultless(run_case(case, folder, "load_paths"))


# --- what the fuzzing found (regressions) -----------------------------------------------------

BASE = next(base for base in BASES if base.name == "postgres-peer-reboot.yaml")


@pytest.mark.parametrize("raw", ["!!bool maybe", "!!bool ''", "!!timestamp garbage", "!!int ''",
                                 "!!int _", "!!int +", "!!float ''"])
def test_a_tag_pyyaml_cannot_construct_is_a_problem(raw: str) -> None:
    # were KeyError, AttributeError and IndexError from inside PyYAML's constructors
    text, line = _with_raw(BASE.tree, ("sessions", "count"), raw)
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    tag = raw.split()[0]
    assert [(p.line, p.field) for p in caught.value.problems] == [(line, "sessions.count")]
    assert caught.value.problems[0].message.startswith("cannot read this value: ")
    assert caught.value.problems[0].message.endswith(f" is not a {tag}")


def test_a_byte_that_is_not_utf8_is_at_its_line(tmp_path: Path) -> None:
    # was a problem without a line
    file = tmp_path / "s.yaml"
    file.write_bytes(BASE.text.replace("count: 10", "count: 1\xe9").encode("latin-1"))
    with pytest.raises(ScenarioError) as caught:
        load_file(file)
    (problem,) = caught.value.problems
    line = BASE.text.splitlines().index("  count: 10") + 1
    assert (problem.line, problem.message) == (line, "not UTF-8 text (invalid continuation byte: byte 0xe9)")


def test_the_line_of_a_bad_byte_after_a_byte_order_mark(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_bytes(b"\xef\xbb\xbfname: a\r\nabout: \xff\n")
    with pytest.raises(ScenarioError) as caught:
        load_file(file)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, "not UTF-8 text (invalid start byte: byte 0xff)")]


def test_a_flow_list_of_100000_values_stops_at_the_limit() -> None:
    # was composed whole before the values were counted: 2.8 s and 72 MiB at 256 KiB
    text, line = _with_raw(BASE.tree, ("about",), "[" + "1," * 100_000 + "1]")
    assert len(text) < MAX_BYTES
    outcome = run_case(Case("flow", BASE.name, text, "invalid", want=(f"more than {MAX_VALUES} values",),
                            line=line), Path("."), "load_text")
    faultless(outcome)
    assert outcome.peak_bytes < 16 * 2**20   # stopped early (its time: bench fuzz-loader)


def test_an_unknown_key_with_an_unreadable_value_is_still_unknown() -> None:
    # the unreadable value hid the unknown key
    text = BASE.text.replace("sessions:\n", "sessions:\n  nmae: " + "9" * 40 + "\n")
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    assert [(p.field, p.message.split(" (")[0]) for p in caught.value.problems] == [
        ("sessions.nmae", "a number of 40 characters; no scenario value is longer than 32"),
        ("sessions.nmae", "unknown key 'nmae'")]


# --- connchaos check and run on generated invalid files --------------------------------------

def invalid_files(folder: Path) -> dict[Path, int]:
    """A handful of invalid mutants, one per family, each with the line a problem must be at."""
    found: dict[Path, int] = {}

    def add(name: str, data: str | bytes, line: int) -> None:
        path = folder / f"{name}.yaml"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        found[path] = line

    ssh = next(base for base in BASES if base.name == "ssh-client-alive.yaml")
    add("deep", *_with_raw(BASE.tree, ("target", "settings"), _nest(600, "list")))
    add("bomb", _with_raw(ssh.tree, ("about",), _bomb(9, 9)[0])[0], 2)
    add("tag", *_with_raw(ssh.tree, ("sessions", "count"), "!!bool maybe"))
    add("binary", b"name: x\n\x00\xff\xfe garbage", 2)
    add("truncated", BASE.text[:BASE.text.index("fault:") + 8], BASE.text[:BASE.text.index("fault:")].count("\n") + 1)
    text = BASE.text.replace("  count: 10\n", "  count: 10\n  count: -1\n")
    add("duplicate", text, text.splitlines().index("  count: -1") + 1)
    return found


def _limit_memory() -> None:
    memory = 1024 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def connchaos(*args: str, cwd: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    return subprocess.run([*CONNCHAOS, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60, preexec_fn=_limit_memory, check=False)


def _names(command: list[str], prefix: str) -> set[str]:
    if shutil.which(command[0]) is None:
        return set()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return {word.split("@")[0] for word in done.stdout.replace(":", " ").split() if word.startswith(prefix)}


def snapshot() -> set[str]:
    """What a run could leave in the machine: namespaces and links (cc-), host nftables tables
    (connchaos*, root only) and processes running from a connchaos- folder."""
    found = {f"netns {n}" for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
             if n.startswith("cc-")}
    found |= {f"link {n}" for n in _names(["ip", "-o", "link", "show"], "cc-")}
    if os.geteuid() == 0:
        found |= {f"nft {n}" for n in _names(["nft", "list", "tables"], "connchaos")}
    procs = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=False).stdout
    found |= {f"process {line.strip()}" for line in procs.splitlines() if "/connchaos-" in line}
    return found


def others(items: set[str]) -> set[str]:
    """The items another run owns: a lab writes its connchaos-<lab id>- folder before creating
    anything, and ours would go to the private TMPDIR, so a lab id with a folder in the
    machine's temporary folder is another test's (other lab tests may run at the same time)."""
    labs = {name.split("-")[1] for name in os.listdir(tempfile.gettempdir()) if name.startswith("connchaos-")
            and len(name.split("-")) > 2}
    return {item for item in items if any(f"cc-{lab}" in item or f"connchaos-{lab}" in item for lab in labs)}


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_the_mutants_and_run_creates_nothing(command: str, tmp_path: Path) -> None:
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    files = invalid_files(work)
    listing = sorted(os.listdir(work))
    before = snapshot()
    args = [command, *map(str, files)]
    if command == "run":
        args += ["--report-dir", str(tmp_path / "reports")]
    done = connchaos(*args, cwd=work, tmpdir=tmpdir)
    after = snapshot()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    for path, line in files.items():
        assert f"{path}:{line}:" in done.stderr, (path.name, done.stderr[-3000:])
    # every line a problem at file:line, then how many
    *problems, summary = done.stderr.splitlines()
    assert all(line.split(":")[0] in map(str, files) and line.split(":")[1].isdigit() for line in problems)
    assert summary == f"{len(problems)} problem(s); nothing was started."
    assert sorted(os.listdir(work)) == listing        # no reports/ (the default), nothing else
    assert not (tmp_path / "reports").exists()
    assert os.listdir(tmpdir) == []                   # no connchaos- folder (nor any other)
    assert (after - before) - others(after - before) == set()


def test_run_refuses_one_mutant_of_each_family_alone(tmp_path: Path) -> None:
    # one file at a time: the first problem is the file's own (exit 2 before anything else)
    files = invalid_files(tmp_path)
    for path in (p for p in files if p.stem in ("bomb", "binary")):
        done = connchaos("run", str(path), "--report-dir", str(tmp_path / "reports"), cwd=tmp_path,
                         tmpdir=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"{path}:{files[path]}:"), done.stderr[-2000:]
    assert not (tmp_path / "reports").exists()


def test_the_generated_files_are_refused_in_process(tmp_path: Path) -> None:
    # the subprocess tests' files through the judge too (their lines are the ones asserted above)
    for path, line in invalid_files(tmp_path).items():
        data: str | bytes = path.read_bytes() if path.stem == "binary" else path.read_text()
        faultless(run_case(Case(path.stem, path.name, data, "invalid", line=line,
                                want=("",)), tmp_path, "load_paths"))
    assert SENTINEL not in "".join(p.read_text("latin-1") for p in tmp_path.glob("*.yaml"))



@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"])
def test_lines_are_the_editor_s_after_a_yaml_1_1_line_break(char: str) -> None:
    # PyYAML ends lines at NEL, LS and PS too: one in a comment shifted every later line
    text = BASE.text.replace("about: >", f"# a comment {char}# and on\nabout: >").replace("count: 10", "count: 0")
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (text.split("\n").index("  count: 0") + 1, "sessions.count")


def test_a_syntax_error_after_a_yaml_1_1_line_break_names_its_line() -> None:
    text = BASE.text.replace("about: >", "# a comment \u2028 with: more\nabout: >")
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    (problem,) = caught.value.problems
    assert problem.message.startswith("YAML syntax: ")
    assert problem.message.endswith("; line 2 holds a LINE SEPARATOR (U+2028), which YAML 1.1 reads as a line end")


def test_a_key_with_a_line_break_and_an_escape_is_one_printable_problem() -> None:
    # a key "a\nother.yaml:1: ..." printed raw would forge a second problem line
    text = BASE.text.replace("sessions:\n", 'sessions:\n  "x\\nother.yaml:1: fine\\e[2J": 1\n')
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "s.yaml")
    (problem,) = caught.value.problems
    assert problem.field == "sessions.x\nother.yaml:1: fine\x1b[2J"   # the key as written
    assert str(problem).startswith("s.yaml:14: sessions.x\\nother.yaml:1: fine\\x1b[2J: unknown key ")
    assert str(caught.value).isprintable()


def test_the_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.fuzz_loader import main

    assert main(["--examples", "20", "--large", "1", "--through", "load_text"]) == 0
    out = capsys.readouterr().out

    def figure(label: str) -> int:
        found = re.search(rf"^{re.escape(label)}\s+(\d+)", out, re.MULTILINE)
        assert found is not None, out
        return int(found[1])

    assert figure("files fuzzed") == 21 == figure("valid (loaded)") + figure("invalid (exit 2)")
    assert figure("non-2 outcomes") == 0 == figure("faulty outcomes")
    assert figure("worst time") < 2000 and "worst peak memory" in out
