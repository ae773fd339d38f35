"""The admin exception to hardening (issue 11), against one real `corral server --auth` that lets admins have
added capabilities, privileged containers and the host's PID namespace, and one real worker (Docker) whose
operator allows the first two only: who may ask, what the container really gets, what the worker refuses, and
the audit entry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from tests.harness import Cluster, wait_until

CLUSTER_TOKEN = "escalation-cluster-token"
CAP_NET_ADMIN, CAP_SYS_ADMIN = 1 << 12, 1 << 21


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("escalation"))
    try:
        c.start_server("--auth", "--token", CLUSTER_TOKEN, "--allow-admin-escalation", "cap_add,privileged,host_pid",
                       env={"CORRAL_ARGON2_TIME_COST": "1", "CORRAL_ARGON2_MEMORY_KIB": "8192"})
        c.add_worker("w1", "--runtime", "docker", "--token", CLUSTER_TOKEN,
                     "--allow-admin-escalation", "cap_add,privileged")
        yield c
    finally:
        c.close()


def job(image: str, **asks: Any) -> dict[str, Any]:
    return {"name": "esc", "tasks": [{"name": "t", "image": image, "run": "grep CapEff /proc/self/status", **asks}]}


def cap_eff(c: Cluster, job_id: str) -> int:
    done = c.wait_job(job_id)
    assert done["state"] == "completed", str(c.job(job_id))
    return int(c.logs(job_id).split()[-1], 16)


def test_only_an_admin_on_a_server_that_allows_it_gets_an_escalation(srv: Cluster, busybox_image: str) -> None:
    c = srv
    assert c.server is not None and "warning: --allow-admin-escalation cap_add,host_pid,privileged" in c.server.output()
    # An admin's task with an added capability: the container really has it, and only it ...
    assert cap_eff(c, c.submit(job(busybox_image, cap_add=["NET_ADMIN"]))["id"]) == CAP_NET_ADMIN
    # ... where a hardened one has none.
    assert cap_eff(c, c.submit(job(busybox_image))["id"]) == 0
    # The same through the Tork dialect.
    r = c.client.post("/jobs", json=job(busybox_image, cap_add=["NET_ADMIN"]))
    assert r.status_code == 200, r.text
    assert cap_eff(c, r.json()["id"]) == CAP_NET_ADMIN

    # A key of the user role (the admin's own, narrower): 400, natively and through Tork, saying how.
    r = c.client.post("/v1/keys", json={"name": "plain", "role": "user"})
    assert r.status_code == 201, r.text
    user = {"Authorization": f"Bearer {r.json()['key']}"}
    for path in ("/v1/jobs", "/jobs"):
        r = c.client.post(path, json=job(busybox_image, privileged=True), headers=user)
        assert r.status_code == 400, r.text
        assert "not allowed to this caller" in r.text and "--allow-admin-escalation privileged" in r.text, r.text
    # What the server does not allow, even an admin does not get.
    r = c.client.post("/v1/jobs", json=job(busybox_image, devices=["/dev/fuse"]))
    assert r.status_code == 400 and "not allowed on this server" in r.text, r.text
    # The server allows the host's PID namespace, this worker does not: the task fails there, saying so.
    refused = c.wait_job(c.submit(job(busybox_image, pid="host"))["id"])
    assert refused["state"] == "failed", refused
    assert "this worker does not allow host_pid" in str(c.job(refused["id"])), c.job(refused["id"])

    # Each escalated submission is in the audit log, as the admin's.
    entries = wait_until(lambda: [e for e in c.get("/v1/audit?limit=100")["items"]
                                  if e["action"] == "create.escalated"], 5, what="the audit entries")
    assert len(entries) == 3 and {e["path"] for e in entries} == {"/v1/jobs", "/jobs"}, entries


def test_an_admins_privileged_task_runs_privileged(srv: Cluster, busybox_image: str,
                                                    docker_client: docker.DockerClient) -> None:
    probe = docker_client.containers.create(busybox_image, "true", privileged=True)
    try:  # an engine that itself runs without every capability (in a container) cannot start one
        probe.start()
    except docker.errors.DockerException as e:
        pytest.skip(f"this Docker Engine cannot run privileged containers: {str(e)[:200]}")
    finally:
        probe.remove(force=True)
    assert cap_eff(srv, srv.submit(job(busybox_image, privileged=True))["id"]) & CAP_SYS_ADMIN
