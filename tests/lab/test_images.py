"""The docker backend's images: built from compose/, labelled, cached, and each one working.

The containers run on a network of their own, labelled ``connchaos.run=test-<random>``,
and every container, its volumes and the network go in a ``finally``. The first test of the
module builds what is missing (the base image with debootstrap when no registry answers);
CI builds them beforehand with ``connchaos images build``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import __version__
from harness.errors import LabError
from harness.lab import images
from harness.testing import run_cli, skip_or_fail

docker = pytest.importorskip("docker")


# --- without an engine ----------------------------------------------------------------------

def test_host_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    one = tmp_path / "sources.list"
    one.write_text("# a comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://other.example/debian/\nSuites: bookworm\n")
    unrelated = tmp_path / "nodesource.sources"
    unrelated.write_text("Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n")
    assert images.host_mirror([unrelated, deb822, one]) == "http://other.example/debian"
    assert images.host_mirror([one]) == "http://mirror.example/debian"
    assert images.host_mirror([unrelated]) == "http://deb.debian.org/debian"


def test_context_hash_follows_files_and_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(images.COMPOSE, copy / "compose")
    monkeypatch.setattr(images, "ROOT", copy)
    monkeypatch.setattr(images, "COMPOSE", copy / "compose")
    first = images.context("client", "sha256:aaa")
    assert images.context("client", "sha256:aaa").digest == first.digest
    assert images.context("client", "sha256:bbb").digest != first.digest
    with open(copy / "compose" / "client" / "Dockerfile", "a") as f:
        f.write("# changed\n")
    assert images.context("client", "sha256:aaa").digest != first.digest
    assert first.dockerfile == "compose/client/Dockerfile"


def test_context_of_project_images_carries_the_package_and_site_cas(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ca.mkdir()
    (ca / "site.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    names = [arc for arc, _ in images._context_files("toxiproxy", site_ca=ca)]
    assert "compose/toxiproxy/Dockerfile" in names
    assert "pyproject.toml" in names and "harness/cli.py" in names
    assert "compose/ca-certificates/site.crt" in names
    assert not any("__pycache__" in n for n in names)
    assert [arc for arc, _ in images._context_files("postgres", site_ca=ca)] == [
        "compose/postgres/Dockerfile", "compose/postgres/docker-entrypoint.sh"]


@pytest.mark.parametrize("target", ["postgres", "ssh", "websocket", "grpc"])
def test_compose_file_has_target_proxy_and_client(target: str) -> None:
    import yaml

    data = yaml.safe_load((images.COMPOSE / f"{target}.yml").read_text())
    services = data["services"]
    assert set(services) == {target, "toxiproxy", "client"}
    for svc in services.values():
        assert svc["labels"]["connchaos.compose"] == target
    assert services["toxiproxy"]["image"] == "${TOXIPROXY_IMAGE:-ghcr.io/shopify/toxiproxy:2.12.0}"
    # the client reaches the target only through the proxy
    assert services[target]["networks"] == ["server"]
    assert services["client"]["networks"] == ["client"]
    assert sorted(services["toxiproxy"]["networks"]) == ["client", "server"]
    assert services["client"]["cap_add"] == ["NET_ADMIN"]
    for name in (target, "client"):
        build = services[name]["build"]
        assert (images.COMPOSE / build["context"] / build["dockerfile"]).is_file()
        assert services[name]["image"] == f"connchaos/{name}:${{CONNCHAOS_VERSION:-{__version__}}}"


def _compose() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run([*argv, "version"], capture_output=True, text=True)
        if done.returncode == 0:
            return argv
    return None


@pytest.mark.docker
@pytest.mark.parametrize("target", ["postgres", "ssh", "websocket", "grpc"])
def test_compose_file_is_valid_for_compose(target: str) -> None:
    compose = _compose()
    if compose is None:
        skip_or_fail("needs docker compose or docker-compose", "CONNCHAOS_REQUIRE_DOCKER")
    env = {**os.environ, "TOXIPROXY_IMAGE": f"connchaos/toxiproxy:{__version__}"}
    done = subprocess.run([*compose, "-f", str(images.COMPOSE / f"{target}.yml"), "config"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"image: connchaos/toxiproxy:{__version__}" in done.stdout


@pytest.mark.lab   # runs the CLI in a process of its own
def test_images_without_an_engine_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    done = run_cli("images", "list", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Docker engine" in done.stderr


def test_unknown_image_name_is_exit_2(docker_machine: None) -> None:
    done = run_cli("images", "build", "nosuch", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "nosuch" in done.stderr


# --- with an engine -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(docker_engine: None) -> Iterator[Any]:
    c = images.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def built(client: Any) -> dict[str, str]:
    return images.ensure(client, images.NAMES)


@pytest.fixture
def network(client: Any) -> Iterator[Callable[..., Any]]:
    """A network labelled with a test run id, and a way to start containers on it; both
    removed (the containers with their volumes) at the end."""
    run = f"test-{secrets.token_hex(3)}"
    net = client.networks.create(f"cc-{run}", labels={"connchaos.run": run})
    started: list[Any] = []

    def start(image: str, **kwargs: Any) -> Any:
        c = client.containers.run(image, detach=True, network=net.name,
                                  labels={"connchaos.run": run}, **kwargs)
        started.append(c)
        c.reload()
        return c

    try:
        yield start
    finally:
        for c in reversed(started):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
        net.remove()
        assert not client.containers.list(all=True, filters={"label": f"connchaos.run={run}"})


def _ip(container: Any) -> str:
    container.reload()
    nets = container.attrs["NetworkSettings"]["Networks"]
    return str(next(iter(nets.values()))["IPAddress"])


def _until(what: str, check: Callable[[], bool], container: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        container.reload()
        assert container.status in ("created", "running"), container.logs().decode()[-2000:]
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready in {timeout_s} s:\n{container.logs().decode()[-2000:]}")


def test_built_images_exist_with_their_labels(client: Any, built: dict[str, str]) -> None:
    base_id = client.images.get(images.BASE).id
    for name in images.NAMES:
        assert built[name] == f"connchaos/{name}:{__version__}"
        labels = client.images.get(built[name]).labels
        assert labels[images.LABEL_IMAGE] == name
        assert labels[images.LABEL_VERSION] == __version__
        assert labels[images.LABEL_CONTEXT] == images.context(name, base_id).digest
        assert "connchaos.run" not in labels   # a cache, never a run's object


def test_ensure_is_a_cache_hit_the_second_time(client: Any, built: dict[str, str]) -> None:
    ids = {n: client.images.get(ref).id for n, ref in built.items()}
    said: list[str] = []
    again = images.ensure(client, images.NAMES, progress=said.append)
    assert again == built
    assert {n: client.images.get(ref).id for n, ref in again.items()} == ids
    assert not [line for line in said if line.startswith("building")], said
    assert sum("up to date" in line for line in said) == len(images.NAMES)


def test_ensure_base_is_a_no_op_when_present(client: Any, built: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = client.images.get(images.BASE).id

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ensure_base built a base that was present")

    monkeypatch.setattr(images, "build_base", never)
    monkeypatch.setattr(images, "_pull", never)
    said: list[str] = []
    assert images.ensure_base(client, images.BASE, said.append) == images.BASE
    assert said == []
    assert client.images.get(images.BASE).id == before


def test_images_list_shows_every_image_up_to_date(built: dict[str, str]) -> None:
    done = run_cli("images", "list", timeout=60)
    assert done.returncode == 0, done.stderr
    for name in images.NAMES:
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{name} "))
        assert f"connchaos/{name}:{__version__}" in line and "up to date" in line


def test_base_builder_cleans_up_when_debootstrap_fails(client: Any) -> None:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        skip_or_fail("needs root and debootstrap", "CONNCHAOS_REQUIRE_DOCKER")
    name = f"connchaos-test/debian:broken-{secrets.token_hex(3)}"
    before = set(Path(tempfile.gettempdir()).glob("connchaos-base-*"))
    with pytest.raises(LabError, match="debootstrap bookworm"):
        # nothing listens on port 9: debootstrap fails at its first download
        images.build_base(client, name, "bookworm", mirror="http://127.0.0.1:9/debian")
    assert set(Path(tempfile.gettempdir()).glob("connchaos-base-*")) == before
    assert images._local(client, name) is None


def test_postgres_takes_settings_and_accepts_connections(client: Any, built: dict[str, str],
                                                          network: Callable[..., Any]) -> None:
    import psycopg

    pg = network(built["postgres"], environment={"POSTGRES_HOST_AUTH_METHOD": "trust"},
                 command=["postgres", "-c", "tcp_keepalives_idle=2"])
    addr = _ip(pg)

    def answers() -> bool:
        try:
            with psycopg.connect(host=addr, user="postgres", dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    _until("postgres", answers, pg)
    with psycopg.connect(host=addr, user="postgres", dbname="postgres") as conn:
        assert conn.execute("SHOW tcp_keepalives_idle").fetchone() == ("2",)
        assert conn.execute("SHOW port").fetchone() == ("5432",)
    # the unix socket is where the official image has it
    code, out = pg.exec_run(["psql", "-h", "/var/run/postgresql", "-U", "postgres", "-Atc", "SELECT 1"],
                            user="postgres")
    assert (code, out.strip()) == (0, b"1")


def test_postgres_takes_the_official_images_environment(client: Any, built: dict[str, str],
                                                        network: Callable[..., Any]) -> None:
    import psycopg

    pg = network(built["postgres"], environment={"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "s3cret",
                                                 "POSTGRES_DB": "appdb"},
                 command=["-c", "tcp_keepalives_count=4"])   # bare flags mean `postgres ...`
    addr = _ip(pg)

    def answers() -> bool:
        try:
            with psycopg.connect(host=addr, user="app", password="s3cret", dbname="appdb", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    _until("postgres", answers, pg)
    with psycopg.connect(host=addr, user="app", password="s3cret", dbname="appdb") as conn:
        assert conn.execute("SHOW tcp_keepalives_count").fetchone() == ("4",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=addr, user="app", password="wrong", dbname="appdb", connect_timeout=5)


def test_pgbouncer_pools_a_postgres_by_hand_with_its_settings(client: Any, built: dict[str, str],
                                                              network: Callable[..., Any]) -> None:
    """The image as compose/pgbouncer.yml runs it: PGBOUNCER_BACKEND and PGBOUNCER_SETTINGS
    make its config; clients reach PostgreSQL through it; its console shows the settings."""
    import psycopg

    pg = network(built["postgres"], environment={"POSTGRES_HOST_AUTH_METHOD": "trust"})
    bouncer = network(built["pgbouncer"], environment={
        "PGBOUNCER_BACKEND": f"{_ip(pg)}:5432", "PGBOUNCER_SETTINGS": "tcp_keepidle = 2\ntcp_keepcnt = 3"})
    addr = _ip(bouncer)

    def answers() -> bool:
        try:
            with psycopg.connect(host=addr, port=6432, user="postgres", dbname="postgres",
                                 connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    _until("pgbouncer and its postgres", answers, bouncer)
    with psycopg.connect(host=addr, port=6432, user="postgres", dbname="pgbouncer", autocommit=True) as console:
        result = console.pgconn.exec_(b"SHOW CONFIG")
        shown = {result.get_value(r, 0): result.get_value(r, 1) for r in range(result.ntuples)}
    assert (shown[b"tcp_keepidle"], shown[b"tcp_keepcnt"], shown[b"tcp_keepalive"]) == (b"2", b"3", b"1")
    # without a backend it says what it needs
    alone = network(built["pgbouncer"])
    assert alone.wait(timeout=30)["StatusCode"] == 2
    assert b"PGBOUNCER_BACKEND" in alone.logs()


def test_sshd_checks_a_config_and_lets_a_key_in(client: Any, built: dict[str, str],
                                                 network: Callable[..., Any]) -> None:
    import asyncssh

    folder = tempfile.mkdtemp(prefix="connchaos-test-")
    try:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(os.path.join(folder, "host_ed25519"))
        os.chmod(os.path.join(folder, "host_ed25519"), 0o600)
        user_key = asyncssh.generate_private_key("ssh-ed25519")
        Path(folder, "authorized_keys").write_bytes(user_key.export_public_key())
        Path(folder, "sshd_config").write_text(
            "Port 22\nHostKey /lab/host_ed25519\nAuthorizedKeysFile /lab/authorized_keys\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nUsePAM no\nAllowUsers lab\n"
            "ClientAliveInterval 2\nPidFile /run/sshd-lab.pid\n")
        Path(folder, "bad_config").write_text("NoSuchOption yes\n")
        # sshd reads authorized_keys as the account: it must reach the folder (StrictModes:
        # nothing on the way may be writable by others)
        os.chmod(folder, 0o755)
        mount = {folder: {"bind": "/lab", "mode": "ro"}}

        check = network(built["ssh"], volumes=mount, command=["/usr/sbin/sshd", "-t", "-f", "/lab/sshd_config"])
        assert check.wait(timeout=60)["StatusCode"] == 0, check.logs().decode()
        bad = network(built["ssh"], volumes=mount, command=["/usr/sbin/sshd", "-t", "-f", "/lab/bad_config"])
        assert bad.wait(timeout=60)["StatusCode"] != 0
        assert b"NoSuchOption" in bad.logs()

        sshd = network(built["ssh"], volumes=mount, environment={"SSH_USER": "lab"},
                       command=["/usr/sbin/sshd", "-D", "-e", "-f", "/lab/sshd_config"])
        addr = _ip(sshd)

        async def login() -> str:
            async with asyncssh.connect(addr, username="lab", client_keys=[user_key],
                                        known_hosts=None, connect_timeout=5) as conn:
                done = await conn.run("echo hello from $(whoami)", check=True)
                return str(done.stdout).strip()

        def up() -> bool:
            return b"Server listening" in sshd.logs()

        _until("sshd", up, sshd)
        assert asyncio.run(login()) == "hello from lab"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_websocket_image_serves_the_reference_server(client: Any, built: dict[str, str],
                                                     network: Callable[..., Any]) -> None:
    from websockets.asyncio.client import connect

    ws = network(built["websocket"], command=["--host", "0.0.0.0", "--port", "8765", "--ping-interval", "off"])
    addr = _ip(ws)

    async def echo() -> str | bytes:
        async with connect(f"ws://{addr}:8765/probe", open_timeout=2) as conn:
            await conn.send("hello")
            return await conn.recv()

    def answers() -> bool:
        try:
            return asyncio.run(echo()) == "hello"
        except (TimeoutError, OSError):
            return False

    _until("websocket server", answers, ws)
    assert asyncio.run(echo()) == "hello"


def test_toxiproxy_image_serves_the_api(client: Any, built: dict[str, str],
                                        network: Callable[..., Any]) -> None:
    import requests

    proxy = network(built["toxiproxy"])
    addr = _ip(proxy)

    def answers() -> bool:
        try:
            return requests.get(f"http://{addr}:8474/version", timeout=1).ok
        except requests.RequestException:
            return False

    _until("proxy API", answers, proxy)
    made = requests.post(f"http://{addr}:8474/proxies", timeout=5, json={
        "name": "pg", "listen": "0.0.0.0:15432", "upstream": "postgres:5432"})
    assert made.status_code == 201, made.text
    assert "pg" in requests.get(f"http://{addr}:8474/proxies", timeout=5).json()


def test_toxiproxy_image_falls_back_to_ours_without_a_registry(client: Any, built: dict[str, str]) -> None:
    official = images._local(client, images.TOXIPROXY_OFFICIAL)
    reachable = images.registry_reachable(client, images.registry_host(images.TOXIPROXY_OFFICIAL))
    if official is not None or reachable:
        assert images.toxiproxy_image(client) == images.TOXIPROXY_OFFICIAL
    else:
        assert images.toxiproxy_image(client) == built["toxiproxy"]


def test_client_image_has_the_network_tools(client: Any, built: dict[str, str],
                                            network: Callable[..., Any]) -> None:
    helper = network(built["client"], cap_add=["NET_ADMIN"])
    for argv in (["ip", "-br", "addr"], ["nft", "list", "ruleset"], ["conntrack", "--version"],
                 ["python3", "-c", "print('ok')"]):
        code, out = helper.exec_run(argv)
        assert code == 0, (argv, out)
    code, out = helper.exec_run(["nft", "add", "table", "inet", "connchaos"])
    assert code == 0, out
    # tini passes docker stop's SIGTERM on (143), where a bare PID 1 would wait for the KILL (137)
    helper.stop(timeout=20)
    helper.reload()
    assert helper.attrs["State"]["ExitCode"] == 143


def test_doctor_reports_the_images(built: dict[str, str]) -> None:
    done = run_cli("doctor", timeout=120)
    line = next(line for line in done.stdout.splitlines() if "docker images" in line)
    assert line.startswith("ok") and "up to date" in line, done.stdout
