"""The local lab: real namespaces, veth pairs and routing, torn down on every path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from harness.errors import LabError
from harness.lab import naming
from harness.lab.cleanup import clean, leftovers
from harness.lab.local import LocalLab
from harness.lab.netns import entered, list_namespaces, read_sysctl

pytestmark = pytest.mark.usefixtures("no_leftovers")


def _connect_across(lab: LocalLab) -> tuple[str, int]:
    with entered(lab.server_ns):
        srv = socket.socket()
        srv.bind((lab.server_addr, 0))
        srv.listen()
    with srv:
        with entered(lab.client_ns):
            cli = socket.create_connection((lab.server_addr, srv.getsockname()[1]), timeout=2)
        with cli:
            conn, peer = srv.accept()
            with conn:
                cli.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    return peer


def test_client_reaches_server_through_the_router() -> None:
    with LocalLab() as lab:
        peer = _connect_across(lab)
        assert peer[0] == naming.CLIENT_ADDR           # no NAT: the server sees the client
        assert read_sysctl(lab.router_ns, "net.ipv4.ip_forward") == "1"
        # the host's own forwarding setting is not ours to change
        for ns in (lab.client_ns, lab.router_ns, lab.server_ns):
            assert ns in list_namespaces()
    assert not {lab.client_ns, lab.router_ns, lab.server_ns} & set(list_namespaces())
    assert not os.path.exists(lab.tmpdir)


def test_names_are_ours_and_fit() -> None:
    with LocalLab() as lab:
        for ns in (lab.client_ns, lab.router_ns, lab.server_ns):
            assert ns.startswith("cc-")
        links = subprocess.run(["ip", "-n", lab.router_ns, "-o", "link"], capture_output=True,
                               text=True).stdout
        names = [line.split(": ")[1].split("@")[0] for line in links.splitlines()]
        assert sorted(n for n in names if n != "lo") == sorted(
            [naming.link(lab.lab_id, "rc"), naming.link(lab.lab_id, "rs")])
        assert all(len(n) <= 15 for n in names)
        assert os.path.basename(lab.tmpdir).startswith(f"connchaos-{lab.lab_id}-")


def test_exception_inside_the_lab_tears_it_down() -> None:
    with pytest.raises(RuntimeError), LocalLab() as lab:
        raise RuntimeError("boom")
    assert lab.server_ns not in list_namespaces()


def test_a_namespace_that_exists_already_is_an_error_and_left_alone() -> None:
    lab_id = naming.new_lab_id()
    taken = naming.namespace(lab_id, "rtr")
    subprocess.run(["ip", "netns", "add", taken], check=True)
    try:
        with pytest.raises(LabError, match="already exists"), LocalLab(lab_id=lab_id):
            pass
        assert taken in list_namespaces()
        assert naming.namespace(lab_id, "cli") not in list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", taken], check=True)


def test_clean_removes_a_killed_owners_lab_but_not_a_live_one() -> None:
    code = ("from harness.lab.local import LocalLab; import time, sys\n"
            "lab = LocalLab().__enter__(); print(lab.lab_id, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    dead_id = child.stdout.readline().strip()
    with LocalLab() as live:
        # while its owner runs, the child's lab is not a leftover either
        assert naming.namespace(dead_id, "srv") not in leftovers()["namespaces"]
        child.kill()
        child.wait()
        time.sleep(0.1)
        removed = clean()
        assert naming.namespace(dead_id, "srv") in removed["namespaces"]
        assert not any(dead_id in f for f in leftovers()["folders"])
        assert live.server_ns in list_namespaces()      # its owner (this process) is alive
        _connect_across(live)
