"""HAProxy's configuration: the scenario's settings as haproxy.cfg lines, and the whole file
checked by HAProxy itself (``haproxy -c``) before a run, its complaints mapped back to the
setting that wrote the line.

Settings (scenario keys -> the ``listen`` section's lines, HAProxy 2.6's keywords):

- ``timeout_client``, ``timeout_server``, ``timeout_tunnel``, ``timeout_connect``,
  ``timeout_client_fin`` (a client leg HAProxy half-closed after the upstream closed): a
  duration with a unit, passed to HAProxy as written (``3s``, ``500ms``, ``2m``; HAProxy
  also takes ``us``, ``h``, ``d``), or a number of seconds. Not set: infinite (connect: 5s).
- ``clitcpka``, ``srvtcpka``: true/false -> ``option clitcpka`` / ``no option clitcpka``.
- ``clitcpka_idle``, ``clitcpka_intvl``, ``srvtcpka_idle``, ``srvtcpka_intvl``: whole
  seconds (a number or a duration) -> ``clitcpka-idle 2s`` (TCP_KEEPIDLE / TCP_KEEPINTVL).
- ``clitcpka_cnt``, ``srvtcpka_cnt``: probes -> ``clitcpka-cnt 2`` (TCP_KEEPCNT).
- ``maxconn``: the proxy's connection limit (default: enough for the scenario's sessions).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from harness.lab import naming, owner
from harness.targets.base import Scalar
from harness.targets.commands import find_command, require_command

TIMEOUTS = {"timeout_client": "timeout client", "timeout_server": "timeout server",
            "timeout_tunnel": "timeout tunnel", "timeout_connect": "timeout connect",
            "timeout_client_fin": "timeout client-fin"}
OPTIONS = {"clitcpka": "clitcpka", "srvtcpka": "srvtcpka"}
KEEPALIVE_TIMES = {"clitcpka_idle": "clitcpka-idle", "clitcpka_intvl": "clitcpka-intvl",
                   "srvtcpka_idle": "srvtcpka-idle", "srvtcpka_intvl": "srvtcpka-intvl"}
COUNTS = {"clitcpka_cnt": ("clitcpka-cnt", 1, 127), "srvtcpka_cnt": ("srvtcpka-cnt", 1, 127),
          "maxconn": ("maxconn", 1, 1_000_000)}
KNOWN = (*TIMEOUTS, *OPTIONS, *KEEPALIVE_TIMES, *COUNTS)
KEEPALIVE_MAX_S = 32767      # the kernel's bound on TCP_KEEPIDLE and TCP_KEEPINTVL
DEFAULT_CONNECT = "5s"
# HAProxy's time units (standard.c, parse_time_err): the same letters as ours, plus d
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ALERT = re.compile(r"\[ALERT\].*?parsing \[[^\]]*?:(\d+)\]\s*:\s*(.*)$")


def find_haproxy() -> str | None:
    """Debian's /usr/sbin/haproxy, else ``haproxy`` on the PATH."""
    return find_command("/usr/sbin/haproxy", shutil.which("haproxy"))


def require_haproxy() -> str:
    return require_command(find_haproxy(), "HAProxy (haproxy)", "apt-get install haproxy")


def seconds_of(value: Scalar) -> float:
    """A time setting in seconds: a number of seconds, or a duration with a unit; ValueError
    with the reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 3s or 500ms, or seconds; got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative; got {value!r}")
        return float(value)
    m = _TIME.match(value)
    if not m:
        raise ValueError(f"expected a duration with a unit (us, ms, s, m, h, d) like 3s or 500ms,"
                         f" or a number of seconds; got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _time_text(value: Scalar) -> str:
    """A time setting as HAProxy reads it: text as written, seconds as milliseconds."""
    if isinstance(value, str):
        return value.strip()
    return f"{round(float(value) * 1000)}ms"


def check_values(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """What is wrong with each setting before HAProxy is asked: unknown names, types, and
    bounds HAProxy does not check itself (it passes keepalive values to the kernel and
    ignores a refusal)."""
    problems = []
    for name, value in settings.items():
        if name not in KNOWN:
            near = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(KNOWN)})"
            problems.append((name, f"not a haproxy setting{hint}"))
        elif name in OPTIONS:
            if not isinstance(value, bool):
                problems.append((name, f"expected true or false; got {value!r}"))
        elif name in COUNTS:
            _, lo, hi = COUNTS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                problems.append((name, f"expected a whole number from {lo} to {hi}; got {value!r}"))
        elif isinstance(value, str) and "\n" in value:
            problems.append((name, "a value must be on one line"))
        elif name in KEEPALIVE_TIMES:
            try:
                seconds = seconds_of(value)
            except ValueError as exc:
                problems.append((name, str(exc)))
                continue
            if not (seconds.is_integer() and 1 <= seconds <= KEEPALIVE_MAX_S):
                problems.append((name, f"the kernel takes whole seconds from 1 to {KEEPALIVE_MAX_S}"
                                       f" (HAProxy would pass {value!r} on and ignore a refusal)"))
        elif name in TIMEOUTS and not isinstance(value, str):
            try:
                seconds_of(value)
            except ValueError as exc:
                problems.append((name, str(exc)))
        # a timeout's text is HAProxy's to parse: `haproxy -c` says what it refuses
    return problems


def setting_lines(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """(setting name, haproxy.cfg line) for each setting, in the scenario's order."""
    lines = []
    for name, value in settings.items():
        if name in TIMEOUTS:
            lines.append((name, f"{TIMEOUTS[name]} {_time_text(value)}"))
        elif name in OPTIONS:
            lines.append((name, f"{'' if value else 'no '}option {OPTIONS[name]}"))
        elif name in KEEPALIVE_TIMES:
            # whole seconds (check_values): TCP_KEEPIDLE and TCP_KEEPINTVL are in seconds
            lines.append((name, f"{KEEPALIVE_TIMES[name]} {round(seconds_of(value))}s"))
        elif name in COUNTS:
            lines.append((name, f"{COUNTS[name][0]} {value}"))
    return lines


