"""The ``connchaos`` command.

Exit codes: 0 every expectation met; 1 an expectation failed; 2 bad input; 3 this machine
cannot run it (with the reason); 130 interrupted (Ctrl-C or SIGTERM), after tearing down.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from harness import __version__, interrupts
from harness.core.verdict import exit_code
from harness.errors import ConnchaosError, MachineError, ScenarioError

if TYPE_CHECKING:
    from harness.core.records import RunRecord


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="connchaos", description=(
        "Chaos tests for services that hold long-lived connections: clients die silently, "
        "connchaos measures when the server reclaims each session and compares it with what "
        "the settings predict."))
    p.add_argument("--version", action="version", version=f"connchaos {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run scenario files or folders")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--backend", choices=["auto", "local", "docker"],
                   help="override every scenario's target.backend")
    r.add_argument("--report-dir", default="reports",
                   help="reports go to REPORT_DIR/<run id>/ (default: reports)")
    r.add_argument("--json", metavar="PATH", help="also write results.json to PATH ('-' for stdout)")
    _tag_options(r)
    _report_options(r)
    talk = r.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="no progress: only the table and the exit code")
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="also each session's events as they are seen, and how each faulted session ended")
    _proxy_options(r)

    c = sub.add_parser("check", help="validate scenario files, run nothing")
    c.add_argument("paths", nargs="+", metavar="PATH")

    e = sub.add_parser("explain", help="the prediction for each scenario, without running")
    e.add_argument("paths", nargs="+", metavar="PATH")
    _tag_options(e)

    u = sub.add_parser("up", help="build the lab and keep it up for manual reproduction")
    u.add_argument("path", metavar="PATH")
    u.add_argument("--fault", action="store_true", help="also inject the scenario's fault after hold")
    u.add_argument("--backend", choices=["auto", "local", "docker"],
                   help="override the scenario's target.backend")
    _proxy_options(u)

    x = sub.add_parser("proxy", help="serve the built-in Toxiproxy-compatible API")
    x.add_argument("--host", default="127.0.0.1",
                   help="address for the API and default listeners (default 127.0.0.1)")
    x.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    x.add_argument("--workers", type=int, default=1,
                   help="data-plane processes sharing each listener (SO_REUSEPORT); more than one"
                        " lets a proxy hold more connections than one process's file limit allows")

    b = sub.add_parser("bench", help="benchmarks that print figures")
    b.add_argument("what", choices=["proxy", "sockdiag", "load", "fuzz-proxy", "fuzz-loader", "soak"],
                   help="proxy: the built-in proxy against direct loopback; sockdiag: one"
                        " socket-table sample at 10,000 connections, against pyroute2's reader;"
                        " load: 10,000 WebSocket and 1,000 PostgreSQL sessions under Locust, 10%% blackholed;"
                        " fuzz-proxy: random requests to the built-in proxy's API, checked against"
                        " Toxiproxy's answers; fuzz-loader: the shipped scenarios mutated by hypothesis,"
                        " each loaded as check loads it; soak: short runs of every service"
                        " interrupted by signals at random moments, then the leftovers counted")
    b.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    b.add_argument("--only", choices=["websocket", "postgres"], help="load: run one of the two")
    b.add_argument("--requests", type=int, metavar="N", help="fuzz-proxy: how many requests"
                   " (default 5000; --quick: 500)")
    b.add_argument("--examples", type=int, metavar="N", help="fuzz-loader: files to fuzz (default 2000)")
    b.add_argument("--runs", type=int, metavar="N", help="soak: trials (default 100; --quick: 16)")
    b.add_argument("--seed", type=int, metavar="S", help="soak: the seed (default: random)")
    b.add_argument("--minutes", type=float, metavar="M", help="soak: start no trial after M minutes")

    rp = sub.add_parser("report", help="re-render every report format from a results.json")
    rp.add_argument("results", metavar="RESULTS", help="a results.json written by connchaos run")
    rp.add_argument("--out", metavar="DIR", help="write the reports into DIR (default: next to RESULTS)")
    _report_options(rp)

    i = sub.add_parser("images", help="build or list the docker backend's container images")
    isub = i.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    ib = isub.add_parser("build", help="build what is missing or out of date (the base image first)")
    ib.add_argument("names", nargs="*", metavar="NAME",
                    help="postgres, ssh, websocket, client, toxiproxy, grpc (default: all)")
    ib.add_argument("--rebuild", action="store_true",
                    help="build even the images that are up to date, without the layer cache")
    ib.add_argument("-v", "--verbose", action="store_true", help="show the build output")
    isub.add_parser("list", help="each image: up to date, stale or missing")

    sub.add_parser("doctor", help="what this machine can do")
    sub.add_parser("clean", help="remove anything an earlier run left behind")
    return p


def _tolerance(text: str) -> Any:
    from harness.report.baseline import Tolerance

    try:
        return Tolerance.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _report_options(p: argparse.ArgumentParser) -> None:
    from harness.report.baseline import DEFAULT_TOLERANCE

    p.add_argument("--junit", metavar="PATH", help="also write JUnit XML to PATH")
    p.add_argument("--baseline", metavar="OLD", help="compare with an earlier run's results.json;"
                                                     " a regression fails the run (exit 1)")
    p.add_argument("--p95-tolerance", metavar="TOL", type=_tolerance, default=_tolerance(DEFAULT_TOLERANCE),
                   help="how much a scenario's p95 reclaim may grow over the baseline's before it"
                        " is a regression: a percentage (20%%), a duration (500ms) or both, which"
                        f" must both be exceeded (default {DEFAULT_TOLERANCE.replace('%', '%%')})")


def _proxy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--toxiproxy-server", metavar="CMD",
                   help="for layer: proxy, start this Toxiproxy server command in the lab's router"
                        " namespace instead of the built-in one; it must serve its API on"
                        " 127.0.0.1:8474 (e.g. 'toxiproxy-server -host 127.0.0.1 -port 8474')")
    p.add_argument("--toxiproxy-url", metavar="URL",
                   help="not supported: the proxy must live inside the lab (see --toxiproxy-server)")


def _proxy_command(args: argparse.Namespace) -> list[str] | None:
    """A real toxiproxy-server's command for the local backend (docker runs an image)."""
    from harness.errors import Problem
    from harness.lab.toxiproxy import parse_command

    if args.toxiproxy_url:
        raise ScenarioError([Problem("--toxiproxy-url", None, "", (
            "the proxy runs inside the lab, on the path between client and target, where a"
            " server at a URL cannot be; name a server binary with --toxiproxy-server CMD (local"
            " backend) or let the docker backend run the Toxiproxy image"))])
    if args.toxiproxy_server and getattr(args, "backend", None) == "docker":
        raise ScenarioError([Problem("--toxiproxy-server", None, "", (
            "on the docker backend the proxy is an image (the official Toxiproxy one when it can"
            " be had, else connchaos/toxiproxy); --toxiproxy-server is for the local backend"))])
    return parse_command(args.toxiproxy_server)


