"""Services, pure: the spec's rules, endpoints over pods and nodes, picking free node ports."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.domain.services import ServiceSpec, endpoints, matches, pick_node_ports

WEB = {"name": "web", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}


def _svc(**kw: Any) -> dict[str, Any]:
    spec = ServiceSpec.model_validate({**WEB, **kw})
    d = spec.model_dump()
    d["ports"] = [{**p, "targetPort": spec.ports[i].target} for i, p in enumerate(d["ports"])]
    return d


def _pod(pod_id: str, node: str = "n1", *, ns: str = "default", labels: dict[str, str] | None = None,
         state: str = "running", ready: bool = True, port: int | None = 31000, container_port: int = 8080,
         name: str | None = "http") -> dict[str, Any]:
    ports = [] if port is None else [{"container": "app", "containerPort": container_port, "protocol": "TCP",
                                      "hostPort": port, "name": name}]
    return {"id": pod_id, "namespace": ns, "labels": {"app": "web"} if labels is None else labels,
            "state": state, "ready": ready, "node_id": node, "ports": ports}


NODES = {"n1": {"state": "ready", "address": "10.0.0.1"}, "n2": {"state": "draining", "address": "10.0.0.2"},
         "n3": {"state": "down", "address": "10.0.0.3"}, "n4": {"state": "ready", "address": None,
                                                               "hostname": "box4"}}


def test_spec_defaults_follow_podling() -> None:
    spec = ServiceSpec.model_validate({"name": "web", "selector": {"app": "nginx"}, "ports": [{"port": 80}]})
    assert (spec.namespace, spec.type, spec.ports[0].protocol, spec.ports[0].target) == ("default", "ClusterIP",
                                                                                         "TCP", 80)


@pytest.mark.parametrize(("body", "words"), [
    ({**WEB, "name": "Web_1"}, "not a valid service name"),
    ({**WEB, "namespace": "x" * 64}, "not a valid namespace"),
    ({**WEB, "ports": []}, "at least 1"),
    ({**WEB, "ports": [{"port": 80}, {"port": 81}]}, "needs a name"),
    ({**WEB, "ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "same name"),
    ({**WEB, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "same port and protocol"),
    ({**WEB, "ports": [{"port": 0}]}, "greater than or equal to 1"),
    ({**WEB, "ports": [{"port": True}]}, "not true or false"),
    ({**WEB, "ports": [{"port": 80, "targetPort": "Not A Name"}]}, "neither a port number"),
    ({**WEB, "ports": [{"port": 80, "nodePort": 30001}]}, "only for type NodePort"),
    ({**WEB, "type": "NodePort", "ports": [{"port": 53, "protocol": "UDP"}]}, "TCP only"),
    ({**WEB, "type": "LoadBalancer"}, "'ClusterIP' or 'NodePort'"),
    ({**WEB, "selector": {"app": 1}}, "valid string"),
    ({**WEB, "clusterIP": "10.0.0.1"}, "Extra inputs"),
])
def test_bad_specs_say_what_is_wrong(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ServiceSpec.model_validate(body)


def test_an_empty_selector_selects_nothing() -> None:
    assert not matches({}, {"app": "web"})
    assert matches({"app": "web"}, {"app": "web", "tier": "front"})
    assert not matches({"app": "web", "tier": "back"}, {"app": "web", "tier": "front"})


def test_endpoints_are_the_ready_matching_pods_on_live_nodes() -> None:
    pods = [_pod("p1"), _pod("p2", "n2", port=31001),
            _pod("p3", ready=False), _pod("p4", state="pending"), _pod("p5", ns="other"),
            _pod("p6", labels={"app": "db"}), _pod("p7", "n3"), _pod("p8", "gone"),
            _pod("p9", port=None), _pod("p10", container_port=9090), _pod("p11", "n4", port=31002)]
    eps = endpoints(_svc(), pods, NODES)
    assert [(e["pod_id"], e["address"], e["port"]) for e in eps] == [
        ("p1", "10.0.0.1", 31000), ("p11", "box4", 31002), ("p2", "10.0.0.2", 31001)]
    assert eps[0] == {"pod_id": "p1", "node_id": "n1", "address": "10.0.0.1", "port": 31000,
                      "port_name": "http", "service_port": 80}


def test_endpoints_by_port_name_and_per_service_port() -> None:
    svc = _svc(ports=[{"name": "http", "port": 80, "targetPort": "http"},
                      {"name": "admin", "port": 81, "targetPort": 9090}])
    pod = _pod("p1")
    pod["ports"].append({"container": "app", "containerPort": 9090, "protocol": "TCP", "nodePort": 31005})
    eps = endpoints(svc, [pod], NODES)
    assert [(e["service_port"], e["port"]) for e in eps] == [(80, 31000), (81, 31005)]
    assert endpoints(_svc(ports=[{"port": 80, "targetPort": "metrics"}]), [pod], NODES) == []


def test_endpoints_in_another_namespace() -> None:
    assert [e["pod_id"] for e in endpoints(_svc(namespace="other"), [_pod("p1"), _pod("p5", ns="other")],
                                           NODES)] == ["p5"]


def test_pick_node_ports_skips_taken_and_wraps() -> None:
    assert pick_node_ports(2, {30000, 30001}, 30000, 30004) == [30002, 30003]
    assert pick_node_ports(2, {30004}, 30000, 30004, start=4) == [30000, 30001]
    assert pick_node_ports(3, {30000, 30001, 30002}, 30000, 30003) == [30003]
    assert pick_node_ports(0, set(), 30000, 30003) == []


def test_pod_placement_never_gives_a_pod_a_service_port_on_a_node_that_joined_later() -> None:
    """A NodePort service's ports are held under the pseudo node ANY_NODE too; a node with no rows of its
    own yet (it just registered) must not hand them to a pod."""
    from corral.domain.resources import Resources
    from corral.domain.services import ANY_NODE
    from corral.scheduler.placement import NodeView
    from corral.scheduler.pods import PodRequest, place_pods

    node = NodeView("new", "new", Resources(2, 2**32), Resources(), {}, frozenset({"docker"}))
    pod = PodRequest("p", 0, Resources(0.5, 2**20), "docker", {}, (), ("TCP", "TCP"))
    plan = place_pods([node], [pod], {ANY_NODE: {(30000, "TCP"), (30002, "TCP")}}, (30000, 30010))
    assert [p.node_ports for p in plan.placements] == [(30001, 30003)]
