"""Tork's dialect as Tork behaves, found by trying it: templated var/name/queue (inside each, as Tork's
documentation uses them), a subjob's evaluated name and inputs, registry credentials (a secret, and the
auth of the pull), and networks, on a real `corral up` with real Docker."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from corral.runtime.base import RegistryAuth, RunRequest
from corral.runtime.docker import DockerRuntime
from tests.harness import Cluster, wait_until
from tests.integration.test_webhooks import Receiver
from tests.support import MISSING_IMAGE, MISSING_IMAGE_ERROR, Recorder, remove_containers
from tests.support import TORK_DONE as DONE

NET = f"corral-test-{uuid.uuid4().hex[:8]}"  # the network the server lets tasks join (made by the test)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tork-fidelity"))
    # The webhook receiver is on 127.0.0.1, which webhooks may reach only when the operator allows it.
    c.up("--allow-network", NET, "--allow-network", f"{NET}-absent", "--allow-webhook-host", "127.0.0.1")
    yield c
    c.close()


def _post(c: Cluster, body: str) -> dict[str, Any]:
    r = c.client.post("/jobs", content=body, headers={"Content-Type": "text/yaml"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait(c: Cluster, job_id: str) -> dict[str, Any]:
    return c.wait_for(f"/jobs/{job_id}", DONE)


EACH_WITH_VAR = """
name: each with a templated var
inputs: {q: default}
output: "{{ tasks.joined }}"
tasks:
- name: loop
  each:
    list: "{{ sequence(1, 3) }}"
    task:
      name: "item {{ item.index }}"
      var: "eachTask{{ item.index }}"
      queue: "{{ inputs.q }}"
      run: printf 'v{{ item.value }}' > $TORK_OUTPUT
- name: sub
  var: fromsub
  subjob:
    name: "child of {{ job.name | replace(' ', '-') }}"
    inputs: {got: "{{ tasks.eachTask1 }}"}
    output: "{{ inputs.got }}"
    tasks:
    - run: 'true'
- name: join
  var: joined
  run: printf '{{ tasks.eachTask0 }}-{{ tasks.eachTask1 }}-{{ tasks.fromsub }}' > $TORK_OUTPUT
