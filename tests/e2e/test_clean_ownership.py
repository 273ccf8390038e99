"""``connchaos clean`` removes only what an owner record proves is a dead run's: decoys that
merely look like ours survive (and their processes live on), a killed run's lab goes (also
when its pid now belongs to another process), and a run going on meanwhile passes."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.lab import naming, owner
from harness.lab.netns import list_namespaces
from harness.testing import CONNCHAOS, REPO, keepalive_scenario, run_cli, write_scenario

pytestmark = pytest.mark.usefixtures("no_leftovers")

TMP = tempfile.gettempdir()
# None of these can be a real run's: their names hold no lab id (six hex digits), except the
# account, which looks like one on purpose and is made only if no such account exists.
STRANGER_NS = "cc-stranger-srv"
STRANGER_LINKS = ("cc-stranger0", "cc-stranger1")
HOST_TABLE = ("inet", "connchaos_other")
NOT_MINE = os.path.join(TMP, "connchaos-notmine")
LIVE_PID = os.path.join(TMP, "connchaos-livepid")
FACADE = "cc-facade"


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _quietly(*argv: str) -> None:
    subprocess.run(argv, check=False, capture_output=True)


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def _running(pid: int) -> bool:
    return owner.process_start(pid) is not None


@pytest.fixture
def decoys() -> Iterator[dict[str, object]]:
    """Objects named like connchaos's that no record proves: made here, removed here."""
    for name in (NOT_MINE, LIVE_PID):
        assert not os.path.exists(name), f"{name} exists already: not this test's to use"
    assert STRANGER_NS not in list_namespaces() and not set(STRANGER_LINKS) & _links()
    facade_made = False
    procs: list[subprocess.Popen[bytes]] = []
    scratch = ""
    try:
        _sh("ip", "netns", "add", STRANGER_NS)
        inside = subprocess.Popen(["ip", "netns", "exec", STRANGER_NS, "sleep", "600"])
        procs.append(inside)
        _sh("ip", "link", "add", STRANGER_LINKS[0], "type", "veth", "peer", "name", STRANGER_LINKS[1])
        _sh("nft", "add", "table", *HOST_TABLE)
        os.mkdir(NOT_MINE)
        Path(NOT_MINE, "data").write_text("someone's")
        # an owner file naming a live process that is not connchaos
        bystander = subprocess.Popen(["sleep", "600"])
        procs.append(bystander)
        os.mkdir(LIVE_PID)
        Path(LIVE_PID, naming.OWNER_FILE).write_text(json.dumps({"pid": bystander.pid}))
        # the shape of a live `connchaos check`'s sshd -T scratch folder (connchaos-XXXXXXXX)
        scratch = tempfile.mkdtemp(prefix=naming.TMP_PREFIX)
        Path(scratch, "sshd_config").write_text("")
        try:
            pwd.getpwnam(FACADE)
        except KeyError:
            _sh("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", FACADE)
            facade_made = True
        yield {"inside": inside, "bystander": bystander, "scratch": scratch, "facade": facade_made}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        _quietly("ip", "netns", "delete", STRANGER_NS)
        _quietly("ip", "link", "del", STRANGER_LINKS[0])
        _quietly("nft", "delete", "table", *HOST_TABLE)
        for folder in (NOT_MINE, LIVE_PID, scratch):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        if facade_made:
            _quietly("userdel", FACADE)


