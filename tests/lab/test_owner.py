"""The owner record: a lab is ours only by its record, and dead only when its recorded process
is (a reused pid does not keep it alive). No lab: the records live in this test's own folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.lab import cleanup, naming, owner


@pytest.fixture
def tmpdir_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The machine's temporary folder is this test's: no record of a real run is seen and
    none is made where a real clean would look."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cleanup, "_docker_client", lambda: None)
    yield tmp_path


def _dead_pid() -> tuple[int, int | None]:
    """A pid whose process ran and was reaped, with its start time."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start = owner.process_start(child.pid)
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    return child.pid, start


def test_a_process_is_told_apart_from_a_later_one_with_its_pid() -> None:
    me = owner.Owner.me()
    assert me.pid == os.getpid() and isinstance(me.start, int) and me.boot
    assert me.alive()
    assert not owner.Owner(me.pid, me.start + 1, me.boot).alive()          # the pid was reused
    assert not owner.Owner(me.pid, me.start, "another-boot").alive()        # the machine rebooted
    pid, start = _dead_pid()
    assert owner.process_start(pid) is None
    assert not owner.Owner(pid, start, me.boot).alive()
    # an earlier version's record (no start time): a live pid keeps it, a dead one does not
    assert owner.Owner(me.pid, None, "").alive()
    assert not owner.Owner(pid, None, "").alive()


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)     # exited, not yet reaped
    try:
        assert owner.process_start(child.pid) is None
    finally:
        child.wait()


def test_the_record_is_written_first_and_read_back(tmpdir_here: Path) -> None:
    lab = naming.new_lab_id()
    folder = owner.make_folder(lab, "run-1", namespaces=[naming.namespace(lab, "cli")])
    assert os.path.basename(folder).startswith(f"connchaos-{lab}-")
    assert os.listdir(folder) == [naming.OWNER_FILE]
    record = owner.read(folder)
    assert record is not None
    assert (record.lab_id, record.run_id, record.owner) == (lab, "run-1", owner.Owner.me())
    assert record.created == {"namespaces": [f"cc-{lab}-cli"]}
    assert owner.labs() == ({lab}, set())


def test_a_folder_proves_nothing_without_a_record_of_its_own_lab(tmpdir_here: Path) -> None:
    pid, start = _dead_pid()
    record = {"lab_id": "abcdef", "pid": pid, "start_ticks": start, "boot_id": owner.Owner.me().boot}
    for name, content in (("connchaos-notmine", None),                        # no owner file
                          ("connchaos-livepid", {"pid": pid}),                # not a lab's name
                          ("connchaos-abcdef-x", None),                       # a lab's name, no record
                          ("connchaos-abcdef-y", {**record, "lab_id": "fedcba"}),   # another lab's
                          ("connchaos-abcdef-z", "not json"),
                          ("connchaos-3f2a1b4c", {**record, "lab_id": "3f2a1b"})):  # check's scratch
        (tmpdir_here / name).mkdir()
        if content is not None:
            (tmpdir_here / name / naming.OWNER_FILE).write_text(
                content if isinstance(content, str) else json.dumps(content))
    assert owner.records() == []
    assert owner.labs() == (set(), set())
    assert cleanup.clean(namespaces=False) == {"namespaces": [], "links": [], "folders": [], "users": []}
    assert len(list(tmpdir_here.iterdir())) == 6


def test_clean_removes_a_dead_owners_folder_even_when_its_pid_was_reused(tmpdir_here: Path) -> None:
    me = owner.Owner.me()
    pid, start = _dead_pid()
    dead = tmpdir_here / "connchaos-aaaaaa-1"
    reused = tmpdir_here / "connchaos-bbbbbb-1"
    for folder, who in ((dead, {"pid": pid, "start_ticks": start}),
                        # a live process has the recorded pid now; it started at another time
                        (reused, {"pid": me.pid, "start_ticks": (me.start or 0) - 1})):
        folder.mkdir()
        (folder / naming.OWNER_FILE).write_text(json.dumps({"lab_id": folder.name[10:16],
                                                            "boot_id": me.boot, **who}))
    live = owner.make_folder("cccccc")
    assert owner.labs() == ({"cccccc"}, {"aaaaaa", "bbbbbb"})
    removed = cleanup.clean(namespaces=False)
    assert sorted(removed["folders"]) == [str(dead), str(reused)]
    assert not dead.exists() and not reused.exists() and os.path.isdir(live)


def test_only_a_recorded_labs_account_is_a_leftover(tmpdir_here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid, start = _dead_pid()
    folder = tmpdir_here / "connchaos-abc123-1"
    folder.mkdir()
    (folder / naming.OWNER_FILE).write_text(json.dumps(
        {"lab_id": "abc123", "pid": pid, "start_ticks": start, "boot_id": owner.Owner.me().boot}))
    monkeypatch.setattr(cleanup, "run_users", lambda: ["cc-abc123", "cc-facade"])
    assert cleanup.leftovers()["users"] == ["cc-abc123"]


def test_the_record_holds_a_secret_for_its_owner_only_and_proves_names_by_it(tmpdir_here: Path) -> None:
    """The proof label of a Docker object: an HMAC of its name under the record's secret; a
    wrong secret, another name, or a record without a secret (an older version's) prove nothing."""
    folder = owner.make_folder("abc123")
    assert os.stat(os.path.join(folder, naming.OWNER_FILE)).st_mode & 0o777 == 0o600
    record = owner.read(folder)
    assert record is not None and len(record.secret) == 32 and "secret" not in record.created
    label = owner.proof(record.secret, "cc-abc123-srv")
    assert owner.proves(record, "cc-abc123-srv", label)
    assert not owner.proves(record, "cc-abc123-cli", label)
    assert not owner.proves(record, "cc-abc123-srv", owner.proof("guess", "cc-abc123-srv"))
    assert not owner.proves(record, "cc-abc123-srv", "")
    old = owner.Record(record.lab_id, record.owner, folder)
    assert not owner.proves(old, "cc-abc123-srv", label)


def test_clean_continues_and_kills_a_dead_labs_stopped_session_host(tmpdir_here: Path) -> None:
    """A session host (process-pause) left stopped by a run that died: its record in the lab's
    folder names it; a reused pid (another start time) is left alone."""
    import signal

    pid, start = _dead_pid()
    folder = tmpdir_here / "connchaos-dddddd-1"
    folder.mkdir()
    (folder / naming.OWNER_FILE).write_text(json.dumps(
        {"lab_id": "dddddd", "pid": pid, "start_ticks": start, "boot_id": owner.Owner.me().boot}))
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(host.pid, signal.SIGSTOP)
        owner.record_process(str(folder), host.pid, "session host")
        owner.record_process(str(folder), bystander.pid, "session host")
        entries = json.loads((folder / owner.PROCESSES_FILE).read_text())
        entries[1]["start_ticks"] -= 1      # the bystander holds a recorded pid, but started later
        (folder / owner.PROCESSES_FILE).write_text(json.dumps(entries))
        removed = cleanup.clean(namespaces=False)
        assert removed["session_hosts"] == [f"{host.pid} (session host)"]
        assert host.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for p in (host, bystander):
            p.kill()
            p.wait()
