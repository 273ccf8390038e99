"""Pytest fixtures and helpers for tests that build labs: the machine gate, the leftover
check, the results-schema check and running the CLI as a user would.

Load it with ``pytest_plugins = ["harness.testing"]`` (connchaos's own tests/conftest.py
does). Tests that need root, namespaces, nftables and PostgreSQL skip with the reason on a
machine without them; with CONNCHAOS_REQUIRE_LAB=1 (set by .ci/run) they fail instead, and
CONNCHAOS_REQUIRE_DOCKER=1 does the same for the Docker engine.

Markers: a test using a lab fixture here (``lab_machine``, ``no_leftovers``, ``docker_machine``,
``docker_engine``, ``images_built``) is marked ``lab`` (the docker ones also ``docker``) at
collection, so that ``pytest -m "not lab"`` runs the tests that need nothing of the machine.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import machine

# The source checkout this harness runs from (its scenarios/, the CLI's working folder).
REPO = Path(__file__).resolve().parent.parent
CONNCHAOS = [sys.executable, "-m", "harness.cli"]

# fixture -> the markers a test using it gets
_MARKS = {"lab_machine": ("lab",), "no_leftovers": ("lab",), "docker_machine": ("lab", "docker"),
          "docker_engine": ("lab", "docker"), "images_built": ("lab", "docker")}


def pytest_configure(config: pytest.Config) -> None:
    for line in ("lab: needs root, namespaces, real servers or processes of its own (not in -m 'not lab')",
                 "docker: needs a Docker engine (always also lab)",
                 "slow: takes over about 10 s",
                 "invalid_results: writes results files that break the schema on purpose"
                 " (skips the schema check)"):
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marks in _MARKS.items():
            if fixture in names:
                for mark in marks:
                    item.add_marker(mark)
        if item.get_closest_marker("docker"):
            item.add_marker("lab")


def lab_missing() -> str | None:
    """Why this machine cannot build a local lab with PostgreSQL, or None."""
    lacking = machine.missing({"local", "postgres on local"})
    return f"needs {lacking[0][0].what}" if lacking else None


def docker_missing() -> str | None:
    """Why this machine has no usable Docker engine, or None."""
    lacking = machine.missing({"docker"})
    return f"needs {lacking[0][0].what} ({lacking[0][1]})" if lacking else None


def skip_or_fail(reason: str, require: str = "CONNCHAOS_REQUIRE_LAB") -> None:
    """Skip with ``reason``; when ``require`` (set by .ci/run) is 1, fail instead: there the
    capability must be present."""
    if os.environ.get(require) == "1":
        pytest.fail(f"{require}=1 but this machine {reason}")
    pytest.skip(reason)


@pytest.fixture
def lab_machine() -> None:
    """Tests that build a local lab skip without one (or fail: ``skip_or_fail``)."""
    reason = lab_missing()
    if reason:
        skip_or_fail(reason)


def require_docker() -> None:
    """Skip without a Docker engine; with CONNCHAOS_REQUIRE_DOCKER=1 (set by .ci/run) fail
    instead. For module-scoped fixtures, which cannot use ``docker_machine``."""
    reason = docker_missing()
    if reason:
        skip_or_fail(reason, "CONNCHAOS_REQUIRE_DOCKER")


@pytest.fixture
def docker_machine() -> None:
    """Tests of the docker backend skip without an engine (or fail: ``require_docker``)."""
    require_docker()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """``docker_machine`` for fixtures of a wider scope (a module's client, say)."""
    require_docker()


@pytest.fixture(scope="session")
def images_built(docker_engine: None) -> None:
    """Every image of the project, built if missing (a cache: seconds when up to date)."""
    from harness.lab import images

    client = images.connect()
    try:
        images.ensure(client, images.NAMES)
    finally:
        client.close()


def keepalive_scenario(name: str) -> str:
    """Idle PostgreSQL sessions whose clients vanish, reclaimed by keepalive 2/1/3: the
    scenario the docker tests run on every backend and mode."""
    return f"""\
name: {name}
about: Idle clients vanish; keepalive 2/1/3 reclaims each backend about 5 s after it last spoke.
target:
  service: postgres
  settings:
    tcp_keepalives_idle: 2
    tcp_keepalives_interval: 1
    tcp_keepalives_count: 3
sessions:
  count: 6
  hold: 1s
fault:
  type: client-vanish
  sessions: 4
expect:
  reclaimed_within: 8s
  survivors_untouched: true
  mechanism: keepalive
observe:
  deadline: 15s
"""


def ours() -> set[str]:
    """Every object of the harness that exists right now, by kind and name."""
    found = set()
    found |= {f"netns {n}" for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
              if n.startswith("cc-")}
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    found |= {f"link {line.split(': ')[1].split('@')[0]}" for line in links.splitlines()
              if line.split(": ")[1].startswith("cc-")}
    found |= {f"folder {p}" for p in glob.glob(os.path.join(tempfile.gettempdir(), "connchaos-*"))}
    procs = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=False).stdout
    found |= {f"process {line.strip()}" for line in procs.splitlines() if "/connchaos-" in line}
    if shutil.which("docker") and docker_missing() is None:
        for kind in ("container", "network"):
            names = subprocess.run(["docker", kind, "ls", *(["-a"] if kind == "container" else []),
                                    "-q", "--filter", "label=connchaos.run"],
                                   capture_output=True, text=True, check=False).stdout.split()
            found |= {f"docker {kind} {n}" for n in names}
        # an image's anonymous volume carries no label: any new volume counts
        volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True,
                                 check=False).stdout
        found |= {f"docker volume {v}" for v in volumes.split()}
    return found


@pytest.fixture
def no_leftovers(lab_machine: None) -> Iterator[None]:
    """The test must leave nothing of ours behind (beyond what existed before it)."""
    before = ours()
    yield
    left = ours() - before
    assert not left, f"left behind: {sorted(left)}"


def run_cli(*args: str, timeout: float = 180, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``connchaos ARGS`` in a subprocess, as a user would run it (``env``: added variables)."""
    return subprocess.run([*CONNCHAOS, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env={**os.environ, **env} if env else None, check=False)


def results_files_invalid(folder: Path) -> list[str]:
    """Every results file (a JSON with ``"schema": "connchaos.results/..."``) under ``folder``
    that departs from harness/report/results.schema.json, with its problems."""
    from harness.report.results import problems

    bad = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("schema", "")).startswith("connchaos.results"):
            bad += [str(p) for p in problems(data, str(path))]
    return bad


@pytest.fixture(autouse=True)
def results_match_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every results.json a test produces (in its tmp_path) must match the published schema;
    a test that writes broken ones on purpose is marked ``invalid_results``."""
    # Asked for now (not in teardown), so that tmp_path is still there when this ends.
    wanted = "tmp_path" in request.fixturenames and not request.node.get_closest_marker("invalid_results")
    folder = request.getfixturevalue("tmp_path") if wanted else None
    yield
    if folder is not None:
        bad = results_files_invalid(folder)
        assert not bad, "results.json departs from the schema:\n" + "\n".join(bad)


def write_scenario(folder: Path, name: str, body: str) -> Path:
    """``folder/name.yaml`` holding ``body``."""
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path
