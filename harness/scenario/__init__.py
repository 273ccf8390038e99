"""The scenario file: its schema, loading it from YAML, and problems reported as file:line.

Durations are float seconds in code and ``250ms``/``5s``/``2m`` in files (see ``durations``).
"""

from harness.scenario.durations import Duration, format_duration, parse_duration
from harness.scenario.loader import FieldPath, LoadedScenario, load_file, load_paths, load_text
from harness.scenario.model import Expect, Fault, Observe, Scenario, Sessions, Target

__all__ = [
    "Duration",
    "Expect",
    "Fault",
    "FieldPath",
    "LoadedScenario",
    "Observe",
    "Scenario",
    "Sessions",
    "Target",
    "format_duration",
    "load_file",
    "load_paths",
    "load_text",
    "parse_duration",
]
