"""``connchaos bench fuzz-loader``: every shipped scenario mutated by hypothesis, each mutant
loaded as ``connchaos check`` loads it; figures printed.

Mutations (``cases()``): a value replaced by one of another type, huge, negative, NaN,
unicode, binary-looking or long; an unknown key; a duplicated key (in the text); a missing
key; containers shared through anchors and aliases, alias bombs and self-references; merge
keys; explicit tags; nesting up to 600 deep; empty files; random bytes, alone or spliced into
a scenario; the file cut at a random offset; files near and over the size limit; and
rewrites that must stay valid (flow style, comments, anchors, CRLF, a byte-order mark,
document markers), which must load to the same scenario.

Each case is judged (``judge``): a file that loads is fine unless it had to be refused; a
refused one must raise ``ScenarioError`` whose every problem names the file, a line that
exists in it and a message (the field where one applies); never another exception; each load
within ``SECONDS`` and ``PEAK_BYTES`` (tracemalloc's peak of Python allocations).

The property tests (tests/scenario/test_fuzz_loader.py) run these strategies with a small,
derandomized ``max_examples``; this benchmark runs them longer and counts the outcomes.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hypothesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.errors import Problem, ScenarioError
from harness.scenario import LoadedScenario, load_paths, load_text
from harness.scenario.loader import MAX_BYTES, MAX_DEPTH, MAX_VALUES
from harness.scenario.model import Scenario

__all__ = ["Case", "Outcome", "SECONDS", "PEAK_BYTES", "cases", "judge", "main", "run_case", "shipped"]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SECONDS = 2.0
"""Longest one load may take (a 256 KiB file parses in ~0.1-1 s here)."""
PEAK_BYTES = 64 * 1024 * 1024
"""Most Python memory one load may allocate at its peak (tracemalloc)."""

Expect = Literal["valid", "invalid", "either"]
Through = Literal["load_text", "load_paths", "prepare"]


@dataclass(frozen=True)
class Shipped:
    """A shipped scenario: its file name, text, parsed tree and loaded scenario."""

    name: str
    text: str
    tree: dict[str, Any]
    loaded: LoadedScenario


def shipped() -> list[Shipped]:
    """Every scenario file under ``scenarios/`` (subfolders too), loaded."""
    found = []
    for path in sorted(SCENARIOS.rglob("*.y*ml")):
        text = path.read_text()
        found.append(Shipped(str(path.relative_to(SCENARIOS)), text, yaml.safe_load(text),
                             load_text(text, str(path))))
    if not found:
        raise SystemExit(f"no scenario files under {SCENARIOS}")
    return found


@dataclass(frozen=True)
class Case:
    """One mutated file: what was done, to which scenario, and what must come of it."""

    kind: str
    source: str
    data: str | bytes
    expect: Expect = "either"
    want: tuple[str, ...] = ()  # refused: some problem's message or field contains one of these...
    line: int | None = None     # ... at this line
    same_as: Scenario | None = field(default=None, repr=False, compare=False)  # valid: loads to this
    mapped: bool = False        # plain YAML: each problem's line is checked against yaml.compose's


@dataclass
class Outcome:
    """What loading a case gave: problems (None: it loaded), another exception, time, memory."""

    case: Case
    through: Through
    problems: list[Problem] | None = None
    crash: str = ""
    seconds: float = 0.0
    peak_bytes: int = 0
    faults: list[str] = field(default_factory=list)   # what is wrong with the outcome

    @property
    def verdict(self) -> str:
        if self.crash:
            return "crash"
        return "valid" if self.problems is None else "invalid"


# ---------------------------------------------------------------------------------------------
# trees and paths

TreePath = tuple[str | int, ...]


def _paths(node: object, at: TreePath = ()) -> Iterator[TreePath]:
    """Every path in a parsed tree (below the top), containers and leaves."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*at, key)
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*at, index)
            yield from _paths(value, (*at, index))


def _get(tree: Any, path: TreePath) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _set(tree: Any, path: TreePath, value: object) -> None:
    _get(tree, path[:-1])[path[-1]] = value


def _dump(tree: object, flow: bool | None = False) -> str:
    return str(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=100))


