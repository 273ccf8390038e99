"""``connchaos doctor``: what this machine can do, each item with what to install when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from harness.lab import naming


@dataclass(frozen=True)
class Check:
    """One capability: found or not, what was seen, and the fix."""

    name: str
    ok: bool
    detail: str
    needed_for: str      # "local" (the local backend's packet scenarios) or a later feature
    fix: str = ""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _netns_and_nft() -> tuple[Check, Check]:
    """Create a throwaway namespace and load an nft table in it: the real test of both."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return (Check("network namespaces", False, "not tried (needs root and ip)", "local"),
                Check("nftables", False, "not tried (needs root and ip)", "local",
                      "apt-get install nftables"))
    name = naming.namespace(naming.new_lab_id(), "doc")
    made = _run(["ip", "netns", "add", name])
    if made is None or made.returncode != 0:
        err = made.stderr.strip() if made else "ip failed"
        return (Check("network namespaces", False, err, "local"),
                Check("nftables", False, "not tried", "local", "apt-get install nftables"))
    try:
        ns = Check("network namespaces", True, "created and removed one", "local")
        if shutil.which("nft") is None:
            return ns, Check("nftables", False, "no nft command", "local", "apt-get install nftables")
        from harness.errors import LabError
        from harness.faults import nft
        from harness.faults.base import chain

        # the same loader and rule shape the packet faults use
        try:
            nft.load(nft.InNamespace(name), "rtr", f"table {nft.TABLE} {{\n{chain('forward', 'forward', 'tcp dport 9 drop')}}}\n")
            ok, detail = True, "loaded a table in a lab namespace"
        except LabError as exc:
            ok, detail = False, str(exc)
        return ns, Check("nftables", ok, detail, "local", "" if ok else "apt-get install nftables")
    finally:
        _run(["ip", "netns", "delete", name])


def _images() -> Check:
    """Whether `connchaos images build` has work to do (it is the fix either way)."""
    from harness.errors import ConnchaosError
    from harness.lab import images

    try:
        found = images.status(images.connect())
    except ConnchaosError as exc:
        return Check("docker images", False, str(exc), "docker backend", "connchaos images build")
    todo = [f"{s.name} {s.state.split(' (')[0]}" for s in found
            if s.name in ("base", *images.NAMES) and not s.state.startswith("up to date")]
    return Check("docker images", not todo, ", ".join(todo) if todo else
                 f"{len(images.NAMES)} images and the base up to date", "docker backend",
                 "connchaos images build")


def checks() -> list[Check]:
    """Everything doctor looks at, in order."""
    from harness.targets.postgres import find_bindir

    found = [Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "local", "run as root")]
    for tool, package in (("ip", "iproute2"), ("setpriv", "util-linux")):
        path = shutil.which(tool)
        found.append(Check(f"{tool} command", path is not None, path or "missing", "local",
                           f"apt-get install {package}"))
    found.extend(_netns_and_nft())
    bindir = find_bindir()
    version = ""
    if bindir:
        out = _run([os.path.join(bindir, "postgres"), "--version"])
        version = out.stdout.strip() if out else ""
    found.append(Check("PostgreSQL server", bindir is not None, version or "postgres/initdb not found",
                       "local", "apt-get install postgresql"))
    from harness.targets.ssh import find_sshd

    sshd = find_sshd()
    found.append(Check("OpenSSH server", sshd is not None, sshd or "sshd not found", "ssh target",
                       "apt-get install openssh-server"))
    docker = shutil.which("docker")
    engine = _run(["docker", "info", "--format", "{{.ServerVersion}}"]) if docker else None
    found.append(Check("Docker engine", bool(engine and engine.returncode == 0),
                       (engine.stdout.strip() if engine and engine.returncode == 0 else "not reachable"),
                       "docker backend", "apt-get install docker.io; start dockerd"))
    if engine and engine.returncode == 0:
        found.append(_images())
    toxi = shutil.which("toxiproxy-server")
    found.append(Check("Toxiproxy server", toxi is not None, toxi or "not installed",
                       "proxy layer: optional, the built-in proxy stands in (--toxiproxy-server)"))
    return found
