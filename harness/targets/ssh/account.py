"""The per-run account sshd lets in: ``cc-<lab id>``, a system account with its home in the
lab's ``connchaos-`` folder, /bin/sh, and the run's client key as its only way in.

On this machine it is made with ``useradd`` (and removed at teardown and by ``connchaos
clean``); in a container it exists only there, made by the container's entry command.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time

from harness.errors import LabError

# The per-run account's uid inside a container (any free one: the container has no others).
CONTAINER_UID = 4242
PRIVSEP_DIR = "/run/sshd"
KEY_VARIABLE = "CONNCHAOS_SSH_KEY"      # the client's public key, in the container's environment


def add_user(user: str, home: str) -> tuple[int, int]:
    """Make the account on this machine; its (uid, gid)."""
    deadline = time.monotonic() + 10
    while True:
        # a system account with no password ('*' is not locked: sshd without PAM refuses
        # locked accounts even for key logins); its home is in the lab's folder
        done = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", home,
                               "--shell", "/bin/sh", "--password", "*", user],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        if "lock" not in done.stderr or time.monotonic() > deadline:
            raise LabError(f"adding the account {user}", done.stderr.strip())
        time.sleep(0.1)
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def write_keys(home: str, public_key: bytes, uid: int, gid: int) -> None:
    """The account's home with the client's key; StrictModes: the home, .ssh and the key
    file belong to the user, writable only by it."""
    keys = os.path.join(home, ".ssh", "authorized_keys")
    os.makedirs(os.path.dirname(keys), mode=0o700)
    with open(keys, "wb") as f:
        f.write(public_key)
    for path, mode in ((home, 0o755), (os.path.dirname(keys), 0o700), (keys, 0o600)):
        os.chown(path, uid, gid)
        os.chmod(path, mode)


def container_home(user: str) -> str:
    """The account's home inside a container (its own, not the lab's folder: the files there
    must belong to the account, and a harness without root could not delete them again)."""
    return f"/home/{user}"


def container_script(user: str, home: str) -> str:
    """The shell command that makes the account in a container, its home with the client's
    key (from ``$CONNCHAOS_SSH_KEY``) handed to it by owner, then runs sshd (``"$@"``)."""
    keys = f"{home}/.ssh/authorized_keys"
    return (f"mkdir -p {PRIVSEP_DIR} && useradd --system --no-create-home --home-dir {home}"
            f" --shell /bin/sh --password '*' --uid {CONTAINER_UID} {user}"
            f" && mkdir -p {home}/.ssh && printf '%s\\n' \"${KEY_VARIABLE}\" > {keys}"
            f" && chown -R {user}: {home} && chmod 755 {home}"
            f" && chmod 700 {home}/.ssh && chmod 600 {keys} && exec \"$@\"")
