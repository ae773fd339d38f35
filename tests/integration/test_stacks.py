"""The Stacks API against real processes: `corral server` with `--stacks-api-key` and the API alone on a
port of its own (`--dialect-port stacks=...`), a `corral worker` running pods on the real Docker Engine.
Every curl example of docs (../shared/seeds/stacks-api.md) with its body, a stack whose HTTP server answers
on its node port until it is deleted or its TTL runs out, the API key, and bad input everywhere."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest
import yaml

from tests.harness import Cluster, free_port, wait_until

pytestmark = pytest.mark.timeout(120)
KEY = "stacks-test-key"
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")

# The document's create body, as written there.
SEED_BODY = json.loads(r'''{
    "target_port": [
        {
            "container_port": 80,
            "protocol": "TCP"
        }
    ],
    "pod_spec": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: challenge\nspec:\n  containers:\n    - name: app\n      image: nginx:stable\n      ports:\n        - containerPort: 80\n          protocol: TCP\n      resources:\n        requests:\n          cpu: \"100m\"\n          memory: \"128Mi\"\n        limits:\n          cpu: \"100m\"\n          memory: \"128Mi\""
}''')  # noqa: E501 (the document's body as it is written there)
SEED_SANITIZED = (
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: challenge\nspec:\n  automountServiceAccountToken: false\n"
    "  containers:\n  - image: nginx:stable\n    name: app\n    ports:\n    - containerPort: 80\n      protocol: TCP\n"
    "    resources:\n      limits:\n        cpu: 100m\n        memory: 128Mi\n      requests:\n        cpu: 100m\n"
    "        memory: 128Mi\n    securityContext:\n      allowPrivilegeEscalation: false\n      privileged: false\n"
    "      seccompProfile:\n        type: RuntimeDefault\n  enableServiceLinks: false\n  restartPolicy: Never\n"
    "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\nstatus: {}\n")
STACK_FIELDS = {"stack_id", "pod_id", "namespace", "node_id", "node_public_ip", "pod_spec", "ports", "service_name",
                "status", "ttl_expires_at", "created_at", "updated_at", "requested_cpu_milli",
                "requested_memory_bytes"}


def web_body(image: str, text: str = "hello from a stack") -> dict[str, Any]:
    """A stack whose busybox httpd serves ``text`` on port 8080, ready once the port answers."""
    spec = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{
        "name": "app", "image": image,
        "command": ["sh", "-c", f"mkdir -p /tmp/www && echo '{text}' > /tmp/www/index.html && "
                                "exec httpd -f -p 8080 -h /tmp/www"],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}}
    return {"pod_spec": yaml.safe_dump(spec), "target_port": [{"container_port": 8080, "protocol": "TCP"}]}


def node_port_range() -> str:
    """20 ports below Linux's ephemeral range (where connections take their local ports), away from the
    default range other tests' servers use."""
    base = random.randrange(21000, 29000, 20)
    return f"{base}-{base + 19}"


class StacksCluster(Cluster):
    stacks_port = 0  # where the Stacks API is served alone


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[StacksCluster]:
    """A server with an access token and a Stacks key, the Stacks API also alone on ``stacks_port``, one docker
    worker."""
    c = StacksCluster(tmp_path_factory.mktemp("stacks"))
    c.stacks_port = free_port()
    c.start_server("--stacks-api-key", KEY, "--dialect-port", f"stacks={c.stacks_port}",
                   "--node-port-range", node_port_range(), "--api-token", "corral-access-token")
    c.client.headers["X-API-KEY"] = KEY
    wait_until(lambda: _answers(c, alone(c, "/healthz")), 10, what="the Stacks API's own port")
    c.add_worker("w1", "--runtime", "docker", "--advertise-address", "127.0.0.1")
    yield c
    c.close()


def _answers(c: Cluster, url: str) -> bool:
    try:
        return c.client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def alone(c: StacksCluster, path: str) -> str:
    """The URL of ``path`` on the port where the Stacks API is served alone."""
    return f"http://127.0.0.1:{c.stacks_port}{path}"


