"""Mosquitto's configuration: the lab's lines, the scenario's settings as mosquitto.conf lines,
each checked by Mosquitto itself before a run.

``keepalive`` is not a Mosquitto option: it is the keepalive connchaos's MQTT clients send in
their CONNECT (seconds, 0-65535; 0 turns the broker's check off), which is what decides when
the broker gives up on them. Every other setting is a mosquitto.conf line ``name value``,
after the lab's ``listener`` line (so listener options apply to the lab's listener).

Mosquitto has no "check the configuration" switch, but it reads the whole file before it
opens anything, stops at the first line it refuses with ``Error: ...`` and ``Error found at
FILE:LINE.``, and exits. So the check writes the scenario's lines and then one line no
Mosquitto knows: refusing *that* line means it took every line before it. Like pgbouncer's
check, it asks again without each refused line.
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

CLIENT_KEEPALIVE = "keepalive"     # the clients' own, not a mosquitto.conf option
DEFAULT_KEEPALIVE = 60             # paho-mqtt's default
# The lab decides these: where the broker listens, who may connect, where it logs and what,
# its files. A scenario setting one of them would cut the harness off from its sessions.
RESERVED = {"listener", "port", "bind_address", "bind_interface", "socket_domain", "protocol",
            "allow_anonymous", "password_file", "acl_file", "psk_file", "plugin", "auth_plugin",
            "per_listener_settings", "include_dir", "log_dest", "log_type", "log_timestamp",
            "log_timestamp_format", "connection_messages", "pid_file", "user", "persistence",
            "persistence_file", "persistence_location", "mount_point", "use_username_as_clientid",
            "require_certificate", "certfile", "keyfile", "cafile", "capath", "connection"}
MARKER = "connchaos_end_of_settings"
_REFUSED = re.compile(r"Error found at (.*):(\d+)\.")
_ERROR = re.compile(r"Error: (.*)")


def conf_text(value: Scalar) -> str:
    """A scenario value as mosquitto.conf reads it (its booleans are true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def client_keepalive(settings: Mapping[str, Scalar]) -> int:
    """The keepalive the sessions send (checked settings)."""
    value = settings.get(CLIENT_KEEPALIVE, DEFAULT_KEEPALIVE)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else DEFAULT_KEEPALIVE


def broker_settings(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """The mosquitto.conf lines of the scenario, in its order."""
    return [(n, conf_text(v)) for n, v in settings.items() if n != CLIENT_KEEPALIVE]


def find_mosquitto() -> str | None:
    """The broker: $CONNCHAOS_MOSQUITTO (only it, when set), Debian's /usr/sbin/mosquitto, or
    the PATH."""
    return find_command("/usr/sbin/mosquitto", shutil.which("mosquitto"), env="CONNCHAOS_MOSQUITTO")


def require_mosquitto() -> str:
    """The broker's command, or exit 3 naming it."""
    return require_command(find_mosquitto(), "the Mosquitto MQTT broker (mosquitto)",
                           "apt-get install mosquitto, or set CONNCHAOS_MOSQUITTO")


def write_conf(path: str, fixed: Iterable[str], settings: Iterable[tuple[str, str]],
               marker: bool = False) -> dict[int, str]:
    """mosquitto.conf: the lab's lines, then one line per scenario setting (and, for a
    check, the marker); the line number of each scenario setting."""
    lines = list(fixed)
    at = {}
    for name, value in settings:
        lines.append(f"{name} {value}")
        at[len(lines)] = name
    if marker:
        lines.append(f"{MARKER} 1")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return at


def own_problems(settings: Mapping[str, Scalar]) -> dict[str, str]:
    """What connchaos refuses before asking Mosquitto: the lab's own options, lines that
    would not be one line, and a client keepalive that MQTT cannot carry."""
    found = {}
    for name, value in settings.items():
        text = conf_text(value)
        if name == CLIENT_KEEPALIVE:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                found[name] = ("the clients' keepalive in whole seconds, 0 to 65535 (0: off);"
                               f" got {value!r}")
        elif name.lower() in RESERVED:
            found[name] = "is set by connchaos to run the lab; remove it"
        elif not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            found[name] = "is not a mosquitto.conf option name (lower-case letters, digits and _)"
        elif any(c in text for c in "\n\r") or not text.strip():
            found[name] = "a mosquitto.conf value is one line, not empty"
    return found


def _refusal(output: str, at: Mapping[int, str], marker_line: int) -> tuple[str, str] | None:
    """(setting, Mosquitto's words) for the line it refused; None if it took every setting."""
    why = ""
    for line in output.splitlines():
        if m := _ERROR.search(line):
            why = m.group(1).strip()
        elif m := _REFUSED.search(line):
            number = int(m.group(2))
            if number == marker_line:
                return None
            return at.get(number, ""), why or "refused"
    return "", output.strip()[-300:] or "mosquitto stopped without saying why"


@functools.lru_cache(maxsize=64)
def mosquitto_refuses(command: str, settings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The settings Mosquitto itself refuses, each with its words (a scratch ``connchaos-``
    folder, removed again)."""
    from harness.lab import naming, owner

    folder = owner.make_folder(naming.new_lab_id(), purpose="mosquitto settings check")
    try:
        os.chmod(folder, 0o755)
        found: dict[str, str] = {}
        left = list(settings)
        for _ in range(len(settings) + 1):
            conf = os.path.join(folder, "check.conf")
            fixed = ["listener 1 127.0.0.1", "allow_anonymous true"]
            at = write_conf(conf, fixed, left, marker=True)
            try:
                done = subprocess.run([command, "-c", conf], capture_output=True, text=True,
                                      timeout=10, check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return {name: f"could not ask mosquitto: {exc}" for name, _ in left}
            refused = _refusal(done.stdout + done.stderr, at, len(fixed) + len(left) + 1)
            if refused is None:
                return found
            name, why = refused
            if not name:
                return {**found, **{n: f"mosquitto refuses these settings: {why}" for n, _ in left}}
            found[name] = f"mosquitto refuses it: {why}"
            left = [(n, v) for n, v in left if n != name]
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """Problems with the scenario's settings as (name, message), in the file's order."""
    problems = own_problems(settings)
    command = find_mosquitto()
    to_ask = tuple((n, v) for n, v in broker_settings(settings) if n not in problems)
    if command is not None and to_ask:   # without mosquitto a run stops with exit 3 anyway
        problems.update(mosquitto_refuses(command, to_ask))
    return [(name, problems[name]) for name in settings if name in problems]
