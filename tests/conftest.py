"""Shared fixtures. Docker ones skip when no engine answers, except in CI (CI=true), where they fail."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.harness import Cluster

BUSYBOX_IMAGE = "corral-test/busybox:latest"
BUSYBOX_LABEL = "corral.test.applets"
BUSYBOX_APPLETS = (
    "sh", "echo", "sleep", "cat", "env", "ls", "pwd", "true", "false",
    "printf", "id", "head", "tail", "wc", "seq", "yes", "mkdir", "touch", "grep", "httpd", "wget",
)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A ``docker.DockerClient`` for the local engine."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:
        reason = f"NO DOCKER ENGINE: docker tests need a reachable Docker Engine ({type(e).__name__}: {e})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
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


PG_URL = os.environ.get("CORRAL_TEST_PG_URL", "postgresql://corral:corral@127.0.0.1:5432/corral_test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception as e:
        reason = f"NO POSTGRESQL at {PG_URL.split('@')[-1]} ({type(e).__name__}: {e})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("pg_url"))
