"""The ssh target: settings checked by sshd itself, sessions holding a shell, the alive check,
ClientAlive's measured reclaim against its prediction, and the per-run account going away."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness.core.sshd import ClientAlive, client_alive, tcp_keepalive
from harness.faults import build as build_spec
from harness.faults.site import Site
from harness.lab.cleanup import clean, leftovers, remove_run_user, run_users
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.observe.owners import session_pids
from harness.observe.sockdiag import SocketTable
from harness.scenario.model import Fault
from harness.targets.base import Session
from harness.targets.ssh import SshTarget, effective_config, find_sshd
from harness.testing import skip_or_fail

# Measured reclaims land 1-60 ms from the prediction: each ClientAlive check runs a few ms
# after its whole interval, and the runner's "last activity" is the client's last ACK, which
# a delayed ACK puts up to 40 ms after the data sshd last read.
TOLERANCE_S = 0.25


@pytest.fixture
def ssh_machine(lab_machine: None) -> None:
    """The lab gate plus OpenSSH's server."""
    if find_sshd() is None:
        skip_or_fail("needs the OpenSSH server (apt-get install openssh-server)")


@pytest.fixture
def clean_ssh(ssh_machine: None, no_leftovers: None) -> Iterator[None]:
    """Nothing of ours left, including the per-run accounts and sshd processes."""
    before = set(run_users())
    yield
    assert set(run_users()) - before == set()
    procs = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert not [p for p in procs.splitlines() if p.startswith("sshd:") and "connchaos-" in p]


def build(kind: str):  # type: ignore[no-untyped-def]
    return build_spec(Fault.model_validate({"type": kind}))


def open_all(lab: LocalLab, target: SshTarget, count: int) -> tuple[LoopInNamespace, list[Session]]:
    client = LoopInNamespace(lab.client_ns)
    lab.on_close("client", client.close)
    sessions = [client.run(target.open_session(lab, i)) for i in range(count)]
    lab.on_close("sessions", lambda: [client.run(target.close_session(s)) for s in sessions])
    return client, sessions


def key(s: Session) -> tuple[str, int, str, int]:
    return (s.flow.server_addr, s.flow.server_port, s.flow.client_addr, s.flow.client_port)


def settled(table: SocketTable, sessions: list[Session]) -> dict[tuple[str, int, str, int], object]:
    """The server's sockets once the last data is acknowledged (the retransmission timer
    runs until then, and it hides the keepalive timer)."""
    deadline = time.monotonic() + 3
    while True:
        dump = table.dump(22)
        if all(dump[key(s)].timer != "on" for s in sessions) or time.monotonic() > deadline:
            return dump  # type: ignore[return-value]
        time.sleep(0.05)


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_ssh")
def test_settings_are_checked_by_sshd_itself() -> None:
    problems = dict(SshTarget.check_settings({
        "ClientAliveIntervall": 2,              # typo
        "ClientAliveInterval": "soon",          # not a time
        "TCPKeepAlive": "maybe",                # not yes/no
        "ClientAliveCountMax": -1,              # too small
        "Port": 2222, "listenaddress": "0.0.0.0",   # the lab decides (any case)
        "UsePrivilegeSeparation": "yes",        # sshd accepts it and ignores it
        "LogLevel": "INFO",                     # would hide why sessions end
        "clientalivecountmax": 2, "MaxStartups": "10:30:100", "LoginGraceTime": "1m",
        "Compression": False, "loglevel": "DEBUG1",    # fine (sshd's names are case-insensitive)
    }))
    assert "did you mean clientaliveinterval" in problems["ClientAliveIntervall"]
    assert "invalid time value" in problems["ClientAliveInterval"]
    assert 'unsupported option "maybe"' in problems["TCPKeepAlive"]
    assert "too small" in problems["ClientAliveCountMax"]
    assert "set by connchaos" in problems["Port"] and "set by connchaos" in problems["listenaddress"]
    assert "Deprecated option" in problems["UsePrivilegeSeparation"]
    assert "VERBOSE" in problems["LogLevel"]
    assert set(problems) == {"ClientAliveIntervall", "ClientAliveInterval", "TCPKeepAlive",
                             "ClientAliveCountMax", "Port", "listenaddress",
                             "UsePrivilegeSeparation", "LogLevel"}


@pytest.mark.usefixtures("clean_ssh")
def test_the_settings_read_for_the_prediction_are_what_sshd_reads() -> None:
    for settings in ({}, {"clientaliveinterval": "1m30s", "ClientAliveCountMax": 0,
                          "TCPKeepAlive": False},
                     {"ClientAliveInterval": 7, "tcpkeepalive": "yes"}):
        seen = effective_config(settings)
        alive = ClientAlive.from_settings(settings)
        assert int(seen["clientaliveinterval"]) == alive.interval_s
        assert int(seen["clientalivecountmax"]) == alive.count_max
        assert (seen["tcpkeepalive"] == "yes") == tcp_keepalive(settings)


