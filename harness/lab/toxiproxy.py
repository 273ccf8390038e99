"""The lab's proxy: a Toxiproxy server inside the router namespace, and the way to drive it.

The server is the built-in one (``connchaos proxy``) unless a command for a real
``toxiproxy-server`` is given; either listens for its API on 127.0.0.1:8474 *of the router
namespace*. toxiproxy-python is called from a thread that lives in that namespace, so its
HTTP requests reach that API and no port of the host is involved. Clients reach the proxies
at the router's client-side address; the proxies reach the server from the router's
server-side address, which is the peer the server sees.

Without root (docker backend) no thread can enter the router's namespace: the proxy then
listens for its API on every address of its container and the harness calls it at the
container's address on the lab's client-side bridge, which this machine is attached to. The
same proxy beside the client (``beside="cli"``) is the forwarder sessions go through at the
packet layer without root (``harness.experiment.ForwarderRouting``).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from harness.errors import LabError
from harness.lab.docker import DockerLab
from harness.lab.local import LocalLab
from harness.lab.netns import LoopInNamespace
from harness.lab.processes import stop_process
from harness.lab.server import ServerProcess, ServerSpec

T = TypeVar("T")
API_HOST, API_PORT = "127.0.0.1", 8474
FAULTED, SPARED = "connchaos-faulted", "connchaos-spared"


def builtin_command() -> list[str]:
    """The built-in Toxiproxy-compatible server, as this Python runs it."""
    return [sys.executable, "-m", "harness.proxy.server", "--host", API_HOST, "--port", str(API_PORT)]


@dataclass
class LabProxy:
    """A Toxiproxy server in ``lab``'s router namespace. ``start`` registers its teardown."""

    lab: LocalLab | DockerLab
    command: Sequence[str] | None = None     # a real toxiproxy-server; None = the built-in one
    image: str | None = None                 # on the docker backend: the proxy's image
    beside: str = "rtr"                      # whose network it joins: the router's, or the client's
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _thread: LoopInNamespace | None = field(default=None, init=False, repr=False)
    _log: str = field(default="", init=False, repr=False)

    @property
    def server(self) -> str:
        if self.image:
            return self.image
        return "built-in" if self.command is None else " ".join(self.command)

    def start(self, timeout_s: float = 20.0) -> None:
        self._proc = self.lab.start_server(self._spec())
        self.lab.on_close("proxy server", self.stop)
        self._thread = self.lab.reach.loop_in(self.beside)
        self.lab.on_close("proxy client thread", self._thread.close)
        # toxiproxy-python keeps the API's address in class attributes: one lab at a time.
        APIConsumer.host, APIConsumer.port = self.api_host, API_PORT
        deadline = time.monotonic() + timeout_s
        while not self.call(lambda: Toxiproxy().running()):
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("starting the proxy server", self._tail() or "no answer on its API")
            time.sleep(0.05)

    @property
    def api_host(self) -> str:
        """Where the harness calls the API: inside the namespace, or over the bridge."""
        return self.lab.reach.control_address(self.listen_addr)[1]

    @property
    def listen_addr(self) -> str:
        """The address the proxies listen on: the router's (or client's) client-side one."""
        return self.lab.client_addr if self.beside == "cli" else self.lab.router_client_addr

    def _spec(self) -> ServerSpec:
        """A command of this machine (the built-in proxy, or the given toxiproxy-server); with
        images, the official Toxiproxy image when it is here or can be pulled, else the
        built-in proxy's image. Both read ``--host=``/``--port=`` (Go's flag package takes the
        double dash too)."""
        name = "forwarder" if self.beside == "cli" else "proxy"
        ours = self.lab.image_for("toxiproxy", None)
        if ours is None:
            self._log = os.path.join(self.lab.tmpdir, "proxy.log")
            argv = list(self.command) if self.command else builtin_command()
            return ServerSpec(name, tuple(argv), log=self._log, beside=self.beside)
        if self.beside == "cli":
            self.image = ours       # the forwarder: ours lists its connections
        else:
            from harness.lab.images import connect, toxiproxy_image

            client = connect()
            try:
                self.image = toxiproxy_image(client)
            finally:
                client.close()
        host = self.lab.reach.control_address(self.listen_addr)[0]
        return ServerSpec(name, (f"--host={host}", f"--port={API_PORT}"), image=self.image,
                          keep_entrypoint=True, beside=self.beside)

    def _tail(self) -> str:
        return self._proc.logs()[-800:].strip() if self._proc is not None else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, signal.SIGTERM)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a toxiproxy-python call from inside the router namespace (without root: here)."""
        if self._thread is None:
            return fn()
        return self._thread.call(fn)

    def create(self, name: str, upstream: tuple[str, int]) -> tuple[str, int]:
        """A proxy to ``upstream``, listening on the router's client side; returns its address."""
        proxy = self.call(lambda: Toxiproxy().create(
            upstream=f"{upstream[0]}:{upstream[1]}", name=name,
            listen=f"{self.listen_addr}:0"))
        host, _, port = proxy.listen.rpartition(":")
        return host, int(port)

    def connections(self, name: str) -> list[dict[str, Any]] | None:
        """The proxy's live connections (the built-in server's extension); None when the
        server does not offer it (a real Toxiproxy)."""
        response = self.call(lambda: APIConsumer.get(f"/proxies/{name}/connections"))
        if response.status_code != 200:
            return None
        data: list[dict[str, Any]] = response.json()
        return data


def parse_command(text: str | None) -> list[str] | None:
    """``--toxiproxy-server "toxiproxy-server -host 127.0.0.1 -port 8474"`` as argv."""
    return shlex.split(text) if text else None
