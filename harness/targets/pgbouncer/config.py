"""pgbouncer's settings: reading them the way pgbouncer 1.18 does, checking them with
pgbouncer itself, and writing its configuration file.

What the numbers mean comes from pgbouncer's source: ``tune_socket`` (src/util.c) sets
SO_KEEPALIVE when ``tcp_keepalive`` is non-zero (the default is 1) and TCP_KEEPCNT,
TCP_KEEPIDLE, TCP_KEEPINTVL only when each is above 0 (0: the OS default), in whole
seconds; TCP_USER_TIMEOUT when ``tcp_user_timeout`` (milliseconds) is set. The idle timeouts
are seconds (fractions allowed) and are enforced by the janitor (src/janitor.c), which runs
every 1/3 s: a timeout fires at the first janitor pass after it has passed.

pgbouncer has no "check the configuration" switch, so the check starts it on a scratch
file that listens nowhere: it loads the whole file (refusing an unknown or bad setting with
``ERROR ... (file:line)`` and exiting), and a file it accepts ends with ``FATAL nowhere to
listen on`` before anything is opened. It stops at the first refused line, so the check
removes that one and asks again.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.targets.base import Scalar
from harness.targets.commands import find_command, require_command

JANITOR_PERIOD_S = 1 / 3          # src/janitor.c: full_maint_period = {0, USEC / 3}
# The lab decides these: where pgbouncer listens, who may log in, its logs, its backend.
RESERVED = {"listen_addr", "listen_port", "unix_socket_dir", "unix_socket_mode",
            "unix_socket_group", "auth_type", "auth_file", "auth_hba_file", "auth_user",
            "auth_query", "auth_dbname", "logfile", "pidfile", "admin_users", "stats_users",
            "user", "syslog", "syslog_ident", "syslog_facility", "log_connections",
            "log_disconnections", "so_reuseport", "peer_id", "conffile", "service_name",
            "job_name"}
# What the kernel takes for the keepalive options (include/net/tcp.h): larger is EINVAL
# at setsockopt, which pgbouncer meets only when a client connects.
KERNEL_MAX = {"tcp_keepidle": 32767, "tcp_keepintvl": 32767, "tcp_keepcnt": 127}
WHOLE = ("tcp_keepalive", "tcp_keepidle", "tcp_keepintvl", "tcp_keepcnt", "tcp_user_timeout")
TIMES = ("client_idle_timeout", "server_idle_timeout", "server_lifetime")
POOL_MODES = ("session", "transaction", "statement")
DEFAULTS: dict[str, Scalar] = {   # pgbouncer 1.18's, for the settings that decide reclaim
    "pool_mode": "session", "tcp_keepalive": 1, "tcp_keepidle": 0, "tcp_keepintvl": 0,
    "tcp_keepcnt": 0, "tcp_user_timeout": 0, "client_idle_timeout": 0,
    "server_idle_timeout": 600, "server_lifetime": 3600, "server_reset_query": "DISCARD ALL",
    "min_pool_size": 0,
}

_REFUSED = re.compile(r"\bERROR (.*?) in configuration \(.*:(\d+)\)\s*$")
_UNKNOWN = re.compile(r"\bERROR unknown parameter: \w+/(\S+)")
_ACCEPTED = "nowhere to listen on"


def ini_text(value: Scalar) -> str:
    """A scenario value as pgbouncer reads it (its booleans are the numbers 1 and 0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _number(value: Scalar) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Settings:
    """The settings that decide reclaim, as pgbouncer will use them."""

    pool_mode: str = "session"
    keepalive: bool = True
    keepidle_s: float | None = None      # None: the OS default
    keepintvl_s: float | None = None
    keepcnt: int | None = None
    user_timeout_s: float | None = None
    client_idle_timeout_s: float = 0.0   # 0: off
    server_idle_timeout_s: float = 600.0
    server_lifetime_s: float = 3600.0
    reset_query: bool = True             # server_reset_query runs when a session ends
    min_pool_size: int = 0

    @classmethod
    def of(cls, settings: Mapping[str, Scalar]) -> Settings:
        """From checked settings (unknown or unparsable values count as pgbouncer's default)."""
        merged = {**DEFAULTS, **settings}

        def num(name: str) -> float:
            found = _number(merged[name])
            return found if found is not None else float(_number(DEFAULTS[name]) or 0.0)

        def positive(name: str, scale: float = 1.0) -> float | None:
            return num(name) * scale if num(name) > 0 else None

        count = positive("tcp_keepcnt")
        return cls(pool_mode=str(merged["pool_mode"]).lower(), keepalive=num("tcp_keepalive") != 0,
                   keepidle_s=positive("tcp_keepidle"), keepintvl_s=positive("tcp_keepintvl"),
                   keepcnt=int(count) if count else None,
                   user_timeout_s=positive("tcp_user_timeout", 1e-3),
                   client_idle_timeout_s=max(0.0, num("client_idle_timeout")),
                   server_idle_timeout_s=max(0.0, num("server_idle_timeout")),
                   server_lifetime_s=max(0.0, num("server_lifetime")),
                   reset_query=bool(str(merged["server_reset_query"]).strip()),
                   min_pool_size=int(num("min_pool_size")))


def own_problems(settings: Mapping[str, Scalar]) -> dict[str, str]:
    """What connchaos refuses before asking pgbouncer: the lab's own settings, text that
    would break the file's lines, and values pgbouncer takes but the kernel or the
    prediction cannot (negative or too large socket options)."""
    found = {}
    for name, value in settings.items():
        text = ini_text(value)
        if name.lower() in RESERVED:
            found[name] = "is set by connchaos to run the lab; remove it"
        elif any(c in name + text for c in "\n\r") or not re.fullmatch(r"[A-Za-z0-9_.]+", name):
            found[name] = ("a pgbouncer setting is one line: a name of letters, digits and _,"
                           " and a value without line breaks")
        elif name in WHOLE:
            number = _number(value)
            if isinstance(value, bool) and name != "tcp_keepalive":
                found[name] = f"expected a whole number; got {value!r}"
            elif number is not None and number < 0:
                found[name] = f"must not be negative; got {value!r}"
            elif number is not None and name in KERNEL_MAX and number > KERNEL_MAX[name]:
                found[name] = (f"the kernel takes at most {KERNEL_MAX[name]} for"
                               f" {name.replace('tcp_', 'TCP_').upper()}; got {value!r}")
        elif name in TIMES and (n := _number(value)) is not None and n < 0:
            found[name] = f"must not be negative; got {value!r}"
    return found


def find_pgbouncer() -> str | None:
    """The pgbouncer command: $CONNCHAOS_PGBOUNCER (only it, when set), Debian's
    /usr/sbin/pgbouncer, or the PATH."""
    return find_command("/usr/sbin/pgbouncer", shutil.which("pgbouncer"), env="CONNCHAOS_PGBOUNCER")


def require_pgbouncer() -> str:
    """The pgbouncer command, or exit 3 naming it."""
    return require_command(find_pgbouncer(), "PgBouncer (the pgbouncer command)",
                           "apt-get install pgbouncer, or set CONNCHAOS_PGBOUNCER")


def write_ini(path: str, fixed: Mapping[str, str], settings: Iterable[tuple[str, str]],
              databases: Sequence[str] = ()) -> dict[int, str]:
    """pgbouncer.ini with the lab's settings, then one line per scenario setting; returns
    the line number of each scenario setting (pgbouncer's errors name the line)."""
    lines = ["[databases]", *databases, "[pgbouncer]", *(f"{k} = {v}" for k, v in fixed.items())]
    at = {}
    for name, value in settings:
        lines.append(f"{name} = {value}")
        at[len(lines)] = name
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return at


def _refusal(stderr: str, at: Mapping[int, str]) -> tuple[str, str] | None:
    """(setting, pgbouncer's words) for the line pgbouncer refused, None if it took the file."""
    unknown = None
    for line in stderr.splitlines():
        if m := _UNKNOWN.search(line):
            unknown = m.group(1)
        elif m := _REFUSED.search(line):
            name = at.get(int(m.group(2)))
            if name is None:
                return "", m.group(1)
            if unknown == name:
                return name, f"pgbouncer has no setting {name!r} (it said: unknown parameter)"
            return name, f"pgbouncer refuses it: {m.group(1)}"
    if _ACCEPTED in stderr:
        return None
    return "", stderr.strip()[-300:] or "pgbouncer stopped without saying why"


@functools.lru_cache(maxsize=64)
def pgbouncer_refuses(command: str, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The settings pgbouncer itself refuses, each with its words: it loads a scratch file
    that listens nowhere (an owned ``connchaos-`` folder, removed again), once per refused
    line (it stops at the first). Root runs it as the account it runs as in the lab."""
    from harness.lab import naming, owner
    from harness.lab.server import as_account
    from harness.targets.postgres import server_account

    folder = owner.make_folder(naming.new_lab_id(), purpose="pgbouncer settings check")
    try:
        os.chmod(folder, 0o755)
        users = os.path.join(folder, "userlist.txt")
        with open(users, "w") as f:
            f.write('"connchaos" ""\n')
        os.chmod(users, 0o644)
        prefix = as_account(server_account().pw_name) if os.geteuid() == 0 else []
        found: dict[str, str] = {}
        left = list(settings)
        for _ in range(len(settings) + 1):
            ini = os.path.join(folder, "check.ini")
            at = write_ini(ini, {"listen_addr": "", "unix_socket_dir": "", "auth_type": "trust",
                                 "auth_file": users, "logfile": "", "pidfile": ""}, left)
            try:
                done = subprocess.run([*prefix, command, ini], capture_output=True, text=True,
                                      timeout=10, check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return {name: f"could not ask pgbouncer: {exc}" for name, _ in left}
            refused = _refusal(done.stderr, at)
            if refused is None:
                return found
            name, why = refused
            if not name:   # not one of the scenario's lines: say it against all of them
                return {**found, **{n: f"pgbouncer refuses these settings: {why}" for n, _ in left}}
            found[name] = why
            left = [(n, v) for n, v in left if n != name]
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """Problems with pgbouncer ``settings`` as (name, message), in the file's order."""
    problems = own_problems(settings)
    command = find_pgbouncer()
    to_ask = tuple((n, ini_text(v)) for n, v in settings.items() if n not in problems)
    if command is not None and to_ask:   # without pgbouncer a run stops with exit 3 anyway
        problems.update(pgbouncer_refuses(command, to_ask))
    return [(name, problems[name]) for name in settings if name in problems]
