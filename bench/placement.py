"""Placement at scale: ``scheduler.plan`` alone (no store, no HTTP) on a synthetic cluster of mixed node sizes,
labels and GPUs, with its rate beside the quality of what it placed.

    .venv/bin/python -m bench.placement                   # 500 and 5,000 nodes, 10,000 tasks, both strategies
    .venv/bin/python -m bench.placement --nodes 5000 --tasks 10000 --strategy spread
    git show 9bb9c16:src/corral/scheduler/placement.py > /tmp/old_placement.py
    .venv/bin/python -m bench.placement --module /tmp/old_placement.py   # the same runs on another plan()

Printed per run: placements/s (placements over the CPU seconds ``plan`` alone took on its one core: on
a shared machine the wall clock, printed too, counts other processes' time), how many tasks were placed, and
- util CV: the coefficient of variation (stdev / mean) of node utilisation (the mean of the CPU and memory
  fractions in use) over the nodes of the default queue: low is an even spread;
- nodes used: how many of those nodes hold any work (bin-pack should leave many empty) and their mean
  utilisation (bin-pack should fill the ones it uses);
- GPU frag: the share of free GPUs that sit on nodes with fewer free GPUs than the largest GPU request
  (4), so that a 4-GPU task cannot use them: low is good.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from corral.domain.resources import Resources
from corral.scheduler import NodeView, TaskView
from corral.scheduler import plan as indexed_plan

GiB = 2**30
BIG_GPU_ASK = 4


def cluster(n_nodes: int, n_tasks: int, seed: int = 1) -> tuple[list[NodeView], list[TaskView]]:
    """Nodes of five sizes, in two zones with two disk kinds; one in ten with 4 or 8 GPUs (those also serve
    the ``gpu`` queue); a tenth already a quarter full. Tasks of a few common shapes, a fifth pinned to a
    zone, one in twenty asking for GPUs, some of high priority."""
    rng = random.Random(seed)
    sizes = [(4, 8), (8, 16), (16, 64), (32, 128), (64, 256)]
    nodes = []
    for i in range(n_nodes):
        cpu, mem = rng.choice(sizes)
        gpus = rng.choice([4, 8]) if rng.random() < 0.1 else 0
        used = rng.random() < 0.1
        alloc = Resources(cpu / 4, mem * GiB // 4, 0, 0) if used else Resources()
        nodes.append(NodeView(
            f"node-{i}", f"node-{i}", Resources(cpu, mem * GiB, 500 * GiB, gpus), alloc,
            labels={"zone": rng.choice(["a", "b"]), "disk": rng.choice(["ssd", "hdd"])},
            runtimes=frozenset({"docker", "process"}),
            queues=frozenset({"default", "gpu"} if gpus else {"default"}), free_gpus=list(range(gpus))))
    shapes = [(Resources(0.5, GiB // 2), 30), (Resources(1, GiB), 30), (Resources(2, 4 * GiB), 20),
              (Resources(4, 8 * GiB), 10), (Resources(8, 16 * GiB), 5)]
    tasks = []
    for i in range(n_tasks):
        if rng.random() < 0.05:
            queue, need = "gpu", Resources(4, 16 * GiB, 0, rng.choice([1, 1, 2, BIG_GPU_ASK]))
        else:
            queue, need = "default", rng.choices([s for s, _ in shapes], [w for _, w in shapes])[0]
        sel = {"zone": rng.choice(["a", "b"])} if rng.random() < 0.2 else {}
        if rng.random() < 0.05:
            sel["disk"] = "ssd"
        tasks.append(TaskView(f"t{i}", f"j{i}", queue, 10 if rng.random() < 0.1 else 0, i, need, "docker", sel))
    return nodes, tasks


def quality(nodes: list[NodeView], tasks: list[TaskView], placements: list[Any]) -> dict[str, float]:
    need = {t.id: t.resources for t in tasks}
    alloc = {n.id: n.allocated for n in nodes}
    gpus_taken = {n.id: 0 for n in nodes}
    for p in placements:
        alloc[p.node_id] = alloc[p.node_id] + need[p.task_id]
        gpus_taken[p.node_id] += len(p.gpus)
    util = [(alloc[n.id].cpu / n.capacity.cpu + alloc[n.id].memory / n.capacity.memory) / 2
            for n in nodes if "default" in n.queues]
    used = [u for u in util if u > 0]
    mean = statistics.fmean(util)
    free = {n.id: len(n.free_gpus) - gpus_taken[n.id] for n in nodes if n.capacity.gpu}
    total_free = sum(free.values())
    stranded = sum(f for f in free.values() if f < BIG_GPU_ASK)
    return {"util_cv": statistics.pstdev(util) / mean if mean else 0.0, "nodes_used": len(used),
            "used_util": statistics.fmean(used) if used else 0.0,
            "gpu_frag": stranded / total_free if total_free else 0.0}


def run(plan: Callable[..., Any], n_nodes: int, n_tasks: int, strategy: str) -> dict[str, float]:
    nodes, tasks = cluster(n_nodes, n_tasks)
    t0, c0 = time.perf_counter(), time.process_time()
    result = plan(nodes, tasks, strategy)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    q = quality(nodes, tasks, result.placements)
    return {"nodes": n_nodes, "tasks": n_tasks, "placed": len(result.placements), "seconds": took, "cpu": cpu,
            "per_s": len(result.placements) / cpu, **q}


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("other_placement", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="*", default=[500, 5000])
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--strategy", choices=["spread", "binpack"], nargs="*", default=["spread", "binpack"])
    ap.add_argument("--module", help="a placement.py to measure instead of corral.scheduler's (before/after)")
    args = ap.parse_args()
    plan = load(args.module).plan if args.module else indexed_plan
    print(f"{'nodes':>6} {'tasks':>6} {'strategy':>8} {'placed':>6} {'wall s':>7} {'CPU s':>6} {'placed/s':>9} "
          f"{'util CV':>7} {'nodes used':>10} {'their util':>10} {'GPU frag':>8}")
    for n in args.nodes:
        for strategy in args.strategy:
            r = run(plan, n, args.tasks, strategy)
            print(f"{n:>6} {args.tasks:>6} {strategy:>8} {r['placed']:>6} {r['seconds']:>7.3f} {r['cpu']:>6.3f} "
                  f"{r['per_s']:>9,.0f} {r['util_cv']:>7.3f} {r['nodes_used']:>10} {r['used_util']:>10.3f} "
                  f"{r['gpu_frag']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
