"""The Locust users on their own: real Locust processes against a real echo service on the
loopback, reporting each session's open, requests and final check to Locust's statistics
and writing each session's events by client address. No lab needed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.load.locust import LocustRun, read_stats
from harness.testing import REPO

pytestmark = pytest.mark.lab   # starts an echo server process

ECHO = REPO / "scenarios" / "services" / "tcp_echo.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(ECHO), "--host", "127.0.0.1", "--port", str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc, port
    proc.kill()
    proc.wait()


def _locust(tmp_path: Path, port: int, users: int, workers: int = 0) -> LocustRun:
    folder = tmp_path / "locust"
    folder.mkdir()
    return LocustRun(lab=None, folder=str(folder), user_class="TcpUser",
                     env={"CONNCHAOS_LOAD_HOST": "127.0.0.1", "CONNCHAOS_LOAD_PORT": str(port),
                          "CONNCHAOS_LOAD_EVERY": "0.2", "CONNCHAOS_LOAD_TIMEOUT": "3",
                          "CONNCHAOS_LOAD_CHECK_TIMEOUT": "3"},
                     users=users, spawn_rate=100, workers=workers, run_time_s=120)


def _wait(locust: LocustRun, what: str, count: int, timeout_s: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        locust.check_running("test")
        found = [e for e in locust.events() if e["what"] == what]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"only {len(found)} {what} events of {count}")


def test_users_report_open_requests_and_the_check(tmp_path: Path,
                                                  echo: tuple[subprocess.Popen[bytes], int]) -> None:
    locust = _locust(tmp_path, echo[1], users=20)
    locust.start()
    try:
        opened = _wait(locust, "opened", 20)
        time.sleep(1.5)   # a few requests each, every 0.2 s
        locust.ask_check()
        checks = _wait(locust, "check", 20)
        usage = locust.usage()
    finally:
        locust.stop()
    clients = {e["client"] for e in opened}
    assert len(clients) == 20 and all(str(c).startswith("127.0.0.1:") for c in clients)
    assert {e["client"] for e in checks} == clients and all(e["ok"] for e in checks)
    stats = {r["name"]: r for r in locust.stats()["requests"]}
    assert stats["open"]["requests"] == 20 and stats["open"]["failures"] == 0
    assert stats["alive-check"]["requests"] == 20 and stats["alive-check"]["failures"] == 0
    assert stats["request"]["requests"] >= 20 and stats["request"]["failures"] == 0
    assert usage["local"]["cpu_s"] >= 0 and usage["local"]["peak_rss_mib"] > 0
    assert (tmp_path / "locust" / "stats.json").exists()


def test_a_broken_session_is_a_failure_and_never_reopened(tmp_path: Path,
                                                          echo: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = echo
    locust = _locust(tmp_path, port, users=10)
    locust.start()
    try:
        _wait(locust, "opened", 10)
        proc.kill()        # every session's server end goes at once
        broken = _wait(locust, "broken", 10)
        time.sleep(1)
        locust.ask_check()
        checks = _wait(locust, "check", 10)
    finally:
        locust.stop()
    assert all(str(e["detail"]).startswith("closed:") for e in broken), broken
    assert not any(e["ok"] for e in checks)
    assert all("broken earlier" in str(e["detail"]) for e in checks)
    opened = [e for e in locust.events() if e["what"] == "opened"]
    assert len(opened) == 10     # not one reopened
    rows = {r["name"]: r for r in read_stats(str(tmp_path / "locust" / "locust"))["requests"]}
    assert rows["request"]["failures"] == 10
    assert "alive-check" not in rows    # a broken session is not asked again
