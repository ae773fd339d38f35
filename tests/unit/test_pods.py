"""Pods without I/O: the spec model, the reconciler's decisions, the back-off, and placement with ports."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.domain import reconcile
from corral.domain.pods import PodSpec, parse_cpu
from corral.domain.reconcile import NodeView, PodView, backoff, next_streak, pod_phase, restart_decision
from corral.domain.resources import DEFAULT_TASK_RESOURCES, Resources
from corral.scheduler.placement import NodeView as SchedNode
from corral.scheduler.pods import PodRequest, place_pods


def _pod(**extra: Any) -> dict[str, Any]:
    return {"name": "web", "containers": [{"name": "app", "image": "nginx:1"}], **extra}


def _err(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as e:
        PodSpec.model_validate(data)
    return str(e.value)


# -- the model ---------------------------------------------------------------------------------------
def test_a_minimal_pod_gets_the_defaults() -> None:
    p = PodSpec.model_validate(_pod())
    assert (p.namespace, p.restartPolicy, p.runtime, p.grace()) == ("default", "Always", "docker", 10.0)
    assert p.requests() == Resources(DEFAULT_TASK_RESOURCES.cpu, DEFAULT_TASK_RESOURCES.memory)


def test_requests_are_summed_from_requests_then_limits() -> None:
    p = PodSpec.model_validate(_pod(containers=[
        {"name": "a", "image": "x", "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
        {"name": "b", "image": "x", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]))
    assert p.requests() == Resources(1.25, 128 * 2**20 + 2**30)


def test_kubernetes_spellings_are_taken() -> None:
    p = PodSpec.model_validate(_pod(nodeSelector={"zone": "a"}, ttl="2h", containers=[
        {"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B"}],
         "ports": [{"name": "http", "containerPort": 80}],
         "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2}}]))
    assert p.node_selector == {"zone": "a"} and p.ttl_seconds() == 7200
    assert p.containers[0].env == {"A": "1", "B": ""}
    assert parse_cpu("100m") == pytest.approx(0.1) and parse_cpu(2) == 2.0


@pytest.mark.parametrize("data, words", [
    (_pod(containers=[]), "containers"),
    (_pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]), "two containers are named 'a'"),
    (_pod(containers=[{"name": "a", "image": "x"}, {"name": "b", "command": ["sleep", "1"]}]), "not a mix"),
    (_pod(containers=[{"name": "a"}]), "give its 'command'"),
    (_pod(containers=[{"name": "Bad_Name", "image": "x"}]), "not a valid container name"),
    (_pod(name="UPPER"), "not a valid pod name"),
    (_pod(namespace="a.b"), "not a valid namespace"),
    (_pod(restartPolicy="Sometimes"), "restartPolicy"),
    (_pod(ttl="soon"), "not a duration"),
    (_pod(ttl=0), "longer than zero"),
    (_pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 0}]}]), "containerPort"),
    (_pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "SCTP"}]}]), "protocol"),
    (_pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
                      {"name": "b", "image": "x", "ports": [{"containerPort": 80}]}]), "share one network namespace"),
    (_pod(containers=[{"name": "a", "image": "x", "resources": {"requests": {"cpu": "lots"}}}]), "CPU quantity"),
    (_pod(containers=[{"name": "a", "image": "x", "resources": {"requests": {"memory": "1Gi"},
                                                                 "limits": {"memory": "1Mi"}}}]), "more than limits"),
    (_pod(containers=[{"name": "a", "image": "x", "livenessProbe": {"periodSeconds": 1}}]), "exactly one of exec"),
    (_pod(containers=[{"name": "a", "image": "x", "livenessProbe": {"tcpSocket": {"port": "web"}}}]), "named 'web'"),
    (_pod(containers=[{"name": "a", "image": "x", "env": [{"value": "1"}]}]), "env"),
    (_pod(hostNetwork=True, containers=[{"name": "a", "command": ["sleep", "9"]}]), "not to host processes"),
    (_pod(hostNetwork="sometimes"), "hostNetwork"),
    (_pod(containers=[{"name": "a", "image": "x", "securityContext": {"runAsUser": 0}}]), "runAsUser"),
    (_pod(labels={"a": "\ud800"}), "lone surrogate"),
    (_pod(containers=[{"name": f"c{i}", "image": "x"} for i in range(17)]), "containers"),
])
def test_bad_specs_are_refused_naming_the_field(data: dict[str, Any], words: str) -> None:
    assert words in _err(data)


# -- restarts on the node ----------------------------------------------------------------------------
def test_backoff_doubles_from_10s_to_5min_and_resets_after_10min_up() -> None:
    assert [backoff(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff(1000) == 300
    assert next_streak(5, ran_for=30) == 6
    assert next_streak(5, ran_for=600) == 1


def test_restart_policy() -> None:
    assert restart_decision("Always", 0) and restart_decision("Always", 1)
    assert not restart_decision("OnFailure", 0) and restart_decision("OnFailure", 2)
    assert restart_decision("OnFailure", None)
    assert not restart_decision("Never", 1)
    assert pod_phase("Never", [("terminated", 0), ("terminated", 1)]) == "failed"
    assert pod_phase("OnFailure", [("terminated", 0), ("terminated", 0)]) == "succeeded"
    assert pod_phase("OnFailure", [("terminated", 0), ("terminated", 3)]) == "running"
    assert pod_phase("Never", [("terminated", 0), ("running", None)]) == "running"


# -- the coordinator's decisions -----------------------------------------------------------------------
NOW = 1000.0
UP = NodeView("n1", "one", "ready", NOW - 1)
DOWN = NodeView("n2", "two", "down", NOW - 100)
SILENT = NodeView("n3", "three", "ready", NOW - 7)


def _view(**kw: Any) -> PodView:
    base: dict[str, Any] = {"id": "p", "state": "running", "desired": "run", "restart_policy": "Always",
                            "node_id": "n1", "instance_id": "i1", "ttl_expires_at": None}
    return PodView(**{**base, **kw})


def _decide(*pods: PodView) -> list[tuple[str, str]]:
    out = reconcile.reconcile(pods, {n.id: n for n in (UP, DOWN, SILENT)}, NOW, heartbeat_interval=3)
    return [(d.action, d.reason) for d in out]


def test_a_running_pod_on_a_live_node_is_left_alone() -> None:
    assert _decide(_view(), _view(state="pending", node_id=None, instance_id=None)) == []


@pytest.mark.parametrize("policy, action", [("Always", "replace"), ("OnFailure", "replace"), ("Never", "fail")])
def test_a_dead_nodes_pods_are_placed_again_or_fail(policy: str, action: str) -> None:
    for state in ("scheduled", "running", "unknown"):
        [(got, why)] = _decide(_view(state=state, node_id="n2", restart_policy=policy))
        assert got == action and "node two is down" in why
    [(got, _)] = _decide(_view(node_id="gone", restart_policy=policy))  # a node removed altogether
    assert got == action


def test_a_silent_node_makes_its_pods_unknown_once() -> None:
    [(got, why)] = _decide(_view(node_id="n3"))
    assert got == "unknown" and "not been heard from for 7s" in why
    assert _decide(_view(node_id="n3", state="unknown")) == []


def test_ttl_expiry_deletes() -> None:
    assert _decide(_view(ttl_expires_at=NOW + 1)) == []
    assert _decide(_view(ttl_expires_at=NOW)) == [("delete", "its ttl ran out")]
    # never placed, or on a dead node: over at once
    assert _decide(_view(ttl_expires_at=NOW - 5, state="pending", node_id=None, instance_id=None)) == [
        ("terminated", "its ttl ran out")]
    assert _decide(_view(ttl_expires_at=NOW - 5, node_id="n2")) == [("terminated", "its ttl ran out")]


def test_deletes_end_at_once_only_when_nothing_runs_anywhere() -> None:
    assert _decide(_view(state="terminating", desired="stop")) == []  # the node says when its containers are gone
    assert _decide(_view(state="pending", desired="stop", node_id=None, instance_id=None))[0][0] == "terminated"
    [(got, why)] = _decide(_view(state="terminating", desired="stop", node_id="n2"))
    assert got == "terminated" and "down" in why
    assert _decide(_view(state="running", desired="stop"))[0][0] == "delete"


def test_final_states_from_a_nodes_phase() -> None:
    assert [reconcile.final_state(p) for p in ("running", "succeeded", "failed", "stopped")] == [
        None, "succeeded", "failed", "terminated"]


# -- placement with ports ------------------------------------------------------------------------------
def _node(nid: str, cpu: float = 2, labels: dict[str, str] | None = None) -> SchedNode:
    return SchedNode(nid, nid, Resources(cpu, 2**32), Resources(), labels or {}, frozenset({"docker"}))


def _req(pid: str, seq: int = 0, cpu: float = 0.5, host: tuple[tuple[int, str], ...] = (),
         node_ports: tuple[str, ...] = (), sel: dict[str, str] | None = None) -> PodRequest:
    return PodRequest(pid, seq, Resources(cpu, 2**20), "docker", sel or {}, host, node_ports)


def test_node_ports_are_allocated_from_the_range_unique_per_node() -> None:
    plan = place_pods([_node("a")], [_req("p1", 1, node_ports=("TCP", "TCP")), _req("p2", 2, node_ports=("TCP",))],
                      {"a": {(30000, "TCP")}}, (30000, 30010))
    assert [(p.pod_id, p.node_ports) for p in plan.placements] == [("p1", (30001, 30002)), ("p2", (30003,))]


def test_a_port_that_cannot_be_had_sends_the_pod_to_another_node() -> None:
    plan = place_pods([_node("a", cpu=4), _node("b", cpu=1)], [_req("p", host=((8080, "TCP"),))],
                      {"a": {(8080, "TCP")}}, (30000, 30010))
    assert [(p.pod_id, p.node_id) for p in plan.placements] == [("p", "b")]
    # the same port for UDP is another port
    plan = place_pods([_node("a")], [_req("p", host=((8080, "UDP"),))], {"a": {(8080, "TCP")}}, (30000, 30010))
    assert plan.placements[0].node_id == "a"


def test_no_port_anywhere_leaves_the_pod_pending_with_a_reason() -> None:
    plan = place_pods([_node("a"), _node("b")], [_req("p1", 1, node_ports=("TCP",)), _req("p2", 2, node_ports=("TCP",)),
                                                 _req("p3", 3, node_ports=("TCP",))], {}, (30000, 30000))
    assert len(plan.placements) == 2
    assert plan.reasons == {"p3": "waiting for ports: none of the 2 nodes with room for it has 1 node port free"}


def test_resources_and_selectors_still_decide_first() -> None:
    plan = place_pods([_node("a", cpu=1)], [_req("p1", 1, cpu=0.75), _req("p2", 2, cpu=0.5),
                                           _req("p3", 3, sel={"zone": "x"})], {}, (30000, 30010))
    assert [p.pod_id for p in plan.placements] == ["p1"]
    assert plan.reasons["p2"].startswith("waiting for capacity")
    assert plan.reasons["p3"] == "no node matches node_selector zone=x"
    assert place_pods([], [_req("p")], {}, (1, 2)).reasons["p"] == "no worker is registered and ready"