def _killed_lab(pid_reused_by: int | None = None) -> tuple[str, int]:
    """A lab whose run was SIGKILLed, with a process left in its server namespace: (lab id,
    that process's pid). ``pid_reused_by``: the record then names that live pid, as if the
    dead run's pid had gone to it (its start time stays the dead run's)."""
    code = ("import subprocess, time\n"
            "from harness.lab.local import LocalLab\n"
            "lab = LocalLab().__enter__()\n"
            "p = subprocess.Popen(['ip', 'netns', 'exec', lab.server_ns, 'sleep', '600'])\n"
            "print(lab.lab_id, p.pid, lab.tmpdir, flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None
    lab_id, left, folder = child.stdout.readline().split()
    child.send_signal(signal.SIGKILL)
    child.wait()
    if pid_reused_by is not None:
        path = os.path.join(folder, naming.OWNER_FILE)
        record = json.loads(Path(path).read_text())
        assert record["pid"] == child.pid
        Path(path).write_text(json.dumps({**record, "pid": pid_reused_by}))
    return lab_id, int(left)


def _objects_of(lab_id: str) -> list[str]:
    return ([ns for ns in list_namespaces() if naming.lab_id_of(ns) == lab_id]
            + [link for link in _links() if link.startswith(f"cc-{lab_id}-")]
            + [f for f in os.listdir(TMP) if f.startswith(f"connchaos-{lab_id}-")])


def test_clean_keeps_every_decoy_and_removes_killed_runs_labs(decoys: dict[str, object]) -> None:
    dead, dead_sleep = _killed_lab()
    reused, reused_sleep = _killed_lab(pid_reused_by=os.getpid())
    assert _objects_of(dead) and _objects_of(reused)

    done = run_cli("clean")
    assert done.returncode == 0, done.stderr

    # the killed runs' labs are gone, their processes too
    assert _objects_of(dead) == [] and _objects_of(reused) == [], done.stdout
    assert f"removed namespace cc-{dead}-srv" in done.stdout
    assert f"removed namespace cc-{reused}-srv" in done.stdout
    deadline = time.monotonic() + 5
    while (_running(dead_sleep) or _running(reused_sleep)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(dead_sleep) and not _running(reused_sleep)

    # every decoy is where it was, and untouched
    assert STRANGER_NS in list_namespaces()
    inside = decoys["inside"]
    assert isinstance(inside, subprocess.Popen) and inside.poll() is None
    assert set(STRANGER_LINKS) <= _links()
    assert "table inet connchaos_other" in _tables()
    assert Path(NOT_MINE, "data").read_text() == "someone's"
    assert os.path.isfile(os.path.join(LIVE_PID, naming.OWNER_FILE))
    bystander = decoys["bystander"]
    assert isinstance(bystander, subprocess.Popen) and bystander.poll() is None
    assert os.path.isfile(os.path.join(str(decoys["scratch"]), "sshd_config"))
    pwd.getpwnam(FACADE)
    for name in (STRANGER_NS, *STRANGER_LINKS, "connchaos_other", "notmine", "livepid", FACADE,
                 os.path.basename(str(decoys["scratch"]))):
        assert name not in done.stdout, done.stdout


@pytest.mark.slow
def test_a_run_going_on_during_clean_finishes_and_passes(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path, "pg-during-clean", keepalive_scenario("pg-during-clean"))
    proc = subprocess.Popen([*CONNCHAOS, "run", str(scenario), "--report-dir", str(tmp_path / "reports")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "watching up to" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "watching up to" in seen, seen
        mine = [r.lab_id for r in owner.records() if r.owner.pid == proc.pid]
        assert len(mine) == 1, mine
        done = run_cli("clean")
        assert done.returncode == 0, done.stderr
        assert mine[0] not in done.stdout, done.stdout
        assert _objects_of(mine[0])
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + err


def _dead_record() -> owner.Record:
    """An owner record whose process is gone (a run SIGKILLed before it made anything)."""
    code = "from harness.lab import naming, owner; print(owner.make_folder(naming.new_lab_id(), 'soak'))"
    folder = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO).stdout.strip()
    record = owner.read(folder)
    assert record is not None and record.secret and not record.owner.alive()
    return record


@pytest.mark.usefixtures("images_built")
def test_clean_removes_only_containers_whose_proof_label_the_dead_runs_record_makes() -> None:
    """Containers labelled as a dead lab's (``connchaos.run``, ``connchaos.lab`` naming a lab
    whose record is a dead run's) but without the proof label, or with a wrong one, or only
    ``connchaos.run``, were not made by a run: they survive. The one carrying the proof the
    record's secret makes for its name goes, with the record."""
    from harness.lab import docker as dockerlab
    from harness.lab import images

    record = _dead_record()
    lab = record.lab_id
    client = images.connect()
    made = []
    try:
        def container(name: str, **extra: str) -> None:
            labels = {dockerlab.LABEL_RUN: "forged", **extra}
            made.append(client.containers.create(images.image_ref("client"), ["sleep", "infinity"],
                                                 name=name, labels=labels))

        container(f"cc-{lab}-forged", **{dockerlab.LABEL_LAB: lab})
        container(f"cc-{lab}-wrong", **{dockerlab.LABEL_LAB: lab,
                                        dockerlab.LABEL_PROOF: owner.proof("not the secret", f"cc-{lab}-wrong")})
        # the proof of another name: copied from a real container of the lab, it proves nothing
        container(f"cc-{lab}-copied", **{dockerlab.LABEL_LAB: lab,
                                         dockerlab.LABEL_PROOF: owner.proof(record.secret, f"cc-{lab}-srv")})
        container("cc-stranger-run-only")
        container(f"cc-{lab}-srv", **{dockerlab.LABEL_LAB: lab,
                                      dockerlab.LABEL_PROOF: owner.proof(record.secret, f"cc-{lab}-srv")})
        done = run_cli("clean")
        assert done.returncode == 0, done.stderr
        left = {c.name for c in client.containers.list(all=True, filters={"label": dockerlab.LABEL_RUN})}
        assert f"cc-{lab}-srv" not in left, done.stdout
        assert f"removed container cc-{lab}-srv" in done.stdout
        assert {f"cc-{lab}-forged", f"cc-{lab}-wrong", f"cc-{lab}-copied", "cc-stranger-run-only"} <= left
        assert not os.path.exists(record.folder)
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        client.close()
        shutil.rmtree(record.folder, ignore_errors=True)
