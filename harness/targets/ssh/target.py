"""``service: ssh``: OpenSSH's sshd (Debian's openssh-server), one per lab in its server
namespace; every session is a login shell held open.

Per lab: an ed25519 host key and client key made for the run, and an account ``cc-<lab id>``
(a system account, its home in the lab's ``connchaos-`` folder, /bin/sh) that only this sshd
lets in, with that key. The account is removed at teardown and by ``connchaos clean``. Every
scenario setting is passed to sshd as ``-o Name=Value`` after sshd itself has accepted it
(``sshd -T``); the options that wire the lab (Port, ListenAddress, HostKey, ...) are refused.

Sessions are opened with asyncssh: public-key login, then a shell without a terminal (its
stdin takes commands, its stdout answers). ``alive`` runs ``echo`` in it. ``activity:
in-flight`` writes into the shell's stdout pipe from the server side, so sshd sends the data.

Reclaim: sshd forks a privilege-separation monitor per connection (``sshd: <user> [priv]``,
root), which forks the session's own process (``sshd: <user>@notty``, the account's), which
runs the shell. Both hold the connection's socket; the monitor is the older, so it is the
process the runner finds for a session (the oldest holder of its socket). When sshd gives up
on a client the session process logs why and exits, and the monitor follows within a
millisecond; at that moment the socket has no process left (with keepalives or data still
unacknowledged the kernel keeps it as an orphan in FIN_WAIT1 for a while, retransmitting).

What sshd itself says about an ending session comes from its log (``-e``, LogLevel VERBOSE
unless the scenario asks for more), stamped as each line arrives and keyed by the client
address sshd saw: "Timeout, client not responding" (heartbeat), "Connection reset" (reset),
"Read error ...: Connection timed out" (timeout).

When ClientAlive fires, measured: see ``harness.core.sshd`` (every second interval, not every
interval; disconnect at the check after ClientAliveCountMax keepalives). TCPKeepAlive only
sets SO_KEEPALIVE: its timing is the kernel's (7200 s + 9 x 75 s unless the sysctls say
otherwise), and once a ClientAlive keepalive is in flight TCP keepalive cannot fire at all.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncssh

from harness.core.prediction import Prediction, SocketSettings
from harness.core.sshd import ClientAlive, client_alive, tcp_keepalive
from harness.errors import LabError
from harness.faults.base import Flow
from harness.lab import naming
from harness.lab.cleanup import remove_run_user
from harness.lab.processes import stop_process_tree
from harness.lab.reach import Reach
from harness.lab.server import ServerProcess, ServerSpec
from harness.scenario.model import Scenario
from harness.targets.base import LabView, Scalar, ServerError, Session
from harness.targets.ssh import account, config, log
from harness.targets.ssh.config import SHOWN, require_sshd

IN_FLIGHT_BYTES = 4000


@dataclass
class _Handle:
    """One session: the client's connection and shell, and what the server side of the shell
    is (for ``send_in_flight``)."""

    conn: asyncssh.SSHClientConnection
    shell: asyncssh.SSHClientProcess[str]
    shell_pid: int = 0                     # the login shell on the server
    stdout: str = ""                       # its stdout, a pipe to sshd ("pipe:[inode]")
    peer: tuple[str, int] | None = None    # the client address sshd saw ($SSH_CLIENT)


@dataclass
class SshTarget:
    """OpenSSH's sshd with the scenario's settings as sshd options."""

    settings: dict[str, Scalar] = field(default_factory=dict)
    sessions: int = 20
    in_flight: bool = False
    port: int = 22
    image: str | None = None        # the user's own image (docker backend); None = ours
    service: ClassVar[str] = "ssh"
    needs_process: ClassVar[bool] = True
    user: str = field(default="", init=False)
    _proc: ServerProcess | None = field(default=None, init=False, repr=False)
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)
    _log: list[tuple[float, str]] = field(default_factory=list, init=False, repr=False)
    _log_path: str = field(default="", init=False, repr=False)
    _home: str = field(default="", init=False, repr=False)
    _client_key: asyncssh.SSHKey | None = field(default=None, init=False, repr=False)
    _host_key: asyncssh.SSHKey | None = field(default=None, init=False, repr=False)
    _server_addr: str = field(default="", init=False, repr=False)
    _reach: Reach = field(init=False, repr=False)      # the lab's: the shells' descriptors

    @classmethod
    def from_scenario(cls, spec: Scenario) -> SshTarget:
        return cls(settings=dict(spec.target.settings), sessions=spec.sessions.count,
                   in_flight=spec.sessions.activity == "in-flight", image=spec.target.image)

    # -- settings and prediction ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: Mapping[str, Scalar]) -> list[tuple[str, str]]:
        """Each setting is tried on sshd itself (see ``config.check_settings``)."""
        return config.check_settings(settings)

    def socket_settings(self) -> SocketSettings:
        """sshd sets SO_KEEPALIVE on the connection iff TCPKeepAlive (default yes), and no
        keepalive timing of its own: the OS's idle, interval and count apply."""
        return SocketSettings(keepalive=tcp_keepalive(self.settings))

    def describe_settings(self) -> dict[str, Scalar]:
        alive = ClientAlive.from_settings(self.settings)
        shown: dict[str, Scalar] = {"ClientAliveInterval": alive.interval_s,
                                    "ClientAliveCountMax": alive.count_max,
                                    "TCPKeepAlive": "yes" if tcp_keepalive(self.settings) else "no"}
        shown.update({k: v for k, v in self.settings.items() if k.lower() not in
                      {s.lower() for s in SHOWN}})
        return shown

    def heartbeat(self, *, last_activity_s: float, opened_s: float) -> tuple[Prediction | None, float | None]:
        """ClientAlive's prediction and when its first keepalive goes out (from the fault).
        In flight, the data is sent right at the fault (``send_in_flight``): that wakes sshd's
        loop and restarts its wait (see ``harness.core.sshd``)."""
        return client_alive(ClientAlive.from_settings(self.settings), last_heard_s=last_activity_s,
                            last_wake_s=0.0 if self.in_flight else None)

    # -- running ----------------------------------------------------------------------------

    def start(self, lab: LabView) -> None:
        image = lab.image_for("ssh", self.image)
        sshd = "/usr/sbin/sshd" if image else require_sshd()
        base = os.path.join(lab.tmpdir, "ssh")
        os.makedirs(base, mode=0o755)
        self._server_addr = lab.server_addr
        self._reach = lab.reach

        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key = os.path.join(base, "host_ed25519")
        self._host_key.write_private_key(host_key)
        os.chmod(host_key, 0o600)
        self._client_key = asyncssh.generate_private_key("ssh-ed25519")
        public = self._client_key.export_public_key()

        self.user = f"{naming.PREFIX}{lab.lab_id}"
        if image:
            # the account exists only in the container, its home too: the container's entry
            # command makes both and hands the key to the account there
            self._home = account.container_home(self.user)
        else:
            self._home = os.path.join(base, "home")
            # Registered before the account exists: a failed useradd leaves nothing, a
            # half-made one is removed; and it runs after sshd's stop (newest first).
            lab.on_close(f"account {self.user}", lambda: remove_run_user(self.user))
            account.write_keys(self._home, public, *account.add_user(self.user, self._home))
            # sshd refuses to start without its privilege-separation folder (the unprivileged
            # child chroots there). Debian's own service creates it at boot (tmpfiles.d) or
            # start; on a machine where sshd never ran as a service it is missing, so create
            # it the same way. It is the system's, shared with any other sshd: left in place.
            os.makedirs(account.PRIVSEP_DIR, mode=0o755, exist_ok=True)

        config_path = os.path.join(base, "sshd_config")
        with open(config_path, "w") as f:
            f.write(config.sshd_config(port=self.port, addr=lab.server_addr, host_key=host_key,
                                       folder=base, home=self._home, user=self.user))
        argv = config.sshd_argv(sshd, config_path, self.settings)
        self._log_path = os.path.join(base, "sshd.log")
        if image:
            # sshd in the image (ours, or the user's with OpenSSH in it): the lab's folder is
            # mounted at the same path, so the config names the same files
            script = account.container_script(self.user, self._home)
            spec = ServerSpec("sshd", ("sh", "-c", script, "sh", *argv), image=image,
                              env={account.KEY_VARIABLE: public.decode().strip()}, binds={base: base},
                              log_lines=True)
        else:
            spec = ServerSpec("sshd", tuple(argv), log_lines=True)
        # sshd -e writes its log (and every per-connection child's) to stderr without a time
        # stamp; a reader thread stamps each line as it arrives.
        self._proc = lab.start_server(spec)
        lab.on_close("sshd", self.stop)
        self._reader = threading.Thread(target=self._read_log, args=(self._proc.stderr,),
                                        name="sshd-log", daemon=True)
        self._reader.start()
        self._wait_ready(lab, lab.server_addr)

    def load_env(self, folder: str) -> dict[str, str]:
        """For load runs (``harness/load/users.py``, another process): the account, its key
        in a file of the lab's folder, and the host key the clients must be offered."""
        assert self._client_key is not None and self._host_key is not None
        path = os.path.join(folder, "client_ed25519")
        self._client_key.write_private_key(path)
        os.chmod(path, 0o600)
        host = self._host_key.export_public_key().decode().split()
        return {"CONNCHAOS_LOAD_SSH_USER": self.user, "CONNCHAOS_LOAD_SSH_KEY": path,
                "CONNCHAOS_LOAD_SSH_HOST_KEY": f"{host[0]} {host[1]}"}

    def _read_log(self, stream: Any) -> None:
        log.read_log(stream, self._log_path, self._log)

    def _wait_ready(self, lab: LabView, addr: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(2)
                raise LabError("starting sshd", self.log_tail())
            if lab.reach.listening(self.port, addr):
                return
            time.sleep(0.02)
        raise LabError("starting sshd", f"not listening after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(line for _, line in self._log[-lines:]).strip()

    def stop(self) -> None:
        """End sshd and every per-connection process it forked, deepest first: sshd leaves
        those running when the listener stops. Leftovers of the shells go with the account."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process_tree(proc)
        if self._reader is not None:
            self._reader.join(5)

    # -- sessions (on the client namespace's loop) ------------------------------------------

    async def open_session(self, lab: LabView, index: int,
                           via: tuple[str, int] | None = None) -> Session:
        """Log in with the run's key and start a shell (no terminal: commands go to its stdin,
        their output comes back on stdout), checked with one ``echo``."""
        host, port = via or (lab.server_addr, self.port)
        assert self._client_key is not None and self._host_key is not None
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                host, port, username=self.user, client_keys=[self._client_key],
                known_hosts=([self._host_key.convert_to_public()], [], []),
                config=None, agent_path=None, preferred_auth="publickey", keepalive_interval=0,
                connect_timeout=10), 20)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise LabError(f"opening ssh session {index}", f"{type(exc).__name__}: {exc}") from exc
        try:
            shell: asyncssh.SSHClientProcess[str] = await conn.create_process(encoding="utf-8")
            handle = _Handle(conn, shell)
            # the shell's pid and who sshd thinks the client is (the proxy, through a proxy)
            shell.stdin.write('echo "session $$ $SSH_CLIENT end"\n')
            line = await asyncio.wait_for(shell.stdout.readuntil(" end\n"), 10)
            seen = line.strip().splitlines()[-1].split()
            if len(seen) != 6 or seen[0] != "session":
                raise LabError(f"opening ssh session {index}", f"unexpected answer {line!r}")
            handle.shell_pid, handle.peer = int(seen[1]), (seen[2], int(seen[3]))
            handle.stdout = self._reach.fd_link(handle.shell_pid, 1)
            ok, detail = await self._echo(handle, 10.0)
            if not ok:
                raise LabError(f"opening ssh session {index}", f"the shell does not answer: {detail}")
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, (OSError, asyncssh.Error, TimeoutError, ValueError, LabError)):
                raise LabError(f"opening ssh session {index}", f"{type(exc).__name__}: {exc}") from exc
            raise
        addr, cport = conn.get_extra_info("sockname")[:2]
        return Session(id=index, flow=Flow(addr, cport, host, port), pid=None, handle=handle,
                       opened_at=time.time())

    def server_addr_of(self, session: Session) -> str:
        return self._server_addr

    def server_peer(self, session: Session) -> tuple[str, int] | None:
        """The client address sshd saw for the session (``$SSH_CLIENT`` in its shell)."""
        peer: tuple[str, int] | None = session.handle.peer
        return peer

    async def close_session(self, session: Session) -> None:
        handle: _Handle = session.handle
        handle.conn.close()
        try:
            await asyncio.wait_for(handle.conn.wait_closed(), 2)
        except (TimeoutError, OSError, asyncssh.Error):
            handle.conn.abort()

    async def _echo(self, handle: _Handle, timeout_s: float) -> tuple[bool, str]:
        nonce = secrets.token_hex(4)

        async def echo() -> str:
            handle.shell.stdin.write(f"echo alive-{nonce}\n")
            await handle.shell.stdout.readuntil(f"alive-{nonce}\n")
            return f"echo alive-{nonce} answered"

        # Not wait_for: stop waiting on a dead connection rather than wait for a cancelled
        # read to unwind.
        task = asyncio.ensure_future(echo())
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            return False, f"no answer to echo within {timeout_s:g} s"
        exc = task.exception()
        if exc is not None:
            return False, f"{type(exc).__name__}: {exc}".strip()
        return True, task.result()

    async def alive(self, session: Session, timeout_s: float = 5.0) -> tuple[bool, str]:
        """The held shell still runs commands: ``echo`` answered within ``timeout_s``."""
        return await self._echo(session.handle, timeout_s)

    def send_in_flight(self, sessions: Sequence[Session]) -> None:
        """Write into each session's shell's stdout (a pipe to sshd, reopened through /proc):
        sshd reads it as the shell's output and sends it to the client at once. One write of
        less than a pipe buffer is atomic, so it never splits a line the shell writes."""
        data = b"x" * (IN_FLIGHT_BYTES - 1) + b"\n"
        for s in sessions:
            handle: _Handle = s.handle
            try:
                if self._reach.fd_link(handle.shell_pid, 1) != handle.stdout:
                    raise LabError("sending in-flight data", f"session {s.id}: its shell is gone")
                self._reach.write_fd(handle.shell_pid, 1, data)
            except LabError as exc:
                raise LabError("sending in-flight data", f"session {s.id}: {exc.detail}") from exc

    def server_errors(self) -> dict[int | tuple[str, int], ServerError]:
        """What sshd logged about connections ending, by the client (address, port) it saw."""
        return log.server_errors(list(self._log))
