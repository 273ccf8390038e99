"""``connchaos bench load``: the load benchmark, two load runs at full size, figures printed.

1. 10,000 WebSocket sessions held against the reference server (Locust: a master and two
   workers, a message every 30 s each), 1,000 of them blackholed; the server pings every 5 s.
2. PostgreSQL with 1,000 sessions (``SELECT 1`` every 5 s each), 10% blackholed; keepalive
   2 s + 3 × 1 s and TCP_USER_TIMEOUT 3 s.

Each runs through the same library call as ``connchaos run`` (results.json in the report
folder). Printed: sessions held, the observer's cost per sample (one socket-table dump of
all sessions), reclaim p50/p95/max against the prediction, survivors killed, the CPU and
peak memory of the harness and of each Locust process, and the server's peak resources.
This is a benchmark, not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from harness.report import results as results_file
from harness.scenario import load_text

WEBSOCKET = """name: bench-load-websocket
about: 10,000 WebSocket sessions under Locust, 1,000 of them blackholed.
target:
  service: websocket
  settings: {{ping_interval: 5, ping_timeout: 5, close_timeout: 1, tcp_user_timeout: 3000}}
load: {{users: {users}, spawn_rate: {rate}, hold: 3s, activity: {{every: 30s}}, workers: 2}}
fault: {{type: blackhole, sessions: 0.1}}
expect: {{reclaimed_within: 20s, survivors_untouched: true}}
observe: {{deadline: 30s, interval: 100ms}}
"""

POSTGRES = """name: bench-load-postgres
about: PostgreSQL with 1,000 sessions under Locust, 10% of them blackholed.
target:
  service: postgres
  settings: {{tcp_keepalives_idle: 2, tcp_keepalives_interval: 1, tcp_keepalives_count: 3,
             tcp_user_timeout: 3000}}
load: {{users: {users}, spawn_rate: {rate}, hold: 3s, activity: {{every: 5s}}, workers: 2}}
fault: {{type: blackhole, sessions: 0.1}}
expect: {{reclaimed_within: 20s, survivors_untouched: true}}
observe: {{deadline: 30s, interval: 100ms}}
"""


def _fmt(value: Any, unit: str = " s") -> str:
    return "-" if value is None else f"{value}{unit}"


def figures(entry: dict[str, Any]) -> list[str]:
    """The benchmark's lines for one results.json entry."""
    if entry["verdict"] == "error":
        return [f"{entry['name']}: error: {entry['reason']}"]
    load, summary, usage = entry["load"], entry["summary"], entry["load"]["usage"]
    series = load["resources"]["series"]
    peak = {k: max((s[k] for s in series), default=None)
            for k in ("established", "processes", "fds", "rss_mib", "anon_mib")}
    pred = entry["prediction"] or {}
    lines = [
        f"{entry['name']}: {entry['verdict']} ({entry['reason'] or 'every expectation met'})",
        f"  sessions held      {load['held']} of {load['users']} (Locust: master + {load['workers']} workers;"
        f" {load.get('open_failed', 0)} could not be opened)",
        f"  faulted            {summary['faulted']}; reclaimed {summary['reclaimed']};"
        f" survivors killed {summary['survivors_killed']}; survivors answering their check"
        f" {load['survivors_checked_ok']} of {load['held'] - load['faulted']}",
        f"  reclaim            p50 {_fmt(summary['p50_s'])}, p95 {_fmt(summary['p95_s'])},"
        f" max {_fmt(summary['max_s'])} (latest prediction {_fmt(pred.get('reclaim_s'))})",
        f"  observer           {entry['observer']['samples']} samples,"
        f" {entry['observer']['mean_sample_ms']} ms each on average"
        f" (one socket-table dump of all {load['held']} sessions)",
        f"  harness            CPU {usage['harness']['cpu_s']} s,"
        f" peak RSS {usage['harness']['peak_rss_mib']} MiB",
    ]
    for role, u in usage["locust"].items():
        if u:
            lines.append(f"  locust {role:<11} CPU {u['cpu_s']} s, peak RSS {u['peak_rss_mib']} MiB")
    lines.append(f"  server peak        {peak['established']} sessions, {peak['processes']} processes,"
                 f" {peak['fds']} descriptors, RSS {peak['rss_mib']} MiB (private {peak['anon_mib']} MiB)")
    lines.append(f"  run took           {entry['duration_s']} s")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from harness import run as runner

    p = argparse.ArgumentParser(prog="connchaos bench load")
    p.add_argument("--quick", action="store_true", help="1,000 WebSocket and 200 PostgreSQL sessions")
    p.add_argument("--only", choices=["websocket", "postgres"], help="run one of the two")
    p.add_argument("--report-dir", default="reports")
    args = p.parse_args(argv)
    ws_users, pg_users = (1000, 200) if args.quick else (10_000, 1000)
    texts = {"websocket": WEBSOCKET.format(users=ws_users, rate=200),
             "postgres": POSTGRES.format(users=pg_users, rate=200)}
    loaded = [load_text(text, f"<bench {name}>") for name, text in texts.items()
              if args.only in (None, name)]
    runner.require_machine(loaded)
    res = runner.new_results()
    folder = results_file.run_folder(args.report_dir, res.run_id)
    try:
        runner.run(loaded, results=res, report_folder=folder,
                   progress=lambda line: print(line, flush=True),
                   on_scenario=lambda record: print("\n".join(figures(dict(record.to_json()))), flush=True))
    finally:
        results_file.write(res.record(), folder)
    print(f"results: {os.path.join(folder, 'results.json')}")
    return 0 if res.exit_code in (0, 1) else res.exit_code
