"""Reading scenario files: YAML with line numbers, validated, every problem reported as file:line.

PyYAML's plain ``safe_load`` forgets where each value came from and silently keeps the last
of two equal keys, so the file is composed into nodes (which keep their marks) and converted
here, recording the line of every key on the way.

A scenario is a few dozen values in about a kilobyte, so reading one is bounded in size, depth,
values (aliases count each time they are used) and number length: a hostile or broken file is a
problem at its line, never a hang, a crash or gigabytes of memory.
"""

from __future__ import annotations

import bisect
import codecs
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import Problem, ScenarioError
from harness.scenario.durations import as_yaml
from harness.scenario.model import RULE_ERROR, Scenario

__all__ = ["FieldPath", "LoadedScenario", "load_file", "load_paths", "load_text"]

FieldPath = tuple[str | int, ...]
"""Keys (and list indices) from the top of a scenario file down to one value."""

_SUFFIXES = (".yaml", ".yml")
_TOP_KEYS = ", ".join(Scenario.model_fields)

MAX_BYTES = 256 * 1024
"""Largest scenario file read (the examples are about 1 KB; pure-Python YAML reads ~100 KB/s)."""
MAX_DEPTH = 16
"""Deepest nesting of lists and mappings (the schema's deepest value is at depth 4)."""
MAX_VALUES = 10_000
"""Most values in one file, each alias counted every time it is used (against "billion laughs")."""
MAX_NUMBER_CHARS = 32
"""Longest whole number (int64 has 19 digits; Python refuses to convert more than 4300)."""

_INT_TAG = "tag:yaml.org,2002:int"


class _LimitReached(yaml.YAMLError):  # type: ignore[misc]  # PyYAML has no type hints
    """Reading stopped at ``line``: the file exceeds one of the limits above."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_YAML_ONLY_BREAKS = re.compile("[\x85\u2028\u2029]")


class _EditorLines:
    """Line numbers as an editor (and ``grep -n``) counts them, lines ending at ``\\n`` only.

    PyYAML follows YAML 1.1, where NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR end lines too:
    one of them in a comment would shift every later line of every problem. Only then is the
    mark's character offset looked up among the text's line ends.
    """

    def __init__(self, text: str) -> None:
        self._ends: list[int] | None = None
        if _YAML_ONLY_BREAKS.search(text):
            self._ends = [found.start() for found in re.finditer("\n", text)]

    def __call__(self, mark: yaml.Mark) -> int:
        if self._ends is None:
            return int(mark.line) + 1
        return bisect.bisect_left(self._ends, mark.index) + 1


_TOO_MANY = (f"more than {MAX_VALUES} values (each use of an alias counts again);"
             " a scenario has a few dozen")


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """PyYAML's safe loader whose composer refuses nesting deeper than ``MAX_DEPTH`` (it recurses
    once per level: a list nested 500 deep would be a RecursionError) and more than
    ``MAX_VALUES`` values as written (a flow list of 100,000 numbers took 3 s and 70 MB to
    compose before the converter counted them)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.line_of = _EditorLines(stream)
        self._depth = 0
        self._values = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.line_of(self.peek_event().start_mark)
                raise _LimitReached(line, f"nested more than {MAX_DEPTH} levels deep (lists and"
                                          " mappings inside each other); a scenario needs 4")
            # a value as the converter counts them: not a mapping's key, not an alias (counted
            # by the converter at each use)
            if (parent is None or index is not None) and not self.check_event(yaml.AliasEvent):
                self._values += 1
                if self._values > MAX_VALUES:
                    raise _LimitReached(self.line_of(self.peek_event().start_mark), _TOO_MANY)
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _too_large(path: str, newlines: int) -> Problem:
    """The problem of a file over ``MAX_BYTES``, at the line where the limit falls (after
    ``newlines`` line ends)."""
    line = newlines + 1
    return Problem(path, line, "", f"the file is larger than {MAX_BYTES // 1024} KiB, the limit for"
                                   " a scenario file (a scenario is about 1 KB); reading stopped here")