"""


def test_a_templated_var_inside_each_is_evaluated_as_tork_does(server: Cluster) -> None:
    c = server
    job = _wait(c, _post(c, EACH_WITH_VAR)["id"])
    assert job["state"] == "COMPLETED", job
    assert job["result"] == "v1-v2-v2"  # each item kept under its own var, the subjob's input evaluated
    names = {e["name"] for e in job["execution"]}
    assert {"item 0", "item 1"} <= names and all("{{" not in n for n in names)
    sub = next(e for e in job["execution"] if e["name"] == "sub")
    assert c.get(f"/jobs/{sub['subjobId']}")["name"] == "child of each-with-a-templated-var"
    # What an expression gives is checked as a submitted value: a var that is not a name fails the task.
    bad = _wait(c, _post(c, "name: bad var\ntasks:\n- name: t\n  var: \"{{ 'not a name' }}\"\n  run: 'true'\n")["id"])
    assert bad["state"] == "FAILED" and "t.var: the expression gave 'not a name'" in bad["error"]


def test_a_registry_password_is_never_shown(server: Cluster, busybox_image: str) -> None:
    c = server
    pw = f"pw-{uuid.uuid4().hex}"
    # The image is here, so the credentials are not needed: the task echoes the password, and every view
    # of the job, its task and its log must hide it.
    job = _post(c, f"name: private\ntasks:\n- name: t\n  image: {busybox_image}\n  run: echo {pw}\n"
                   f"  registry: {{username: me, password: {pw}}}\n")
    done = _wait(c, job["id"])
    assert done["state"] == "COMPLETED", done
    assert done["tasks"][0]["registry"] == {"username": "me", "password": "[REDACTED]"}
    task_id = done["execution"][0]["id"]
    views = [f"/jobs/{job['id']}", "/jobs", f"/tasks/{task_id}", f"/jobs/{job['id']}/log", f"/tasks/{task_id}/log",
             f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/logs"]
    texts = [c.client.get(v).text for v in views]
    assert all(pw not in t for t in texts), [v for v, t in zip(views, texts, strict=True) if pw in t]
    assert "[REDACTED]" in c.get(f"/jobs/{job['id']}/log")["items"][0]["contents"]
    # An image that is not here is pulled with them; this one cannot be had, and the error says so
    # without the password.
    missing = _wait(c, _post(c, f"name: private2\ntasks:\n- image: {MISSING_IMAGE}\n  run: 'true'\n"
                                f"  registry: {{username: me, password: {pw}}}\n")["id"])
    assert missing["state"] == "FAILED" and MISSING_IMAGE_ERROR in missing["error"] and pw not in str(missing)


def test_a_task_joins_its_networks(server: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    c = server
    name = NET
    # Only the networks the operator named may be joined: another is a 400 at submit, saying how to allow it.
    r = c.client.post("/jobs", content=f"name: x\ntasks:\n- image: {busybox_image}\n  networks: [bridge]\n"
                                       "  run: 'true'\n", headers={"Content-Type": "text/yaml"})
    assert r.status_code == 400 and "network 'bridge' is not one this server lets tasks join" in r.json()["message"]
    assert "--allow-network bridge" in r.json()["message"]
    net = docker_client.networks.create(name)
    peer = docker_client.containers.run(
        busybox_image, ["sh", "-c", "echo hello-from-peer > /tmp/index.html && httpd -f -p 8080 -h /tmp"],
        name=f"{name}-peer", network=name, detach=True, labels={"corral.test": name})
    try:
        # The peer is reachable by its name only on that network; the task tries for up to ~5 s while
        # the peer's httpd starts.
        run = (f"for i in $(seq 50); do wget -qO- http://{name}-peer:8080/index.html && exit 0; sleep 0.1; done; "
               "exit 1")
        job = _wait(c, _post(c, f"name: net\ntasks:\n- name: t\n  image: {busybox_image}\n"
                                f"  networks: [{name}]\n  run: \"{run}\"\n")["id"])
        assert job["state"] == "COMPLETED", job
        assert [p["contents"] for p in c.get(f"/jobs/{job['id']}/log")["items"]] == ["hello-from-peer\n"]
        # With a sidecar, the first sidecar holds the network namespace the task shares: it joins them.
        side = _wait(c, _post(c, f"name: net2\ntasks:\n- name: t\n  image: {busybox_image}\n"
                                 f"  networks: [{name}]\n  run: \"{run}\"\n"
                                 f"  sidecars: [{{name: s, image: {busybox_image}, run: 'sleep 60'}}]\n")["id"])
        assert side["state"] == "COMPLETED", side
        missing = _wait(c, _post(c, f"name: nonet\ntasks:\n- image: {busybox_image}\n"
                                    f"  networks: [{name}-absent]\n  run: 'true'\n")["id"])
        assert missing["state"] == "FAILED"
        assert f"network '{name}-absent' does not exist on this node" in missing["error"]
    finally:
        peer.remove(force=True)
        remove_containers(docker_client, f"corral.test={name}")
        net.remove()


class _RecordingImages:
    """Stands in for the Docker API's image pull: there is no registry here to pull from (and none can be
    reached), so it records what the pull was given and tags the local test image under the name asked
    for, as a pull would have made it. Everything else is the real Docker Engine."""

    def __init__(self, client: docker.DockerClient, source: str) -> None:
        self.client, self.source = client, source
        self.pulls: list[tuple[str, dict[str, Any]]] = []

    def pull(self, image: str, **kw: Any) -> None:
        self.pulls.append((image, kw))
        repository, tag = image.rsplit(":", 1)
        self.client.images.get(self.source).tag(repository, tag)


class _Client:
    def __init__(self, real: docker.DockerClient, images: _RecordingImages) -> None:
        self.api, self.images = real.api, images


def test_registry_credentials_reach_the_pull_of_a_missing_image(docker_client: docker.DockerClient,
                                                                busybox_image: str) -> None:
    image = f"registry.corral.invalid/private/app-{uuid.uuid4().hex[:8]}:1"
    images = _RecordingImages(docker_client, busybox_image)
    rt = DockerRuntime(_Client(docker_client, images))  # type: ignore[arg-type]
    node = f"pytest-{uuid.uuid4().hex[:8]}"
    req = RunRequest(execution_id=f"ex-{uuid.uuid4().hex[:12]}", job_id="j", task_id="t", task_name="t",
                     node_id=node, argv=["echo", "pulled"], image=image,
                     registry=RegistryAuth("me", "s3cr3t"))
    assert "s3cr3t" not in repr(req)  # a request printed in a log does not show it
    rec = Recorder()
    try:
        result = asyncio.run(rt.run(req, rec.output, rec.on_started))
        assert result.exit_code == 0 and ("stdout", "pulled") in rec.events
        assert images.pulls == [(image, {"auth_config": {"username": "me", "password": "s3cr3t"}})]
    finally:
        remove_containers(docker_client, f"corral.node={node}")
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image)


def test_a_subjob_webhook_is_evaluated_in_the_context_of_its_task(server: Cluster) -> None:
    c = server
    rec = Receiver()
    try:
        body = {"name": "hooks", "inputs": {"hook": rec.url("")}, "secrets": {"tok": "tok-s3cr3t"},
                "tasks": [{"name": "s", "subjob": {
                    "name": "child", "tasks": [{"run": "true"}],
                    "webhooks": [{"url": "{{ inputs.hook }}/sub-{{ job.id }}", "event": "job.StateChange",
                                  "headers": {"X-Token": "{{ secrets.tok }}"}}]}}]}
        r = c.client.post("/jobs", json=body)
        assert r.status_code == 200, r.text
        job = _wait(c, r.json()["id"])
        assert job["state"] == "COMPLETED", job
        path = f"/sub-{job['id']}"  # the parent's id: evaluated where the subjob was opened
        assert wait_until(lambda: "COMPLETED" in rec.states(path), 15)
        assert rec.at(path)[-1]["headers"]["X-Token"] == "tok-s3cr3t"
        sub_id = next(e["subjobId"] for e in job["execution"] if e["name"] == "s")
        shown = c.client.get(f"/jobs/{sub_id}").text + c.client.get(f"/v1/jobs/{sub_id}").text
        assert "tok-s3cr3t" not in shown  # the parent's secret, carried by the header, stays a secret
    finally:
        rec.close()


def test_the_assignment_carries_the_registry_and_networks_to_the_worker(tmp_path: Path) -> None:
    """The coordinator's side of the chain the worker and the runtime tests above complete: a node's
    assignment holds the task's registry credentials and networks (the worker is the one place that needs
    the password); its log lines with the password are stored redacted."""
    from corral.coordinator.policy import Policy
    from corral.coordinator.service import Coordinator, LogLine, NodeInfo, Settings
    from corral.domain.spec import JobSpec
    from corral.store.sql import Store

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        coord = Coordinator(store, Settings(policy=Policy(networks=("backend",))))
        node = str(coord.register(NodeInfo(name="n", hostname="n", version="t", cpu=2, memory=2**32, disk=0,
                                           runtimes=["docker"]))["id"])
        job = coord.submit(JobSpec.model_validate({"tasks": [{
            "image": "private.example/app:1", "run": "true", "networks": ["backend"],
            "registry": {"username": "me", "password": "pw-in-assignment"}}]}))
        coord.schedule_once()
        [work], _ = coord.poll(node, [])
        assert work["registry"] == {"username": "me", "password": "pw-in-assignment"}
        assert work["networks"] == ["backend"]
        coord.report(node, [], [LogLine(work["execution_id"], "stdout", "login with pw-in-assignment", 1.0)])
        with store.read() as tx:
            lines = [r["line"] for r in tx.logs(job["id"])]
        assert lines == ["login with [REDACTED]"]
    finally:
        store.close()


def _http_get(url: str) -> str | None:
    """The body at ``url``, or None while nothing answers there (a fresh client: this is the task's port,
    not the API)."""
    try:
        r = httpx.get(url, timeout=2, trust_env=False)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def _task_ports_held(c: Cluster) -> int:
    """Rows of node ports held by tasks in the `corral up` store (read-only): what a port leak would leave."""
    with contextlib.closing(sqlite3.connect(f"file:{c.tmp / 'data' / 'corral.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM node_ports WHERE kind = 'task'").fetchone()[0])


def test_a_task_publishes_its_ports_and_its_probe_gates_running(
        server: Cluster, busybox_image: str, docker_client: docker.DockerClient) -> None:
    """ports: the task's port is published on a node port of the range, shown in the task's view (Tork and
    native) and answers there; it goes when the task ends. probe: the task is RUNNING only once its probe
    answers 2xx (here /ready appears 1 s after the container starts, while httpd answers 404 before)."""
    c = server
    run = "echo hi > /tmp/index.html; (sleep 1; echo ok > /tmp/ready) & exec httpd -f -p 8080 -h /tmp"
    job = _post(c, f"name: web\ntasks:\n- name: web\n  image: {busybox_image}\n  timeout: 60s\n"
                   f"  run: \"{run}\"\n  ports: [8080]\n  probe: {{path: /ready, port: 8080, timeout: 20s}}\n")
    task = c.wait_for(f"/jobs/{job['id']}", {"RUNNING"})["execution"][0]
    view = c.get(f"/tasks/{task['id']}")
    assert view["state"] == "RUNNING" and len(view["ports"]) == 1, view
    port = view["ports"][0]
    assert port["port"] == 8080 and port["protocol"] == "tcp" and 30000 <= port["node_port"] <= 32767
    assert port["address"] == f"127.0.0.1:{port['node_port']}"
    native = c.get(f"/v1/jobs/{job['id']}")["tasks"][0]
    assert native["ports"] == [{"port": 8080, "protocol": "tcp"}] and native["executions"][0]["ports"] == [port]
    assert _http_get(f"http://{port['address']}/index.html") == "hi\n"
    assert _task_ports_held(c) == 1
    # Running only after the probe answered: the container had started at least ~1 s before.
    ctr = docker_client.containers.get(f"corral-{task['id']}")
    started = datetime.fromisoformat(ctr.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00")
    running = datetime.fromisoformat(view["startedAt"].replace("Z", "+00:00"))
    assert (running - started).total_seconds() >= 0.9, (started, running)
    # The end of the task closes its port.
    assert c.client.put(f"/jobs/{job['id']}/cancel").status_code == 200
    assert c.wait_for(f"/jobs/{job['id']}", DONE)["state"] == "CANCELLED"
    wait_until(lambda: _http_get(f"http://{port['address']}/index.html") is None, 10, what="the port closed")
    assert "ports" not in c.get(f"/tasks/{task['id']}")
    wait_until(lambda: _task_ports_held(c) == 0, 10, what="the node port given back")


def test_a_probe_that_never_answers_fails_the_task(server: Cluster, busybox_image: str) -> None:
    c = server
    never = _wait(c, _post(c, f"name: deaf\ntasks:\n- image: {busybox_image}\n  run: sleep 30\n"
                              "  probe: {port: 8080, timeout: 1s}\n")["id"])
    assert never["state"] == "FAILED"
    assert "probe GET :8080/ did not answer 2xx within 1s" in never["error"], never["error"]
    # A container that exits before its probe answers fails at once, saying so.
    gone = _wait(c, _post(c, f"name: gone\ntasks:\n- image: {busybox_image}\n  run: exit 3\n"
                             "  probe: {port: 8080, timeout: 30s}\n")["id"])
    assert gone["state"] == "FAILED" and "exited (status 3) before its probe answered" in gone["error"], gone
