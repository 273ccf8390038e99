"""The observer's agent, in this process's own namespace: it answers for the socket table
exactly as a local SocketTable reads it (no root needed: sock_diag of one's own namespace)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import LabError
from harness.observe.agent import AgentClient, RemoteSocketTable
from harness.observe.sockdiag import SocketTable

pytestmark = pytest.mark.lab   # starts the agent's process


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    path = str(tmp_path / "agent.sock")
    proc = subprocess.Popen([sys.executable, "-m", "harness.observe.agent", "--socket", path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = AgentClient.wait(path, alive=lambda: proc.poll() is None, timeout_s=20)
        try:
            yield client
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_remote_dump_equals_a_local_one(agent: AgentClient) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            remote = RemoteSocketTable(agent).dump(port)
            with SocketTable(None) as table:
                local = table.dump(port)
            assert len(remote) == 3
            assert remote.keys() == local.keys()
            for key, info in remote.items():
                assert info.state == "ESTABLISHED" and info.inode == local[key].inode
            assert {k[3] for k in remote} == {c.getsockname()[1] for c in clients}
            assert agent.call({"op": "listening", "port": port})["listening"] is True
            assert agent.call({"op": "connect", "addr": "127.0.0.1", "port": port})["answers"] is True
        finally:
            for s in clients + accepted:
                s.close()
    time.sleep(0.05)
    assert agent.call({"op": "listening", "port": port})["listening"] is False


def test_sysctls_holders_and_errors(agent: AgentClient) -> None:
    values = agent.call({"op": "sysctl", "keys": ["net.ipv4.tcp_keepalive_time"]})["values"]
    with open("/proc/sys/net/ipv4/tcp_keepalive_time") as f:
        assert values == {"net.ipv4.tcp_keepalive_time": f.read().strip()}
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c, server.accept()[0]:
            with SocketTable(None) as table:
                info = table.dump(port)[("127.0.0.1", port, "127.0.0.1", c.getsockname()[1])]
            holders = agent.call({"op": "holders"})["holders"]
            assert os.getpid() in holders[str(info.inode)]
    with pytest.raises(LabError, match="unknown op"):
        agent.call({"op": "nothing"})