def main(argv: Sequence[str] | None = None) -> int:
    """The program (``argv`` None: the command line's own) or a call from Python with ``argv``;
    as the program, a signal once the run is over changes nothing (``interrupts.settle``)."""
    args = _parser().parse_args(argv)
    # Ctrl-C or SIGTERM: unwind through every ``finally`` (teardown, which no signal cuts
    # short) and exit 130; a signal whose interrupt was lost still ends the run with 130
    interrupts.install()
    # A CI log is not a terminal: give the table room instead of rich's 80-column default.
    out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 180)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return _dispatch(args, out, err, argv)
    except KeyboardInterrupt:
        # another signal while the first one (or an error) was being reported: nothing is left
        # to tear down by then, and the run was interrupted all the same
        return exit_code((), interrupted=True)
    finally:
        if argv is None:   # the interpreter exits next: a signal must not kill it (exit -2)
            interrupts.settle()


def _dispatch(args: argparse.Namespace, out: Console, err: Console, argv: Sequence[str] | None) -> int:
    try:
        code: int = globals()[f"cmd_{args.command}"](args, out, err)
        if interrupts.received() is not None:
            raise KeyboardInterrupt   # a signal came and was lost on the way: still an interrupt
        return code
    except ScenarioError as exc:
        err.print(str(exc), markup=False)
        err.print(f"[red]{len(exc.problems)} problem(s); nothing was started.[/]")
        return exc.exit_code
    except ConnchaosError as exc:
        err.print(f"connchaos: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        if argv is None:   # the lab is torn down: an impatient user's second Ctrl-C is moot
            interrupts.settle()
        err.print("connchaos: interrupted; the lab was torn down")
        return exit_code((), interrupted=True)


def cmd_check(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.run import prepare

    loaded = prepare(args.paths)
    for ls in loaded:
        out.print(f"ok  {ls.path}: {ls.scenario.name}", markup=False)
    return 0


def _tag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="only the scenarios whose tags include TAG (repeat: any of them)")
    p.add_argument("--skip-tag", action="append", default=[], metavar="TAG",
                   help="leave out the scenarios whose tags include TAG (repeat: any of them)")


def _selected(loaded: list[Any], args: argparse.Namespace, err: Console) -> list[Any]:
    """The scenarios ``--tag`` and ``--skip-tag`` select (all without them); none left is bad
    input (exit 2), and what was left out is said on stderr."""
    from harness.errors import Problem, ScenarioError

    want, skip = set(args.tag), set(args.skip_tag)
    if not want and not skip:
        return loaded
    chosen = [ls for ls in loaded if (not want or want & set(ls.scenario.tags))
              and not skip & set(ls.scenario.tags)]
    left_out = len(loaded) - len(chosen)
    if not chosen:
        asked = " ".join([*(f"--tag {t}" for t in sorted(want)), *(f"--skip-tag {t}" for t in sorted(skip))])
        raise ScenarioError([Problem(" ".join(args.paths), None, "tags",
                                     f"no scenario of {len(loaded)} is selected by {asked}")])
    if left_out:
        err.print(f"{left_out} of {len(loaded)} scenarios left out by their tags", markup=False)
    return chosen


def cmd_explain(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.core.prediction import KernelDefaults, effective, format_seconds
    from harness.faults import FAULTS
    from harness.run import make_target, prepare, scenario_prediction, upstream_prediction

    for ls in _selected(prepare(args.paths), args, err):
        spec = ls.scenario
        target = make_target(ls)
        eff = effective(target.socket_settings(), KernelDefaults())
        pred = scenario_prediction(ls)
        out.print(f"[bold]{spec.name}[/] ({ls.path})")
        settings = ", ".join(f"{k}={v}" for k, v in target.describe_settings().items())
        out.print(f"  target    {spec.target.service}: {settings}", markup=False)
        os_note = f" (OS default: {', '.join(eff.defaults_used)})" if eff.defaults_used else ""
        user_timeout = (f"{format_seconds(eff.user_timeout_s)} s" if eff.user_timeout_s else "off")
        out.print(f"  socket    keepalive {'on' if eff.keepalive else 'off'},"
                  f" idle {format_seconds(eff.idle_s)} s,"
                  f" interval {format_seconds(eff.interval_s)} s, count {eff.count}{os_note};"
                  f" user timeout {user_timeout}; tcp_retries2 {eff.retries2}", markup=False)
        cls = FAULTS[spec.fault.type]
        mb = spec.middlebox
        if mb is not None:
            nat = "NAT (masquerade) in the router, " if mb.nat else "the router, "
            out.print(f"  middlebox {nat}conntrack entries expire after"
                      f" {format_seconds(mb.idle_timeout)} s idle, then it {mb.on_expiry}s the flow's"
                      f" packets; {_middlebox_decision(eff, mb.idle_timeout)}", markup=False)
        if spec.fault.type == "nat-idle-expiry" and mb is not None:
            peer = f"then the middlebox {'drops' if mb.on_expiry == 'drop' else 'resets'}"
        elif spec.fault.layer == "packet":
            peer = f"the peer is {getattr(cls, 'peer', '')}"
        else:
            peer = "the server's TCP peer is the proxy"
        if spec.load is not None:
            load = spec.load
            procs = ("one Locust process" if load.workers == 0
                     else f"a Locust master and {load.workers} workers")
            activity = ("idle" if load.every_s is None
                        else f"a request every {format_seconds(load.every_s)} s")
            out.print(f"  load      {load.users} users at {load.spawn_rate}/s ({procs}), each"
                      f" holding one session, {activity}; the fault {format_seconds(load.hold)} s"
                      f" after all are open", markup=False)
            picked = spec.fault.sessions
            share = (picked if isinstance(picked, (str, int))
                     else f"{picked:.0%}")
            sessions = f"{share} of the load's {load.users} sessions"
        else:
            sessions = f"sessions {spec.sessions.activity}"
        out.print(f"  fault     {spec.fault.type} at the {spec.fault.layer} layer ({peer});"
                  f" {sessions}", markup=False)
        anchor = "the data went out" if spec.sessions.activity == "in-flight" else "the last activity"
        if pred.mechanism == "closed" and spec.fault.layer == "packet" and pred.reclaim_s is not None:
            out.print(f"  predicted {format_seconds(pred.reclaim_s)} s after the fault, by closed:"
                      f" {pred.formula}", markup=False)
        elif spec.fault.layer == "proxy" and pred.reclaim_s is not None:
            out.print(f"  predicted {format_seconds(pred.reclaim_s)} s after the fault, by {pred.mechanism}:"
                      f" {pred.formula}", markup=False)
        elif pred.reclaim_s is None:
            out.print(f"  predicted never ({pred.mechanism}): {pred.formula}", markup=False)
        else:
            since = pred.reclaim_s + (spec.sessions.hold if spec.sessions.activity == "idle" else 0.0)
            earliest = "at the earliest " if pred.bound is not None else ""
            out.print(f"  predicted {earliest}{format_seconds(since)} s after {anchor}, by {pred.mechanism}"
                      f" (about {format_seconds(pred.reclaim_s)} s after the fault)", markup=False)
            out.print(f"            {pred.formula}", markup=False)
        _explain_packet_extras(out, spec, pred)
        up = upstream_prediction(ls, pred)
        if up is not None:
            at = "" if up.at_s is None else f" about {format_seconds(up.at_s)} s after the fault"
            out.print(f"  upstream  {up.outcome}{at} ({up.mechanism}): {up.formula}", markup=False)
        out.print(f"  expects   {_expect_text(spec, pred.reclaim_s)}", markup=False)
    return 0


def _explain_packet_extras(out: Console, spec: Any, pred: Any) -> None:
    """packet-loss: the bound behind the earliest time; syn-blackhole: the clients' reconnect."""
    import os

    from harness.core.loss import binomial_range
    from harness.core.prediction import format_seconds
    from harness.core.reconnect import predict_reconnect

    if pred.bound is not None:
        bound = pred.bound
        faulted = spec.fault.pick_count(spec.sessions.count)
        p = bound.p_by(spec.deadline_s)
        line = f"  bound     {bound.describe(spec.deadline_s)}"
        if p is not None:
            lo, hi = binomial_range(faulted, p)
            hi = hi if bound.kind == "distribution" else faulted
            line += (f"; of {faulted} faulted sessions about {p * faulted:.1f} reclaimed by then"
                     f" (the verdict allows {lo} to {hi}, binomial 99.9%)")
        out.print(line, markup=False)
    if spec.fault.type == "syn-blackhole":
        # a fresh lab network starts from the kernel's built-in values (the run reads the real ones)
        linear = 4 if os.path.exists("/proc/sys/net/ipv4/tcp_syn_linear_timeouts") else 0
        retries = spec.fault.syn_retries or 6
        again = predict_reconnect(retries, linear, spec.fault.connect_timeout)
        where = "TCP_SYNCNT" if spec.fault.syn_retries else "the client's default tcp_syn_retries"
        out.print(f"  reconnect {again.outcome} after {format_seconds(again.at_s or 0)} s"
                  f" ({again.mechanism}, {where}): {again.formula}", markup=False)


def _middlebox_decision(eff: Any, idle_timeout_s: float) -> str:
    """Which setting decides whether an idle session survives the middlebox."""
    from harness.core.prediction import format_seconds

    box = f"the middlebox's idle_timeout {format_seconds(idle_timeout_s)} s"
    if not eff.keepalive:
        return f"tcp keepalive is off: nothing refreshes an idle flow's entry before {box}"
    idle = f"tcp keepalive idle {format_seconds(eff.idle_s)} s"
    if eff.idle_s < idle_timeout_s:
        return f"decided by {idle} < {box}: probes refresh an idle flow's entry"
    return f"decided by {idle} >= {box}: an idle flow's entry expires before the first probe"


def _expect_text(spec: Any, predicted: float | None) -> str:
    from harness.core.prediction import format_seconds

    parts = []
    exp = spec.expect
    if exp.reclaimed_within is not None:
        ok = predicted is not None and predicted <= exp.reclaimed_within
        parts.append(f"reclaimed within {format_seconds(exp.reclaimed_within)} s"
                     f" ({'consistent with' if ok else 'NOT expected by'} the prediction)")
    if exp.still_held_after is not None:
        ok = predicted is None or predicted > exp.still_held_after
        parts.append(f"still held after {format_seconds(exp.still_held_after)} s"
                     f" ({'consistent with' if ok else 'NOT expected by'} the prediction)")
    if exp.survivors_untouched:
        parts.append("survivors untouched")
    if exp.mechanism:
        parts.append(f"by {exp.mechanism}")
    if exp.upstream:
        parts.append(f"upstream legs {exp.upstream}")
    if exp.reconnect_within is not None:
        parts.append(f"each reconnect attempt ended within {format_seconds(exp.reconnect_within)} s")
    return "; ".join(parts)


def cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import run
    from harness.report import formats
    from harness.report import results as results_file
    from harness.report.progress import RunProgress

    loaded = _selected(run.prepare(args.paths, backend=args.backend), args, err)
    proxy_command = _proxy_command(args)
    baseline = results_file.read(args.baseline) if args.baseline else None  # bad file: exit 2 now
    _check_outputs(args)
    run.require_machine(loaded, args.backend)
    res = run.new_results()
    folder = results_file.run_folder(args.report_dir, res.run_id)

    view = RunProgress(err, quiet=args.quiet, verbose=args.verbose)
    try:
        with view:
            run.run(loaded, results=res, progress=view.line, proxy_command=proxy_command,
                    on_scenario=view.scenario_done, on_observe=view.observe,
                    on_event=view.event if args.verbose else None, backend=args.backend,
                    report_folder=folder)
    except KeyboardInterrupt:
        formats.write_all(res.record(), folder)  # what finished before the interrupt
        raise
    record = _compared(res.record(), baseline, args)
    regressions = _publish(record, folder, args, out)
    if args.json:
        text = json.dumps(record.to_json(), indent=1)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return exit_code((s.verdict for s in res.scenarios), regressions=regressions)


def _check_outputs(args: argparse.Namespace) -> None:
    """Raise ScenarioError (exit 2) for a --report-dir, --json or --junit that cannot be
    written, before anything starts: else a traceback, or a failure after the whole run.

    Each is tried where it will be written (a folder made and removed, a file opened for
    append), since permission bits say nothing to root nor about /proc or a read-only mount.
    """
    import os
    import tempfile

    from harness.errors import Problem

    def why_not(path: str, *, folder: bool, makes_parents: bool) -> str | None:
        target = os.path.abspath(path)
        if os.path.isdir(target) and not folder:
            return "is a folder, not a file"
        if os.path.exists(target) and not os.path.isdir(target):
            if folder:
                return "is a file, not a folder"
            try:
                open(target, "a").close()   # appending writes nothing; the run replaces it
            except OSError as exc:
                return f"cannot be written ({exc.strerror})"
            return None
        parent = target if folder else os.path.dirname(target)
        existing = parent
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if existing != parent and not makes_parents:
            return f"no folder {parent}"
        if not os.path.isdir(existing):
            return f"{existing} is not a folder"
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".connchaos-probe-"))
        except OSError as exc:
            return f"cannot write in {existing} ({exc.strerror})"
        return None

    outputs = [("--report-dir", args.report_dir, True, True), ("--junit", args.junit, False, True),
               ("--json", None if args.json == "-" else args.json, False, False)]
    problems = [Problem(f"{option} {path}", None, "", reason) for option, path, folder, parents in outputs
                if path and (reason := why_not(path, folder=folder, makes_parents=parents))]
    if problems:
        raise ScenarioError(problems)