@dataclass(frozen=True)
class Rendered:
    """A haproxy.cfg and which setting wrote each of its lines (1-based)."""

    text: str
    written_by: dict[int, str]


LOG_FORMAT = "connchaos client=%ci:%cp accept=%Ts.%ms total_ms=%Tt end=%ts"
"""One line per stream when it ends: the client as HAProxy saw it, when it was accepted,
how long it lasted, and HAProxy's termination state (``cD``: client timeout in data...)."""


def render(settings: Mapping[str, Scalar], *, addr: str, port: int, upstream_addr: str,
           upstream_port: int, admin_socket: str, maxconn: int, log: bool = True) -> Rendered:
    """The lab's haproxy.cfg: one ``listen`` section in TCP mode in front of the upstream,
    its runtime API on ``admin_socket`` (mode 600), the scenario's settings in between."""
    head = [
        "# written by connchaos: HAProxy in TCP mode in front of the scenario's upstream",
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        f"    maxconn {maxconn + 100}",
        *(["    log stdout format raw local0"] if log else []),
        "defaults",
        "    mode tcp",
        *(["    log global", f'    log-format "{LOG_FORMAT}"'] if log else []),
        "listen connchaos",
        f"    bind {addr}:{port}",
    ]
    if "maxconn" not in settings:
        head.append(f"    maxconn {maxconn}")
    if "timeout_connect" not in settings:
        head.append(f"    timeout connect {DEFAULT_CONNECT}")
    lines, written_by = list(head), {}
    for name, line in setting_lines(settings):
        lines.append(f"    {line}")
        written_by[len(lines)] = name
    lines.append(f"    server upstream {upstream_addr}:{upstream_port}")
    return Rendered("\n".join(lines) + "\n", written_by)


def refusals(output: str, written_by: Mapping[int, str]) -> list[tuple[str | None, str]]:
    """HAProxy's ALERT lines, each with the setting whose line it names (None: a line of the
    lab's own, or no line)."""
    found: list[tuple[str | None, str]] = []
    for line in output.splitlines():
        m = _ALERT.search(line)
        if m:
            found.append((written_by.get(int(m.group(1))), m.group(2).strip()))
    return found


@functools.lru_cache(maxsize=64)
def _haproxy_check(haproxy: str, settings: tuple[tuple[str, Scalar], ...]) -> tuple[int, str, dict[int, str]]:
    """``haproxy -c`` on the lab's configuration with these settings, written to a scratch
    ``connchaos-`` folder (with an owner record: ``connchaos clean`` may remove it after a
    killed check): (exit code, output, line -> setting)."""
    folder = owner.make_folder(naming.new_lab_id(), purpose="haproxy settings check")
    try:
        rendered = render(dict(settings), addr="127.0.0.1", port=10000, upstream_addr="127.0.0.1",
                          upstream_port=10001, admin_socket=os.path.join(folder, "admin.sock"),
                          maxconn=100)
        path = os.path.join(folder, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(rendered.text)
        done = subprocess.run([haproxy, "-c", "-f", path], capture_output=True, text=True,
                              timeout=30, check=False)
        return done.returncode, done.stdout + done.stderr, rendered.written_by
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_settings(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """Our checks, then the whole configuration through ``haproxy -c``: each ALERT on a
    setting's line is that setting's problem."""
    problems = check_values(settings)
    if problems:
        return problems
    haproxy = find_haproxy()
    if haproxy is None or not settings:
        return []   # nothing to ask (a run stops with exit 3); the lab's own lines are fine
    code, output, written_by = _haproxy_check(haproxy, tuple(settings.items()))
    if code == 0:
        return []
    found = refusals(output, written_by)
    mapped = [(name, f"HAProxy refuses it: {text}") for name, text in found if name is not None]
    if not mapped:
        # refused, but not at a line of a setting: the settings together
        text = "; ".join(t for _, t in found) or output.strip()[-300:]
        mapped = [(next(iter(settings)), f"HAProxy refuses the configuration: {text}")]
    return mapped