def test_socket_settings_and_description_show_the_effective_values() -> None:
    target = SshTarget(settings={"tcpkeepalive": "no", "ClientAliveInterval": "2s"})
    assert target.socket_settings().keepalive is False
    assert target.socket_settings().idle_s is None        # sshd has no timing of its own
    assert SshTarget().socket_settings().keepalive is True
    assert SshTarget().describe_settings() == {"ClientAliveInterval": 0, "ClientAliveCountMax": 3,
                                               "TCPKeepAlive": "yes"}
    assert target.describe_settings() == {"ClientAliveInterval": 2, "ClientAliveCountMax": 3,
                                          "TCPKeepAlive": "no"}
    assert target.heartbeat(last_activity_s=-1.0, opened_s=-1.0)[1] == pytest.approx(3.0)
    assert SshTarget().heartbeat(last_activity_s=-1.0, opened_s=-1.0) == (None, None)


def test_server_errors_come_from_sshds_log_by_the_client_address_it_saw() -> None:
    target = SshTarget()
    target._log = [   # lines as sshd 9.2 writes them (seen in the lab), stamped on arrival
        (100.0, "Timeout, client not responding from user cc-abc123 10.77.0.2 port 40112"),
        (101.0, "Read error from remote host 10.77.0.2 port 40114: Connection reset by peer"),
        (102.0, "Read error from remote host 10.77.1.1 port 5001: Connection timed out"),
        (103.0, "Connection reset by authenticating user cc-abc123 10.77.0.2 port 40116 [preauth]"),
        (104.0, "Connection closed by 10.77.0.2 port 40118"),
        (105.0, "Timeout, client not responding from user cc-abc123 10.77.0.2 port 40112"),
        (106.0, "Accepted publickey for cc-abc123 from 10.77.0.2 port 40120 ssh2: ED25519 ..."),
    ]
    found = {peer: (e.at, e.kind) for peer, e in target.server_errors().items()}
    assert found == {("10.77.0.2", 40112): (100.0, "heartbeat"),     # the first line counts
                     ("10.77.0.2", 40114): (101.0, "reset"),
                     ("10.77.1.1", 5001): (102.0, "timeout"),
                     ("10.77.0.2", 40116): (103.0, "reset"),
                     ("10.77.0.2", 40118): (104.0, "closed")}


# --- sessions ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_ssh")
def test_sessions_hold_a_shell_in_a_per_connection_sshd_and_the_alive_check_can_fail() -> None:
    target = SshTarget(sessions=3)
    with LocalLab() as lab:
        target.start(lab)
        assert target.user == f"cc-{lab.lab_id}"
        entry = pwd.getpwnam(target.user)
        assert entry.pw_dir.startswith(lab.tmpdir) and entry.pw_shell == "/bin/sh"
        client, sessions = open_all(lab, target, 3)
        assert all(s.flow.client_addr == lab.client_addr and s.flow.server_port == 22
                   for s in sessions)
        assert [target.server_peer(s) for s in sessions] == \
            [(s.flow.client_addr, s.flow.client_port) for s in sessions]

        # The runner's lookup (oldest holder of the server socket) finds the per-connection
        # monitor, whose child runs the session and is the shell's parent.
        with SocketTable(lab.server_ns) as table:
            dump = table.dump(22)
            pids = session_pids(lab.server_ns, dump, [key(s) for s in sessions])
            timers = {v.timer for v in settled(table, sessions).values()}  # type: ignore[attr-defined]
            assert timers == {"keepalive"}                                  # TCPKeepAlive yes
        for s in sessions:
            monitor = pids[key(s)]
            assert cmdline(monitor) == f"sshd: {target.user} [priv]"
            assert parent(parent(s.handle.shell_pid)) == monitor
            assert cmdline(parent(s.handle.shell_pid)) == f"sshd: {target.user}@notty"
        assert len(set(pids.values())) == 3

        ok, detail = client.run(target.alive(sessions[0]))
        assert ok, detail

        # in flight: data written on the server side comes out of the session's stdout
        target.send_in_flight([sessions[2]])
        got = client.run(asyncio.wait_for(sessions[2].handle.shell.stdout.readexactly(4000), 5))
        assert got == "x" * 3999 + "\n"

        fault = build("blackhole")
        fault.apply(Site(lab, [sessions[0].flow]))
        lab.on_close("fault", fault.revert)
        started = time.monotonic()
        ok, detail = client.run(target.alive(sessions[0]))
        assert not ok and "no answer" in detail
        assert time.monotonic() - started < 6
        assert client.run(target.alive(sessions[1]))[0]
        assert client.run(target.alive(sessions[2]))[0]
    with pytest.raises(KeyError):
        pwd.getpwnam(target.user)


