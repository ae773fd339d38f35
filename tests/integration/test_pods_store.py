"""Pods straight over the store, on SQLite and on PostgreSQL: placement with ports, label selectors, the
sync's compare-and-set rules, capacity shared with tasks, dead nodes, purge. No HTTP: this drives `Pods`
the way the routes and the loops do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.service import Coordinator, NodeInfo, Settings
from corral.domain.agentwire import ContainerStatus, PodLogLine, PodStatus
from corral.domain.pods import PodSpec
from corral.domain.spec import JobSpec
from corral.store.sql import Store


@pytest.fixture
def coord(database_url: str) -> Iterator[Coordinator]:
    store = Store(database_url)
    c = Coordinator(store, Settings(node_port_range=(30000, 30001), heartbeat_interval=1, node_ttl=3))
    c.started_at -= 60  # as if it had been up a while: the reconciler's start-up grace is over
    yield c
    store.close()


def _node(coord: Coordinator, name: str, cpu: float = 2, **labels: str) -> str:
    row = coord.register(NodeInfo(name=name, hostname=name, version="t", cpu=cpu, memory=2**32, disk=0,
                                  runtimes=["process", "docker"], labels=labels, address=f"10.0.0.{len(name)}"))
    return str(row["id"])


def _spec(name: str, **extra: Any) -> PodSpec:
    return PodSpec.model_validate({"name": name, "containers": [
        {"name": "app", "image": "x", "ports": [{"containerPort": 80}],
         "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}}], **extra})


def _running(coord: Coordinator, pod: dict[str, Any], node: str) -> None:
    coord.pods.sync(node, [PodStatus(pod["instance_id"], pod["id"], "running",
                                     [ContainerStatus("app", "running", ready=True, started_at=time.time())])], [])


def test_placement_ports_selectors_and_capacity(coord: Coordinator) -> None:
    a = _node(coord, "a", cpu=1.5, zone="x")
    ids = [coord.pods.create(_spec(f"p{i}", labels={"app": "web", "i": str(i)}))["id"] for i in range(3)]
    assert coord.pods.place_once() == 2  # two node ports in the range, one node
    got = [coord.pods.get(i) for i in ids]
    assert [p["state"] for p in got] == ["scheduled", "scheduled", "pending"]
    assert sorted(p["ports"][0]["hostPort"] for p in got[:2]) == [30000, 30001]
    assert "waiting for ports" in got[2]["reason"]
    with coord.store.read() as tx:
        [alloc] = tx.allocations()
    assert (alloc["node_id"], alloc["cpu"], alloc["pods"], alloc["n"]) == (a, 1.0, 2, 0)
    # the node is full: a task waits for capacity that pods hold
    coord.submit(JobSpec.model_validate({"tasks": [{"run": "true", "resources": {"cpu": 0.75}}]}))
    assert coord.schedule_once() == 0
    # selectors, on the store's JSON
    assert [p["id"] for p in coord.pods.list(selector={"app": "web", "i": "1"})] == [ids[1]]
    assert coord.pods.list(selector={"app": "db"}) == []
    assert len(coord.pods.list(namespace="default", limit=2)) == 2
    page2 = coord.pods.list(after=coord.pods.list(limit=2)[-1]["seq"])
    assert [p["id"] for p in page2] == [ids[2]]


def test_sync_applies_only_the_nodes_own_current_instances(coord: Coordinator) -> None:
    a, b = _node(coord, "a"), _node(coord, "b")
    pod = coord.pods.create(_spec("p", node_selector={}))
    coord.pods.place_once()
    pod = coord.pods.get(pod["id"])
    holder, other = (a, b) if pod["node_id"] == a else (b, a)
    assert coord.pods.sync(other, [PodStatus(pod["instance_id"], pod["id"], "failed")], [])["pods"] == []
    coord.pods.sync(holder, [PodStatus("0" * 32, pod["id"], "failed")], [])
    assert coord.pods.get(pod["id"])["state"] == "scheduled"
    line = PodLogLine(pod["instance_id"], "app", "stdout", "hi", time.time())
    coord.pods.sync(other, [], [line])
    assert coord.pods.logs(pod["id"]) == []
    _running(coord, pod, holder)
    coord.pods.sync(holder, [], [line])
    assert [r["line"] for r in coord.pods.logs(pod["id"], container="app")] == ["hi"]
    assert coord.pods.get(pod["id"])["state"] == "running" and coord.pods.get(pod["id"])["ready"]
    with pytest.raises(NotFound):
        coord.pods.logs(pod["id"], container="nope")
    with pytest.raises(Conflict):
        coord.pods.purge(pod["id"])
    coord.pods.delete(pod["id"])
    coord.pods.sync(holder, [PodStatus(pod["instance_id"], pod["id"], "stopped")], [])
    assert coord.pods.get(pod["id"])["state"] == "terminated"
    with coord.store.read() as tx:
        assert tx.used_ports() == {} and tx.allocations() == []
    coord.pods.purge(pod["id"])
    with pytest.raises(NotFound):
        coord.pods.get(pod["id"])


def test_a_dead_nodes_pod_is_placed_again_and_a_taken_id_is_refused(coord: Coordinator) -> None:
    a = _node(coord, "a")
    pod = coord.pods.create(_spec("mover", restartPolicy="OnFailure"), pod_id="custom-1", origin="podling")
    with pytest.raises(Conflict):
        coord.pods.create(_spec("again"), pod_id="custom-1")
    coord.pods.place_once()
    first = coord.pods.get(pod["id"])
    assert first["node_id"] == a and first["origin"] == "podling"
    _running(coord, first, a)
    b = _node(coord, "b")
    with coord.store.transaction() as tx:
        tx.cas_node(a, "ready", state="down")
    assert coord.pods.reconcile_once() == 1
    assert coord.pods.reconcile_once() == 0  # once
    again = coord.pods.get(pod["id"])
    assert again["state"] == "pending" and again["node_id"] is None and "node a is down" in again["reason"]
    assert [c["state"] for c in again["containers"]] == ["waiting"]
    coord.pods.place_once()
    moved = coord.pods.get(pod["id"])
    assert moved["node_id"] == b and moved["instance_id"] != first["instance_id"]
    assert moved["ports"][0]["hostPort"] == 30000  # the dead node's hold is gone; b's range starts afresh
    # a silent node: unknown, and back to running when it speaks
    with coord.store.transaction() as tx:
        tx.touch_node(b, time.time() - 10)
    assert coord.pods.reconcile_once() == 1 and coord.pods.get(pod["id"])["state"] == "unknown"
    _running(coord, moved, b)
    assert coord.pods.get(pod["id"])["state"] == "running"


def test_a_deleted_pod_its_node_does_not_list_is_over(coord: Coordinator) -> None:
    a = _node(coord, "a")
    pod = coord.pods.create(_spec("never-started"))
    coord.pods.place_once()
    assert coord.pods.delete(pod["id"])["state"] == "terminating"
    assert coord.pods.sync(a, [], [])["pods"] == []  # the node has nothing of it
    assert coord.pods.get(pod["id"])["state"] == "terminated"
    with coord.store.read() as tx:
        assert tx.used_ports() == {}


def test_pods_that_wait_do_not_hold_up_those_behind_them(coord: Coordinator) -> None:
    _node(coord, "a")
    stuck = [coord.pods.create(_spec(f"s{i}", node_selector={"zone": "nowhere"}))["id"] for i in range(70)]
    fits = coord.pods.create(_spec("fits"))["id"]
    assert coord.pods.place_once() == 1
    assert coord.pods.get(fits)["state"] == "scheduled"
    assert coord.pods.get(stuck[-1])["reason"] == "no node matches node_selector zone=nowhere"


def test_extra_ports_and_back_pressure(coord: Coordinator) -> None:
    _node(coord, "a")
    pod = coord.pods.create(_spec("stack-like"), ttl=60, extra_ports=[{"containerPort": 8080}, {"containerPort": 80}])
    assert [(p["containerPort"], p["protocol"]) for p in pod["ports"]] == [(80, "TCP"), (8080, "TCP")]
    assert 59 < pod["ttl_expires_at"] - pod["created_at"] <= 60
    coord.pods.place_once()
    assert sorted(p["hostPort"] for p in coord.pods.get(pod["id"])["ports"]) == [30000, 30001]
    with pytest.raises(Invalid):
        coord.pods.create(_spec("x"), extra_ports=[{"container": "nope", "containerPort": 1}])
    coord.settings.max_pending_tasks = 1
    coord.pods.create(_spec("waits", node_selector={"zone": "none"}))
    with pytest.raises(Overloaded):
        coord.pods.create(_spec("one-too-many"))


def test_a_deleted_pod_whose_containers_fail_on_the_way_out_is_terminated(coord: Coordinator) -> None:
    a = _node(coord, "a")
    pod = coord.pods.create(_spec("sigterm-dies-hard"))
    coord.pods.place_once()
    pod = coord.pods.get(pod["id"])
    _running(coord, pod, a)
    coord.pods.delete(pod["id"])
    coord.pods.sync(a, [PodStatus(pod["instance_id"], pod["id"], "failed",
                                  [ContainerStatus("app", "terminated", exit_code=143)])], [])
    got = coord.pods.get(pod["id"])
    assert (got["state"], got["reason"]) == ("terminated", "deleted")