def _lines(data: str | bytes) -> int:
    """How many lines ``data`` has, as an editor (and the loader) counts them."""
    if isinstance(data, bytes):
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8", "replace")
    return data.count("\n") + 1


SENTINEL = "fuzz-value-here"


def _with_raw(tree: dict[str, Any], path: TreePath, raw: str) -> tuple[str, int]:
    """The tree dumped with ``raw`` YAML text as the value at ``path``, and the line it is on."""
    mutated = copy.deepcopy(tree)
    _set(mutated, path, SENTINEL)
    text = _dump(mutated)
    at = text.index(SENTINEL)
    return text[:at] + raw + text[at + len(SENTINEL):], text.count("\n", 0, at) + 1


# ---------------------------------------------------------------------------------------------
# strategies

_NUMBERS = [0, -1, 1, -(2**63), 2**63, 2**64, 10**19, 10**31 - 1, 10**31, 10**32, 10**40, 10**400]
_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 1e-9, 0.5, -0.5, 1.0]
_STRINGS = ["", " ", "all", "1s", "-1s", "0s", "0ms", "1e400s", "99999999999999999999999999h",
            "1.5.5s", "nan s", "inf", "1 s", "10ms", "-0s", "168h", "168.0000001h", "5", "yes", "~",
            "\0", "a\0b", "\u202e", "\U0001f600", "\ufeff", "\x85", "\u2028", "line\nbreak",
            "idle", "in-flight", "postgres", "ssh", "websocket", "tcp", "blackhole", "reset",
            "closed", "pooled", "held", "client-vanish", "local", "docker", "packet", "proxy"]


def odd_values() -> st.SearchStrategy[object]:
    """Values of every type YAML can hold, weighted to the edges."""
    scalars: st.SearchStrategy[object] = st.one_of(
        st.sampled_from(_NUMBERS), st.integers(), st.integers(-(10**40), 10**40),
        st.sampled_from(_FLOATS), st.floats(), st.booleans(), st.none(),
        st.sampled_from(_STRINGS), st.text(max_size=30),
        st.binary(max_size=30).map(lambda raw: raw.decode("latin-1")),   # binary-looking text
        st.sampled_from([100, 4096, 4097, 70_000]).map(lambda n: "x" * n),
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), scalars, max_size=4),
    )


_TAGGED = ["!!bool maybe", "!!bool ''", "!!timestamp garbage", "!!timestamp 2024-02-30",
           "!!timestamp 2001-12-14t21:59:43.10-99:00", "!!int abc", "!!int ''", "!!int _", "!!int +",
           "!!int 0x", "!!int 0b", "!!int 1:2:3", "!!int 1__0", "!!float ''", "!!float abc", "!!float .",
           "!!binary aGVsbG8=", "!!binary '!!!'", "!!str", "!!null x", "!!set {a, b}", "!!omap [a: 1]",
           "!!map x", "!!seq x", "!!merge x", "!!value x", "!foo bar", "!<tag:x.org,2000:x> 1",
           "!!python/object/apply:os.system ['true']", "!!python/name:os.system ''",
           "0x" + "f" * 40, "0b" + "1" * 40, "0o" + "7" * 40, "1:" * 20 + "0", "1" * 5000 + ".5",
           "1e99999", "-.inf", ".NaN", "2024-13-45", "2001-12-14 21:59:43.10 -5", "=", "<<", "? a"]


@st.composite
def replaced(draw: st.DrawFn, base: Shipped) -> Case:
    """A value (leaf or section) replaced by an odd one."""
    tree = copy.deepcopy(base.tree)
    path = draw(st.sampled_from(list(_paths(tree))))
    _set(tree, path, draw(odd_values()))
    return Case("replace", base.name, _dump(tree, draw(st.sampled_from([False, None, True]))), mapped=True)


@st.composite
def tagged(draw: st.DrawFn, base: Shipped) -> Case:
    """A value replaced by an explicitly tagged or oddly resolved scalar."""
    path = draw(st.sampled_from(list(_paths(base.tree))))
    text, _ = _with_raw(base.tree, path, draw(st.sampled_from(_TAGGED)))
    return Case("tag", base.name, text, mapped=True)


