"""Server sockets in several TCP states inside a lab, for the socket-table tests (and to
capture the parser's test bytes: ``python tests/observe/sockstates.py OUT.json``, as root).

In the server namespace, port ``PORT``: idle ESTABLISHED sessions with a keepalive timer, one
with data in flight to a client the router drops, one in TIME_WAIT (the server closed first,
then the client), one in FIN_WAIT2 (the server closed, the client did not), one in
CLOSE_WAIT (the client closed, the server did not); plus the listener itself and a session on
``OTHER_PORT``, which a dump of ``PORT`` must not show.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from harness.faults import nft
from harness.faults.base import chain
from harness.lab.local import LocalLab
from harness.lab.netns import entered

PORT = 7000
OTHER_PORT = 7001
IDLE = 3


@contextmanager
def socket_states(lab: LocalLab, idle: int = IDLE) -> Iterator[dict[str, int]]:
    """The sockets above (``idle`` idle ones); yields role -> the client's port of that session."""
    with ExitStack() as stack:
        def listener(port: int) -> socket.socket:
            with entered(lab.server_ns):
                s = stack.enter_context(socket.socket())
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 600)
            s.bind((lab.server_addr, port))
            s.listen(16)
            return s

        def session(srv: socket.socket) -> tuple[socket.socket, socket.socket]:
            with entered(lab.client_ns):
                cli = stack.enter_context(socket.create_connection((lab.server_addr, srv.getsockname()[1]), 5))
            conn = stack.enter_context(srv.accept()[0])
            return cli, conn

        main, other = listener(PORT), listener(OTHER_PORT)
        ports: dict[str, int] = {}
        for i in range(idle):
            cli, _ = session(main)
            ports[f"idle{i}"] = cli.getsockname()[1]
        session(other)

        cli, conn = session(main)
        ports["in-flight"] = port = cli.getsockname()[1]
        nft.load(lab, "rtr", "table inet connchaos {\n" + chain(
            "forward", "forward", f"tcp sport {port} drop", f"tcp dport {port} drop") + "}\n")
        conn.sendall(b"x" * 1000)

        cli, conn = session(main)
        ports["time-wait"] = cli.getsockname()[1]
        conn.close()
        time.sleep(0.05)
        cli.close()

        cli, conn = session(main)
        ports["fin-wait2"] = cli.getsockname()[1]
        conn.close()

        cli, conn = session(main)
        ports["close-wait"] = cli.getsockname()[1]
        cli.close()

        time.sleep(0.8)     # FINs and ACKs cross the router; the in-flight data is resent twice
        yield ports


def capture(out: str) -> None:
    """Record one real dump of ``PORT`` (the parts as the kernel sent them) to ``out``."""
    import json

    from harness.observe.sockdiag import SocketTable

    parts: list[bytes] = []
    with LocalLab(run_id="capture") as lab, socket_states(lab), SocketTable(lab.server_ns) as table:
        recv_into = table._sock.recv_into

        def recording(buf: bytearray) -> int:
            n = recv_into(buf)
            parts.append(bytes(buf[:n]))
            return n

        table._sock = _Recording(table._sock, recording)   # type: ignore[assignment]
        table.dump(PORT)
        seq = table._seq
    with open(out, "w") as f:
        json.dump({"about": "one SOCK_DIAG_BY_FAMILY dump of tests/observe/sockstates.py's"
                            f" sockets, port {PORT}, Linux {_kernel()}",
                   "seq": seq, "port": PORT, "parts": [p.hex() for p in parts]}, f, indent=1)


class _Recording:
    def __init__(self, sock: socket.socket, recv_into: object) -> None:
        self._sock, self.recv_into = sock, recv_into

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


def _kernel() -> str:
    import platform

    return platform.release()


if __name__ == "__main__":
    capture(sys.argv[1])
