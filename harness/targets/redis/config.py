"""Redis's settings: redis.conf directives passed through, checked by redis-server itself.

Each scenario setting is one line of the lab's redis.conf (``name value``; a boolean is
``yes``/``no``; a value with spaces is several arguments, as in redis.conf). redis-server has
no "check the configuration" switch, so the check starts it on a scratch file that listens
nowhere (``port 0``, no unix socket): it parses the whole file first, and refuses a bad line
with ``*** FATAL CONFIG FILE ERROR ***``, its line number, the line and its reason, then
exits; a file it accepts ends with "Configured to not listen anywhere, exiting." before
anything is opened or written. It stops at the first refused line, so the check removes that
one and asks again.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping

from harness.targets.base import Scalar
from harness.targets.commands import find_command, require_command

# The lab decides these: where Redis listens, its files and logs, that it stays in the
# foreground, and what the harness needs to talk to it (no password, its own commands).
RESERVED = {"bind", "port", "unixsocket", "unixsocketperm", "daemonize", "dir", "logfile",
            "loglevel", "pidfile", "supervised", "syslog-enabled", "syslog-ident",
            "syslog-facility", "include", "loadmodule", "protected-mode", "requirepass",
            "aclfile", "user", "rename-command", "tls-port", "tls-cert-file", "tls-key-file",
            "bind-source-addr", "enable-debug-command", "enable-module-command"}
KEEPALIVE_MAX_S = 32767
"""The kernel's bound on TCP_KEEPIDLE: above it anetKeepAlive's setsockopt fails (Redis
ignores that, leaving the OS's 7200 s), and Redis's own check allows up to 2^31 - 1."""
WHOLE = ("tcp-keepalive", "timeout", "hz")

_LINE = re.compile(r"at line (\d+)")
_ACCEPTED = "Configured to not listen anywhere"


def conf_text(value: Scalar) -> str:
    """A scenario value as redis.conf takes it (booleans are yes/no)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def find_redis_server() -> str | None:
    """The redis-server command: $CONNCHAOS_REDIS_SERVER (only it, when set), Debian's
    /usr/bin/redis-server, or the PATH."""
    return find_command("/usr/bin/redis-server", shutil.which("redis-server"), env="CONNCHAOS_REDIS_SERVER")


def require_redis_server() -> str:
    """The redis-server command, or exit 3 naming it."""
    return require_command(find_redis_server(), "Redis (the redis-server command)",
                           "apt-get install redis-server, or set CONNCHAOS_REDIS_SERVER")


def own_problems(settings: Mapping[str, Scalar]) -> dict[str, str]:
    """What connchaos refuses before asking redis-server: the lab's own directives, text that
    would break the file's lines, and values Redis takes but the kernel does not."""
    found = {}
    for name, value in settings.items():
        text = conf_text(value)
        if name.lower() in RESERVED:
            found[name] = "is set by connchaos to run the lab; remove it"
        elif any(c in name + text for c in "\n\r") or not re.fullmatch(r"[A-Za-z0-9-]+", name):
            found[name] = ("a redis.conf directive is one line: a name of letters, digits and -,"
                           " and a value without line breaks")
        elif name.lower() == "tcp-keepalive" and text.strip().isdigit() and int(text) > KEEPALIVE_MAX_S:
            found[name] = (f"the kernel takes at most {KEEPALIVE_MAX_S} for TCP_KEEPIDLE; got {value!r}"
                           " (Redis would ignore the refusal and leave the OS's keepalive)")
        elif name.lower() in WHOLE and isinstance(value, float):
            found[name] = f"expected a whole number; got {value!r}"
    return found


def write_conf(path: str, fixed: Mapping[str, str], settings: Iterable[tuple[str, str]]) -> dict[int, str]:
    """redis.conf with the lab's directives, then one line per scenario setting; returns the
    line number of each scenario setting (redis-server's errors name the line)."""
    lines = [f"{k} {v}" for k, v in fixed.items()]
    at = {}
    for name, value in settings:
        lines.append(f"{name} {value}")
        at[len(lines)] = name
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return at


def refusal(output: str, at: Mapping[int, str]) -> tuple[str, str] | None:
    """(setting, redis-server's words) for the line it refused; None if it took the file;
    ("", words) when the refusal is not about one of the scenario's lines."""
    lines = [line.strip() for line in output.splitlines()]
    if "*** FATAL CONFIG FILE ERROR" in output:
        start = next(i for i, line in enumerate(lines) if "FATAL CONFIG FILE ERROR" in line)
        rest = [line for line in lines[start + 1:] if line]
        where = next((_LINE.search(line) for line in rest if _LINE.search(line)), None)
        why = rest[-1] if rest else "refused"
        name = at.get(int(where.group(1))) if where else None
        if name is None:
            return "", why
        if why.startswith("Bad directive"):
            return name, (f"redis-server refuses it: {why} (Redis has no directive {name!r},"
                          " or it takes other arguments)")
        return name, f"redis-server refuses it: {why}"
    if _ACCEPTED in output:
        return None
    return "", output.strip()[-300:] or "redis-server stopped without saying why"


@functools.lru_cache(maxsize=64)
def redis_refuses(command: str, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The settings redis-server itself refuses, each with its words: it reads a scratch file
    that listens nowhere (an owned ``connchaos-`` folder, removed again), once per refused
    line (it stops at the first)."""
    from harness.lab import naming, owner

    folder = owner.make_folder(naming.new_lab_id(), purpose="redis settings check")
    try:
        return _ask(command, folder, settings)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ask(command: str, folder: str, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    left = list(settings)
    for _ in range(len(settings) + 1):
        conf = os.path.join(folder, "check.conf")
        at = write_conf(conf, {"port": "0", "daemonize": "no", "dir": folder, "logfile": '""',
                               "save": '""', "appendonly": "no"}, left)
        try:
            done = subprocess.run([command, conf], capture_output=True, text=True, timeout=10,
                                  check=False, stdin=subprocess.DEVNULL, cwd=folder)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {name: f"could not ask redis-server: {exc}" for name, _ in left}
        refused = refusal(done.stdout + done.stderr, at)
        if refused is None:
            return found
        name, why = refused
        if not name:
            return {**found, **{n: f"redis-server refuses these settings: {why}" for n, _ in left}}
        found[name] = why
        left = [(n, v) for n, v in left if n != name]
    return found


def check(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """Problems with Redis ``settings`` as (name, message), in the file's order."""
    problems = own_problems(settings)
    command = find_redis_server()
    to_ask = tuple((n, conf_text(v)) for n, v in settings.items() if n not in problems)
    if command is not None and to_ask:   # without redis-server a run stops with exit 3 anyway
        problems.update(redis_refuses(command, to_ask))
    return [(name, problems[name]) for name in settings if name in problems]
