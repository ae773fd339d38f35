"""Shared fixtures. Docker and PostgreSQL ones skip when the service cannot be had (no engine answers; no
PostgreSQL installed), except in CI (CI=true), where they fail. Anything else going wrong fails."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import pytest
import requests

from tests import netns as netns_mod
from tests import pg
from tests.harness import LIVE, Cluster

BUSYBOX_IMAGE = "corral-test/busybox:latest"
BUSYBOX_LABEL = "corral.test.applets"
BUSYBOX_APPLETS = (
    "sh", "echo", "sleep", "cat", "env", "ls", "pwd", "true", "false",
    "printf", "id", "head", "tail", "wc", "seq", "yes", "mkdir", "touch", "grep", "httpd", "wget",
)


def _docker_unreachable(e: Exception) -> bool:
    """Whether the Docker SDK's error says that no engine answered (rather than anything else going wrong)."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | FileNotFoundError | ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "Error while fetching server API version" in str(e)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A ``docker.DockerClient`` for the local engine."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        # "not reachable" only (no socket, connection refused, the engine not answering); anything else,
        # such as a bug here or a broken docker package, fails loudly
        if not _docker_unreachable(e):
            raise
        _unavailable(f"NO DOCKER ENGINE: docker tests need a reachable Docker Engine ({type(e).__name__}: {e})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """The name of a tiny local image with busybox's shell and the tools in BUSYBOX_APPLETS.

    Built from /bin/busybox when absent, or when it was made without this list of tools (the label
    says which list it has).
    """
    client = docker_client
    applets = " ".join(BUSYBOX_APPLETS)
    try:
        labels = client.images.get(BUSYBOX_IMAGE).labels or {}
        if labels.get(BUSYBOX_LABEL) == applets:
            return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = "/bin/busybox"  # Debian busybox-static: no libraries needed in the image
    if not Path(busybox).exists():
        pytest.fail(f"{BUSYBOX_IMAGE} is missing and there is no busybox binary to build it from")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            tar.add(root, arcname=".")
        repository, tag = BUSYBOX_IMAGE.rsplit(":", 1)
        client.api.import_image_from_data(
            data.getvalue(), repository=repository, tag=tag, changes=[f'LABEL {BUSYBOX_LABEL}="{applets}"']
        )
    client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster: call .up() for standalone, or .start_server() and .add_worker()."""
    c = Cluster(tmp_path)
    yield c
    c.close()


@pytest.fixture
def standalone(cluster: Cluster) -> Cluster:
    """`corral up` with its local worker (process runtime, and docker when the engine answers)."""
    return cluster.up()


@pytest.fixture(scope="module")
def module_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One `corral up` shared by the tests of a module: a module whose tests each look only at what they made
    (their own jobs, by id or name) overrides ``standalone`` with it, and saves a server start per test."""
    c = Cluster(tmp_path_factory.mktemp("standalone"))
    try:
        yield c.up()
    finally:
        c.close()


def _unavailable(reason: str) -> NoReturn:
    """Skip, saying why in capitals; under CI (CI=true) a missing service is a failure instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The URL of a PostgreSQL database to create test databases from.

    ``CORRAL_TEST_PG_URL`` when it is set (it must answer: a given URL that does not is a failure). Otherwise
    a throwaway server of the newest PostgreSQL installed (tests/pg.py): a temporary data directory, a free
    port, stopped and removed at the end of the session. Skips only when no PostgreSQL is installed.
    """
    given = os.environ.get("CORRAL_TEST_PG_URL")
    if given:
        try:
            pg.probe(given)
        except pg.Unreachable as e:
            why = f"CORRAL_TEST_PG_URL={pg.shown(given)} does not answer: {e}"
        else:
            why = ""
        if why:
            pytest.fail(why, pytrace=False)
        yield given
        return
    bindir = pg.find_bindir()
    if bindir is None:
        _unavailable("NO POSTGRESQL: set CORRAL_TEST_PG_URL or install the PostgreSQL server "
                     "(Debian: apt-get install postgresql) so that the tests can start their own")
    with pg.TempServer(bindir) as server:
        yield server.url


@pytest.fixture
def netns() -> Iterator[netns_mod.NetNs]:
    """A network namespace joined to this one by a veth pair on a private /30 (tests/netns.py), deleted
    afterwards, whatever happened. Skips where `ip netns` is not permitted (not root), except under CI."""
    try:
        ns = netns_mod.NetNs()
    except netns_mod.Unavailable as e:
        _unavailable(f"NO NETWORK NAMESPACES: partition tests need `ip netns` as root ({e})")
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    with pg.fresh_database(pg_admin_url) as url:
        yield url


# -- markers and reports --------------------------------------------------------------------------
DOCKER_FIXTURES = {"docker_client", "busybox_image"}
POSTGRES_FIXTURES = {"pg_admin_url", "pg_url"}
LOG_TAIL_LINES = 200  # of each server and worker log attached to a failing test's report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the services its fixtures need, so that `-m "not docker"` and `-m postgres` select
    exactly those (the `database_url` fixture needs PostgreSQL in its `postgresql` case only)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & DOCKER_FIXTURES:
            item.add_marker(pytest.mark.docker)
        callspec = getattr(item, "callspec", None)
        pg_case = callspec is not None and callspec.params.get("database_url") == "postgresql"
        if names & POSTGRES_FIXTURES or pg_case:
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failing test's report ends with the last lines of the logs of every Corral process it started
    (server.log, worker-*.log), so that a red run in CI says what the server saw."""
    report: pytest.TestReport = yield
    if report.failed:
        clusters = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Cluster)] + list(LIVE)
        seen: set[Path] = set()
        for c in clusters:
            for log in sorted(c.tmp.glob("*.log")):
                if log in seen or not log.is_file():
                    continue
                seen.add(log)
                lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                if lines:
                    report.sections.append((f"corral {log.name} (last {len(lines)} lines)", "\n".join(lines)))
    return report


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("pg_url"))
