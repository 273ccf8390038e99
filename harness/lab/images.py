"""The container images of the docker backend: build them, find them, and make the base.

Images are a cache, not run objects: ``connchaos/<name>:<version>`` carries
``connchaos.image=<name>``, ``connchaos.version`` and ``connchaos.context`` (a hash of the
files it was built from and of the base image), never ``connchaos.run``, so ``connchaos
clean`` leaves them alone and ``ensure`` rebuilds one only when its context changed.

Every Dockerfile under ``compose/`` starts ``ARG BASE=debian:bookworm-slim`` / ``FROM
${BASE}``: with a registry the public image is pulled; without one (this project's
machines) ``ensure_base`` makes the same name from Debian's packages with debootstrap and
``docker import``, so the Dockerfiles never need to know which.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from harness import __version__
from harness.errors import LabError, MachineError

Progress = Callable[[str], None]
Client = Any   # docker.DockerClient: the SDK ships no type hints

NAMES = ("postgres", "ssh", "websocket", "haproxy", "pgbouncer", "mqtt", "redis", "client", "toxiproxy",
         "grpc")
BASE = "debian:bookworm-slim"
TOXIPROXY_OFFICIAL = "ghcr.io/shopify/toxiproxy:2.12.0"
REPOSITORY = "connchaos"
LABEL_IMAGE = "connchaos.image"
LABEL_VERSION = "connchaos.version"
LABEL_CONTEXT = "connchaos.context"
LABEL_BASE_BUILT = "connchaos.base"   # on a base made here: "debootstrap <suite> <mirror>"

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "compose"
# The images that run this project's own code get the package in their build context.
PROJECT_FILES = ("pyproject.toml", "README.md")
WITH_PROJECT = {"websocket", "toxiproxy", "grpc"}
# The machine's own CAs (a TLS-inspecting proxy's, say): pip in the image must trust what the
# machine's pip trusts, or it cannot reach the package index the machine reaches.
SITE_CA = Path("/usr/local/share/ca-certificates")
SITE_CA_IN_CONTEXT = "compose/ca-certificates"
REGISTRY_PROBE_S = 3.0


def _quiet(line: str) -> None:
    pass


def image_ref(name: str) -> str:
    """``connchaos/<name>:<version>``: the tag ``ensure`` builds and the lab runs."""
    return f"{REPOSITORY}/{name}:{__version__}"


def connect() -> Client:
    """A client of the local Docker engine, or exit 3 saying what is missing."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise MachineError("a Docker engine", f"start dockerd; the SDK said: {exc}") from exc
    return client


# --- registries ---------------------------------------------------------------------------

_reachable: dict[str, bool] = {}


