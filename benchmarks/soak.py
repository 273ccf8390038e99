"""Signal soak: ``connchaos bench soak [--runs N] [--seed S] [--quick]`` (``python -m
benchmarks.soak``).

Short scenarios of every service (tcp with the shipped echo server, postgres, ssh, websocket,
haproxy, pgbouncer) on the local backend, one on the proxy layer (postgres behind a stalled
proxy), and one on the docker backend when an engine answers. Each trial runs ``connchaos run``
on one of them and interrupts it at a seeded moment between 0.2 s (the lab still being built)
and the run's expected end with one of: SIGINT, SIGTERM, SIGINT twice 50 ms apart, or SIGKILL
followed by ``connchaos clean``. Then it waits for the run (bounded) and lists what of ours
exists (``leftovers``: namespaces, links, folders, processes, host nft tables named
``connchaos*``, per-run accounts, labelled containers and networks, volumes), against the
listing taken before the trials.

Expected: exit 130 after SIGINT or SIGTERM (or the run's own 0/1 when the signal came after it
had ended), -9 after SIGKILL, and no leftover after any trial. Printed: one line a trial (seed,
scenario, signal, moment, exit code, leftovers), then the totals. Exit 0 when every trial ended
as expected with nothing left.
"""

from __future__ import annotations

import argparse
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONNCHAOS = [sys.executable, "-m", "harness.cli"]
ECHO = f"{sys.executable} {REPO}/scenarios/services/tcp_echo.py --host {{host}} --port {{port}}"
SIGNALS = ("SIGINT", "SIGTERM", "SIGINT-twice", "SIGKILL+clean")
WAIT_S = 90.0          # the longest a run may take to end after its signal (a docker teardown)
EARLY_S = 0.5          # before this, the CLI may not have installed its signal handlers yet
LATE = "signal after the run had ended"   # the CLI's own word for it (harness.interrupts.settle)
LAB_NAMED = re.compile(r"\bcc-[0-9a-f]{6}(?:-|\b)|connchaos-[0-9a-f]{6}\b")
LATE_FROM = 0.6       # share of a scenario's duration after which a run may have ended first
SETTLE_S = 0.3         # late children (pyroute2's, initdb's) show within this


def _body(name: str, target: str, fault: str = "{type: blackhole}", extra: str = "") -> str:
    return (f"name: soak-{name}\ntarget: {target}\nsessions: {{count: 2, hold: 100ms{extra}}}\n"
            f"fault: {fault}\nexpect: {{still_held_after: 1s}}\nobserve: {{deadline: 1s}}\n")


@dataclass(frozen=True)
class Scenario:
    """One short scenario: its file's body, the backend, and how long a whole run takes (s),
    measured on this machine (the signal's moment is drawn up to that)."""

    name: str
    body: str
    backend: str
    duration_s: float


def scenarios(docker: bool) -> list[Scenario]:
    found = [
        Scenario("tcp", _body("tcp", f'{{service: tcp, command: "{ECHO}", port: 7000}}',
                              extra=', greeting: "hello\\n"'), "local", 3.0),
        Scenario("postgres", _body("postgres", "{service: postgres}"), "local", 4.7),
        Scenario("ssh", _body("ssh", "{service: ssh}"), "local", 4.0),
        Scenario("websocket", _body("websocket", "{service: websocket}"), "local", 3.5),
        Scenario("haproxy", _body("haproxy", "{service: haproxy, upstream: {service: postgres}}"),
                 "local", 5.5),
        Scenario("pgbouncer", _body("pgbouncer", "{service: pgbouncer}"), "local", 6.0),
        Scenario("proxy-stall", _body("proxy-stall", "{service: postgres}",
                                      "{type: proxy-stall, layer: proxy}"), "local", 5.5),
    ]
    if docker:
        found.append(Scenario("docker-postgres", _body("docker-postgres", "{service: postgres}"),
                              "docker", 10.0))
    return found


def docker_answers() -> bool:
    from harness.lab.docker import engine_problem

    return shutil.which("docker") is not None and engine_problem() is None


def leftovers() -> set[str]:
    """Everything of ours that exists now: ``harness.testing.ours()`` (namespaces, links,
    folders, processes, labelled containers and networks, volumes), host nft tables named
    ``connchaos*`` and per-run accounts (``cc-`` and a lab id). Namespaces, links, folders and
    processes count when their names carry a lab id (``cc-<id>-``, ``connchaos-<id>``), as
    everything a run makes does: another tool's ``cc-probe`` on the same machine is not a leak
    of these runs."""
    from harness.testing import ours

    found = {o for o in ours() if o.startswith(("docker ", "nft ")) or LAB_NAMED.search(o)}
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                check=False).stdout
        found |= {f"nft {line.strip()}" for line in tables.splitlines()
                  if line.split()[-1:] and line.split()[-1].startswith("connchaos")}
    found |= {f"account {p.pw_name}" for p in pwd.getpwall() if re.fullmatch(r"cc-[0-9a-f]{6}", p.pw_name)}
    return found


