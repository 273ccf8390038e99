"""Durations: the spellings a scenario file may use, and the ones it may not."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from harness.scenario.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("100us", 0.0001),
        ("5 s", 5.0),
        (" 250 ms ", 0.25),
        ("0.5m", 30.0),
        ("1ms", 0.001),
        ("+3s", 3.0),
    ],
)
def test_parse_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (8, "8 (add a unit, such as s or ms)"),
        (2.5, "2.5 (add a unit, such as s or ms)"),
        (True, "true"),
        (None, "nothing"),
        ({"s": 5}, "a mapping"),
        ("5", "'5' (add a unit, such as s or ms)"),
        ("5d", "'5d'"),
        ("5sec", "'5sec'"),
        ("5S", "'5S'"),
        ("", "''"),
        ("s", "'s'"),
        ("1,5s", "'1,5s'"),
        ("1e3s", "'1e3s'"),
        (".5s", "'.5s'"),
    ],
)
def test_parse_rejects_with_what_it_got(value: object, got: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == f"expected a duration like 250ms, 5s or 2m; got {got}"


def test_parse_rejects_negative() -> None:
    with pytest.raises(ValueError, match=r"^a duration cannot be negative; got '-5s'$"):
        parse_duration("-5s")


def test_negative_zero_is_zero() -> None:
    assert parse_duration("-0s") == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (5, "5s"),
        (120, "2m"),
        (7875, "7875s"),
        (3600, "1h"),
        (7200, "2h"),
        (5400, "90m"),
        (90, "90s"),
        (1.5, "1.5s"),
        (0, "0s"),
        (0.1, "100ms"),
        (0.0015, "1.5ms"),
        (0.0001, "100us"),
        (0.01, "10ms"),
        (60.5, "60.5s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0.25, 1 / 3, 0.3, 1e-7, 123456.789, 0.0042, 59.999, 1e-6, 86400.0, 2.675, 0.07]
)
def test_format_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_format_refuses_what_is_not_a_duration(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


class _Timed(BaseModel):
    wait: Duration


def test_duration_field_parses_and_dumps_as_written() -> None:
    timed = _Timed.model_validate({"wait": "250ms"})
    assert timed.wait == 0.25
    assert timed.model_dump() == {"wait": "250ms"}
    assert _Timed.model_validate(timed.model_dump()) == timed


def test_duration_field_reports_the_parse_message() -> None:
    with pytest.raises(ValidationError) as caught:
        _Timed.model_validate({"wait": 8})
    (error,) = caught.value.errors()
    assert error["type"] == "value_error"
    assert str(error["ctx"]["error"]) == "expected a duration like 250ms, 5s or 2m; got 8 (add a unit, such as s or ms)"


@pytest.mark.parametrize("text", ["99999999999999999999999h", "169h", "604801s", "9" * 400 + "s"])
def test_parse_refuses_more_than_a_week(text: str) -> None:
    # 1e23 hours passed check, then was an OverflowError once the lab was up
    with pytest.raises(ValueError, match=r"^a duration is at most 168h \(a week\); got '"):
        parse_duration(text)


def test_a_week_is_the_longest() -> None:
    assert parse_duration("168h") == parse_duration("10080m") == 604800.0
