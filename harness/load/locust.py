"""Locust in processes of its own, inside the lab's client network.

Locust runs on gevent, which monkey-patches the standard library: it can never share the
harness's asyncio process. Each Locust process is started by the lab beside its client
(``start_server``): as root through ``ip netns exec`` (which execs, so the pid is Locust's
own); without root in a container of the project's image that joins the client container's
network, as the harness's own user (so the files it writes in the lab's folder stay the
harness's). It runs headless, with the target's address in the environment of
``harness/load/users.py`` (copied into the lab's folder, which the container mounts).
``workers: 0`` runs one local process; ``workers: N`` a master and N workers talking over
the client network's loopback (on several machines, the workers would take
``--master-host`` of the master's address instead).

The harness asks the users to check their sessions with SIGUSR1, and ends Locust with
SIGTERM, on which Locust stops its users and writes its statistics (``--csv``,
``--json-file``) before exiting.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import LabError
from harness.lab.processes import log_tail, running, stop_process
from harness.lab.server import ServerProcess, ServerSpec, start_here
from harness.registry import SERVICE_TYPES

if TYPE_CHECKING:
    from harness.targets.base import LabView

USERS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "users.py")
MASTER_PORT = 5557
SETTLE_S = 3.5    # Locust's WORKER_REPORT_INTERVAL (3 s) and a margin
USERS = {name: s.locust_user for name, s in SERVICE_TYPES.items() if s.locust_user is not None}
"""The User class in users.py of each service (Locust takes class names on its command line;
users.py itself is never imported here: importing Locust monkey-patches the process)."""
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LocustRun:
    """The Locust processes of one load run, and the files they leave."""

    lab: LabView | None               # runs beside its client; None: here (the users' own tests)
    folder: str                       # Locust's logs, statistics and the users' events files
    user_class: str                   # WebSocketUser, PostgresUser, TcpUser
    env: dict[str, str]               # CONNCHAOS_LOAD_* for the users
    users: int
    spawn_rate: float
    workers: int = 0
    run_time_s: float = 3600.0        # Locust stops by itself after this, whatever happens
    procs: list[ServerProcess] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    image: str | None = field(default=None, init=False)   # the project's, when not run here

    @property
    def events_folder(self) -> str:
        return os.path.join(self.folder, "events")

    def _argv(self, role: str, python: str, users_file: str) -> list[str]:
        argv = [python, "-m", "locust", "-f", users_file, "--loglevel", "WARNING",
                "--logfile", os.path.join(self.folder, f"{role}.log")]
        if role.startswith("worker"):
            return [*argv, "--worker", "--master-host", "127.0.0.1", "--master-port", str(MASTER_PORT),
                    self.user_class]
        argv += ["--headless", "-u", str(self.users), "-r", f"{self.spawn_rate:g}",
                 "--run-time", f"{int(self.run_time_s)}s", "--only-summary",
                 "--csv", os.path.join(self.folder, "locust"), "--csv-full-history",
                 "--json-file", os.path.join(self.folder, "stats")]
        if role == "master":
            argv += ["--master", "--expect-workers", str(self.workers),
                     "--master-bind-host", "127.0.0.1", "--master-bind-port", str(MASTER_PORT)]
        return [*argv, self.user_class]

    def start(self) -> None:
        """Start the master (or the local runner) and the workers; they spawn the users."""
        os.makedirs(self.events_folder, exist_ok=True)
        python, users_file, user = sys.executable, USERS_FILE, None
        if self.lab is not None and not self.lab.reach.enters_networks:
            self.image = self.lab.image_for("toxiproxy", None)   # the project's image
            # in a folder of its own: ``collect`` copies the top of the folder to the report
            os.makedirs(os.path.join(self.folder, "lib"), exist_ok=True)
            python, users_file = "python", shutil.copy(USERS_FILE, os.path.join(self.folder, "lib"))
            user = f"{os.getuid()}:{os.getgid()}"
        env = {**self.env, "CONNCHAOS_LOAD_EVENTS": self.events_folder, "PYTHONUNBUFFERED": "1"}
        roles = ["local"] if self.workers == 0 else ["master"] + [f"worker{i}" for i in range(self.workers)]
        for role in roles:
            spec = ServerSpec(f"locust-{role}", tuple(self._argv(role, python, users_file)),
                              image=self.image, env=env, binds={self.folder: self.folder},
                              log=os.path.join(self.folder, f"{role}.out"), user=user, beside="cli")
            self.procs.append(self.lab.start_server(spec) if self.lab is not None else start_here(None, spec))
            self.roles.append(role)

    def check_running(self, step: str) -> None:
        """A LabError quoting its output if a Locust process has exited."""
        for role, proc in zip(self.roles, self.procs, strict=True):
            code = proc.poll()
            if code is not None:
                out = proc.logs()[-800:].strip()
                log = log_tail(os.path.join(self.folder, f"{role}.log"))
                raise LabError(step, f"Locust {role} exited ({code}): {log or out}")

    def ask_check(self) -> None:
        """SIGUSR1 to the processes running users: each still-held session checks itself once."""
        for role, proc in zip(self.roles, self.procs, strict=True):
            if role != "master" and proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)

    def ask_quiet(self, clients: Iterable[str]) -> None:
        """The users of these sessions (client addresses, as the users see their own) stop
        their activity from now on (a fault that makes sessions idle): the list goes to a file
        the users read on SIGUSR2."""
        path = os.path.join(self.events_folder, "quiet.txt")
        with open(path + ".new", "w") as f:
            f.write("".join(f"{c}\n" for c in clients))
        os.replace(path + ".new", path)
        for role, proc in zip(self.roles, self.procs, strict=True):
            if role != "master" and proc.poll() is None:
                proc.send_signal(signal.SIGUSR2)

    def usage(self) -> dict[str, Any]:
        """CPU seconds and peak memory of each Locust process so far (from /proc)."""
        found: dict[str, Any] = {}
        for role, proc in zip(self.roles, self.procs, strict=True):
            found[role] = proc_usage(proc.pid)
        return found

    def stop(self, grace_s: float = 30.0, settle: bool = True) -> None:
        """SIGTERM to the master (or local runner), which stops its workers and writes the
        statistics; then the workers that are left, then SIGKILL.

        With ``settle``, first wait for the statistics to be complete: workers report to the
        master every 3 s (their last report at quit may come after the master stopped
        listening: it waits 0.5 s) and the CSV files are rewritten every second.
        """
        if settle and all(p.poll() is None for p in self.procs):
            time.sleep(SETTLE_S if self.workers else 1.2)
        for role, proc in zip(self.roles, self.procs, strict=True):
            if role in ("master", "local"):
                stop_process(proc, signal.SIGTERM, grace_s)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_process(proc, signal.SIGTERM, 5)

    # -- what it leaves ---------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every line of the users' events files, in time order."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.events_folder, "events-*.jsonl"))):
            with open(path) as f:
                for line in f:
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        continue   # a line cut short by a killed process
        return sorted(found, key=lambda e: float(e.get("at", 0)))

    def stats(self) -> dict[str, Any]:
        """Locust's own statistics, per request name, from its CSV files."""
        return read_stats(os.path.join(self.folder, "locust"))

    def collect(self, dest: str) -> list[str]:
        """Copy Locust's statistics and logs into ``dest`` (the report folder); the files copied."""
        os.makedirs(dest, exist_ok=True)
        copied = []
        for path in sorted(glob.glob(os.path.join(self.folder, "*"))):
            if os.path.isfile(path):
                shutil.copy(path, dest)
                copied.append(os.path.basename(path))
        return copied


