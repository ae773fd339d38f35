"""Pods on a worker, against a stand-in coordinator (tests/support.py's RecordingTransport answers every pod
sync with the desired set a test gives it): real Docker containers and host processes, started, probed,
restarted, stopped and adopted by a real Agent running on an event loop of its own thread."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import pytest

from corral.agent.worker import Agent, AgentConfig
from corral.runtime.docker import DockerRuntime
from corral.runtime.pods_docker import INSTANCE_LABEL, NODE_LABEL, container_name
from corral.runtime.process import ProcessRuntime
from tests.harness import free_port, wait_until
from tests.support import RecordingTransport, process_gone, remove_containers

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")


class Node:
    """An Agent on an event loop in a thread of its own, so that a test can wait on what it reports."""

    def __init__(self, data_dir: Path, transport: RecordingTransport, runtimes: dict[str, Any]) -> None:
        self.transport = transport
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = AgentConfig(data_dir=str(data_dir), gpus=[], poll_wait=0.2, advertise_address="127.0.0.1")
        self.agent = self.call(self._make(config, runtimes))
        self.call(self.agent.start())

    async def _make(self, config: AgentConfig, runtimes: dict[str, Any]) -> Agent:
        return Agent(config, self.transport, runtimes)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def crash(self) -> None:
        """Stop as a killed worker would: nothing is stopped or told; the containers stay."""
        async def halt() -> None:
            for t in self.agent._loops:
                t.cancel()
            await asyncio.gather(*self.agent._loops, return_exceptions=True)
            for inst in list(self.agent.pods.instances.values()) if self.agent.pods else []:
                for t in inst.tasks:
                    t.cancel()
                for r in inst.runs.values():
                    r.close()
            from corral.agent.lock import unlock
            unlock(self.agent._lock)
        self.call(halt())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def poke(self) -> None:
        """Make the agent sync its pods now (rather than at its next heartbeat)."""
        pods = self.agent.pods
        assert pods is not None
        self.loop.call_soon_threadsafe(pods.changed)

    def stop(self) -> None:
        self.call(self.agent.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def assignment(containers: list[dict[str, Any]], policy: str = "Always", ports: list[dict[str, Any]] | None = None,
               grace: float = 2) -> dict[str, Any]:
    iid = uuid.uuid4().hex[:12]
    return {"instance_id": iid, "pod_id": f"pod-{iid}", "name": f"p-{iid}", "namespace": "default",
            "restart_policy": policy, "grace": grace, "containers": containers, "ports": ports or [],
            "desired": "run"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
         busybox_image: str) -> Iterator[Node]:
    """One worker (docker and process runtimes) for the tests of this module; each adds its own pods."""
    transport = RecordingTransport([], node_id=f"podnode-{uuid.uuid4().hex[:8]}", heartbeat_interval=0.5)
    n = Node(tmp_path_factory.mktemp("podagent"), transport,
             {"docker": DockerRuntime(docker_client), "process": ProcessRuntime()})
    yield n
    n.stop()
    remove_containers(docker_client, f"{NODE_LABEL}={transport.node_id}")


def run_pod(node: Node, a: dict[str, Any]) -> str:
    node.transport.desired.append(a)
    node.poke()
    return str(a["instance_id"])


def drop_pod(node: Node, instance_id: str) -> None:
    node.transport.desired[:] = [a for a in node.transport.desired if a["instance_id"] != instance_id]
    node.poke()


def test_registration_says_the_advertised_address(node: Node) -> None:
    assert node.transport.registered[0]["address"] == "127.0.0.1"


def test_two_containers_share_localhost_and_the_pod_port(node: Node, busybox_image: str,
                                                         docker_client: docker.DockerClient) -> None:
    host_port = free_port()
    web = {"name": "web", "image": busybox_image,
           "command": ["sh", "-c", "echo hello-from-web > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"],
           "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
           "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
           "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
           "memory_limit": 64 * 2**20, "cpu_limit": 0.5}
    client = {"name": "client", "image": busybox_image,
              "command": ["sh", "-c", "until wget -q -O- http://127.0.0.1:8080/index.html; do sleep 0.2; done; "
                                      "exec sleep 3600"]}
    iid = run_pod(node, assignment([web, client], ports=[
        {"container": "web", "name": "http", "containerPort": 8080, "protocol": "TCP", "hostPort": host_port}]))
    t = node.transport
    wait_until(lambda: "hello-from-web" in t.pod_lines(iid, "client"), 30, what="the client's line from localhost")
    wait_until(lambda: (t.container(iid, "web") or {}).get("ready"), 30, what="web ready (httpGet probe)")
    p = t.pod(iid)
    assert p is not None and p["phase"] == "running" and p["pod_id"] == f"pod-{iid}"
    assert all(c["state"] == "running" and c["container_id"] for c in p["containers"])
    # Published on the advertised address: the host reaches the pod's port.
    r = httpx.get(f"http://127.0.0.1:{host_port}/index.html", timeout=5)
    assert r.status_code == 200 and r.text.strip() == "hello-from-web"
    info = docker_client.api.inspect_container(container_name(iid, "web"))
    assert info["Config"]["Labels"][INSTANCE_LABEL] == iid
    assert info["HostConfig"]["Memory"] == 64 * 2**20 and info["HostConfig"]["NanoCpus"] == 5 * 10**8
    joined = docker_client.api.inspect_container(container_name(iid, "client"))
    assert joined["HostConfig"]["NetworkMode"] == f"container:{info['Id']}"
    # Not wanted any more: stopped, removed, and said so.
    drop_pod(node, iid)
    wait_until(lambda: (t.pod(iid) or {}).get("phase") == "stopped", 30, what="the pod reported stopped")
    assert not docker_client.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={iid}"})
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{host_port}/", timeout=2)


def test_restart_policy_back_off_and_probes(node: Node, busybox_image: str) -> None:
    """Three pods at once (their back-offs overlap): a crash loop, a one-shot, and probes."""
    crash = {"name": "app", "image": busybox_image, "command": ["sh", "-c", "echo boom; exit 3"]}
    done = {"name": "once", "image": busybox_image, "command": ["sh", "-c", "echo done"]}
    # "ready" holds the pod's network and is ready while /tmp/ready exists (made at 1 s, removed at 4 s);
    # "live" is alive while /tmp/alive exists (gone after 2 s: the probe fails and it is restarted, again
    # and again).
    live = {"name": "live", "image": busybox_image,
            "command": ["sh", "-c", "touch /tmp/alive; echo started; sleep 2; rm /tmp/alive; exec sleep 3600"],
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "timeoutSeconds": 5,
                              "failureThreshold": 1}}
    ready = {"name": "ready", "image": busybox_image,
             "command": ["sh", "-c", "sleep 1; touch /tmp/ready; sleep 3; rm /tmp/ready; exec sleep 3600"],
             "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "timeoutSeconds": 5,
                                "failureThreshold": 1}}
    iid = run_pod(node, assignment([crash], policy="OnFailure"))
    ok = run_pod(node, assignment([done], policy="OnFailure"))
    probed = run_pod(node, assignment([ready, live], grace=1))
    # The container holding the pod's network ends after 5 s: when it is started again, the one that
    # joined its network is too (its namespace went with it), which is not a restart of its own.
    net = run_pod(node, assignment([
        {"name": "net", "image": busybox_image, "command": ["sh", "-c", "sleep 5; exit 1"]},
        {"name": "joined", "image": busybox_image, "command": ["sh", "-c", "echo joined; exec sleep 3600"]}],
        grace=1))
    t = node.transport

    def flips() -> bool:  # read from every status the node sent, not only the one there when the test looks
        seen: list[bool] = []
        for c in t.container_history(probed, "ready"):
            if c["state"] == "running" and (not seen or seen[-1] != c["ready"]):
                seen.append(c["ready"])
        return any(seen[i:i + 3] == [False, True, False] for i in range(len(seen)))
    wait_until(flips, 30, interval=0.1, what="readiness false, true, false")
    # The crash shows as a back-off.
    c = wait_until(lambda: (lambda c: c if c and "back-off" in (c.get("reason") or "") else None)(
        t.container(iid, "app")), 20, what="the back-off to show")
    assert c["state"] == "waiting" and c["exit_code"] == 3 and c["reason"] == "back-off 10s restarting app"
    assert c["restart_count"] == 0
    assert (t.pod(iid) or {})["phase"] == "running"
    # A clean exit under OnFailure is the end: the pod succeeded.
    wait_until(lambda: (t.pod(ok) or {}).get("phase") == "succeeded", 30, what="the one-shot pod to succeed")
    assert t.container(ok, "once")["exit_code"] == 0  # type: ignore[index]
    # The liveness failure stops "live"; after its back-off it is a new container ("ready" goes on).
    first = {n: (t.container(probed, n) or {}).get("container_id") for n in ("live", "ready")}
    wait_until(lambda: (lambda c: c and "liveness probe failed" in (c.get("error") or "")
                        and c["state"] in ("terminated", "waiting"))(t.container(probed, "live")), 20,
               what="the liveness failure")
    wait_until(lambda: (t.container(probed, "live") or {}).get("restart_count") == 1, 30, what="the restart")
    wait_until(lambda: (lambda c: c and c["state"] == "running" and c["container_id"] != first["live"])(
        t.container(probed, "live")), 30, what="live running again")
    # Its output is read from its log, shipped with a sync soon after the one that says it runs.
    wait_until(lambda: t.pod_lines(probed, "live").count("started") == 2, 10, what="the second start's line")
    r = t.container(probed, "ready")
    assert r is not None and r["restart_count"] == 0 and r["container_id"] == first["ready"] and r["state"] == "running"
    # The crashing container was started again after its back-off (and crashed again: a longer one).
    wait_until(lambda: (t.container(iid, "app") or {}).get("restart_count") == 1, 30, what="the restart")
    wait_until(lambda: (t.container(iid, "app") or {}).get("reason") == "back-off 20s restarting app", 30,
               what="the longer back-off")
    assert t.pod_lines(iid, "app").count("boom") == 2
    joined = t.container(net, "joined")
    assert joined is not None and joined["restart_count"] == 0
    wait_until(lambda: t.pod_lines(net, "joined").count("joined") == 2, 30, what="joined started again")
    assert (t.container(net, "net") or {}).get("restart_count") == 1
    for i in (iid, ok, probed, net):
        drop_pod(node, i)


def test_a_container_whose_stored_log_is_full_is_no_longer_shipped(node: Node, busybox_image: str) -> None:
    chatty = {"name": "chatty", "image": busybox_image, "command": ["sh", "-c", "yes flood"]}
    quiet = {"name": "quiet", "image": busybox_image,
             "command": ["sh", "-c", "while :; do echo tick; sleep 0.1; done"]}
    iid = run_pod(node, assignment([chatty, quiet], grace=0))
    t = node.transport
    wait_until(lambda: len(t.pod_lines(iid, "chatty")) > 1000, 30, what="the flood shipped")
    t.log_full.append({"instance_id": iid, "container": "chatty"})
    node.poke()
    mark = len(t.syncs)
    wait_until(lambda: len(t.syncs) > mark + 5, 30, what="five syncs after the answer")
    mark = len(t.syncs)  # lines read before the answer came may still go: from here on, none

    def lines_since(container: str) -> int:
        return sum(1 for body in t.syncs[mark:] for ln in body["logs"]
                   if ln["instance_id"] == iid and ln["container"] == container)
    wait_until(lambda: lines_since("quiet") >= 10, 30, what="the other container's output going on")
    assert lines_since("chatty") == 0
    assert (t.container(iid, "chatty") or {}).get("state") == "running"
    drop_pod(node, iid)


def test_a_host_process_gets_its_ports_and_a_clean_environment(node: Node, tmp_path: Path) -> None:
    port = free_port()
    os.environ["CORRAL_PODAGENT_SECRET"] = "must-not-leak"
    try:
        # $$$$: pods' commands are expanded as Kubernetes does ($(VAR), and $$ for a $). Ready once its
        # goodbye is set up (the probe runs in the process's directory): a SIGTERM before the trap would end
        # the shell without one, and `env` with it.
        proc = {"name": "srv", "command": ["sh", "-c", 'echo "port=$PORT http=$PORT_HTTP pid=$$$$"; env; '
                                           "trap 'echo bye; exit 0' TERM; touch trapped; "
                                           "while :; do sleep 0.1; done"],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"exec": {"command": ["test", "-e", "trapped"]}, "periodSeconds": 1}}
        iid = run_pod(node, assignment([proc], grace=5, ports=[
            {"container": "srv", "name": "http", "containerPort": 8000, "protocol": "TCP", "hostPort": port}]))
    finally:
        del os.environ["CORRAL_PODAGENT_SECRET"]
    t = node.transport
    line = wait_until(lambda: next((ln for ln in t.pod_lines(iid) if ln.startswith("port=")), None), 20)
    assert line.startswith(f"port={port} http={port} pid=")
    pid = int(line.rsplit("=", 1)[1])
    wait_until(lambda: (t.container(iid, "srv") or {}).get("ready"), 30, what="ready")
    # Its environment: what the pod gives it (its ports), nothing of the worker's own.
    wait_until(lambda: f"PORT_HTTP={port}" in t.pod_lines(iid), 10, what="env's output")
    assert not any("CORRAL_PODAGENT_SECRET" in ln for ln in t.pod_lines(iid))
    drop_pod(node, iid)
    wait_until(lambda: (t.pod(iid) or {}).get("phase") == "stopped", 30, what="stopped")
    wait_until(lambda: process_gone(pid), 30, what="the process to end")
    # SIGTERM first: it could say goodbye.
    wait_until(lambda: "bye" in t.pod_lines(iid), 10, what="the goodbye line")


def test_a_restarted_worker_adopts_its_pod_containers(tmp_path: Path, docker_client: docker.DockerClient,
                                                      busybox_image: str) -> None:
    node_id = f"adopt-{uuid.uuid4().hex[:8]}"
    keep = assignment([{"name": "app", "image": busybox_image,
                        "command": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.3; done"]}])
    old = assignment([{"name": "old", "image": busybox_image, "command": ["sleep", "3600"]}])
    first = RecordingTransport([], node_id=node_id, heartbeat_interval=0.5)
    first.desired = [keep, old]
    try:
        a = Node(tmp_path / "w", first, {"docker": DockerRuntime(docker_client)})
        wait_until(lambda: all((first.container(x["instance_id"], n) or {}).get("state") == "running"
                               for x, n in ((keep, "app"), (old, "old"))), 30, what="the pods running")
        cid = first.container(keep["instance_id"], "app")["container_id"]  # type: ignore[index]
        started = docker_client.api.inspect_container(cid)["State"]["StartedAt"]
        a.crash()
        # The new worker wants only one of them.
        second = RecordingTransport([], node_id=node_id, heartbeat_interval=0.5)
        second.desired = [keep, {**old, "desired": "stop"}]  # deleted while the worker was away
        b = Node(tmp_path / "w", second, {"docker": DockerRuntime(docker_client)})
        try:
            # Its first sync reports what it found, before it knows what is wanted.
            wait_until(lambda: second.syncs, 30)
            assert {p["instance_id"] for p in second.syncs[0]["pods"]} == {keep["instance_id"], old["instance_id"]}
            wait_until(lambda: any(ln.startswith("tick") for ln in second.pod_lines(keep["instance_id"])), 30,
                       what="output of the adopted container")
            c = second.container(keep["instance_id"], "app")
            assert c is not None and c["container_id"] == cid and c["state"] == "running" and c["restart_count"] == 0
            info = docker_client.api.inspect_container(cid)
            assert info["State"]["Running"] and info["State"]["StartedAt"] == started  # not restarted
            wait_until(lambda: not docker_client.api.containers(
                all=True, filters={"label": f"{INSTANCE_LABEL}={old['instance_id']}"}), 30,
                what="the unwanted container removed")
            wait_until(lambda: (second.pod(old["instance_id"]) or {}).get("phase") == "stopped", 30,
                       what="the unwanted pod reported stopped")
        finally:
            b.stop()
        assert not docker_client.api.containers(all=True, filters={"label": f"{NODE_LABEL}={node_id}"})
    finally:
        remove_containers(docker_client, f"{NODE_LABEL}={node_id}")



def test_a_container_is_started_with_two_engine_calls_and_its_output_kept(
        node: Node, busybox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `docker run -d`: create, then start, and nothing else on the way (no attach, no inspect); the
    output is read from the container's log after the start, and nothing it wrote at once is lost (both
    streams, each line once)."""
    pods = node.agent.pods
    assert pods is not None and pods.docker is not None
    api = pods.docker.client.api
    calls: list[tuple[str, str]] = []
    send = api.send

    def counting(request: Any, **kw: Any) -> Any:
        calls.append((str(request.method), str(request.path_url)))
        return send(request, **kw)

    monkeypatch.setattr(api, "send", counting)
    app = {"name": "app", "image": busybox_image,
           "command": ["sh", "-c", "echo out-1; echo err-1 >&2; echo out-2; exec sleep 3600"]}
    iid = run_pod(node, assignment([app]))
    t = node.transport
    wait_until(lambda: (t.container(iid, "app") or {}).get("state") == "running", 30, what="the container running")
    wait_until(lambda: {"out-1", "err-1", "out-2"} <= set(t.pod_lines(iid, "app")), 10, what="its output")
    cid = str((t.container(iid, "app") or {})["container_id"])
    name = container_name(iid, "app")
    mine = [(m, p.split("?")[0]) for m, p in list(calls) if cid in p or name in p]
    start = mine.index(("POST", f"/v{api._version}/containers/{cid}/start"))
    assert mine[:start + 1] == [("POST", f"/v{api._version}/containers/create"),
                                ("POST", f"/v{api._version}/containers/{cid}/start")], mine
    assert not [c for c in mine if c[1].endswith(("/attach", "/json"))], mine  # nor after it
    assert sorted(t.pod_lines(iid, "app")) == ["err-1", "out-1", "out-2"]
    streams = {ln["line"]: ln["stream"] for body in list(t.syncs) for ln in body["logs"] if ln["instance_id"] == iid}
    assert streams == {"out-1": "stdout", "err-1": "stderr", "out-2": "stdout"}
    drop_pod(node, iid)
    wait_until(lambda: (t.pod(iid) or {}).get("phase") == "stopped", 30, what="the pod reported stopped")