@dataclass
class Trial:
    seed: int
    scenario: str
    how: str
    at_s: float
    duration_s: float = 0.0
    code: int | None = None
    left: tuple[str, ...] = ()
    clean_code: int | None = None
    note: str = ""

    def expected(self) -> bool:
        if self.how == "SIGKILL+clean":
            ended = self.note == "ended before the signal" and self.code in (0, 1)
            return (self.code == -signal.SIGKILL or ended) and self.clean_code == 0
        # a signal that came after the run had ended finds the exit code the run gave itself
        if self.code == 130 or (self.note in ("ended before the signal", LATE) and self.code in (0, 1)):
            return True
        # in the interpreter's last moments (after atexit) the CLI ignores signals silently:
        # the run's own code, from a signal near the run's end only
        if self.code in (0, 1) and self.how != "SIGKILL+clean" and self.at_s >= LATE_FROM * self.duration_s:
            return True
        # one that came before the CLI installed its handlers (Python's start and imports,
        # about 0.15 s here, longer under load) has its default effect, nothing made yet
        early = -signal.SIGTERM if self.how == "SIGTERM" else -signal.SIGINT
        return self.at_s < EARLY_S and self.code == early

    def line(self) -> str:
        left = ", ".join(self.left) if self.left else "none"
        extra = f" clean={self.clean_code}" if self.clean_code is not None else ""
        note = f" ({self.note})" if self.note else ""
        return (f"seed {self.seed:<10} {self.scenario:16} {self.how:14} at {self.at_s:5.2f} s"
                f"  exit {self.code}{extra}  leftovers: {left}{note}")


def plan(seed: int, runs: int, found: Sequence[Scenario]) -> list[tuple[int, Scenario, str, float]]:
    """``runs`` trials (seed of the trial, scenario, signal, moment), all drawn from ``seed``:
    scenarios and signals in turn (every pair comes up), moments uniform in [0.2 s, duration]."""
    rng = random.Random(seed)
    trials = []
    for i in range(runs):
        trial_seed = rng.randrange(2**31)
        scenario = found[i % len(found)]
        how = SIGNALS[(i // len(found) + i) % len(SIGNALS)]
        at = round(random.Random(trial_seed).uniform(0.2, scenario.duration_s), 3)
        trials.append((trial_seed, scenario, how, at))
    return trials


def run_trial(trial_seed: int, scenario: Scenario, how: str, at: float, folder: Path,
              before: set[str], env: dict[str, str] | None = None) -> Trial:
    path = folder / f"{scenario.name}.yaml"
    if not path.exists():
        path.write_text(scenario.body)
    trial = Trial(trial_seed, scenario.name, how, at, scenario.duration_s)
    argv = [*CONNCHAOS, "run", "--backend", scenario.backend, "--report-dir", str(folder / "r"),
            "-q", str(path)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        try:
            proc.wait(at)
            trial.note = "ended before the signal"
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            if how == "SIGKILL+clean":
                proc.send_signal(signal.SIGKILL)
            elif how == "SIGINT-twice":
                proc.send_signal(signal.SIGINT)
                time.sleep(0.05)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            else:
                proc.send_signal(getattr(signal, how))
        try:
            _, err = proc.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            trial.note = f"still running {WAIT_S:.0f} s after the signal"
        trial.code = proc.returncode
        if LATE in (err or "") and not trial.note:
            trial.note = LATE
        if how == "SIGKILL+clean":
            done = subprocess.run([*CONNCHAOS, "clean"], cwd=REPO, capture_output=True, text=True,
                                  timeout=120, check=False, env=env)
            trial.clean_code = done.returncode
        if not trial.expected() and not trial.note:   # the run's last word on stderr says why
            trial.note = (err or "").strip().splitlines()[-1:][0][:300] if (err or "").strip() else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(SETTLE_S)
    trial.left = tuple(sorted(leftovers() - before))
    return trial


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="connchaos bench soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="trials (default 100; --quick: 16)")
    ap.add_argument("--seed", type=int, default=None, help="the seed of the whole soak (default: random)")
    ap.add_argument("--quick", action="store_true", help="16 trials, local backend only")
    ap.add_argument("--no-docker", action="store_true", help="leave the docker backend out")
    ap.add_argument("--minutes", type=float, default=None,
                    help="start no trial after this long (the totals say how many ran)")
    args = ap.parse_args(argv)
    runs = 16 if args.quick and args.runs == 100 else args.runs
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    docker = not (args.quick or args.no_docker) and docker_answers()
    found = scenarios(docker)
    print(f"soak: {runs} trials, seed {seed}, scenarios {', '.join(s.name for s in found)}", flush=True)
    before = leftovers()
    started = time.monotonic()
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="cc-soak-") as tmp:
        for trial_seed, scenario, how, at in plan(seed, runs, found):
            if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
                print(f"time budget of {args.minutes:g} min spent: {len(trials)} of {runs} trials run")
                break
            trial = run_trial(trial_seed, scenario, how, at, Path(tmp), before)
            trials.append(trial)
            print(trial.line(), flush=True)
            if trial.left:    # one trial's leak must not be blamed on the next
                before |= set(trial.left)
    took = time.monotonic() - started
    bad = [t for t in trials if not t.expected()]
    leaked = [t for t in trials if t.left]
    print(f"\nruns tried: {len(trials)} (seed {seed}) in {took:.0f} s")
    for what, counts in (("by signal", Counter(t.how for t in trials)),
                         ("by scenario", Counter(t.scenario for t in trials)),
                         ("exit codes", Counter(str(t.code) for t in trials))):
        print(f"{what}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    print(f"ended before the signal: {sum(t.note == 'ended before the signal' for t in trials)}")
    print(f"unexpected exit codes: {len(bad)}" + "".join(f"\n  {t.line()}" for t in bad))
    print(f"leftovers found: {sum(len(t.left) for t in leaked)} in {len(leaked)} trial(s)"
          + "".join(f"\n  {t.line()}" for t in leaked))
    return 0 if not bad and not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