def _model_keys(path: TreePath) -> list[str]:
    from harness.scenario.loader import _keys_at  # the schema's keys at a path
    return _keys_at(tuple(path))


@st.composite
def unknown_key(draw: st.DrawFn, base: Shipped) -> Case:
    """A key added to a mapping; where the schema lists the keys it is an unknown key."""
    tree = copy.deepcopy(base.tree)
    places: list[TreePath] = [()] + [p for p in _paths(tree) if isinstance(_get(tree, p), dict)]
    place = draw(st.sampled_from(places))
    mapping = _get(tree, place)
    known = _model_keys(place)
    key = draw(st.one_of(st.sampled_from(["nmae", "Name", "count ", "reclaimed-within", "x", "<<x"]),
                         st.text(min_size=1, max_size=12))
               .filter(lambda k: k not in mapping and k not in known and k != "<<"))
    mapping[key] = draw(odd_values())
    model = bool(known) and not any(isinstance(part, int) for part in place)
    return Case("unknown-key", base.name, _dump(tree), "invalid" if model else "either",
                want=("unknown key",) if model else (), mapped=True)


@st.composite
def missing_key(draw: st.DrawFn, base: Shipped) -> Case:
    """A key left out (required ones must be reported as missing)."""
    tree = copy.deepcopy(base.tree)
    path = draw(st.sampled_from([p for p in _paths(tree) if isinstance(p[-1], str)]))
    del _get(tree, path[:-1])[path[-1]]
    return Case("missing-key", base.name, _dump(tree), mapped=True)


def _block_keys(text: str) -> list[tuple[int, int, str]]:
    """(line, column, key) of each block-style mapping key that starts its line."""
    found = []
    lines = text.splitlines()

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                line, column = key.start_mark.line, key.start_mark.column
                if (isinstance(key, yaml.ScalarNode) and not node.flow_style
                        and lines[line][:column].strip() == ""):
                    found.append((line + 1, column, lines[line][column:key.end_mark.column]))
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(yaml.compose(text))
    return found


@st.composite
def duplicate_key(draw: st.DrawFn, base: Shipped) -> Case:
    """A key written twice in the same mapping (the copy just above the original)."""
    line, column, key = draw(st.sampled_from(_block_keys(base.text)))
    lines = base.text.splitlines(keepends=True)
    value = draw(st.sampled_from(["1", "x", "[]", "{}", "~"]))
    lines.insert(line - 1, " " * column + f"{key}: {value}\n")
    # the original is now one line down, and it is the duplicate
    return Case("duplicate-key", base.name, "".join(lines), "invalid", want=("duplicate key",), line=line + 1)


