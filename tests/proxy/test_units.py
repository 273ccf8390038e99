"""The pure parts: Go's JSON rules, the toxic registry's units, the slicer's cuts."""

from __future__ import annotations

import random

import pytest

from harness.proxy import gojson, toxics
from harness.proxy.errors import ApiError
from harness.proxy.toxics.slicer import Slicer


def test_decode_takes_the_first_value_like_go() -> None:
    assert gojson.decode(b'  {"a": 1} trailing') == {"a": 1}
    with pytest.raises(ApiError) as empty:
        gojson.decode(b"  ")
    assert (empty.value.status, empty.value.message) == (400, "bad request body: EOF")
    with pytest.raises(ApiError) as bad:
        gojson.decode(b"NaN")
    assert bad.value.message.startswith("bad request body: invalid character 'N'")


def test_float32_prints_as_go_prints_it() -> None:
    assert gojson.float32(0.2, "x") == 0.2
    assert gojson.float32(0.123456789, "x") == 0.12345679
    assert gojson.number(gojson.float32(1, "x")) == 1
    with pytest.raises(ApiError):
        gojson.float32(1e39, "x")
    assert gojson.dumps({"a": "<&>é"}) == '{"a":"\\u003c\\u0026\\u003eé"}'.encode()


def test_fields_match_case_insensitively() -> None:
    assert gojson.lookup({"Name": "x"}, "name") == "x"
    # encoding/json decode.go, decodeState.object: every matching key is decoded in turn,
    # so the last wins, and a null leaves the field as it was
    assert gojson.lookup({"name": "y", "NAME": "x"}, "name") == "x"
    assert gojson.lookup({"name": "y", "NAME": None}, "name") == "y"


def test_units_round_trip_and_types_are_checked() -> None:
    latency, values = toxics.decode("latency", {"latency": 250, "jitter": 3})
    assert latency.latency_s == pytest.approx(0.25) and latency.jitter_s == pytest.approx(0.003)
    assert toxics.encode(latency) == values == {"latency": 250, "jitter": 3}
    slicer, _ = toxics.decode("slicer", {"delay": 1500})
    assert slicer.delay_s == pytest.approx(0.0015)
    merged, values = toxics.decode("latency", {"jitter": 7}, base=latency, base_values=values)
    assert toxics.encode(merged) == values == {"latency": 250, "jitter": 7}
    for bad in ({"latency": True}, {"latency": "1"}, {"latency": 2**63}, [1]):
        with pytest.raises(ApiError):
            toxics.decode("latency", bad)


def test_extreme_attributes_are_kept_exactly() -> None:
    # Go keeps the int64 it decoded and prints it back (toxics/latency.go, LatencyToxic:
    # Latency int64); a float of seconds turned 2**63-1 ms into 2**63, which a Go client
    # cannot even decode into its int64 again
    big = 2**63 - 1
    _, values = toxics.decode("latency", {"latency": big, "jitter": -(2**63)})
    assert values == {"latency": big, "jitter": -(2**63)}
    _, values = toxics.decode("slicer", {"delay": 123456789012345678}, base_values=None)
    assert values["delay"] == 123456789012345678


@pytest.mark.parametrize("size, average, variation", [
    (1000, 10, 4), (1000, 10, 0), (7, 0, 0), (1, 1, 1), (5000, 3, 50), (0, 10, 2)])
def test_slicer_cuts_cover_every_byte_once(size: int, average: int, variation: int) -> None:
    cuts = Slicer(average, variation).cuts(size, random.Random(1))
    assert cuts == sorted(cuts) and cuts[-1] == size
    pieces = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert sum(pieces) == size and (size == 0 or min(pieces) > 0)
    if size > 100 and variation < average:
        assert max(pieces) <= average + variation + 1


def test_raising_an_api_error_does_not_keep_its_tracebacks() -> None:
    # the fuzzing's finding: `raise PROXY_NOT_FOUND` raised the one module-level instance,
    # which kept every traceback it went through (frames, requests, bodies: 20 MiB per
    # oversized body); each raise is now of a fresh copy
    from harness.proxy.errors import PROXY_NOT_FOUND
    from harness.proxy.server import ProxyServer

    server = ProxyServer()
    for _ in range(100):
        with pytest.raises(ApiError) as caught:
            server.get("nope")
        assert caught.value == PROXY_NOT_FOUND and caught.value is not PROXY_NOT_FOUND
    assert PROXY_NOT_FOUND.__traceback__ is None