def _compared(record: RunRecord, baseline: RunRecord | None, args: argparse.Namespace) -> RunRecord:
    """The run with its comparison to the ``--baseline`` run (as it is without one)."""
    from dataclasses import replace

    from harness.report.baseline import compare

    if baseline is None:
        return record
    return replace(record, baseline=compare(baseline, record, args.p95_tolerance, args.baseline))


def _publish(record: RunRecord, folder: str, args: argparse.Namespace, out: Console) -> int:
    """Write every format, print the table: what ``run`` and ``report`` share. Returns how
    many regressions the baseline comparison found."""
    from harness.report import console, formats

    paths = formats.write_all(record, folder)
    if args.junit:
        paths.append(formats.write_junit(record, args.junit))
    summary = formats.append_step_summary(record)
    console.render(record, out)
    console.render_baseline(record, out)
    out.print(f"results: {paths[0]}", markup=False)
    out.print("reports: " + ", ".join(paths[1:]), markup=False)
    if summary:
        out.print(f"summary appended to {summary}", markup=False)
    return 0 if record.baseline is None else len(record.baseline.regressions)


def cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    import os

    from harness.report import results as results_file

    record = results_file.read(args.results)
    baseline = results_file.read(args.baseline) if args.baseline else None
    folder = args.out or os.path.dirname(os.path.abspath(args.results))
    regressions = _publish(_compared(record, baseline, args), folder, args, out)
    return exit_code(record.verdicts, regressions=regressions)


