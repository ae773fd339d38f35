"""Pods run by real workers (`corral up`'s local worker, and `corral worker` processes), on a real Docker
Engine: what a user sees through /v1/pods and on the node's ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from corral.runtime.pods_docker import INSTANCE_LABEL, NODE_LABEL, container_name
from tests.harness import Cluster, wait_until
from tests.support import process_gone, remove_containers

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
       busybox_image: str) -> Iterator[Cluster]:
    """One `corral up` (docker and process runtimes) for the module's tests."""
    c = Cluster(Path(tmp_path_factory.mktemp("podsup")))
    c.up("--node-port-range", "30500-30520")
    node = c.nodes()[0]["id"]
    yield c
    c.close()
    remove_containers(docker_client, f"{NODE_LABEL}={node}")


def create(c: Cluster, spec: dict[str, Any]) -> dict[str, Any]:
    r = c.client.post("/v1/pods", json=spec)
    assert r.status_code == 201, r.text
    return dict(r.json())


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def when(c: Cluster, pod_id: str, cond: Any, timeout: float = 30, what: str = "") -> dict[str, Any]:
    """GET the pod until ``cond(pod)`` holds; returns the pod."""
    last: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        p = c.get(f"/v1/pods/{pod_id}")
        last[0] = {k: p.get(k) for k in ("state", "reason", "ready")} | {
            "containers": [{k: x.get(k) for k in ("name", "state", "reason", "restart_count", "ready", "error")}
                           for x in p["containers"]]}
        return p if cond(p) else None
    try:
        return dict(wait_until(check, timeout, interval=0.2, what=what or f"pod {pod_id}"))
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last[0]!r}") from None


def test_two_containers_talk_over_localhost_and_answer_on_the_node_port(
        up: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    spec = {"name": "duo", "containers": [
        {"name": "web", "image": busybox_image,
         "command": ["sh", "-c", "echo hello-duo > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"],
         "ports": [{"name": "http", "containerPort": 8080}],
         "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1}},
        {"name": "side", "image": busybox_image,
         "command": ["sh", "-c", "until wget -q -O- http://localhost:8080/index.html; do sleep 0.2; done; "
                                 "exec sleep 3600"]}]}
    pod = create(up, {**spec, "terminationGracePeriodSeconds": 1})
    p = when(up, pod["id"], lambda p: p["state"] == "running" and p["ready"], what="duo running and ready")
    assert all(x["state"] == "running" and x["container_id"] for x in p["containers"])
    port = p["ports"][0]["nodePort"]
    assert p["address"] == "127.0.0.1" and 30500 <= port <= 30520
    r = httpx.get(f"http://{p['address']}:{port}/index.html", timeout=5)
    assert r.status_code == 200 and r.text.strip() == "hello-duo"
    # The side container read the page over localhost; its output is the pod's log for that container.
    wait_until(lambda: "hello-duo" in up.client.get(f"/v1/pods/{pod['id']}/logs",
                                                    params={"container": "side"}).text, 30, what="side's log")
    # Deleted: the containers are stopped and removed, the port answers no more.
    assert up.client.delete(f"/v1/pods/{pod['id']}").status_code in (200, 202)
    when(up, pod["id"], lambda p: p["state"] == "terminated", 30, what="duo terminated")
    assert not docker_client.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={p['instance_id']}"})
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_restart_policy_back_off_liveness_and_readiness(up: Cluster, busybox_image: str) -> None:
    crashy = create(up, {"name": "crashy", "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                         "containers": [
        {"name": "app", "image": busybox_image, "command": ["sh", "-c", "echo boom; exit 3"]}]})
    # "ready" holds the pod's network and is ready while /tmp/ready exists (made at 1 s, removed by the test);
    # "live" is alive while /tmp/alive exists (gone after 2 s: the failing probe restarts it).
    probed = create(up, {"name": "probed", "terminationGracePeriodSeconds": 1, "containers": [
        {"name": "ready", "image": busybox_image,
         "command": ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600"],
         "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "timeoutSeconds": 5,
                            "failureThreshold": 1}},
        {"name": "live", "image": busybox_image,
         "command": ["sh", "-c", "touch /tmp/alive; echo alive; sleep 2; rm /tmp/alive; exec sleep 3600"],
         "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "timeoutSeconds": 5,
                           "failureThreshold": 1}}]})
    # The crash shows as a back-off, on the container and on the pod.
    p = when(up, crashy["id"], lambda p: "back-off" in (container(p, "app")["reason"] or ""), what="the back-off")
    app = container(p, "app")
    assert app["state"] == "waiting" and app["exit_code"] == 3 and app["restart_count"] == 0
    assert app["reason"] == "back-off 10s restarting app" and "back-off 10s restarting app" in (p["reason"] or "")
    assert p["state"] == "running"
    # Readiness flips: ready once its file is there, not ready once the test removes it (the container runs
    # all along, the same one). The test removes the file itself, so no window of time can be missed.
    p = when(up, probed["id"], lambda p: container(p, "ready")["ready"] is True, 30, what="readiness true")
    ready_id = container(p, "ready")["container_id"]
    assert docker.from_env().containers.get(ready_id).exec_run(["sh", "-c", "rm /tmp/ready"]).exit_code == 0
    p = when(up, probed["id"], lambda p: container(p, "ready")["ready"] is False and not p["ready"], 30,
             what="readiness false again")
    assert container(p, "ready")["state"] == "running" and container(p, "ready")["container_id"] == ready_id
    # The liveness failure kills "live"; after its back-off it is started again, a new container.
    p = when(up, probed["id"], lambda p: "liveness probe failed" in (container(p, "live")["error"] or ""), 30,
             what="the liveness failure")
    first = container(p, "live")["container_id"]
    p = when(up, probed["id"], lambda p: container(p, "live")["restart_count"] == 1
             and container(p, "live")["state"] == "running", 30, what="live restarted")
    assert container(p, "live")["container_id"] != first
    # Meanwhile the crashing container was started again, and crashed again: a longer back-off.
    p = when(up, crashy["id"], lambda p: container(p, "app")["restart_count"] >= 1
             and container(p, "app")["reason"] == "back-off 20s restarting app", 30, what="the second back-off")
    assert up.client.get(f"/v1/pods/{crashy['id']}/logs").text.splitlines().count("boom") >= 2
    for x in (crashy, probed):
        assert up.client.delete(f"/v1/pods/{x['id']}").status_code in (200, 202)


