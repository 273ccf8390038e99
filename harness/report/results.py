"""results.json: the run's results in the shape DESIGN.md fixes (schema connchaos.results/1)."""

from __future__ import annotations

import json
import os
from typing import Any


def run_folder(report_dir: str, run_id: str) -> str:
    """``<report_dir>/<run_id>``, created."""
    folder = os.path.join(report_dir, run_id)
    os.makedirs(folder, exist_ok=True)
    return folder


def write(results: dict[str, Any], folder: str, name: str = "results.json") -> str:
    """Write ``results`` atomically into ``folder``; returns the file's path."""
    path = os.path.join(folder, name)
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read(path: str) -> dict[str, Any]:
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    return data
