"""results.json: the run's results in the shape DESIGN.md fixes (schema connchaos.results/1),
read into and written from ``harness.core.records.RunRecord``.

The shape is also written down as a JSON Schema (``results.schema.json``, shipped with the
package) so that other tools can check a file without reading our code; ``read`` checks
every file against it, so a report is never rendered from something that only looks right.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from typing import Any

from harness.core.records import SCHEMA, RunRecord
from harness.errors import Problem, ScenarioError

# Past this many, a broken file's problems are cut short: the first ones say what it is.
_MAX_PROBLEMS = 10


def run_folder(report_dir: str, run_id: str) -> str:
    """``<report_dir>/<run_id>``, created."""
    folder = os.path.join(report_dir, run_id)
    os.makedirs(folder, exist_ok=True)
    return folder


def write(run: RunRecord, folder: str, name: str = "results.json") -> str:
    """Write ``run`` atomically into ``folder``; returns the file's path."""
    path = os.path.join(folder, name)
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(run.to_json(), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of results.json (draft 2020-12)."""
    text = resources.files("harness.report").joinpath("results.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def problems(data: Any, source: str) -> list[Problem]:
    """What makes ``data`` not a results file, each at its JSON path (``$.scenarios[0].verdict``)."""
    # jsonschema ships no type information; types-jsonschema may or may not be installed.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

    if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA:
        return [Problem(source, None, "$.schema", f"{data['schema']!r} is not a results schema this"
                                                  f" connchaos reads (it reads {SCHEMA!r})")]
    validator = Draft202012Validator(schema())
    found = sorted(validator.iter_errors(data), key=_document_order)
    out = [Problem(source, None, e.json_path, _short(e.message)) for e in found[:_MAX_PROBLEMS]]
    if len(found) > _MAX_PROBLEMS:
        out.append(Problem(source, None, "", f"... and {len(found) - _MAX_PROBLEMS} more problems"))
    return out


def _document_order(error: Any) -> list[tuple[int, str]]:
    """Sort key: scenarios[2] before scenarios[11], as they are in the file."""
    return [(part, "") if isinstance(part, int) else (-1, str(part)) for part in error.absolute_path]


def _short(message: str) -> str:
    """jsonschema quotes whole offending values; a session list would fill the screen."""
    return message if len(message) <= 200 else message[:197] + "..."


def validate(data: Any, source: str = "results.json") -> None:
    """Raise ScenarioError (exit 2) listing where ``data`` departs from the schema."""
    found = problems(data, source)
    if found:
        raise ScenarioError(found)


def read(path: str) -> RunRecord:
    """Load and check a results file; a file that is not one is exit 2 naming where."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise ScenarioError([Problem(path, None, "", f"cannot read it: {exc.strerror or exc}")]) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise ScenarioError([Problem(path, line, "", f"not JSON: {exc}")]) from exc
    validate(data, path)
    try:
        return RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        # the schema leaves some blocks open (kernel, observer: any object); a block this
        # connchaos cannot read is still bad input, not a crash
        problem = Problem(path, None, "", f"not a results file this connchaos reads: {exc!r}")
        raise ScenarioError([problem]) from exc