def _line_in(lines: Mapping[FieldPath, int], field_path: Sequence[str | int]) -> int | None:
    path = tuple(field_path)
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _dotted(field_path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in field_path)


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario, with the file it came from and the line of each of its keys."""

    scenario: Scenario
    path: str
    lines: dict[FieldPath, int] = field(repr=False)

    def line_of(self, field_path: Sequence[str | int]) -> int | None:
        """The line of ``field_path``, or of its nearest written parent (a default has no line)."""
        return _line_in(self.lines, field_path)

    def problem(self, field_path: Sequence[str | int], message: str) -> Problem:
        """A problem at ``field_path`` in this file, for checks made after loading (target settings)."""
        return Problem(self.path, self.line_of(field_path), _dotted(field_path), message)


# ---------------------------------------------------------------------------------------------
# YAML nodes to plain values, with lines


class _Converter:
    """Turns one document's node tree into dicts, lists and scalars, noting lines and problems."""

    def __init__(self, loader: _BoundedLoader, path: str) -> None:
        self._loader = loader
        self._line_of = loader.line_of
        self._path = path
        self._open: set[int] = set()
        self._values = 0
        self.unread: set[FieldPath] = set()   # values refused here; the schema need not say so again
        self.lines: dict[FieldPath, int] = {}
        self.problems: list[Problem] = []

    def _report(self, field_path: FieldPath, node: yaml.Node, message: str) -> None:
        line = self._line_of(node.start_mark)
        self.problems.append(Problem(self._path, line, _dotted(field_path), message))

    def _refuse(self, field_path: FieldPath, node: yaml.Node, message: str) -> None:
        """Report a value that cannot be read; it is None from here on."""
        self.unread.add(field_path)
        self._report(field_path, node, message)

    def convert(self, node: yaml.Node, field_path: FieldPath) -> object:
        self._values += 1
        if self._values > MAX_VALUES:
            # Aliases are expanded here, each use anew: stop before they multiply. The line is the
            # top-level key's: the node's own mark is its anchor's, wherever it is used.
            line = _line_in(self.lines, field_path[:1]) or 1
            raise _LimitReached(line, _TOO_MANY)
        if len(field_path) > MAX_DEPTH:  # an alias can nest what the composer saw as shallow
            self._refuse(field_path, node, f"nested more than {MAX_DEPTH} levels deep"
                                           " (through aliases); a scenario needs 4")
            return None
        if id(node) in self._open:
            self._refuse(field_path, node, "an alias refers to itself")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, field_path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, field_path)
            return self._scalar(node, field_path)
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: yaml.Node, field_path: FieldPath) -> object:
        if node.tag == _INT_TAG and len(node.value) > MAX_NUMBER_CHARS:
            self._refuse(field_path, node, f"a number of {len(node.value)} characters; no scenario"
                                           f" value is longer than {MAX_NUMBER_CHARS}")
            return None
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._refuse(field_path, node, f"cannot read this value: {exc.problem}")
            return None
        except ValueError as exc:  # a timestamp such as 2024-13-45 passes the resolver, not datetime
            self._refuse(field_path, node, f"cannot read this value: {exc}")
            return None
        except (KeyError, IndexError, AttributeError, TypeError, OverflowError):
            # PyYAML's constructors trust the resolver: an explicit tag on text they cannot read
            # (!!bool maybe, !!int '', !!timestamp soon) fails inside them.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._refuse(field_path, node, f"cannot read this value: {as_yaml(node.value)} is not a {tag}")
            return None

    def _key(self, node: yaml.Node, field_path: FieldPath) -> str | int:
        """A mapping key as a field-path part: text and whole numbers as they are, anything
        else (true, null, 1.5) as its text, which no schema field can match."""
        key = self._scalar(node, field_path)
        if isinstance(key, (str, int)) and not isinstance(key, bool):
            return key
        return str(key)

    def _sequence(self, node: yaml.SequenceNode, field_path: FieldPath) -> list[object]:
        items: list[object] = []
        for index, item in enumerate(node.value):
            self.lines[(*field_path, index)] = self._line_of(item.start_mark)
            items.append(self.convert(item, (*field_path, index)))
        return items

    def _mapping(self, node: yaml.MappingNode, field_path: FieldPath) -> dict[Any, object]:
        result: dict[Any, object] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = self._line_of(key_node.start_mark)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._report(field_path, key_node, "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(field_path, key_node, "a key must be a plain word, not a list or mapping")
                continue
            key = self._key(key_node, field_path)
            if key in first_line:
                # PyYAML would silently keep the last one; whichever the author meant, say so.
                message = f"duplicate key {as_yaml(key)} (first at line {first_line[key]})"
                self._report((*field_path, key), key_node, message)
            else:
                first_line[key] = line
            self.lines[(*field_path, key)] = line
            result[key] = self.convert(value_node, (*field_path, key))
        return result


_BREAK_NAMES = {"\x85": "NEXT LINE (U+0085)", "\u2028": "LINE SEPARATOR (U+2028)",
                "\u2029": "PARAGRAPH SEPARATOR (U+2029)"}


def _break_hint(text: str) -> str:
    """Where the text holds a character YAML 1.1 ends lines at (an editor does not): the
    likely cause of a syntax error after it, in a comment or text that looks whole."""
    found = _YAML_ONLY_BREAKS.search(text)
    if found is None:
        return ""
    line = text.count("\n", 0, found.start()) + 1
    return f"; line {line} holds a {_BREAK_NAMES[found.group()]}, which YAML 1.1 reads as a line end"


def _yaml_problem(path: str, text: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = _EditorLines(text)(mark) if mark is not None else None
        what = exc.problem or "not valid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return Problem(path, line, "", f"YAML syntax: {what}{context}{_break_hint(text)}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem(path, line, "", f"YAML syntax: {exc.reason} (character #x{character:04x})")
    return Problem(path, None, "", f"YAML syntax: {exc}")


def _read_yaml(text: str, path: str) -> tuple[dict[Any, object], dict[FieldPath, int], list[Problem],
                                              set[str]]:
    """The file's one mapping, the line of each key, the problems found in the YAML itself, and
    the fields whose values could not be read (already reported).

    Raises ``ScenarioError`` when there is no mapping to validate at all.
    """
    if len(text) > MAX_BYTES:
        raise ScenarioError([_too_large(path, text.count("\n", 0, MAX_BYTES))])
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise ScenarioError([_yaml_problem(path, text, exc)]) from exc
    problems: list[Problem] = []
    try:
        loader.get_event()  # the stream start
        root = None if loader.check_event(yaml.StreamEndEvent) else loader.compose_document()
        if not loader.check_event(yaml.StreamEndEvent):
            second = loader.line_of(loader.peek_event().start_mark)
            problems.append(Problem(path, second, "", "one scenario per file: a second document starts here"))
        converter = _Converter(loader, path)
        data = converter.convert(root, ()) if root is not None else None
    except _LimitReached as exc:
        raise ScenarioError([Problem(path, exc.line, "", exc.message)]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([_yaml_problem(path, text, exc)]) from exc
    finally:
        loader.dispose()
    problems[:0] = converter.problems
    if not isinstance(data, dict):
        if root is None or root.tag == "tag:yaml.org,2002:null":
            top = Problem(path, 1, "", f"empty file: expected a scenario ({_TOP_KEYS})")
        else:
            message = f"expected a mapping of keys ({_TOP_KEYS}); got {as_yaml(data)}"
            top = Problem(path, loader.line_of(root.start_mark), "", message)
        raise ScenarioError([top, *problems])
    # Missing top-level keys point at the top of the file.
    converter.lines[()] = 1
    return data, converter.lines, problems, {_dotted(unread) for unread in converter.unread}


# ---------------------------------------------------------------------------------------------
# pydantic errors to problems


def _clean_loc(loc: tuple[int | str, ...], data: object, kind: str) -> FieldPath:
    """Pydantic's loc without its internal parts (union member tags, ``[key]``), following the data."""
    clean: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (apart, mypy narrows part per container)
            clean.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            clean.append(part)
            node = node[part]
        elif kind == "missing" and position == len(loc) - 1 and isinstance(node, dict):
            clean.append(part)
    return tuple(clean)


def _keys_at(field_path: FieldPath) -> list[str]:
    """The keys the schema allows in the mapping at ``field_path``; empty if it is not a model."""
    model: type[BaseModel] = Scenario
    for part in field_path:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = info.annotation if info is not None else None
        # an optional section (``load: Load | None``) is the model inside the union
        members = typing.get_args(annotation) or (annotation,)
        found = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if not found:
            return []
        model = found[0]
    return list(model.model_fields)


_KIND_EXPECTS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "less_than_equal": ("le", "must be at most"),
    "greater_than": ("gt", "must be more than"),
    "less_than": ("lt", "must be less than"),
}


def _message(error: Mapping[str, Any], field_path: FieldPath) -> str:
    """A sentence saying what was expected at ``field_path`` and what the file holds instead."""
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    got = as_yaml(error.get("input"))
    if kind == "extra_forbidden":
        allowed = ", ".join(_keys_at(field_path[:-1]))
        return f"unknown key {as_yaml(field_path[-1])} (expected one of: {allowed})"
    if kind == "missing":
        return "missing (required)"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"expected one of: {choices}; got {got}"
    if kind in ("value_error", "assertion_error"):
        # Our validators write whole sentences; pydantic would prefix "Value error, ".
        return str(ctx.get("error", error["msg"]))
    if kind in _KIND_EXPECTS:
        return f"expected {_KIND_EXPECTS[kind]}; got {got}"
    if kind in _BOUNDS:
        bound, phrase = _BOUNDS[kind]
        return f"{phrase} {ctx.get(bound)}; got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _keys_at(field_path)
        with_keys = f" of keys ({', '.join(keys)})" if keys else ""
        return f"expected a mapping{with_keys}; got {got}"
    if kind == "invalid_key":
        return f"expected a key made of text; got {got}"
    text = str(error["msg"])
    return f"{text[:1].lower()}{text[1:]}; got {got}"


def _problems_from(
    exc: ValidationError, data: object, lines: Mapping[FieldPath, int], path: str, unread: set[str]
) -> list[Problem]:
    found: dict[FieldPath, Problem] = {}
    for error in exc.errors(include_url=False):
        kind = error["type"]
        loc = _clean_loc(error["loc"], data, kind)
        if _dotted(loc) in unread and kind != "extra_forbidden":
            # A value already refused is None now: "expected ...; got nothing" would say it
            # twice. Its key being unknown is news, though.
            continue
        if kind == RULE_ERROR:
            explained = [((*loc, *rule_field), message) for rule_field, message in error["ctx"]["rules"]]
        else:
            explained = [(loc, _message(error, loc))]
        for field_path, message in explained:
            # One value failing several union members would otherwise be reported several times.
            if field_path not in found:
                found[field_path] = Problem(path, _line_in(lines, field_path), _dotted(field_path), message)
    return list(found.values())


# ---------------------------------------------------------------------------------------------
# entry points


def load_text(text: str, path: str = "<string>") -> LoadedScenario:
    """Parse and validate one scenario from ``text``; ``path`` names it in problems.

    Raises ``ScenarioError`` with every problem found, each with its line.
    """
    data, lines, problems, unread = _read_yaml(text, path)
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, data, lines, path, unread))
    if problems or scenario is None:
        raise ScenarioError(sorted(problems, key=lambda p: p.line or 0))
    return LoadedScenario(scenario=scenario, path=path, lines=lines)