def cmd_up(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness import run

    loaded = run.prepare([args.path], backend=args.backend)
    proxy_command = _proxy_command(args)
    run.require_machine(loaded, args.backend)
    code: int = run.hold_open(loaded[0], inject=args.fault, show=lambda s: out.print(s, markup=False),
                              proxy_command=proxy_command, backend=args.backend)
    interrupts.clear()   # Ctrl-C is how a held lab ends
    return code


def cmd_proxy(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.proxy.server import main as serve

    signal.signal(signal.SIGINT, signal.SIG_DFL)   # the server handles its own shutdown
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code: int = serve(["--host", args.host, "--port", str(args.port), "--workers", str(args.workers)])
    return code


def cmd_bench(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.what == "load":
        from benchmarks.load import main as bench_load

        return bench_load((["--quick"] if args.quick else []) + (["--only", args.only] if args.only else []))
    if args.what == "fuzz-proxy":
        from benchmarks.fuzz_proxy import main as bench_fuzz

        requests = args.requests if args.requests is not None else 500 if args.quick else 5000
        return bench_fuzz(["--requests", str(requests)])
    if args.what == "fuzz-loader":
        try:
            from benchmarks.fuzz_loader import main as fuzz
        except ModuleNotFoundError as exc:   # hypothesis is in the test extras only
            raise MachineError(f"the Python package {exc.name}",
                               "install the test extras: pip install 'connchaos[test]'") from None
        fuzz_args = ["--quick"] if args.quick else []
        fuzz_args += ["--examples", str(args.examples)] if args.examples is not None else []
        return fuzz(fuzz_args)
    if args.what == "soak":
        from benchmarks.soak import main as soak

        soak_args = ["--quick"] if args.quick else []
        soak_args += ["--runs", str(args.runs)] if args.runs is not None else []
        soak_args += ["--seed", str(args.seed)] if args.seed is not None else []
        soak_args += ["--minutes", str(args.minutes)] if args.minutes is not None else []
        return soak(soak_args)
    if args.what == "sockdiag":
        from benchmarks.sockdiag import main as bench
    else:
        from benchmarks.proxy import main as bench

    code: int = bench(["--quick"] if args.quick else [])
    return code


def cmd_images(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.lab import images

    unknown = [n for n in getattr(args, "names", []) if n not in images.NAMES]
    if unknown:
        err.print(f"connchaos images build: no image named {', '.join(unknown)};"
                  f" the images are {', '.join(images.NAMES)}", markup=False)
        return 2
    client = images.connect()
    if args.images_command == "list":
        for st in images.status(client):
            size = f"{st.size_mb:7.0f} MB" if st.size_mb is not None else " " * 10
            out.print(f"{st.name:21} {st.ref:36} {size}  {st.created:19}  {st.state}", markup=False)
        return 0

    def progress(line: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {line}", highlight=False)

    def log(line: str) -> None:
        err.print(f"    {line}", markup=False, highlight=False)

    refs = images.ensure(client, args.names or images.NAMES, progress=progress,
                         rebuild=args.rebuild, log=log if args.verbose else None)
    for name, ref in refs.items():
        out.print(f"{name:10} {ref}", markup=False)
    return 0


def cmd_doctor(args: argparse.Namespace, out: Console, err: Console) -> int:
    from harness.doctor import checks, not_ready

    found = checks()
    for c in found:
        mark = "[green]ok[/]     " if c.ok else "[red]missing[/]"
        fix = f"  -> {c.fix}" if (c.fix and not c.ok) else ""
        out.print(f"{mark} {c.name:20} {c.detail}  [dim]({c.needed_for})[/]{fix}")
    missing = not_ready(found)
    out.print("local backend: " + ("[red]not ready[/]" if missing else "[green]ready[/]"))
    if missing:
        raise MachineError(", ".join(missing))
    return 0


def cmd_clean(args: argparse.Namespace, out: Console, err: Console) -> int:
    import os

    from harness.lab.cleanup import clean

    # without root: the docker backend's labelled containers and networks (and our folders);
    # namespaces, links, nft tables and accounts need root and are left to a root clean
    removed = clean(namespaces=os.geteuid() == 0)
    total = sum(len(v) for v in removed.values())
    for kind, items in removed.items():
        for item in items:
            what = "" if kind == "docker" else kind[:-1].replace("_", " ") + " "
            out.print(f"removed {what}{item}", markup=False)
    out.print(f"{total} leftover(s) removed" if total else "nothing to clean")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
