"""The owner record: which process made a lab, and whether that process still lives.

Every lab (and the doctor's trial namespace) first makes its folder ``connchaos-<lab id>-...``
and writes ``owner.json`` there, before creating anything else: the lab id, the run id, the
creating process's pid and its start time (``/proc/<pid>/stat`` field 22, clock ticks since
boot), this boot's id, and the names it is about to create. ``connchaos clean`` trusts
nothing else: an object is ours only when its name carries the lab id of such a record, and
it is a leftover only when the recorded process is gone (its pid absent, or held by a
process that started at another time: the pid was reused, or the machine rebooted).
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from harness.lab import naming

_FOLDER = re.compile(rf"{re.escape(naming.TMP_PREFIX)}([0-9a-f]{{6}})-[^/]+")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if there is no such process
    (or only its zombie: a dead run whose parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name (field 2) may hold spaces and parentheses: split after its last ')'
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])       # field 22 of the whole line
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """One process, told apart from any later process that gets the same pid."""

    pid: int
    start: int | None
    boot: str

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), process_start(os.getpid()), _boot_id())

    def alive(self) -> bool:
        """The recorded process still runs: same boot, same pid, same start time."""
        if self.start is None:
            # a record of an earlier version (no start time): only the pid to go by, and a
            # pid that exists may be the run's; leave such a lab alone while it does
            return process_start(self.pid) is not None
        return self.boot == _boot_id() and process_start(self.pid) == self.start


@dataclass(frozen=True)
class Record:
    """What ``owner.json`` holds, and the folder it was found in."""

    lab_id: str
    owner: Owner
    folder: str
    run_id: str = ""
    created: dict[str, Any] = field(default_factory=dict)   # names the lab was about to create
    secret: str = ""      # known to the lab and its record only (older records: none)


def proof(secret: str, name: str) -> str:
    """The proof label of the lab object ``name`` (a container, a network): only who read the
    record's secret could write it, so a forged label naming a dead lab proves nothing."""
    return hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]


def proves(record: Record, name: str, label: str) -> bool:
    return bool(record.secret) and hmac.compare_digest(proof(record.secret, name), label)


def make_folder(lab_id: str, run_id: str = "", **created: Any) -> str:
    """The ``connchaos-<lab id>-`` folder with its ``owner.json``, written before the caller
    creates anything else (and atomically: a record is whole or absent). Returns its path."""
    folder = tempfile.mkdtemp(prefix=f"{naming.TMP_PREFIX}{lab_id}-")
    os.chmod(folder, 0o755)
    me = Owner.me()
    data = {"lab_id": lab_id, "run_id": run_id, "pid": me.pid, "start_ticks": me.start,
            "boot_id": me.boot, "started": time.time(), "secret": secrets.token_hex(16), **created}
    path = os.path.join(folder, naming.OWNER_FILE)
    with os.fdopen(os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f)
    os.replace(path + ".new", path)
    return folder


PROCESSES_FILE = "processes.json"


def record_process(folder: str, pid: int, what: str) -> None:
    """Add a process of the lab's own that may outlive its harness (a session host, which a
    fault stops) to the lab's folder, told apart from any later holder of its pid."""
    path = os.path.join(folder, PROCESSES_FILE)
    found = _processes(path)
    found.append({"pid": pid, "start_ticks": process_start(pid), "boot_id": _boot_id(), "what": what})
    with os.fdopen(os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(found, f)
    os.replace(path + ".new", path)


def recorded_processes(folder: str) -> list[tuple[Owner, str]]:
    """The processes ``record_process`` wrote down in ``folder``, with what each was."""
    found = []
    for entry in _processes(os.path.join(folder, PROCESSES_FILE)):
        try:
            start = entry.get("start_ticks")
            found.append((Owner(int(entry["pid"]), None if start is None else int(start),
                                str(entry.get("boot_id", ""))), str(entry.get("what", ""))))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return found


def _processes(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def read(folder: str) -> Record | None:
    """The record in ``folder``, or None when it proves nothing: no ``owner.json``, not ours
    in shape, or naming another lab than the folder's name does."""
    m = _FOLDER.fullmatch(os.path.basename(folder))
    if not m or os.path.islink(folder):
        return None
    try:
        with open(os.path.join(folder, naming.OWNER_FILE)) as f:
            data = json.load(f)
        lab_id, pid = str(data["lab_id"]), int(data["pid"])
        start = data.get("start_ticks")
        owner = Owner(pid, None if start is None else int(start), str(data.get("boot_id", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if lab_id != m.group(1):
        return None
    created = {k: v for k, v in data.items()
               if k not in ("lab_id", "run_id", "pid", "start_ticks", "boot_id", "started", "secret")}
    return Record(lab_id, owner, folder, str(data.get("run_id", "")), created, str(data.get("secret", "")))


def records() -> list[Record]:
    """Every owner record in this machine's temporary folder."""
    found = []
    for folder in sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"{naming.TMP_PREFIX}*"))):
        record = read(folder)
        if record is not None:
            found.append(record)
    return found


def labs() -> tuple[set[str], set[str]]:
    """(labs whose recorded process lives, labs whose recorded process is gone). A lab with
    records of both kinds (never made by us: one folder a lab) counts as alive."""
    alive: set[str] = set()
    dead: set[str] = set()
    for record in records():
        (alive if record.owner.alive() else dead).add(record.lab_id)
    return alive, dead - alive