@pytest.mark.usefixtures("clean_ssh")
def test_tcp_keepalive_no_leaves_the_socket_without_keepalive() -> None:
    target = SshTarget(settings={"TCPKeepAlive": False}, sessions=1)
    with LocalLab() as lab:
        target.start(lab)
        _, sessions = open_all(lab, target, 1)
        with SocketTable(lab.server_ns) as table:
            assert settled(table, sessions)[key(sessions[0])].timer == "off"  # type: ignore[attr-defined]


# --- the measured reclaim ---------------------------------------------------------------------


def _boottime_frac_between(lo: float, hi: float) -> None:
    """Wait until sshd's clock (CLOCK_BOOTTIME) is between ``lo`` and ``hi`` into a second."""
    while not lo <= time.clock_gettime(time.CLOCK_BOOTTIME) % 1 <= hi:
        time.sleep(0.005)


@pytest.mark.usefixtures("clean_ssh")
def test_client_alive_reclaims_blackholed_sessions_when_predicted() -> None:
    """ClientAliveInterval 1, CountMax 2 under a blackhole: idle sessions go 2 × 1 × (2 + 1) =
    6 s after their last activity, in-flight ones 1 + 2 × 2 × 1 = 5 s after the data (the man
    page's Interval × CountMax: 2 s), each within TOLERANCE_S of its prediction."""
    alive = ClientAlive(interval_s=1, count_max=2)
    target = SshTarget(settings={"ClientAliveInterval": 1, "ClientAliveCountMax": 2}, sessions=4)
    with LocalLab() as lab:
        target.start(lab)
        client, sessions = open_all(lab, target, 4)
        in_flight = sessions[2:]          # the first two stay idle
        # The last activity is an echo early in a second of sshd's clock, so that it and the
        # loop's last wake-up fall in the same whole second (the idle case of the prediction).
        async def echo_all() -> list[tuple[bool, str]]:
            return list(await asyncio.gather(*(target.alive(s) for s in sessions)))

        _boottime_frac_between(0.2, 0.4)
        assert all(ok for ok, _ in client.run(echo_all()))
        time.sleep(1.2)
        table = SocketTable(lab.server_ns)
        lab.on_close("socket table", table.close)
        before = table.dump(22)
        sampled = time.time()
        pids = session_pids(lab.server_ns, before, [key(s) for s in sessions])

        fault = build("blackhole")
        fault.apply(Site(lab, [s.flow for s in sessions]))
        lab.on_close("fault", fault.revert)
        t0 = time.time()
        target.send_in_flight(in_flight)

        exited: dict[int, float] = {}
        released: dict[int, float] = {}
        while time.time() - t0 < 12 and len(released) < len(sessions):
            now = time.time()
            dump = table.dump(22)
            for s in sessions:
                if s.id not in exited and not os.path.exists(f"/proc/{pids[key(s)]}"):
                    exited[s.id] = now - t0
                info = dump.get(key(s))
                # gone, or orphaned: no process holds it (the kernel still sends its FIN)
                if s.id in exited and s.id not in released and (info is None or info.inode == 0):
                    released[s.id] = now - t0
            time.sleep(0.01)
        errors = target.server_errors()

    for s in sessions:
        info = before[key(s)]
        last = sampled - min(info.last_ack_recv_s, info.last_data_recv_s) - t0
        sent = s.id in {f.id for f in in_flight}
        pred, _ = client_alive(alive, last_heard_s=last, last_wake_s=0.0 if sent else None)
        assert pred is not None and pred.reclaim_s is not None
        assert s.id in released, f"session {s.id} still held 12 s after the fault"
        assert abs(released[s.id] - pred.reclaim_s) <= TOLERANCE_S, (s.id, released[s.id], pred)
        err = errors[(s.flow.client_addr, s.flow.client_port)]
        assert err.kind == "heartbeat" and "Timeout, client not responding" in err.text
        assert abs(err.at - t0 - released[s.id]) <= 0.1


# --- teardown and clean -------------------------------------------------------------------------


def test_only_per_run_accounts_are_ever_removed() -> None:
    for name in ("root", "postgres", "cc-abc", "cc-abc1234", "cc-ABC123", "xcc-abc123"):
        with pytest.raises(ValueError, match="not a per-run account"):
            remove_run_user(name)


@pytest.mark.usefixtures("clean_ssh")
def test_clean_removes_the_account_of_a_killed_run_but_not_of_a_live_one() -> None:
    code = ("from harness.lab.local import LocalLab\n"
            "from harness.targets.ssh import SshTarget\n"
            "import time\n"
            "lab = LocalLab().__enter__(); t = SshTarget(); t.start(lab)\n"
            "print(lab.lab_id, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    dead = f"cc-{child.stdout.readline().strip()}"
    try:
        with LocalLab() as live:
            target = SshTarget()
            target.start(live)
            assert {dead, target.user} <= set(run_users())
            assert dead not in leftovers()["users"]            # its run is still going
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert dead in clean()["users"]
            assert dead not in run_users()
            assert target.user in run_users()                  # its owner (this process) lives
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        clean()
