"""sshd's configuration: the options the lab reserves or defaults, and every scenario setting
tried on sshd itself (``sshd -T`` with an empty configuration) before a run."""

from __future__ import annotations

import difflib
import functools
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping

import asyncssh

from harness.lab import naming, owner
from harness.targets.base import Scalar
from harness.targets.commands import find_command, require_command

# The lab decides these: where sshd listens, its keys and files, who may log in and how.
# A scenario setting one of them would cut the harness off from its own sessions.
RESERVED = {name.lower() for name in (
    "Port", "ListenAddress", "AddressFamily", "HostKey", "HostCertificate", "HostKeyAgent",
    "PidFile", "AuthorizedKeysFile", "AuthorizedKeysCommand", "AuthorizedKeysCommandUser",
    "AuthorizedPrincipalsFile", "AuthorizedPrincipalsCommand", "AuthorizedPrincipalsCommandUser",
    "PubkeyAuthentication", "AuthenticationMethods", "AllowUsers", "DenyUsers", "AllowGroups",
    "DenyGroups", "UsePAM", "ChrootDirectory", "ForceCommand", "Include", "Match",
)}
# Where the lab's own choice is only a default: a scenario may override these.
DEFAULTS = {
    "LogLevel": "VERBOSE",          # "Read error ... Connection timed out" is logged at VERBOSE
    "MaxStartups": "1000:30:2000",  # sessions open 32 at a time; the default 10 drops some
    "PasswordAuthentication": "no",
    "KbdInteractiveAuthentication": "no",
    "PermitRootLogin": "no",
    "PrintMotd": "no",
    "PrintLastLog": "no",
}
# Levels that keep the lines server_errors reads ("Read error ..." is VERBOSE).
LOG_LEVELS = {"VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3"}
SHOWN = ("ClientAliveInterval", "ClientAliveCountMax", "TCPKeepAlive")


def find_sshd() -> str | None:
    """OpenSSH's server: Debian's /usr/sbin/sshd, else ``sshd`` on the PATH (absolute: sshd
    re-executes itself for every connection and refuses a relative path)."""
    return find_command("/usr/sbin/sshd", shutil.which("sshd"))


def require_sshd() -> str:
    return require_command(find_sshd(), "the OpenSSH server (sshd)", "apt-get install openssh-server")


def sshd_text(value: Scalar) -> str:
    """A setting as sshd reads it (YAML's yes/no arrive as booleans)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _unprivileged() -> list[str]:
    """How to run ``sshd -T`` without root: as root it also insists on its privilege-separation
    folder, which a mere check should not create; so root drops to ``nobody``."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return []
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


@functools.lru_cache(maxsize=64)
def _sshd_test(sshd: str, options: tuple[tuple[str, str], ...]) -> tuple[int, str, str]:
    """``sshd -T`` with an empty configuration, a throwaway host key and ``options``:
    (exit code, effective configuration, messages)."""
    as_user = _unprivileged()
    # with an owner record, so that `connchaos clean` may remove it after a killed check
    folder = owner.make_folder(naming.new_lab_id(), purpose="sshd settings check")
    try:
        key = os.path.join(folder, "host_ed25519")
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(key)
        if as_user:
            user = pwd.getpwnam("nobody")
            os.chown(key, user.pw_uid, user.pw_gid)
        os.chmod(key, 0o600)
        empty = os.path.join(folder, "sshd_config")
        open(empty, "w").close()
        argv = [*as_user, sshd, "-T", "-f", empty, "-h", key]
        for name, value in options:
            argv += ["-o", f"{name}={value}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return done.returncode, done.stdout, done.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def known_options(sshd: str) -> list[str]:
    """sshd's option names as ``sshd -T`` prints them (lower case)."""
    code, out, _ = _sshd_test(sshd, ())
    return sorted({line.split(" ", 1)[0] for line in out.splitlines() if line.strip()}) if code == 0 else []


def _message(stderr: str) -> str:
    """sshd's complaint about one ``-o`` option, without its 'command-line line 0:' prefix."""
    lines = [re.sub(r"^command-line:? line \d+: ", "", line).strip()
             for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines) or "refused by sshd"


def effective_config(settings: Mapping[str, Scalar]) -> dict[str, str]:
    """sshd's effective configuration (``sshd -T``, lower-case names) with ``settings`` on an
    otherwise empty configuration; empty when sshd is not installed or refuses them."""
    sshd = find_sshd()
    if sshd is None:
        return {}
    code, out, _ = _sshd_test(sshd, tuple((k, sshd_text(v)) for k, v in settings.items()))
    if code != 0:
        return {}
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def check_settings(settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
    """Each setting is tried on sshd itself (``sshd -T -o Name=Value``): an unknown option,
    a bad value or an option sshd ignores (deprecated, unsupported) is a problem."""
    sshd = find_sshd()
    problems = []
    for name, value in settings.items():
        text = sshd_text(value)
        if name.lower() in RESERVED:
            problems.append((name, "is set by connchaos to run the lab; remove it"))
            continue
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
            problems.append((name, "is not an sshd option name"))
            continue
        if "\n" in text or "\r" in text:
            problems.append((name, "a value must be on one line"))
            continue
        if name.lower() == "loglevel" and text.upper() not in LOG_LEVELS:
            problems.append((name, "connchaos reads why sessions end from sshd's log, which"
                                   " needs VERBOSE or a DEBUG level; got " + repr(text)))
            continue
        if sshd is None:
            continue  # nothing to ask; a run stops with exit 3 anyway
        code, _, err = _sshd_test(sshd, ((name, text),))
        if "Bad configuration option" in err:
            near = difflib.get_close_matches(name.lower(), known_options(sshd), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            problems.append((name, f"sshd has no option {name!r}{hint}"))
        elif code != 0:
            problems.append((name, f"sshd refuses {name}={text}: {_message(err)}"))
        elif "Deprecated option" in err or "Unsupported option" in err:
            problems.append((name, f"sshd ignores it: {_message(err)}"))
    return problems


def sshd_config(*, port: int, addr: str, host_key: str, folder: str, home: str, user: str) -> str:
    """The lab's configuration file: the options that wire the lab, after the defaults."""
    fixed = {"Port": str(port), "ListenAddress": addr,
             "HostKey": host_key, "PidFile": os.path.join(folder, "sshd.pid"),
             "AuthorizedKeysFile": os.path.join(home, ".ssh", "authorized_keys"),
             "PubkeyAuthentication": "yes", "UsePAM": "no", "AllowUsers": user}
    return "".join(f"{name} {text}\n" for name, text in {**DEFAULTS, **fixed}.items())


def sshd_argv(sshd: str, config: str, settings: Mapping[str, Scalar]) -> list[str]:
    """sshd in the foreground, logging to stderr, with every scenario setting as ``-o``."""
    argv = [sshd, "-D", "-e", "-f", config]
    for name, value in settings.items():
        if name.lower() not in RESERVED:
            argv += ["-o", f"{name}={sshd_text(value)}"]
    return argv
