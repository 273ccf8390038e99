"""The proxy benchmark's pure parts: its report and how many proxy processes it asks for."""

from __future__ import annotations

import resource

from benchmarks import proxy as bench


def test_benchmark_report_judges_each_target() -> None:
    figures = {"direct_tp": 4000.0, "proxied_tp": 2000.0, "direct_p50": 20.0,
               "proxied_p50": 36.0, "direct_p99": 40.0, "proxied_p99": 70.0,
               "held": 9990, "kb_per_conn": 2.0, "fd_limit": 20000, "members": 1}
    lines, ok = bench.report(figures, bench.FULL, "uvloop")
    text = "\n".join(lines)
    assert not ok and "0.50x" in text and "1.80x" in text
    assert "idle connections held" in text and "FAIL" in text and "RLIMIT_NOFILE" in text
    assert "1 process cannot hold 10000" in text
    figures["members"] = 2
    lines, ok = bench.report(figures, bench.FULL, "uvloop")
    assert "through 2 proxy processes (--workers 2" in "\n".join(lines)
    figures["held"] = 10_000
    assert bench.report(figures, bench.FULL, "uvloop")[1] is True
    figures["proxied_p50"] = 41.0
    assert bench.report(figures, bench.FULL, "uvloop")[1] is False


def test_benchmark_picks_enough_processes_for_the_descriptor_limit() -> None:
    assert bench.members_for(10_000, 20_000) == (2, 9968)    # this machine: 2, not 1
    assert bench.members_for(10_000, 1 << 20)[0] == 1
    assert bench.members_for(10_000, 8_000)[0] == 4           # 3968 each, 80% of it used
    assert bench.members_for(10_000, resource.RLIM_INFINITY) == (1, 10_000)
