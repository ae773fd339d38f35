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
    entries = [e for e in c.get("/v1/audit?limit=100")["items"] if e["action"] == "create.escalated"]
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


def pod(image: str, name: str, **asks: Any) -> dict[str, Any]:
    """A pod that prints its container's effective capabilities and ends; ``sc``: its container's
    securityContext; other keys: the pod's (hostPID, ...)."""
    sc = asks.pop("sc", None)
    return {"name": name, "restartPolicy": "Never", **asks,
            "containers": [{"name": "app", "image": image, "command": ["grep", "CapEff", "/proc/self/status"],
                            **({"securityContext": sc} if sc else {})}]}


def pod_cap_eff(c: Cluster, pod_id: str) -> int:
    done = c.wait_for(f"/v1/pods/{pod_id}", {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    text = wait_until(lambda: c.client.get(f"/v1/pods/{pod_id}/logs").text, 10, what="the pod's output")
    return int(text.split()[-1], 16)


def test_pods_and_stacks_follow_the_same_policy(srv: Cluster, busybox_image: str) -> None:
    """A pod's securityContext and host namespaces: an admin's on a server that allows them (natively and
    through Podling), granted where the worker allows them; a 400 to anyone else, in each API's shape."""
    c = srv
    net_admin = {"capabilities": {"add": ["NET_ADMIN"]}}
    # An admin's pod with an added capability, beside a hardened one: the capability is in the first only.
    escalated = c.client.post("/v1/pods", json=pod(busybox_image, "esc-pod", sc=net_admin))
    assert escalated.status_code == 201, escalated.text
    plain = c.client.post("/v1/pods", json=pod(busybox_image, "plain-pod"))
    assert plain.status_code == 201, plain.text
    # The server allows the host's PID namespace, this worker does not: the container fails there, saying so.
    host_pid = c.client.post("/v1/pods", json=pod(busybox_image, "pid-pod", hostPID=True))
    assert host_pid.status_code == 201, host_pid.text
    assert pod_cap_eff(c, escalated.json()["id"]) & CAP_NET_ADMIN
    assert not pod_cap_eff(c, plain.json()["id"]) & CAP_NET_ADMIN
    refused = c.wait_for(f"/v1/pods/{host_pid.json()['id']}", {"succeeded", "failed"})
    assert refused["state"] == "failed" and "this worker does not allow host_pid" in str(refused), refused
    # Podling takes the same fields from an admin.
    r = c.client.post("/api/v1/pods", json=pod(busybox_image, "podling-esc", sc=net_admin))
    assert r.status_code == 201, r.text
    assert c.client.delete(f"/api/v1/pods/{r.json()['podId']}").status_code == 200

    # A key of the user role: a 400 natively, through Podling (its {"error"}) and Stacks (its "invalid pod spec").
    r = c.client.post("/v1/keys", json={"name": "pod-user", "role": "user"})
    assert r.status_code == 201, r.text
    user = {"Authorization": f"Bearer {r.json()['key']}"}
    for path, body in (("/v1/pods", pod(busybox_image, "u1", sc=net_admin)),
                       ("/api/v1/pods", pod(busybox_image, "u2", sc=net_admin))):
        r = c.client.post(path, json=body, headers=user)
        assert r.status_code == 400, r.text
        assert "not allowed to this caller" in r.text and "--allow-admin-escalation cap_add" in r.text, r.text
    assert list(r.json()) == ["error"], r.text  # Podling's shape
    stack = {"target_port": [{"container_port": 80, "protocol": "TCP"}], "pod_spec": (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: s\nspec:\n  containers:\n  - name: app\n"
        f"    image: {busybox_image}\n    ports:\n    - containerPort: 80\n"
        "    resources:\n      limits: {{cpu: 100m, memory: 64Mi}}\n{extra}")}
    r = c.client.post("/stacks", headers=user, json={**stack, "pod_spec": stack["pod_spec"].format(
        extra="    securityContext:\n      capabilities:\n        add: [NET_ADMIN]\n")})
    assert r.status_code == 400 and r.json()["error"].startswith("invalid pod spec: "), r.text
    assert "added capabilities is not allowed to this caller" in r.text, r.text
    # What the server does not allow, even an admin does not get (Stacks: the host's IPC namespace).
    r = c.client.post("/stacks", json={**stack, "pod_spec": stack["pod_spec"].format(extra="  hostIPC: true\n")})
    assert r.status_code == 400 and "the host's IPC namespace is not allowed on this server" in r.text, r.text

    # Each escalated pod is in the audit log as an escalated create.
    def escalated_pods() -> list[str]:
        return sorted(e["path"] for e in c.get("/v1/audit?limit=200")["items"]
                      if e["action"] == "create.escalated" and e["path"] in ("/v1/pods", "/api/v1/pods"))
    wait_until(lambda: len(escalated_pods()) >= 3, 5, what="the audit entries")
    assert escalated_pods() == ["/api/v1/pods", "/v1/pods", "/v1/pods"]