def proc_usage(pid: int) -> dict[str, float] | None:
    """CPU seconds (user + system) and resident memory now and at its peak, in MiB."""
    if not running(pid):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None

    def mib(name: str) -> float:
        return round(int(status.get(name, "0 kB").split()[0]) / 1024, 1)
    return {"cpu_s": round((int(fields[11]) + int(fields[12])) / _TICKS, 2),
            "rss_mib": mib("VmRSS"), "peak_rss_mib": mib("VmHWM")}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_stats(prefix: str) -> dict[str, Any]:
    """``{"requests": [{type, name, requests, failures, median_ms, p95_ms, ...}], "failures":
    [{type, name, error, occurrences}]}`` from Locust's ``<prefix>_stats.csv`` and
    ``<prefix>_failures.csv``; empty lists when Locust wrote none."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    try:
        with open(f"{prefix}_stats.csv", newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"type": row.get("Type", ""), "name": row.get("Name", ""),
                             "requests": int(row.get("Request Count") or 0),
                             "failures": int(row.get("Failure Count") or 0),
                             "median_ms": _number(row.get("Median Response Time", "")),
                             "mean_ms": _number(row.get("Average Response Time", "")),
                             "p95_ms": _number(row.get("95%", "")),
                             "p99_ms": _number(row.get("99%", "")),
                             "max_ms": _number(row.get("Max Response Time", ""))})
    except OSError:
        pass
    try:
        with open(f"{prefix}_failures.csv", newline="") as f:
            for row in csv.DictReader(f):
                failures.append({"type": row.get("Method", ""), "name": row.get("Name", ""),
                                 "error": row.get("Error", ""),
                                 "occurrences": int(row.get("Occurrences") or 0)})
    except OSError:
        pass
    return {"requests": rows, "failures": failures}