def _nest(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return "{a: " * depth + "1" + "}" * depth


@st.composite
def nested(draw: st.DrawFn, base: Shipped) -> Case:
    """A value replaced by lists or mappings nested up to 600 deep (flow style, one line)."""
    path = draw(st.sampled_from(list(_paths(base.tree))))
    depth = draw(st.one_of(st.integers(1, 20), st.sampled_from([100, 600])))
    kind = draw(st.sampled_from(["list", "map"]))
    text, line = _with_raw(base.tree, path, _nest(depth, kind))
    # the composer counts the top mapping as level 1, the nest's first level is len(path) + 1
    # and a mapping nest ends in a scalar one level further down
    deep = len(path) + depth + (kind == "map") > MAX_DEPTH
    return Case("nest", base.name, text, "invalid" if deep else "either",
                want=(f"nested more than {MAX_DEPTH} levels",) if deep else (), line=line if deep else None)


def _bomb(width: int, levels: int) -> tuple[str, int]:
    """A self-contained billion-laughs list and how many values it expands to."""
    parts = ["&b0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    counts = [1 + width]
    for _ in range(levels):
        counts.append(1 + width * counts[-1])
    return "[" + ", ".join(parts) + "]", 1 + sum(counts)


@st.composite
def aliased(draw: st.DrawFn, base: Shipped) -> Case:
    """Anchors and aliases: a container shared by two places (PyYAML's dumper writes the anchor),
    a container holding itself, an alias bomb, a merge key."""
    how = draw(st.sampled_from(["share", "self", "bomb", "merge"]))
    tree = copy.deepcopy(base.tree)
    paths = list(_paths(tree))
    path = draw(st.sampled_from(paths))
    if how == "share":
        containers = [p for p in paths if isinstance(_get(tree, p), (dict, list))]
        source = draw(st.sampled_from(containers or [()]))
        _set(tree, path, _get(tree, source))     # the same object: an anchor and an alias
        try:
            return Case("alias-share", base.name, _dump(tree))
        except RecursionError:   # it now holds itself, which the dumper cannot write
            return Case("alias-share", base.name, _with_raw(base.tree, path, "&r [*r]")[0], "invalid")
    if how == "self":
        raw = draw(st.sampled_from(["&r [*r]", "&r {a: *r}", "&r [1, [2, *r]]"]))
        return Case("alias-self", base.name, _with_raw(tree, path, raw)[0], "invalid")
    if how == "merge":
        raw = draw(st.sampled_from(["{<<: {a: 1}}", "[&m {a: 1}, {<<: *m}]", "{<<: [{a: 1}]}"]))
        return Case("alias-merge", base.name, _with_raw(tree, path, raw)[0], "invalid", want=("merge keys",))
    width, levels = draw(st.integers(2, 10)), draw(st.integers(1, 12))
    raw, values = _bomb(width, levels)
    big = values > MAX_VALUES
    return Case("alias-bomb", base.name, _with_raw(tree, path, raw)[0], "invalid" if big else "either",
                # refused as too many values, or as too deep once the aliases are followed
                want=(f"more than {MAX_VALUES} values", "levels deep") if big else ())


_EMPTY = ["", " ", "\n", "\n\n\n", "# only a comment\n", "---\n", "...\n", "--- \n...\n", "~\n", "null\n",
          "[]\n", "{}\n", "''\n", '""\n', "0\n", "\t\n", "--- |\n  text\n", "- a\n- b\n"]


@st.composite
def empty(draw: st.DrawFn, base: Shipped) -> Case:
    return Case("empty", base.name, draw(st.sampled_from(_EMPTY)), "invalid")


@st.composite
def random_bytes(draw: st.DrawFn, base: Shipped) -> Case:
    """Bytes, alone or spliced into the scenario at a random offset (through a file)."""
    noise = draw(st.binary(min_size=1, max_size=400))
    if draw(st.booleans()):
        return Case("bytes", base.name, noise)
    raw = base.text.encode()
    at = draw(st.integers(0, len(raw)))
    return Case("bytes-spliced", base.name, raw[:at] + noise + raw[at:])


_YAMLISH = st.sampled_from(list(":{}[]&*!|>'\"%@`#,?-\t\n\r\\ \0\x07\x1b\x85\u2028\ufeff\ud7ff\U0010ffff"))


@st.composite
def spliced_text(draw: st.DrawFn, base: Shipped) -> Case:
    """YAML's special characters and unicode (control characters too) inserted into the text."""
    noise = draw(st.text(st.one_of(_YAMLISH, st.characters()), min_size=1, max_size=20))
    at = draw(st.integers(0, len(base.text)))
    return Case("text-spliced", base.name, base.text[:at] + noise + base.text[at:])


@st.composite
def truncated(draw: st.DrawFn, base: Shipped) -> Case:
    at = draw(st.integers(0, len(base.text) - 1))
    return Case("truncated", base.name, base.text[:at])


@st.composite
def large(draw: st.DrawFn, base: Shipped) -> Case:
    """Files near and over the size limit: a long text, many comment lines, long flow lists,
    many keys, one long line of digits."""
    room = MAX_BYTES - len(base.text.encode()) - 64
    size = draw(st.sampled_from([room // 2, room, room + 128, 4 * MAX_BYTES]))
    how = draw(st.sampled_from(["about", "comments", "flow-list", "keys", "digits"]))
    tree = copy.deepcopy(base.tree)
    if how == "about":
        tree["about"] = "lorem ipsum " * (size // 12)
        text = _dump(tree)
    elif how == "comments":
        text = base.text + "# a comment line\n" * (size // 17)
    elif how == "flow-list":
        where = ("tags",) if "tags" in tree else ("about",)
        text, _ = _with_raw(tree, where, "[" + "1," * (size // 2) + "1]")
    elif how == "keys":
        text = base.text + "".join(f"k{i:07d}: 1\n" for i in range(size // 12))
    else:
        text, _ = _with_raw(tree, draw(st.sampled_from(list(_paths(tree)))), "9" * size)
    over = len(text.encode()) > MAX_BYTES
    return Case(f"large-{how}", base.name, text, "invalid" if over else "either",
                want=("larger than",) if over else ())


@st.composite
def same_scenario(draw: st.DrawFn, base: Shipped) -> Case:
    """Rewrites that change nothing the scenario says: they must load to the same scenario."""
    how = draw(st.sampled_from(["flow", "reorder", "comments", "anchors", "markers", "crlf", "bom"]))
    text: str | bytes = base.text
    if how == "flow":
        text = _dump(base.tree, draw(st.sampled_from([True, None])))
    elif how == "reorder":
        keys = draw(st.permutations(list(base.tree)))
        text = _dump({key: base.tree[key] for key in keys})
    elif how == "comments":
        # before a top-level key: never inside a block scalar, where it would be text
        lines = base.text.splitlines(keepends=True)
        at = draw(st.sampled_from([i for i, line in enumerate(lines) if line[:1].isalpha()] + [len(lines)]))
        comment = draw(st.text(st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=30))
        text = "".join(lines[:at]) + "# " + comment + "\n" + "".join(lines[at:])
    elif how == "anchors":
        # an anchor nothing refers to, on a key's value written on the key's line
        lines = base.text.splitlines(keepends=True)
        keyed = [(line, column + len(key)) for line, column, key in _block_keys(base.text)
                 if lines[line - 1][column + len(key):].startswith(": ")
                 and lines[line - 1][column + len(key) + 2:].strip()[:1] not in ("", "&", "*", "#")]
        if keyed:
            line, end = draw(st.sampled_from(keyed))
            lines[line - 1] = lines[line - 1][:end] + f": &anchor{line} " + lines[line - 1][end + 2:]
        text = "".join(lines)
    elif how == "markers":
        text = "%YAML 1.1\n---\n" + base.text + "...\n"
    elif how == "crlf":
        text = base.text.replace("\n", "\r\n").encode()
    elif how == "bom":
        text = b"\xef\xbb\xbf" + base.text.encode()
    else:
        text = base.text.replace("\n", " \t\n")
    return Case(f"same-{how}", base.name, text, "valid", same_as=base.loaded.scenario)


_SETTINGS_NAMES = ["tcp_keepalives_idle", "tcp_user_timeout", "ClientAliveInterval", "ClientAliveCountMax",
                   "TCPKeepAlive", "LogLevel", "max_connections", "ping_interval", "ping_timeout",
                   "close_timeout", "tcp_keepalive", "tcp_keepalive_idle", "latency", "jitter", "rate",
                   "bytes", "timeout", "delay", "size_variation", "port", "listen_addresses", "x", "Nope"]


@st.composite
def setting(draw: st.DrawFn, base: Shipped) -> Case:
    """A target setting or a fault attribute set to an odd scalar: the schema takes it, the
    target's own checks (sshd -T, postgres -C, the toxic's fields) must refuse it in words."""
    tree = copy.deepcopy(base.tree)
    section = draw(st.sampled_from([("target", "settings"), ("fault", "attributes")]))
    holder = tree.setdefault(section[0], {})
    if not isinstance(holder, dict):
        holder = tree[section[0]] = {}
    mapping = holder.setdefault(section[1], {})
    name = draw(st.one_of(st.sampled_from(sorted(mapping) or ["x"]), st.sampled_from(_SETTINGS_NAMES),
                          st.text(min_size=1, max_size=12)))
    scalars = st.one_of(st.sampled_from(_NUMBERS[:9]), st.integers(), st.sampled_from(_FLOATS), st.floats(),
                        st.booleans(), st.sampled_from(_STRINGS), st.text(max_size=20))
    mapping[name] = draw(scalars)
    return Case("setting", base.name, _dump(tree), mapped=True)


_PREFIXES = ["# NEL \x85# and on\n", "# LINE SEPARATOR \u2028# and on\n", "# PARAGRAPH SEPARATOR \u2029#\n",
             "# \u2028#\u2028#\x85#\n# two\n", "\n\n", "# plain\n", "%YAML 1.1\n---\n", "--- # start\n"]
"""Lines put before a file; the first four hold characters that end a line in YAML 1.1 (PyYAML)
and not in an editor, each followed by ``#`` so that the rest is a comment either way."""


@st.composite
def prefixed(draw: st.DrawFn, base: Shipped) -> Case:
    """Another mutation under comments or blank lines first, some holding characters YAML 1.1
    (PyYAML) ends lines at and editors do not: every later line must still be the editor's."""
    inner = draw(st.one_of(replaced(base), unknown_key(base), missing_key(base), setting(base)))
    assert isinstance(inner.data, str)
    prefix = draw(st.sampled_from(_PREFIXES))
    return Case(f"prefixed-{inner.kind}", base.name, prefix + inner.data, inner.expect, inner.want,
                mapped=inner.mapped)


@st.composite
def line_break_text(draw: st.DrawFn, base: Shipped) -> Case:
    """A comment with text after a YAML 1.1 line break: PyYAML reads that text as YAML."""
    lines = base.text.splitlines(keepends=True)
    at = draw(st.sampled_from([i for i, line in enumerate(lines) if line[:1].isalpha()]))
    char = draw(st.sampled_from(["\x85", "\u2028", "\u2029"]))
    lines.insert(at, f"# a comment {char} with: more\n")
    # PyYAML notices on this line or the next; the message names the line with the character
    return Case("line-break-text", base.name, "".join(lines), "invalid", want=(f"line {at + 1} holds a",))


MUTATIONS: list[Callable[[Shipped], st.SearchStrategy[Case]]] = [
    replaced, tagged, unknown_key, missing_key, duplicate_key, nested, aliased, empty,
    random_bytes, spliced_text, truncated, same_scenario, setting, prefixed, line_break_text,
]
"""Every mutation but ``large`` (slow: each parses up to 256 KiB)."""


def cases(bases: Sequence[Shipped], mutations: Sequence[Callable[[Shipped], st.SearchStrategy[Case]]]
          = MUTATIONS) -> st.SearchStrategy[Case]:
    """A mutation of one of ``bases``."""
    return st.sampled_from(list(bases)).flatmap(
        lambda base: st.one_of([mutation(base) for mutation in mutations]))


# ---------------------------------------------------------------------------------------------
# loading and judging


def _load(case: Case, file: Path, through: Through) -> LoadedScenario | None:
    if through == "load_text":
        assert isinstance(case.data, str)
        return load_text(case.data, str(file))
    if through == "load_paths":
        return load_paths([str(file)])[0]
    from harness.run.check import prepare
    return prepare([str(file)])[0]


def run_case(case: Case, folder: Path, through: Through = "load_text") -> Outcome:
    """Load ``case`` (a file in ``folder`` unless through ``load_text``), timed, then again
    under tracemalloc for its peak; judged."""
    if isinstance(case.data, bytes) and through == "load_text":
        through = "load_paths"
    file = folder / "fuzzed.yaml"
    if through != "load_text":
        if isinstance(case.data, bytes):
            file.write_bytes(case.data)
        else:
            file.write_text(case.data, "utf-8", "surrogatepass")
    outcome = Outcome(case, through)
    loaded = None
    start = time.perf_counter()
    try:
        loaded = _load(case, file, through)
    except ScenarioError as exc:
        outcome.problems = exc.problems
    except Exception:   # the finding: anything but ScenarioError is a bug
        outcome.crash = traceback.format_exc(limit=-6)
    outcome.seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        _load(case, file, through)
    except Exception:   # the first load has the outcome; this one measures memory
        pass
    finally:
        outcome.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    outcome.faults = judge(outcome, str(file), loaded)
    return outcome


_FILE_LEVEL = ("YAML syntax", f"nested more than {MAX_DEPTH}", f"more than {MAX_VALUES} values",
               "the file is larger", "empty file", "expected a mapping of keys", "one scenario per file",
               "not UTF-8", "merge keys", "a key must be", "an alias refers to itself")
"""How the problems that belong to no one field begin."""


def key_lines(text: str) -> dict[str, int] | None:
    """The line of each key (and list item) by its dotted field, where yaml.compose marks them
    (in lines as an editor counts them: ending at \\n only), built apart from the loader's own
    bookkeeping; None when the text is not plain YAML or a dotted field is ambiguous."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    found: dict[str, int] = {}
    ambiguous: set[str] = set()

    def note(at: str, line: int) -> None:
        if at in found and found[at] != line:
            ambiguous.add(at)
        found[at] = line

    def walk(node: yaml.Node, at: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = yaml.safe_load(yaml.serialize(key)) if isinstance(key, yaml.ScalarNode) else None
                if not isinstance(name, (str, int)) or isinstance(name, bool):
                    name = str(name)
                dotted = f"{at}.{name}" if at else str(name)
                note(dotted, text.count("\n", 0, key.start_mark.index) + 1)
                walk(value, dotted, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                dotted = f"{at}.{index}" if at else str(index)
                note(dotted, text.count("\n", 0, item.start_mark.index) + 1)
                walk(item, dotted, depth + 1)

    if root is not None:
        walk(root, "", 1)
    return None if ambiguous else found


def _expected_line(field: str, lines: dict[str, int]) -> int:
    """The line of ``field``'s key, or of its nearest written parent (the top: line 1)."""
    parts = field.split(".")
    for end in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:end]))
        if line is not None:
            return line
    return 1


def judge(outcome: Outcome, path: str, loaded: LoadedScenario | None) -> list[str]:
    """What is wrong with ``outcome``: empty when the loader behaved."""
    case, faults = outcome.case, []
    if outcome.crash:
        return [f"raised instead of ScenarioError: {outcome.crash.strip().splitlines()[-1]}"]
    if outcome.seconds > SECONDS:
        faults.append(f"took {outcome.seconds:.2f} s (limit {SECONDS} s)")
    if outcome.peak_bytes > PEAK_BYTES:
        faults.append(f"peak memory {outcome.peak_bytes / 2**20:.1f} MiB"
                      f" (limit {PEAK_BYTES / 2**20:.0f} MiB)")
    if outcome.problems is None:
        if case.expect == "invalid":
            faults.append("loaded, but must be refused")
        if case.same_as is not None and loaded is not None and loaded.scenario != case.same_as:
            faults.append("loaded to a different scenario than the file it rewrites")
        return faults
    if case.expect == "valid":
        faults.append("refused, but must load: " + "; ".join(map(str, outcome.problems))[:500])
    if not outcome.problems:
        faults.append("ScenarioError without problems")
    last = _lines(case.data)
    for problem in outcome.problems:
        text = str(problem)
        if problem.path != path:
            faults.append(f"names {problem.path!r}, not the file: {text}")
        if problem.line is None:
            faults.append(f"no line: {text}")
        elif not 1 <= problem.line <= last:
            faults.append(f"line {problem.line} is not in the file ({last} lines): {text}")
        if not problem.message.strip():
            faults.append(f"no message: {text!r}")
        if "Traceback" in text or not text.isprintable():
            faults.append(f"not one printable line: {text!r}")
        if not problem.field and not problem.message.startswith(_FILE_LEVEL):
            faults.append(f"names no field: {text}")
    lines = key_lines(case.data) if case.mapped and isinstance(case.data, str) else None
    for problem in outcome.problems if lines is not None else []:
        if problem.field and problem.line != _expected_line(problem.field, lines or {}):
            faults.append(f"line {problem.line}, but {problem.field} is written at line"
                          f" {_expected_line(problem.field, lines or {})}: {problem}")
    shown = case.data.split("\n") if isinstance(case.data, str) else []
    for problem in outcome.problems if lines is not None else []:
        # a key written as a plain word must be on the line named, as an editor shows the file
        key = problem.field.rsplit(".", 1)[-1]
        if (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) and problem.line is not None
                and 1 <= problem.line <= len(shown) and problem.field in (lines or {})
                and key not in shown[problem.line - 1]):
            faults.append(f"line {problem.line} of the file does not hold {key}: {problem}")
    if case.want:
        match = [p for p in outcome.problems if any(w in p.message or w in p.field for w in case.want)]
        if not match:
            faults.append(f"no problem says {case.want!r}: " + "; ".join(map(str, outcome.problems))[:500])
        elif case.line is not None and all(p.line != case.line for p in match):
            faults.append(f"{case.want!r} is not at line {case.line}: " + "; ".join(map(str, match))[:500])
    return faults


# ---------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Tally:
    """The figures of a fuzzing run."""

    files: int = 0
    valid: int = 0
    invalid: int = 0
    crashes: int = 0
    worst_seconds: float = 0.0
    worst_peak: int = 0
    faults: list[tuple[Outcome, str]] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.files += 1
        self.valid += outcome.verdict == "valid"
        self.invalid += outcome.verdict == "invalid"
        self.crashes += outcome.verdict == "crash"
        self.worst_seconds = max(self.worst_seconds, outcome.seconds)
        self.worst_peak = max(self.worst_peak, outcome.peak_bytes)
        self.kinds[outcome.case.kind] = self.kinds.get(outcome.case.kind, 0) + 1
        self.faults.extend((outcome, fault) for fault in outcome.faults)


def fuzz(examples: int, through: Through, tally: Tally, folder: Path, large_files: int) -> None:
    """Load ``examples`` mutants and ``large_files`` large ones, each into ``tally``."""
    bases = shipped()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(cases(bases))
    def each(case: Case) -> None:
        tally.add(run_case(case, folder, through))

    each()
    if large_files:
        @settings(max_examples=large_files, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(cases(bases, [large]))
        def each_large(case: Case) -> None:
            tally.add(run_case(case, folder, through))

        each_large()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connchaos bench fuzz-loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="mutated files (default 2000)")
    parser.add_argument("--through", choices=["load_text", "load_paths", "prepare"], default="load_paths",
                        help="what loads each file (default load_paths, as check does before its own checks)")
    parser.add_argument("--large", type=int, metavar="N",
                        help="files near and over the size limit, on top (default: 1 in 100, at least 2)")
    parser.add_argument("--quick", action="store_true", help="200 files, for a smoke run")
    args = parser.parse_args(argv)
    examples = 200 if args.quick else args.examples
    tally = Tally()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="connchaos-fuzz-") as folder:
        fuzz(examples, args.through, tally, Path(folder),
             large_files=args.large if args.large is not None else max(examples // 100, 2))
    took = time.perf_counter() - start
    print(f"scenario loader fuzzed through {args.through}: {len(shipped())} shipped scenarios mutated"
          f" (hypothesis {hypothesis.__version__}, derandomized), {took:.0f} s")
    print(f"files fuzzed         {tally.files}")
    print(f"valid (loaded)       {tally.valid}")
    print(f"invalid (exit 2)     {tally.invalid}")
    print(f"non-2 outcomes       {tally.crashes}  (another exception than ScenarioError)")
    print(f"faulty outcomes      {len({id(o) for o, _ in tally.faults})}"
          "  (a wrong file, line, field or verdict, over time or memory)")
    print(f"worst time           {tally.worst_seconds * 1000:.0f} ms  (limit {SECONDS:.0f} s)")
    print(f"worst peak memory    {tally.worst_peak / 2**20:.1f} MiB"
          f"  (tracemalloc; limit {PEAK_BYTES / 2**20:.0f} MiB)")
    print("by mutation          " + ", ".join(f"{k} {n}" for k, n in sorted(tally.kinds.items())))
    for outcome, fault in tally.faults[:20]:
        print(f"  {outcome.case.kind} of {outcome.case.source}: {fault}")
    return 1 if tally.faults else 0


if __name__ == "__main__":
    raise SystemExit(main())