def load_file(path: str | os.PathLike[str]) -> LoadedScenario:
    """Read and validate the scenario file at ``path``; raises ``ScenarioError``."""
    name = str(path)
    try:
        # At most one byte past the limit: /dev/zero or a 50 GB file is refused, not read.
        with Path(path).open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ScenarioError([_too_large(name, raw.count(b"\n", 0, MAX_BYTES))])
        # utf-8-sig: editors on some systems start files with a byte-order mark; line ends
        # translated as text mode would.
        text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ScenarioError([Problem(name, None, "", "no such file or folder")]) from None
    except IsADirectoryError:
        raise ScenarioError([Problem(name, None, "", "is a folder, not a scenario file")]) from None
    except UnicodeDecodeError as exc:
        # at the line of the first byte that is not UTF-8 (as the text would count it); the
        # decoder's offsets start after a byte-order mark
        at = exc.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        before = raw[:at].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        message = f"not UTF-8 text ({exc.reason}: byte 0x{raw[at]:02x})"
        raise ScenarioError([Problem(name, before.count(b"\n") + 1, "", message)]) from None
    except OSError as exc:
        raise ScenarioError([Problem(name, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    return load_text(text, name)


def _scenario_files(folder: Path) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` below ``folder``, sorted; hidden folders (``.git``, ``.github``) skipped."""
    found: list[Path] = []
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in files:
            if name.lower().endswith(_SUFFIXES) and not name.startswith("."):
                found.append(Path(current, name))
    return sorted(found, key=lambda file: file.relative_to(folder).parts)


def _duplicate_names(loaded: Iterable[LoadedScenario]) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, LoadedScenario] = {}
    for item in loaded:
        name = item.scenario.name
        earlier = first.setdefault(name, item)
        if earlier is not item:
            where = f"{earlier.path}:{earlier.line_of(('name',))}"
            problems.append(item.problem(("name",), f"name {name!r} is already used by {where}"))
    return problems


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> list[LoadedScenario]:
    """Load every scenario named by ``paths`` (files, or folders searched recursively).

    Problems in all files are collected and raised together as one ``ScenarioError``; a file
    reached twice (named and inside a named folder) is loaded once.
    """
    loaded: list[LoadedScenario] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for given in paths:
        place = Path(given)
        if place.is_dir():
            files = _scenario_files(place)
            if not files:
                message = "no scenario files (*.yaml, *.yml) in this folder"
                problems.append(Problem(str(given), None, "", message))
        elif place.exists():
            files = [place]
        else:
            problems.append(Problem(str(given), None, "", "no such file or folder"))
            continue
        for file in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            try:
                loaded.append(load_file(file))
            except ScenarioError as exc:
                problems.extend(exc.problems)
    problems.extend(_duplicate_names(loaded))
    if problems:
        raise ScenarioError(problems)
    return loaded
