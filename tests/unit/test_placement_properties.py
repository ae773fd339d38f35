"""Placement's properties on random clusters (plain ``random`` with fixed seeds, so a failure replays):
no node is over-committed, no GPU index is given twice, a task that fits somewhere is placed, and the
indexed plan picks the very node that scoring every eligible node picks."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from corral.domain.resources import Resources
from corral.scheduler import NodeView, Plan, TaskView, plan
from corral.scheduler.placement import NODE_ID_LABEL, Strategy, _labels_match, _score

GiB = 2**30
SEEDS = range(40)


def random_cluster(rng: random.Random, n_nodes: int, n_tasks: int) -> tuple[list[NodeView], list[TaskView]]:
    """Mixed sizes, some of them half full, queues, runtimes, zone labels, GPUs; tasks drawn from a few
    shapes (so that groups of alike tasks form) plus some one-off requests and pinned tasks."""
    nodes = []
    for i in range(n_nodes):
        cpu = rng.choice([1, 2, 4, 8, 16])
        mem = rng.choice([2, 4, 8, 32]) * GiB
        gpus = rng.choice([0, 0, 0, 2, 4, 8])
        used = rng.choice([0, 0, 1])
        allocated = Resources(cpu * used / 2, mem * used // 2, 0, gpus * used // 2)
        nodes.append(NodeView(
            f"n{i}", f"n{i}", Resources(cpu, mem, 100 * GiB, gpus), allocated,
            labels={"zone": rng.choice(["eu", "us"])} if rng.random() < 0.8 else {},
            runtimes=frozenset(rng.choice([{"docker"}, {"docker", "process"}])),
            queues=frozenset(rng.choice([{"default"}, {"default", "gpu"}, {"batch"}])),
            free_gpus=list(range(gpus * used // 2, gpus))))
    shapes = [Resources(0.5, GiB // 2), Resources(1, GiB), Resources(2, 4 * GiB), Resources(1, 2 * GiB, 0, 1),
              Resources(4, 8 * GiB, 0, 2), Resources(0, 0, 20 * GiB)]  # the last: disk only
    tasks = []
    for i in range(n_tasks):
        need = rng.choice(shapes) if rng.random() < 0.9 else Resources(rng.choice([0.25, 3, 20]), GiB)
        sel: dict[str, str] = {}
        r = rng.random()
        if r < 0.2:
            sel = {"zone": rng.choice(["eu", "us", "ap"])}
        elif r < 0.25:
            sel = {NODE_ID_LABEL: f"n{rng.randrange(n_nodes + 1)}"}
        tasks.append(TaskView(f"t{i}", f"j{i}", rng.choice(["default", "default", "gpu", "batch", "none"]),
                              rng.choice([0, 0, 5]), i, need, rng.choice(["docker", "docker", "process"]), sel))
    rng.shuffle(tasks)
    return nodes, tasks


def reference_plan(nodes: Sequence[NodeView], tasks: Sequence[TaskView], strategy: Strategy) -> list[tuple[str, str]]:
    """What placement did before it was indexed: every task scores every eligible node."""
    views = [NodeView(n.id, n.name, n.capacity, n.allocated, n.labels, n.runtimes, n.queues, list(n.free_gpus))
             for n in nodes]
    out = []
    for task in sorted(tasks, key=lambda t: (-t.priority, t.seq)):
        need = task.resources
        best: NodeView | None = None
        best_score = 0.0
        for n in views:
            if (task.queue not in n.queues or task.runtime not in n.runtimes or not need.fits_in(n.free)
                    or not _labels_match(n, task.node_selector) or len(n.free_gpus) < need.gpu):
                continue
            s = _score(n, need, strategy)
            if best is None or s > best_score:
                best, best_score = n, s
        if best is not None:
            del best.free_gpus[: need.gpu]
            best.allocated = best.allocated + need
            out.append((task.id, best.id))
    return out


def check_invariants(nodes: Sequence[NodeView], tasks: Sequence[TaskView], p: Plan) -> None:
    by_id = {n.id: n for n in nodes}
    need = {t.id: t for t in tasks}
    total: dict[str, Resources] = {n.id: n.allocated for n in nodes}
    gpus: dict[str, list[int]] = {n.id: [] for n in nodes}
    for pl in p.placements:
        t, n = need[pl.task_id], by_id[pl.node_id]
        assert t.queue in n.queues and t.runtime in n.runtimes and _labels_match(n, t.node_selector)
        total[n.id] = total[n.id] + t.resources
        assert len(pl.gpus) == t.resources.gpu
        gpus[n.id].extend(pl.gpus)
    for nid, used in total.items():
        n = by_id[nid]
        assert used.fits_in(n.capacity), f"{nid} over-committed: {used} on {n.capacity}"
        assert len(set(gpus[nid])) == len(gpus[nid]) and set(gpus[nid]) <= set(n.free_gpus)
    assert {pl.task_id for pl in p.placements} | set(p.reasons) == set(need)
    assert not {pl.task_id for pl in p.placements} & set(p.reasons)
    # A task left waiting fits on no node as the plan left the nodes.
    free_gpus = {n.id: len(n.free_gpus) - len(gpus[n.id]) for n in nodes}
    for tid in p.reasons:
        t = need[tid]
        for n in nodes:
            if t.queue in n.queues and t.runtime in n.runtimes and _labels_match(n, t.node_selector):
                assert not (t.resources.fits_in(n.capacity - total[n.id]) and free_gpus[n.id] >= t.resources.gpu), \
                    f"{tid} waits although it fits on {n.id}"


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_clusters(seed: int, strategy: Strategy) -> None:
    rng = random.Random(seed)
    nodes, tasks = random_cluster(rng, rng.randrange(1, 60), rng.randrange(1, 400))
    before = [(n.allocated, list(n.free_gpus)) for n in nodes]
    p = plan(nodes, tasks, strategy)
    check_invariants(nodes, tasks, p)
    assert [(pl.task_id, pl.node_id) for pl in p.placements] == reference_plan(nodes, tasks, strategy)
    assert [(n.allocated, n.free_gpus) for n in nodes] == before  # the caller's snapshot is untouched


def test_many_distinct_requests_are_placed_like_a_scan() -> None:
    """More kinds of request than get a heap: the rest are scanned, with the same outcome."""
    rng = random.Random(7)
    nodes = [NodeView(f"n{i}", f"n{i}", Resources(rng.choice([2, 8]), 8 * GiB), Resources(),
                      runtimes=frozenset({"docker"})) for i in range(30)]
    tasks = [TaskView(f"t{i}", f"j{i}", "default", 0, i, Resources(0.1 + (i % 50) / 100, GiB // 8), "docker")
             for i in range(400)]
    for strategy in ("spread", "binpack"):
        p = plan(nodes, tasks, strategy)  # type: ignore[arg-type]
        check_invariants(nodes, tasks, p)
        assert [(pl.task_id, pl.node_id) for pl in p.placements] == reference_plan(nodes, tasks, strategy)  # type: ignore[arg-type]
