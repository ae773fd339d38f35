"""NodePort allocation on SQLite and PostgreSQL: two coordinators creating services at once never share a
port, a full range is a 503, a port a pod holds is never given to a service, and a node that joins later
gets the services' ports unless a pod took one there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from corral.coordinator.errors import Conflict, Unavailable
from corral.coordinator.service import Coordinator, NodeInfo
from corral.coordinator.services import Services
from corral.domain.services import ServiceSpec
from corral.store.sql import Store

LOW, HIGH = 31000, 31019  # 20 ports


def _spec(name: str, **kw: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": name, "type": "NodePort", "selector": {"app": name},
                                       "ports": [{"port": 80}], **kw})


def _coord(store: Store) -> Coordinator:
    coord = Coordinator(store)
    coord.settings.node_port_range = (LOW, HIGH)  # type: ignore[attr-defined]
    return coord


def _node(coord: Coordinator, name: str) -> str:
    return str(coord.register(NodeInfo(name=name, hostname=name, version="t", cpu=1, memory=1 << 30, disk=0,
                                       runtimes=["process"]))["id"])


@pytest.fixture
def two(database_url: str) -> Iterator[tuple[Services, Services]]:
    a, b = Store(database_url), Store(database_url)
    yield Services(_coord(a)), Services(_coord(b))
    a.close()
    b.close()


def test_two_coordinators_at_once_never_share_a_port(two: tuple[Services, Services]) -> None:
    one, other = two
    nodes = [_node(one.coord, f"n{i}") for i in range(3)]
    made: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def create(s: Services, prefix: str) -> None:
        barrier.wait()
        for i in range(10):
            try:
                made.append(s.create(_spec(f"{prefix}{i}")))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    threads = [threading.Thread(target=create, args=(s, p)) for s, p in ((one, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ports = [m["ports"][0]["nodePort"] for m in made]
    assert sorted(ports) == list(range(LOW, HIGH + 1))  # 20 services, 20 distinct ports: the whole range
    with pytest.raises(Unavailable, match=f"no free node port left in {LOW}-{HIGH}"):
        one.create(_spec("full"))
    for n in nodes:  # every node holds every port
        assert sorted(p["nodePort"] for s in one.for_node(n) for p in s["ports"]) == sorted(ports)
    # A port freed by a delete is the one the next service gets.
    one.delete(made[0]["id"])
    assert other.create(_spec("again"))["ports"][0]["nodePort"] == made[0]["ports"][0]["nodePort"]


def test_a_pod_port_is_never_a_service_port_and_a_late_node_skips_one_a_pod_took(
        two: tuple[Services, Services]) -> None:
    svc, _ = two
    first = _node(svc.coord, "early")
    # A pod holds LOW on the first node: no service may have LOW (it would clash on that node).
    with svc.store.transaction() as tx:
        tx.hold_node_ports([{"node_id": first, "port": LOW, "protocol": "TCP", "pod_id": "pod1",
                             "container": "app", "container_port": 80, "kind": "node"}])
    with pytest.raises(Conflict, match="in use"):
        svc.create(_spec("asked", ports=[{"port": 80, "nodePort": LOW}]))
    got = {svc.create(_spec(f"s{i}"))["ports"][0]["nodePort"] for i in range(HIGH - LOW)}
    assert LOW not in got and len(got) == HIGH - LOW
    # Free one service's port, then a node joins on which a pod took that port before it read its
    # services: the other services are forwarded there, that one port is not.
    gone = svc.list()[0]
    svc.delete(gone["id"])
    late_svc = svc.create(_spec("late"))
    late_port = late_svc["ports"][0]["nodePort"]
    late = _node(svc.coord, "late")
    with svc.store.transaction() as tx:
        tx.release_service_ports(late_svc["id"], [late_port])  # as if made before the node joined
        tx.hold_node_ports([{"node_id": late, "port": late_port, "protocol": "TCP", "pod_id": "pod2",
                             "container": "app", "container_port": 80, "kind": "node"}])
    forwarded = {p["nodePort"] for s in svc.for_node(late) for p in s["ports"]}
    assert late_port not in forwarded and len(forwarded) == HIGH - LOW - 1
    assert late_port in {p["nodePort"] for s in svc.for_node(first) for p in s["ports"]}


def test_a_node_never_holds_a_port_for_a_service_deleted_or_changed_meanwhile(
        two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    """What nodes forward is read at most every SNAPSHOT_TTL; a node that joins meanwhile must not hold
    the port of a service deleted since, nor the old port of one updated since."""
    from corral.coordinator import services as module
    monkeypatch.setattr(module, "SNAPSHOT_TTL", 3600.0)  # the snapshot stays stale for the whole test
    svc, other = two
    first = _node(svc.coord, "first")
    gone = svc.create(_spec("gone"))
    moved = svc.create(_spec("moved"))
    assert len(svc.for_node(first)) == 2  # the snapshot now lists both
    other.delete(gone["id"])
    old_port, gone_port = moved["ports"][0]["nodePort"], gone["ports"][0]["nodePort"]
    target = next(p for p in range(LOW, HIGH + 1) if p not in (old_port, gone_port))
    new = other.update(moved["id"], _spec("moved", ports=[{"port": 80, "nodePort": target}]))
    assert new["ports"][0]["nodePort"] == target
    late = _node(svc.coord, "late")
    svc.for_node(late)
    with svc.store.read() as tx:
        taken = tx.node_ports_taken(LOW, HIGH)
    assert gone_port not in taken and old_port not in taken
    assert target in taken
