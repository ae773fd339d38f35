"""Placement is a pure function: capacity, queues, runtimes, labels, priority, GPUs and reasons."""

from __future__ import annotations

from corral.domain.resources import Resources
from corral.scheduler import NodeView, TaskView, plan

GiB = 2**30


def node(nid: str, cpu: float = 2, mem: int = 4 * GiB, gpus: int = 0, **kw: object) -> NodeView:
    return NodeView(nid, nid, Resources(cpu, mem, 0, gpus), Resources(),
                    runtimes=frozenset(kw.get("runtimes", {"process", "docker"})),  # type: ignore[arg-type]
                    queues=frozenset(kw.get("queues", {"default"})),  # type: ignore[arg-type]
                    labels=dict(kw.get("labels", {})),  # type: ignore[arg-type]
                    free_gpus=list(range(gpus)))


def task(tid: str, cpu: float = 1, mem: int = GiB, gpu: int = 0, prio: int = 0, seq: int = 0,
         runtime: str = "process", queue: str = "default", selector: dict[str, str] | None = None) -> TaskView:
    return TaskView(tid, "j" + tid, queue, prio, seq, Resources(cpu, mem, 0, gpu), runtime, selector or {})


def test_never_overcommits_and_spreads() -> None:
    p = plan([node("a"), node("b")], [task(str(i), seq=i) for i in range(6)])
    per_node: dict[str, int] = {}
    for pl in p.placements:
        per_node[pl.node_id] = per_node.get(pl.node_id, 0) + 1
    assert per_node == {"a": 2, "b": 2}
    assert len(p.reasons) == 2
    assert all("waiting for capacity" in r for r in p.reasons.values())


def test_binpack_fills_one_node_first() -> None:
    p = plan([node("a"), node("b")], [task("1", seq=1), task("2", seq=2)], "binpack")
    assert {pl.node_id for pl in p.placements} == {p.placements[0].node_id}


def test_priority_then_age() -> None:
    p = plan([node("a", cpu=1)], [task("old", seq=1), task("new-urgent", prio=9, seq=5), task("older", seq=0)])
    assert [pl.task_id for pl in p.placements] == ["new-urgent"]


def test_reasons_name_what_is_missing() -> None:
    nodes = [node("a", gpus=1, runtimes={"process"})]
    p = plan(nodes, [
        task("gpu", gpu=4),
        task("docker", runtime="docker"),
        task("q", queue="gpu"),
        task("sel", selector={"zone": "eu"}),
        task("big", cpu=64),
    ])
    assert p.reasons["gpu"] == "needs 4 GPUs; the largest node has 1"
    assert p.reasons["docker"] == "no node offers runtime docker"
    assert p.reasons["q"] == "no ready worker serves queue 'gpu'"
    assert p.reasons["sel"] == "no node matches node_selector zone=eu"
    assert p.reasons["big"] == "needs 64 CPU cores; the largest node has 2"
    assert plan([], [task("x")]).reasons["x"] == "no worker is registered and ready"
    # None of these could be placed on these nodes even empty: the scheduling pass parks them.
    assert p.never == {"gpu", "docker", "q", "sel", "big"}


def test_only_what_no_node_could_hold_is_never_placeable() -> None:
    """Waiting for room (a full node) or for a quota is not "never": those are read again on every pass."""
    p = plan([node("a", cpu=1)], [task("1", seq=1), task("2", seq=2), task("big", cpu=2, seq=3)])
    assert [pl.task_id for pl in p.placements] == ["1"]
    assert p.reasons["2"].startswith("waiting for capacity") and p.never == {"big"}


def test_gpus_are_whole_and_distinct() -> None:
    p = plan([node("a", cpu=8, gpus=4)], [task("1", gpu=2), task("2", gpu=2), task("3", gpu=1)])
    gpus = [g for pl in p.placements for g in pl.gpus]
    assert sorted(gpus) == [0, 1, 2, 3]
    assert "3" in p.reasons


def test_labels_select_nodes() -> None:
    p = plan([node("a", labels={"zone": "us"}), node("b", labels={"zone": "eu"})],
             [task("1", selector={"zone": "eu"})])
    assert p.placements[0].node_id == "b"


def test_snapshot_is_not_modified() -> None:
    nodes = [node("a", gpus=2)]
    plan(nodes, [task("1", gpu=1)])
    assert nodes[0].allocated == Resources() and nodes[0].free_gpus == [0, 1]
