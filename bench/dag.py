"""Validate and plan a job of 1,000 tasks with dependencies (depends_on), in process, no server.

The job is a layered graph: ``--width`` tasks per layer, each task depending on up to three tasks of the
layer before. Validate = ``JobSpec.model_validate`` of the JSON body (fields, unique names, unknown
names, cycles) plus the topological order (``corral.domain.dag.check``). Plan = the rows the coordinator
inserts (``job_rows``: which tasks are ready) and ``corral.scheduler.plan`` placing the ready tasks onto
``--nodes`` nodes. The issue's target: under 100 ms for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from corral.coordinator.service import job_rows
from corral.domain import dag
from corral.domain.resources import Resources
from corral.domain.spec import JobSpec
from corral.scheduler import NodeView, TaskView, plan


def body(n: int, width: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        layer = i // width
        prev = range((layer - 1) * width, layer * width) if layer else range(0)
        tasks.append({"name": f"t{i}", "run": "true",
                      "depends_on": [f"t{j}" for j in prev if j % 7 == i % 7][:3]})
    return {"name": "dag", "tasks": tasks}


def once(raw: dict[str, Any], nodes: list[NodeView]) -> tuple[float, float, int, int]:
    t0 = time.perf_counter()
    spec = JobSpec.model_validate(raw)
    dag.check(spec.dependencies())
    t1 = time.perf_counter()
    _, rows = job_rows(spec, time.time())
    ready = [TaskView(r["id"], r["job_id"], r["queue"], r["priority"], 1,
                      Resources(r["cpu"], r["memory"], r["disk"], r["gpu"]), r["runtime"], r["node_selector"])
             for r in rows if r["ready_at"] is not None]
    result = plan(nodes, ready)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(ready), len(result.placements)


def run(n: int = 1000, width: int = 100, nodes: int = 10, repeat: int = 20) -> dict[str, object]:
    raw = body(n, width)
    views = [NodeView(f"n{i}", f"n{i}", Resources(64, 2**38, 2**40, 0), Resources(), {},
                      frozenset({"process"}), frozenset({"default"})) for i in range(nodes)]
    once(raw, views)  # warm up
    runs = [once(raw, views) for _ in range(repeat)]
    v = [r[0] * 1000 for r in runs]
    p = [r[1] * 1000 for r in runs]
    return {"tasks": n, "edges": sum(len(t["depends_on"]) for t in raw["tasks"]), "ready": runs[0][2],
            "placed": runs[0][3],
            "validate_ms_p50": round(statistics.median(v), 2), "validate_ms_max": round(max(v), 2),
            "plan_ms_p50": round(statistics.median(p), 2), "plan_ms_max": round(max(p), 2),
            "total_ms_max": round(max(a + b for a, b in zip(v, p, strict=True)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    print(json.dumps(run(a.tasks, a.width, a.nodes, a.repeat), indent=2))


if __name__ == "__main__":
    main()
