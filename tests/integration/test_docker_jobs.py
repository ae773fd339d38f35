"""Jobs in real containers through a real Docker Engine, on `corral up` and on a separate worker."""

from __future__ import annotations

import docker
import pytest

from tests.harness import Cluster, wait_until
from tests.support import MISSING_IMAGE, MISSING_IMAGE_ERROR

pytestmark = pytest.mark.docker


def _containers_of(client: docker.DockerClient, job_id: str) -> list[str]:
    """Ids of the job's containers. The low-level list: the high-level one inspects each container and
    fails if one is removed in between."""
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": f"corral.job={job_id}"})]


def test_container_job_happy_path(standalone: Cluster, busybox_image: str,
                                  docker_client: docker.DockerClient) -> None:
    job = standalone.submit({"tasks": [{"image": busybox_image, "run": "echo in $PWD as $(id -u); echo e >&2",
                                        "workdir": "/tmp", "resources": {"cpu": 0.5, "memory": "64Mi"}}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    # stdout and stderr are separate pipes: lines keep their order within a stream, not across.
    assert sorted(standalone.logs(job["id"]).splitlines()) == ["e", "in /tmp as 0"]
    ex = done["tasks"][0]["executions"][0]
    assert ex["container_id"] and ex["exit_code"] == 0
    assert _containers_of(docker_client, job["id"]) == []  # removed once its logs were shipped


def test_container_exit_code_and_missing_image(standalone: Cluster, busybox_image: str) -> None:
    bad = standalone.submit({"tasks": [{"image": busybox_image, "command": ["sh", "-c", "exit 4"]}]})
    missing = standalone.submit({"tasks": [{"image": MISSING_IMAGE, "run": "true"}]})
    assert standalone.wait_job(bad["id"])["tasks"][0]["exit_code"] == 4
    done = standalone.wait_job(missing["id"])
    assert done["state"] == "failed"
    assert MISSING_IMAGE_ERROR in done["tasks"][0]["error"]


def test_cancel_running_container_removes_it(standalone: Cluster, busybox_image: str,
                                             docker_client: docker.DockerClient) -> None:
    job = standalone.submit({"tasks": [{"image": busybox_image, "run": "echo started; sleep 60"}]})
    wait_until(lambda: standalone.job(job["id"])["tasks"][0]["state"] == "running", 20, what="running")
    wait_until(lambda: _containers_of(docker_client, job["id"]), 10, what="the container")
    r = standalone.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    wait_until(lambda: _containers_of(docker_client, job["id"]) == [], 15, what="the container to be removed")
    done = standalone.job(job["id"])
    assert done["state"] == "cancelled" and done["tasks"][0]["state"] == "cancelled"
    wait_until(lambda: "started" in standalone.logs(job["id"]), 5, what="its output to be kept")


def test_timeout_of_a_container(standalone: Cluster, busybox_image: str,
                                docker_client: docker.DockerClient) -> None:
    job = standalone.submit({"tasks": [{"image": busybox_image, "run": "sleep 30", "timeout": "1s"}]})
    done = standalone.wait_job(job["id"], timeout=20)
    assert done["state"] == "failed" and "timed out after 1s" in done["tasks"][0]["error"]
    assert done["tasks"][0]["exit_code"] == 124  # as `timeout` exits
    wait_until(lambda: _containers_of(docker_client, job["id"]) == [], 10, what="the container to go")


def test_separate_worker_runs_containers_not_processes(cluster: Cluster, busybox_image: str) -> None:
    cluster.start_server()
    cluster.add_worker("dock")  # default: docker only
    node = cluster.nodes()[0]
    assert node["runtimes"] == ["docker"]
    c = cluster.submit({"tasks": [{"image": busybox_image, "run": "echo containerised"}]})
    p = cluster.submit({"tasks": [{"run": "echo host"}]})
    assert cluster.wait_job(c["id"])["state"] == "completed"
    assert cluster.logs(c["id"]) == "containerised\n"
    wait_until(lambda: cluster.job(p["id"])["tasks"][0]["reason"] == "no node offers runtime process", 10,
               what="a runtime reason")
    assert cluster.job(p["id"])["state"] == "pending"


def test_restarted_worker_adopts_its_container(
        cluster: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    """Killed with -9 mid-task and started again (same data dir: same node id), the worker finds its
    container by its labels and follows it to its end: one execution, its output whole, no second attempt;
    then the container is removed."""
    cluster.start_server()  # default node TTL: the worker comes back long before it would be declared dead
    w = cluster.add_worker("phoenix")
    job = cluster.submit({"tasks": [{"image": busybox_image,
                                     "run": "echo alpha-$CORRAL_ATTEMPT; sleep 4; echo omega"}]})
    wait_until(lambda: "alpha-1" in cluster.logs(job["id"]), 20, what="the first line stored")
    first = _containers_of(docker_client, job["id"])[0]
    w.kill9()
    cluster.add_worker("phoenix")
    done = cluster.wait_job(job["id"], timeout=40)
    assert done["state"] == "completed", done
    execs = done["tasks"][0]["executions"]
    assert [e["state"] for e in execs] == ["completed"]
    words = cluster.logs(job["id"]).split()
    assert [x for x in words if x.startswith("alpha-") or x == "omega"] == ["alpha-1", "omega"], words
    assert len({n["id"] for n in cluster.nodes()}) == 1
    wait_until(lambda: first not in {c["Id"] for c in docker_client.api.containers(all=True)}, 10,
               what="the container removed")
