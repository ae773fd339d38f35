"""Placement of pending tasks onto nodes.

``plan`` takes plain views of the nodes (with what is already allocated on them) and of the tasks that
are ready to run, and returns which task goes where, plus a reason for each task that cannot be placed
now. It never touches the store, so it is fast, deterministic and testable on thousands of nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from corral.domain.resources import Resources, format_size

Strategy = Literal["spread", "binpack"]
# A node_selector key every node matches with its own id: how a task is pinned to one node (Podling's
# execute on a worker's port, for one).
NODE_ID_LABEL = "corral.io/node-id"


@dataclass(slots=True)
class NodeView:
    id: str
    name: str
    capacity: Resources
    allocated: Resources
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset({"default"})
    free_gpus: list[int] = field(default_factory=list)

    @property
    def free(self) -> Resources:
        return self.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    job_id: str
    queue: str
    priority: int
    seq: int  # submission order: lower is older
    resources: Resources
    runtime: str
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    node_id: str
    gpus: tuple[int, ...] = ()


@dataclass(slots=True)
class Plan:
    placements: list[Placement] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def _score(node: NodeView, need: Resources, strategy: Strategy) -> float:
    """Higher is better. Spread prefers the emptiest node, bin-pack the fullest that still fits."""
    cap = node.capacity
    after = node.allocated + need
    used = 0.0
    dims = 0
    for a, c in ((after.cpu, cap.cpu), (after.memory, cap.memory), (after.gpu, cap.gpu)):
        if c > 0:
            used += a / c
            dims += 1
    frac = used / dims if dims else 0.0
    return -frac if strategy == "spread" else frac


def _why_not(task: TaskView, nodes: Sequence[NodeView]) -> str:
    if not nodes:
        return "no worker is registered and ready"
    serving = [n for n in nodes if task.queue in n.queues]
    if not serving:
        return f"no ready worker serves queue '{task.queue}'"
    with_runtime = [n for n in serving if task.runtime in n.runtimes]
    if not with_runtime:
        return f"no node offers runtime {task.runtime}" + (
            f" on queue '{task.queue}'" if task.queue != "default" else "")
    matching = [n for n in with_runtime if _labels_match(n, task.node_selector)]
    if not matching:
        sel = ", ".join(f"{k}={v}" for k, v in sorted(task.node_selector.items()))
        return f"no node matches node_selector {sel}"
    need = task.resources
    big = max(matching, key=lambda n: (n.capacity.gpu, n.capacity.cpu, n.capacity.memory))
    if need.gpu > max(n.capacity.gpu for n in matching):
        return f"needs {need.gpu} GPU{'s' if need.gpu != 1 else ''}; the largest node has {big.capacity.gpu}"
    if need.cpu > max(n.capacity.cpu for n in matching) + 1e-9:
        top = max(n.capacity.cpu for n in matching)
        return f"needs {need.cpu:g} CPU cores; the largest node has {top:g}"
    if need.memory > max(n.capacity.memory for n in matching):
        top_m = max(n.capacity.memory for n in matching)
        return f"needs {format_size(need.memory)} memory; the largest node has {format_size(top_m)}"
    if need.disk > max(n.capacity.disk for n in matching):
        top_d = max(n.capacity.disk for n in matching)
        return f"needs {format_size(need.disk)} disk; the largest node has {format_size(top_d)}"
    # Kept free of changing numbers so that the reason is written once, not on every pass.
    wants = [f"cpu {need.cpu:g}", f"memory {format_size(need.memory)}"]
    if need.disk:
        wants.append(f"disk {format_size(need.disk)}")
    if need.gpu:
        wants.append(f"{need.gpu} GPU")
    n = len(matching)
    return (f"waiting for capacity: none of the {n} eligible node{'s' if n != 1 else ''} has "
            + ", ".join(wants) + " free")


def _labels_match(node: NodeView, selector: dict[str, str]) -> bool:
    return all((node.id if k == NODE_ID_LABEL else node.labels.get(k)) == v for k, v in selector.items())


def plan(nodes: Iterable[NodeView], tasks: Iterable[TaskView], strategy: Strategy = "spread") -> Plan:
    """Place ``tasks`` (highest priority first, then oldest) onto ``nodes`` without over-committing any.

    The node views are copied, so the caller's snapshot is left as it was.
    """
    views = [NodeView(n.id, n.name, n.capacity, n.allocated, n.labels, n.runtimes, n.queues,
                      list(n.free_gpus)) for n in nodes]
    result = Plan()
    why: dict[tuple[object, ...], str] = {}
    # Index nodes by queue so a pass over many tasks does not scan every node each time.
    by_queue: dict[str, list[NodeView]] = {}
    for n in views:
        for q in n.queues:
            by_queue.setdefault(q, []).append(n)
    for task in sorted(tasks, key=lambda t: (-t.priority, t.seq)):
        need = task.resources
        best: NodeView | None = None
        best_score = 0.0
        for n in by_queue.get(task.queue, ()):
            if task.runtime not in n.runtimes or not need.fits_in(n.free):
                continue
            if task.node_selector and not _labels_match(n, task.node_selector):
                continue
            if need.gpu and len(n.free_gpus) < need.gpu:
                continue
            s = _score(n, need, strategy)
            if best is None or s > best_score:
                best, best_score = n, s
        if best is None:
            # Tasks that ask for the same thing wait for the same reason: work it out once per pass.
            key = (task.queue, task.runtime, need, tuple(sorted(task.node_selector.items())))
            reason = why.get(key)
            if reason is None:
                reason = why[key] = _why_not(task, views)
            result.reasons[task.id] = reason
            continue
        gpus = tuple(best.free_gpus[: need.gpu])
        del best.free_gpus[: need.gpu]
        best.allocated = best.allocated + need
        result.placements.append(Placement(task.id, best.id, gpus))
    return result