def test_a_host_process_pod_listens_on_its_port(up: Cluster, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello-process\n")
    pod = create(up, {"name": "proc", "containers": [
        {"name": "srv", "command": ["busybox", "httpd", "-f", "-p", "$(PORT)", "-h", str(site)],
         "ports": [{"name": "http", "containerPort": 8000}],
         "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}]})
    p = when(up, pod["id"], lambda p: p["state"] == "running" and p["ready"], what="the process pod ready")
    port = p["ports"][0]["nodePort"]
    r = httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5)
    assert r.status_code == 200 and r.text == "hello-process\n"
    assert up.client.delete(f"/v1/pods/{pod['id']}").status_code in (200, 202)
    when(up, pod["id"], lambda p: p["state"] == "terminated", 30, what="the process pod terminated")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_restarted_worker_adopts_its_running_pod(cluster: Cluster, busybox_image: str,
                                                   docker_client: docker.DockerClient) -> None:
    cluster.start_server()
    args = ("--advertise-address", "127.0.0.1", "--runtime", "docker", "--runtime", "process")
    w = cluster.add_worker("adopter", *args)
    node = next(n["id"] for n in cluster.nodes() if n["name"] == "adopter")
    try:
        pod = create(cluster, {"name": "keep", "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "app", "image": busybox_image,
             "command": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.3; done"]}]})
        # A host process cannot be adopted: the restarted worker ends the one the killed worker left (which
        # would hold its port), and starts it again.
        proc = create(cluster, {"name": "proc", "containers": [
            {"name": "p", "command": ["sh", "-c", "echo pid=$$$$; exec sleep 3600"]}]})
        p = when(cluster, pod["id"], lambda p: container(p, "app")["state"] == "running", what="the pod running")
        cid = container(p, "app")["container_id"]
        started = docker_client.api.inspect_container(cid)["State"]["StartedAt"]

        def pids() -> list[int]:
            return [int(ln[4:]) for ln in cluster.client.get(f"/v1/pods/{proc['id']}/logs").text.splitlines()]
        pid = wait_until(pids, 30, what="the process pod's pid")[0]
        w.kill9()
        assert not process_gone(pid)
        cluster.add_worker("adopter", *args)
        wait_until(lambda: process_gone(pid), 30, what="the old process ended")
        wait_until(lambda: len(pids()) == 2, 30, what="the process started again")
        # The new worker process reports the same container, and its output goes on being shipped.
        before = len(cluster.client.get(f"/v1/pods/{pod['id']}/logs").text.splitlines())
        wait_until(lambda: len(cluster.client.get(f"/v1/pods/{pod['id']}/logs").text.splitlines()) > before + 3,
                   20, what="more output after the restart")
        p = cluster.get(f"/v1/pods/{pod['id']}")
        assert p["state"] == "running" and p["instance_id"] and p["node_id"] == node
        assert container(p, "app")["container_id"] == cid and container(p, "app")["restart_count"] == 0
        info = docker_client.api.inspect_container(container_name(p["instance_id"], "app"))
        assert info["Id"] == cid and info["State"]["Running"] and info["State"]["StartedAt"] == started
        assert cluster.client.delete(f"/v1/pods/{pod['id']}").status_code in (200, 202)
        when(cluster, pod["id"], lambda p: p["state"] == "terminated", 30, what="the pod terminated")
    finally:
        remove_containers(docker_client, f"{NODE_LABEL}={node}")
