"""Durations as people write them in scenario files (``250ms``, ``5s``, ``2m``), as float seconds in code.

A bare number is refused on purpose: ``hold: 5`` could mean seconds or milliseconds
(Toxiproxy counts in milliseconds), and guessing wrong silently changes what a scenario tests.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "MAX_SECONDS", "as_yaml", "format_duration", "parse_duration"]

EXPECTED = "expected a duration like 250ms, 5s or 2m"

MAX_SECONDS = 7 * 24 * 3600
"""Longest duration a file may give (168h, a week): far past any TCP timer (the defaults reclaim
within ~2h11m), and inside every timer the runtime takes (``threading.TIMEOUT_MAX``, ``time.sleep``),
which would raise OverflowError only once the lab is up."""

_MULTIPLIERS: dict[str, int] = {"h": 3600, "m": 60, "s": 1}
# Sub-second units divide: "250ms" is 250 / 1000 exactly, where 250 * 0.001 is not (0.001 is inexact).
_DIVISORS: dict[str, int] = {"ms": 1000, "us": 1_000_000}

_PATTERN = re.compile(r"(?P<sign>[-+]?)(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|m|h)")


def as_yaml(value: object) -> str:
    """A value from a scenario file as the file spells it, for the "got ..." part of messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def parse_duration(value: object) -> float:
    """Return the seconds that ``value`` (a string such as ``"250ms"``, ``"5s"``, ``"1.5m"``) stands for.

    Units: ``us``, ``ms``, ``s``, ``m``, ``h``; spaces between number and unit are allowed.
    Raises ``ValueError`` for bare numbers, unknown units, negative durations and durations
    over ``MAX_SECONDS``.
    """
    if not isinstance(value, str):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        hint = " (add a unit, such as s or ms)" if numeric else ""
        raise ValueError(f"{EXPECTED}; got {as_yaml(value)}{hint}")
    match = _PATTERN.fullmatch(value.strip())
    if match is None:
        hint = " (add a unit, such as s or ms)" if _looks_numeric(value) else ""
        raise ValueError(f"{EXPECTED}; got {as_yaml(value)}{hint}")
    number = float(match["number"])
    if match["sign"] == "-" and number != 0:
        raise ValueError(f"a duration cannot be negative; got {as_yaml(value)}")
    unit = match["unit"]
    seconds = number / _DIVISORS[unit] if unit in _DIVISORS else number * _MULTIPLIERS[unit]
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration is at most {MAX_SECONDS // 3600}h (a week); got {as_yaml(value)}")
    return seconds


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _plain(number: float) -> str:
    """The shortest decimal text that reads back as ``number``, never in exponent form."""
    text = format(Decimal(repr(number)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_duration(seconds: float) -> str:
    """Spell ``seconds`` the way a scenario file would: ``0.25`` → ``250ms``, ``120`` → ``2m``.

    Hours and minutes only when whole; below a second, ``ms`` (or ``us``). The result always
    reads back through ``parse_duration`` to exactly ``seconds``.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    candidates: list[str] = []
    if seconds >= 60 and seconds == int(seconds):
        whole = int(seconds)
        if whole % 3600 == 0:
            candidates.append(f"{whole // 3600}h")
        if whole % 60 == 0:
            candidates.append(f"{whole // 60}m")
    if seconds < 1e-3:
        candidates.append(f"{_plain(seconds * 1_000_000)}us")
    elif seconds < 1:
        candidates.append(f"{_plain(seconds * 1000)}ms")
    in_seconds = _plain(seconds)
    for text in candidates:
        # Scaling can land one ulp off ("0.09999999999999999us"): then plain seconds read better.
        if parse_duration(text) == seconds and _digits(text) <= _digits(in_seconds):
            return text
    return f"{in_seconds}s"


def _digits(text: str) -> int:
    """Significant digits of a number's text: "100ms" and "0.1" both have one."""
    return len(text.rstrip("hmsu").replace(".", "").strip("0"))


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    # Dump durations as the file spells them, so a dumped scenario validates again.
    PlainSerializer(format_duration, return_type=str),
]
"""A duration field: accepts ``"250ms"``/``"5s"``/``"2m"``, holds float seconds."""
