"""``connchaos run`` in a subprocess, followed by its progress lines, and what its lab runs:
for tests that act on a run at chosen moments (tests/e2e/test_signals.py,
tests/e2e/test_target_death.py)."""

from __future__ import annotations

import pwd
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from harness.lab.netns import pids_in
from harness.testing import CONNCHAOS, REPO, ours

ECHO = f"{sys.executable} {REPO}/scenarios/services/tcp_echo.py --host {{host}} --port {{port}}"
"""The shipped echo service, as a scenario's ``command:``."""


def echo_scenario(name: str, *, expect: str, deadline: str, sessions: int = 3, faulted: str = "all",
                  keepalive_s: int = 0) -> str:
    """A blackhole on sessions of the echo service; ``keepalive_s`` turns its keepalive on
    with that idle, interval and count 1 (declared for the prediction), reclaiming about
    2 x ``keepalive_s`` after the fault."""
    command, settings = ECHO, "{}"
    if keepalive_s:
        command += f" --keepalive-idle {keepalive_s} --keepalive-interval {keepalive_s} --keepalive-count 1"
        settings = (f"{{tcp_keepalive: true, tcp_keepalive_idle: {keepalive_s},"
                    f" tcp_keepalive_interval: {keepalive_s}, tcp_keepalive_count: 1}}")
    return f"""name: {name}
target: {{service: tcp, command: "{command}", port: 7000, settings: {settings}}}
sessions: {{count: {sessions}, hold: 100ms, greeting: "hello\\n"}}
fault: {{type: blackhole, sessions: {faulted}}}
expect: {expect}
observe: {{deadline: {deadline}}}
"""


def everything() -> set[str]:
    """``ours()`` and the per-run accounts (an ssh lab's)."""
    return ours() | {f"account {p.pw_name}" for p in pwd.getpwall()
                     if re.fullmatch(r"cc-[0-9a-f]+", p.pw_name)}


class Run:
    """``connchaos run --report-dir TMP/r PATH``, its stderr collected line by line as it
    comes; with ``code``, through ``python -c code`` (which then calls the CLI)."""

    def __init__(self, path: Path, tmp_path: Path, code: str | None = None) -> None:
        argv = ["run", "--report-dir", str(tmp_path / "r"), str(path)]
        cmd = [*CONNCHAOS, *argv] if code is None else [sys.executable, "-c", code, *argv]
        self.labs_before = {o for o in ours() if o.startswith("netns ")}
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []      # stderr
        self.output: list[str] = []     # stdout
        self._readers = [threading.Thread(target=self._read, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.proc.stderr, self.lines), (self.proc.stdout, self.output))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[str] | None, into: list[str]) -> None:
        assert pipe is not None
        for line in pipe:
            into.append(line)

    @property
    def err(self) -> str:
        return "".join(self.lines)

    @property
    def out(self) -> str:
        return "".join(self.output)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for(self, text: str, timeout_s: float = 60) -> None:
        """Until a line of stderr holds ``text`` (the run killed and the test failed if the
        run ends or the time passes first)."""
        deadline = time.monotonic() + timeout_s
        while not self.said(text):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.end()
                raise AssertionError(f"{text!r} never appeared; saw: {self.err}")
            time.sleep(0.005)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def end(self, timeout_s: float = 60) -> int:
        """Its exit code, once it has ended and a moment has passed for late children to show."""
        self.proc.wait(timeout_s)
        for reader in self._readers:
            reader.join(5)
        time.sleep(0.3)
        return self.proc.returncode

    def server_namespace(self) -> str:
        """The server namespace of this run's lab (a leftover of an older one may be there)."""
        (ns,) = [o.split()[1] for o in ours() if o.startswith("netns cc-") and o.endswith("-srv")
                 and o not in self.labs_before]
        return ns

    def server_processes(self) -> list[tuple[int, int, list[bytes]]]:
        """(pid, parent pid, command line) of each process in the lab's server namespace."""
        found = []
        for pid in pids_in(self.server_namespace()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            found.append((pid, ppid, argv))
        return found