def create(c: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    r = c.client.post("/stacks", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def containers_of(docker_client: docker.DockerClient, stack_id: str) -> list[Any]:
    return list(docker_client.api.containers(all=True, filters={"label": f"corral.pod={stack_id}"}))


def test_every_curl_example_of_the_document(stacks: StacksCluster) -> None:
    c = stacks
    # Authentication and health: the header and the query parameter, on the API's own port.
    r = c.client.get(alone(c, "/healthz"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = c.client.get(alone(c, f"/healthz?api_key={KEY}"), headers={"X-API-KEY": ""})
    assert r.status_code == 200 and r.json() == {"status": "ok"}

    # Create, with the document's body (nginx:stable is not here: the stack is placed, then fails to start).
    r = c.client.post(alone(c, "/stacks"), json=SEED_BODY)
    assert r.status_code == 201, r.text
    s = r.json()
    assert set(s) == STACK_FIELDS
    assert re.fullmatch(r"stack-[0-9a-f]{16}", s["stack_id"]) and s["pod_id"] == s["stack_id"]
    assert s["namespace"] == "stacks" and s["service_name"] == f"svc-{s['stack_id']}"
    assert s["pod_spec"] == SEED_SANITIZED
    assert s["status"] == "creating" and s["node_id"] and s["node_public_ip"] == "127.0.0.1"
    assert [p["container_port"] for p in s["ports"]] == [80] and s["ports"][0]["protocol"] == "TCP"
    assert isinstance(s["ports"][0]["node_port"], int)
    assert (s["requested_cpu_milli"], s["requested_memory_bytes"]) == (100, 134217728)
    assert all(RFC3339_NANO.match(s[k]) for k in ("ttl_expires_at", "created_at", "updated_at"))

    # List, get, status.
    listed = c.get("/stacks")["stacks"]
    assert [x["stack_id"] for x in listed] == [s["stack_id"]] and set(listed[0]) == STACK_FIELDS
    got = c.get(f"/stacks/{s['stack_id']}")
    assert got["pod_spec"] == SEED_SANITIZED and got["ports"] == s["ports"]
    st = c.get(f"/stacks/{s['stack_id']}/status")
    assert set(st) == {"stack_id", "status", "ttl", "ports", "node_public_ip"}
    assert st["ttl"] == s["ttl_expires_at"] and st["ports"] == s["ports"] and st["node_public_ip"] == "127.0.0.1"
    # No registry here: the image cannot be had, and the stack says so.
    c.wait_for(f"/stacks/{s['stack_id']}/status", {"failed"}, field="status", timeout=30)

    # Stats.
    stats = c.get("/stats")
    assert set(stats) == {"total_stacks", "active_stacks", "node_distribution", "used_node_ports",
                          "reserved_cpu_milli", "reserved_memory_bytes"}
    assert (stats["total_stacks"], stats["active_stacks"], stats["reserved_cpu_milli"]) == (1, 0, 100)
    assert stats["node_distribution"] == {s["node_id"]: 1}

    # Delete, then 404.
    r = c.client.delete(f"/stacks/{s['stack_id']}")
    assert r.status_code == 200 and r.json() == {"deleted": True, "stack_id": s["stack_id"]}
    r = c.client.delete(f"/stacks/{s['stack_id']}")
    assert r.status_code == 404 and r.json() == {"error": "stack not found"}

    # Batch delete: two stacks that exist and one that does not, as in the document's answer.
    ids = [create(c, SEED_BODY)["stack_id"] for _ in range(2)]
    r = c.client.post("/stacks/batch-delete", json={"stack_ids": [*ids, "stack-3"]})
    assert r.status_code == 202 and set(r.json()) == {"job_id"}
    job_id = r.json()["job_id"]
    job = c.wait_for(f"/stacks/batch-delete/{job_id}", {"completed", "failed"}, field="status", timeout=20)
    assert {k: job[k] for k in ("job_id", "status", "total", "deleted", "not_found", "failed")} == {
        "job_id": job_id, "status": "completed", "total": 3, "deleted": 2, "not_found": 1, "failed": 0}
    assert "errors" not in job and RFC3339_NANO.match(job["created_at"]) and RFC3339_NANO.match(job["updated_at"])
    # The document's own example ids: none exists, all counted as not found.
    r = c.client.post("/stacks/batch-delete", json={"stack_ids": ["stack-1", "stack-2", "stack-3"]})
    assert r.status_code == 202
    job = c.wait_for(f"/stacks/batch-delete/{r.json()['job_id']}", {"completed"}, field="status", timeout=20)
    assert (job["total"], job["not_found"]) == (3, 3)
    assert c.get("/stacks")["stacks"] == []


def test_a_stack_answers_on_its_node_port_until_it_is_deleted(stacks: StacksCluster,
                                                               docker_client: docker.DockerClient,
                                                               busybox_image: str) -> None:
    c = stacks
    s = create(c, web_body(busybox_image, "served by a stack"))
    port = s["ports"][0]["node_port"]
    c.wait_for(f"/stacks/{s['stack_id']}", {"running"}, field="status", timeout=30)
    r = c.client.get(f"http://{s['node_public_ip']}:{port}/", headers={"X-API-KEY": ""})
    assert r.status_code == 200 and r.text.strip() == "served by a stack"
    assert c.get("/stats")["used_node_ports"] == 1
    assert len(containers_of(docker_client, s["stack_id"])) == 1

    assert c.client.delete(f"/stacks/{s['stack_id']}").status_code == 200
    assert c.client.get(f"/stacks/{s['stack_id']}").status_code == 404

    def gone() -> bool:
        try:
            c.client.get(f"http://127.0.0.1:{port}/", timeout=1)
        except httpx.TransportError:
            return not containers_of(docker_client, s["stack_id"])
        return False

    wait_until(gone, 30, what="the stack's container and port to be gone")
    # The pod is purged once its containers are gone, and its node port can be had again.
    wait_until(lambda: c.client.get(f"/v1/pods/{s['stack_id']}").status_code == 404, 20, what="the pod purged")
    assert c.get("/stats")["used_node_ports"] == 0


def test_the_api_key(stacks: StacksCluster) -> None:
    c = stacks
    none = {"X-API-KEY": "", "Authorization": ""}  # neither the key nor the local token (docs/security.md)
    for url in ("/stacks", "/stats", alone(c, "/stacks"), alone(c, "/healthz")):
        r = c.client.get(url, headers=none)
        assert r.status_code == 401 and r.json() == {"error": "invalid api key"}, (url, r.text)
        r = c.client.get(url, headers={**none, "X-API-KEY": "wrong"})
        assert r.status_code == 401, url
        assert c.client.get(url + ("&" if "?" in url else "?") + f"api_key={KEY}",
                            headers=none).status_code == 200, url
        # the local access token is the local admin: a Stacks route takes it too
        assert c.client.get(url, headers={"X-API-KEY": ""}).status_code == 200, url
    r = c.client.post("/stacks", json=SEED_BODY, headers=none)
    assert r.status_code == 401
    # With a Stacks key the Stacks routes take it instead of Corral's access token; the others do not.
    r = c.client.get("/stacks", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    r = c.client.get("/v1/jobs", headers={"Authorization": ""})
    assert r.status_code == 401
    # Corral's probe on the main port answers without the key, compatibly with the document's.
    r = c.client.get("/healthz", headers={"X-API-KEY": ""})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # The port of its own serves the Stacks API only.
    assert c.client.get(alone(c, "/v1/jobs")).status_code == 404
    assert c.get("/stacks")["stacks"] == []


REFUSED = [
    ({"pod_spec": "apiVersion: v1\nkind: Pod\nspec:\n  hostPID: true\n  containers: []\n"},
     "at least one container is required"),
    ({"spec_volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}, "hostPath volume is forbidden"),
    ({"securityContext": {"privileged": True}}, "privileged mode is not allowed"),
    ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "added capabilities is not allowed"),
    ({"ports": [{"containerPort": 8080, "hostPort": 8080}]}, "hostPort/hostIP are forbidden"),
]


@pytest.mark.parametrize(("change", "message"), REFUSED)
def test_refused_manifests(stacks: StacksCluster, busybox_image: str, change: dict[str, Any], message: str) -> None:
    body = web_body(busybox_image)
    if "pod_spec" in change:
        body["pod_spec"] = change["pod_spec"]
    else:
        doc = yaml.safe_load(body["pod_spec"])
        if "spec_volumes" in change:
            doc["spec"]["volumes"] = change["spec_volumes"]
        else:
            doc["spec"]["containers"][0].update(change)
        body["pod_spec"] = yaml.safe_dump(doc)
    r = stacks.client.post("/stacks", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid pod spec: ") and message in r.json()["error"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ("not json", 400, "not valid JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({}, 400, "invalid input: target_port is required"),
    ({"target_port": [{"container_port": 80, "protocol": "TCP"}]}, 400, "invalid pod spec: pod_spec is required"),
    ({"target_port": 80, "pod_spec": "x"}, 400, "target_port must be a list"),
    ({"target_port": [{"container_port": 80, "protocol": "SCTP"}], "pod_spec": "x"}, 400, "TCP or UDP"),
    ({"target_port": [{"container_port": 70000, "protocol": "TCP"}], "pod_spec": "x"}, 400, "out of range"),
    ({"target_port": [{"container_port": 80, "protocol": "TCP"}], "pod_spec": 7}, 400, "must be a string"),
    ({"target_port": [{"container_port": 80, "protocol": "TCP"}], "pod_spec": "a: [b"}, 400, "yaml parse failed"),
    ({"target_port": [{"container_port": 80, "protocol": "TCP"}], "pod_spec": "kind: Service"}, 400,
     "kind must be Pod"),
    ({**SEED_BODY, "user": "x"}, 400, "unknown field 'user'"),
    ({**SEED_BODY, "target_port": [{"container_port": 81, "protocol": "TCP"}]}, 400,
     "target_port 81/TCP must exist in container ports"),
])
def test_bad_create_bodies(stacks: StacksCluster, body: Any, status: int, message: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    r = stacks.client.post("/stacks", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.text


def test_bad_input_elsewhere(stacks: StacksCluster) -> None:
    c = stacks
    for body in ({}, {"stack_ids": []}, {"stack_ids": "stack-1"}, {"stack_ids": [""]}, {"stack_ids": [1]},
                 {"stack_ids": ["x" * 65]}, {"stack_ids": ["a"], "more": 1}):
        r = c.client.post("/stacks/batch-delete", json=body)
        assert r.status_code == 400 and "error" in r.json(), (body, r.text)
    r = c.client.post("/stacks/batch-delete", json={"stack_ids": [f"s{i}" for i in range(1001)]})
    assert r.status_code == 400 and "at most 1000" in r.json()["error"]
    for path in ("/stacks/stack-0000000000000000", "/stacks/stack-0000000000000000/status", "/stacks/" + "x" * 300):
        r = c.client.get(path)
        assert r.status_code == 404 and r.json() == {"error": "stack not found"}, path
    r = c.client.get("/stacks/batch-delete/job-nope")
    assert r.status_code == 404 and r.json() == {"error": "job not found"}
    r = c.client.post("/stacks", content="a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "error" in r.json()
    r = c.client.post("/stacks", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()


def test_a_stack_is_gone_after_its_ttl(cluster: Cluster, docker_client: docker.DockerClient,
                                       busybox_image: str) -> None:
    """Standalone, no Stacks key: the access token guards the Stacks routes; an 8 s TTL."""
    c = cluster.up("--stacks-ttl", "8s", "--node-port-range", node_port_range())
    r = c.client.get("/stacks", headers={"Authorization": ""})  # no token: the edge refuses, in the API's shape
    assert r.status_code == 401 and "access token" in r.json()["error"]
    s = create(c, web_body(busybox_image, "short-lived"))
    port = s["ports"][0]["node_port"]
    c.wait_for(f"/stacks/{s['stack_id']}", {"running"}, field="status", timeout=30)
    assert c.client.get(f"http://127.0.0.1:{port}/").text.strip() == "short-lived"

    def expired() -> bool:
        if c.client.get(f"/stacks/{s['stack_id']}").status_code != 404:
            return False
        try:
            c.client.get(f"http://127.0.0.1:{port}/", timeout=1)
        except httpx.TransportError:
            return not containers_of(docker_client, s["stack_id"])
        return False

    wait_until(expired, 30, what="the stack to expire: 404, its port closed, its container gone")
    stats = c.get("/stats")
    assert (stats["total_stacks"], stats["used_node_ports"], stats["reserved_cpu_milli"]) == (0, 0, 0)