def registry_host(image: str) -> str:
    """The registry an image name is pulled from (``docker.io`` for bare names)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_reachable(client: Client, registry: str = "docker.io") -> bool:
    """Whether the registry (or a mirror the engine is configured with) answers, within a
    few seconds. A pull against a registry behind a black hole would otherwise hang for the
    engine's full timeout. Any HTTP answer counts (``/v2/`` says 401 to strangers). The
    answer is remembered for the life of the process."""
    if registry in _reachable:
        return _reachable[registry]
    urls = [f"https://{'registry-1.docker.io' if registry == 'docker.io' else registry}/v2/"]
    if registry == "docker.io":
        try:
            mirrors = client.info().get("RegistryConfig", {}).get("Mirrors") or []
        except Exception:   # an engine that cannot say is an engine without mirrors
            mirrors = []
        urls = [m.rstrip("/") + "/v2/" for m in mirrors] + urls
    ok = any(_answers(url) for url in urls)
    _reachable[registry] = ok
    return ok


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=REGISTRY_PROBE_S, context=ssl.create_default_context())
        return True
    except urllib.error.HTTPError:
        return True
    except (TimeoutError, urllib.error.URLError, OSError, ValueError):
        return False


def _local(client: Client, ref: str) -> Any | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise LabError(f"looking up image {ref}", str(exc)) from exc


def _pull(client: Client, ref: str, progress: Progress) -> bool:
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    progress(f"pulling {ref}")
    try:
        client.images.pull(repo, tag=tag)
        return True
    except (docker.errors.DockerException, OSError) as exc:   # OSError: requests' timeouts
        progress(f"could not pull {ref}: {exc}")
        return False


# --- the base image -----------------------------------------------------------------------

def ensure_base(client: Client, name: str = BASE, progress: Progress = _quiet) -> str:
    """Make sure the base image ``name`` exists locally: nothing if it does, a pull if a
    registry answers, else a Debian root file system made here with debootstrap and
    imported under that same name (labelled ``connchaos.base``). Returns ``name``."""
    if _local(client, name) is not None:
        return name
    if registry_reachable(client, registry_host(name)) and _pull(client, name, progress):
        return name
    suite = _debian_suite(name)
    progress(f"no registry answered; building {name} locally with debootstrap (takes a minute or two)")
    started = time.monotonic()
    build_base(client, name, suite, mirror=host_mirror(), progress=progress)
    progress(f"built {name} in {time.monotonic() - started:.0f} s")
    return name


def _debian_suite(name: str) -> str:
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:(\w+?)(?:-slim)?", name)
    if not m:
        raise MachineError(f"the base image {name}",
                           "no registry answered, and only debian:<suite>[-slim] can be built "
                           "locally; load it with `docker load` or pass another base")
    return m.group(1)


def host_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian mirror this machine's apt uses (a machine that reaches no registry often
    reaches only its own mirror), else deb.debian.org."""
    paths = list(sources) if sources is not None else (
        [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*")))
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for url in re.findall(r"^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            if re.search(r"/debian/?$", url):
                return str(url).rstrip("/")
    return "http://deb.debian.org/debian"


# The official slim images leave documentation out and carry a deb822 source list; the
# imported base does the same, so the Dockerfiles behave alike on both.
_DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


def _sources(suite: str, mirror: str) -> str:
    security = re.sub(r"/debian$", "/debian-security", mirror)
    return (f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def build_base(client: Client, name: str, suite: str, mirror: str, progress: Progress = _quiet) -> None:
    """debootstrap ``suite`` (minbase) from ``mirror`` into a ``connchaos-`` folder, tar it,
    ``docker import`` it as ``name``. The folder goes on every exit path."""
    if os.geteuid() != 0:
        raise MachineError(f"root (to build {name} with debootstrap: no registry answered)", "run as root")
    if shutil.which("debootstrap") is None:
        raise MachineError(f"debootstrap (to build {name}: no registry answered)",
                           "apt-get install debootstrap")
    tmp = tempfile.mkdtemp(prefix="connchaos-base-")
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "etc", "dpkg", "dpkg.cfg.d"))
        # excluded from the first unpack on, so nothing is installed only to be deleted
        Path(root, "etc/dpkg/dpkg.cfg.d/docker").write_text(_DPKG_SLIM)
        argv = ["debootstrap", "--variant=minbase", suite, root, mirror]
        progress(f"$ {' '.join(argv)}")
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-15:])
            raise LabError(f"debootstrap {suite} from {mirror}", f"exit {done.returncode}\n{tail}")
        _trim(root, suite, mirror)
        archive = os.path.join(tmp, "rootfs.tar")
        # GNU tar keeps what Python's tarfile drops: extended attributes (file capabilities)
        packed = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                                 "-C", root, "-cf", archive, "."], capture_output=True, text=True)
        if packed.returncode != 0:
            raise LabError(f"packing the {suite} root file system", packed.stderr.strip())
        repo, _, tag = name.rpartition(":")
        changes = [f'LABEL {LABEL_BASE_BUILT}="debootstrap {suite} {mirror}"',
                   f'LABEL {LABEL_VERSION}="{__version__}"',
                   'CMD ["bash"]']
        progress(f"importing {os.path.getsize(archive) // 2**20} MiB as {name}")
        try:
            client.api.import_image_from_file(archive, repository=repo, tag=tag, changes=changes)
        except docker.errors.APIError as exc:
            raise LabError(f"docker import of {name}", str(exc)) from exc
    finally:
        _unmount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _trim(root: str, suite: str, mirror: str) -> None:
    """What the official image does not carry: package caches, the host's resolver and
    hostname (the engine provides its own), a one-line source list."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in Path(root, sub).glob("*"):
            if entry.is_file():
                entry.unlink()
    for sub in ("etc/resolv.conf", "etc/hostname", "etc/apt/sources.list"):
        Path(root, sub).unlink(missing_ok=True)
    Path(root, "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    Path(root, "etc/apt/sources.list.d/debian.sources").write_text(_sources(suite, mirror))


def _unmount_below(folder: str) -> None:
    """debootstrap mounts /proc and /sys inside the target; a failed run can leave them
    mounted, and rmtree must never walk into the host's /sys."""
    try:
        with open("/proc/mounts") as f:
            points = [line.split()[1] for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(folder + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# --- the images of the lab ----------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """One image's build context as a tar, and the hash that decides whether it is built."""

    name: str
    tar: bytes
    digest: str
    dockerfile: str


def _context_files(name: str, site_ca: Path = SITE_CA) -> list[tuple[str, Path]]:
    folder = COMPOSE / name
    if not (folder / "Dockerfile").is_file():
        raise MachineError(f"{folder}/Dockerfile", "images are built from a connchaos checkout")
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    if name in WITH_PROJECT:
        files += [ROOT / f for f in PROJECT_FILES]
        files += [p for p in sorted((COMPOSE / "ca-certificates").glob("*")) if p.is_file()]
        files += [p for p in sorted((ROOT / "harness").rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    found = [(p.relative_to(ROOT).as_posix(), p) for p in files]
    if name in WITH_PROJECT:
        found += [(f"{SITE_CA_IN_CONTEXT}/{p.name}", p) for p in sorted(site_ca.glob("*.crt")) if p.is_file()]
    return found


def context(name: str, base_id: str) -> Context:
    """The build context of image ``name``, laid out as the repository is (so the same
    Dockerfile builds by hand with the repository root as context), and its hash over the
    files' paths, modes and contents and the base image's id."""
    digest = hashlib.sha256(f"{name}\0{base_id}\0".encode())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, path in _context_files(name):
            data = path.read_bytes()
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            digest.update(f"{arcname}\0{mode:o}\0{len(data)}\0".encode())
            digest.update(data)
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return Context(name, buf.getvalue(), digest.hexdigest()[:16], f"compose/{name}/Dockerfile")


def ensure(client: Client, names: Sequence[str] = NAMES, progress: Progress = _quiet,
           rebuild: bool = False, log: Progress | None = None, base: str = BASE) -> dict[str, str]:
    """Build each image of ``names`` that is missing or whose context changed (all of them
    with ``rebuild``, and then without the engine's layer cache, so that a rebuild picks up
    Debian's and PyPI's updates), the base first when needed. ``log`` receives the build output line
    by line. Returns name -> image ref."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"no image named {', '.join(unknown)}; the images are {', '.join(NAMES)}")
    ensure_base(client, base, progress)
    base_id: str = client.images.get(base).id
    refs = {}
    for name in names:
        ctx = context(name, base_id)
        ref = image_ref(name)
        have = _local(client, ref)
        if have is not None and not rebuild and (have.labels or {}).get(LABEL_CONTEXT) == ctx.digest:
            progress(f"{ref} is up to date")
        else:
            progress(f"building {ref}")
            started = time.monotonic()
            _build(client, ctx, ref, base, log or _quiet, nocache=rebuild)
            progress(f"built {ref} in {time.monotonic() - started:.0f} s")
        refs[name] = ref
    return refs


def _build(client: Client, ctx: Context, ref: str, base: str, log: Progress, nocache: bool = False) -> None:
    labels = {LABEL_IMAGE: ctx.name, LABEL_VERSION: __version__, LABEL_CONTEXT: ctx.digest}
    tail: list[str] = []
    try:
        for chunk in client.api.build(fileobj=io.BytesIO(ctx.tar), custom_context=True,
                                      dockerfile=ctx.dockerfile, tag=ref, labels=labels,
                                      buildargs={"BASE": base}, rm=True, forcerm=True,
                                      pull=False, nocache=nocache, decode=True):
            if "error" in chunk:
                raise LabError(f"building {ref}", "\n".join(tail[-15:] + [chunk["error"].strip()]))
            text = chunk.get("stream", "").rstrip("\n")
            for line in text.splitlines():
                tail.append(line)
                log(line)
    except docker.errors.APIError as exc:
        raise LabError(f"building {ref}", str(exc)) from exc


def toxiproxy_image(client: Client, progress: Progress = _quiet) -> str:
    """The official Toxiproxy image when it is here or can be pulled, else ours (the
    built-in proxy, same API on 8474), built if missing."""
    if _local(client, TOXIPROXY_OFFICIAL) is not None:
        return TOXIPROXY_OFFICIAL
    if (registry_reachable(client, registry_host(TOXIPROXY_OFFICIAL))
            and _pull(client, TOXIPROXY_OFFICIAL, progress)):
        return TOXIPROXY_OFFICIAL
    return ensure(client, ["toxiproxy"], progress)["toxiproxy"]


@dataclass(frozen=True)
class Status:
    """What ``connchaos images list`` shows for one image."""

    name: str
    ref: str
    state: str          # "up to date" | "stale" | "missing"
    size_mb: float | None
    created: str


def status(client: Client, base: str = BASE) -> list[Status]:
    """Every image ``ensure`` would build, and whether it would (the base included)."""
    found = []
    base_image = _local(client, base)
    found.append(_status_of("base", base, base_image, None))
    for name in NAMES:
        have = _local(client, image_ref(name))
        want = context(name, base_image.id).digest if base_image is not None else None
        found.append(_status_of(name, image_ref(name), have, want))
    official = _local(client, TOXIPROXY_OFFICIAL)
    found.append(_status_of("toxiproxy (official)", TOXIPROXY_OFFICIAL, official, None))
    return found


def _status_of(name: str, ref: str, image: Any | None, want: str | None) -> Status:
    if image is None:
        return Status(name, ref, "missing", None, "")
    labels = image.labels or {}
    state = "up to date" if want is None or labels.get(LABEL_CONTEXT) == want else "stale"
    if LABEL_BASE_BUILT in labels and LABEL_IMAGE not in labels:   # built images inherit it
        state += f" (local: {labels[LABEL_BASE_BUILT]})"
    return Status(name, ref, state, image.attrs.get("Size", 0) / 1e6,
                  str(image.attrs.get("Created", ""))[:19])
