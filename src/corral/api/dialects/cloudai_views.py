"""How Corral's jobs and nodes look in the CloudAI API, and the store reads behind those views.

A CloudAI task is a Corral job (of one task when submitted here): ``task-<n>`` where ``n`` is the job's
sequence number. Its user is the job's ``user:<id>`` tag. Sizes are GB meaning GiB (2^30 bytes).
"""

from __future__ import annotations

import shlex
from typing import Any

from corral.api.timefmt import rfc3339
from corral.domain import workflow
from corral.domain.nodes import safe_node
from corral.store.sql import Row, Tx

GIB = 2**30
USER_TAG = "user:"
# Corral's job states as CloudAI's. A task waits in the queue until it runs, placed on a worker or not.
STATUS = {"pending": "queued", "scheduled": "queued", "running": "running", "completed": "completed",
          "failed": "failed", "cancelled": "cancelled"}
STATUS_FILTER = {"pending": ["pending", "scheduled"], "queued": ["pending", "scheduled"],
                 "running": ["running"], "completed": ["completed"], "failed": ["failed"],
                 "cancelled": ["cancelled"]}
TERMINAL = ("completed", "failed", "cancelled")


def task_id(seq: int) -> str:
    return f"task-{seq}"


def gb(n: int | float | None) -> float:
    return round(float(n or 0) / GIB, 3)


def user_of(tags: list[str] | None) -> str | None:
    return next((t[len(USER_TAG):] for t in tags or [] if t.startswith(USER_TAG)), None)


def progress(state: str, tasks: list[Row] | None = None) -> float:
    """100 once the job ended; before, the mean of its tasks' progress (what each wrote to $TORK_PROGRESS,
    100 for a completed one)."""
    if state in TERMINAL:
        return 100.0
    top = [t for t in tasks or [] if t.get("parent_id") is None]
    if not top:
        return 0.0
    return round(sum(100.0 if t["state"] == "completed" else float(t.get("progress") or 0.0) for t in top)
                 / len(top), 1)


def _command(spec: dict[str, Any]) -> str:
    if spec.get("run") is not None:
        return str(spec["run"])
    return shlex.join(spec.get("command") or spec.get("entrypoint") or [])


def task_view(job: Row, tasks: list[Row]) -> dict[str, Any]:
    first = tasks[0] if tasks else None
    spec = first["spec"] if first else {}
    current = next((t for t in tasks if t["state"] not in TERMINAL), tasks[-1] if tasks else None)
    node = next((t["node_id"] for t in reversed(tasks) if t["node_id"]), None)
    reason = None
    if job["state"] in ("pending", "scheduled") and current is not None:
        if current["state"] == "scheduled":
            reason = "placed on a worker, starting"
        else:
            reason = current["reason"] or "waiting in queue"
    return workflow.shown({
        "task_id": task_id(job["seq"]),
        "user_id": user_of(job["tags"]),
        "docker_image": spec.get("image"),
        "command": _command(spec),
        "req_cpu": float(first["cpu"]) if first else 0.0,
        "req_memory": gb(first["memory"]) if first else 0.0,
        "req_storage": gb(first["disk"]) if first else 0.0,
        "req_gpu": float(first["gpu"]) if first else 0.0,
        "status": STATUS.get(job["state"], job["state"]),
        "created_at": rfc3339(job["created_at"]),
        "started_at": rfc3339(job["started_at"]),
        "completed_at": rfc3339(job["finished_at"]),
        "worker_id": node,
        "progress": progress(job["state"], tasks),
        "reason": reason,
        "exit_code": current["exit_code"] if current and job["state"] in TERMINAL else None,
        "error": job["error"],
    }, workflow.secrets_in(job.get("spec") or {}))  # the one redaction every view of every API applies


def task_views(tx: Tx, jobs: list[Row]) -> list[dict[str, Any]]:
    by_job: dict[str, list[Row]] = {}
    for t in tx.tasks_of_jobs(j["id"] for j in jobs):
        by_job.setdefault(t["job_id"], []).append(t)
    return [task_view(j, by_job.get(j["id"], [])) for j in jobs]


def worker_view(n: Row, alloc: Row | None) -> dict[str, Any]:
    n = safe_node(n)  # a malformed stored row still answers
    a = alloc or {}
    total = {"cpu": float(n["cpu"]), "memory": gb(n["memory"]), "storage": gb(n["disk"]),
             "gpu": float(len(n["gpus"] or []))}
    used = {"cpu": round(float(a.get("cpu") or 0), 3), "memory": gb(a.get("memory")),
            "storage": gb(a.get("disk")), "gpu": float(a.get("gpu") or 0)}
    out: dict[str, Any] = {"worker_id": n["id"], "worker_ip": n["hostname"], "name": n["name"]}
    out.update({f"total_{k}": v for k, v in total.items()})
    out.update({f"allocated_{k}": v for k, v in used.items()})
    out.update({f"available_{k}": round(max(total[k] - used[k], 0.0), 3) for k in total})
    usage = n["usage"] or {}
    out.update({"is_active": n["state"] == "ready", "last_heartbeat": int(n["last_heartbeat"]),
                "registered_at": rfc3339(n["registered_at"]), "active_tasks": int(a.get("n") or 0),
                "cpu_usage": usage.get("cpu_percent"), "memory_usage": usage.get("memory_percent")})
    return out


def worker_views(tx: Tx) -> list[dict[str, Any]]:
    alloc = {a["node_id"]: a for a in tx.allocations()}
    return [worker_view(n, alloc.get(n["id"])) for n in tx.nodes()]


def running_on(tx: Tx, node_id: str) -> list[dict[str, Any]]:
    """The tasks placed on a worker (scheduled or running there)."""
    execs = tx.active_executions(node_id)
    jobs = {j["id"]: j for j in tx.jobs_by_ids({e["job_id"] for e in execs})}
    out = []
    for e in sorted(execs, key=lambda e: e["scheduled_at"]):
        j = jobs.get(e["job_id"])
        if j is not None:
            out.append({"task_id": task_id(j["seq"]), "user_id": user_of(j["tags"]),
                        "status": "running" if e["state"] == "running" else "queued",
                        "started_at": rfc3339(e["started_at"])})
    return out


def cluster_status(tx: Tx, workers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Totals over the active workers; task counts over every task the store holds."""
    workers = worker_views(tx) if workers is None else workers
    active = [w for w in workers if w["is_active"]]
    out: dict[str, Any] = {"total_workers": len(workers), "active_workers": len(active)}
    for k in ("cpu", "memory", "storage", "gpu"):
        out[f"total_{k}"] = round(sum(w[f"total_{k}"] for w in active), 3)
    for k in ("cpu", "memory", "storage", "gpu"):
        out[f"available_{k}"] = round(sum(w[f"available_{k}"] for w in active), 3)
    counts = tx.count_jobs_by_state()
    out.update({
        "total_tasks": sum(counts.values()),
        "running_tasks": counts.get("running", 0),
        "queued_tasks": counts.get("pending", 0) + counts.get("scheduled", 0),
        "completed_tasks": counts.get("completed", 0),
        "failed_tasks": counts.get("failed", 0),
        "cancelled_tasks": counts.get("cancelled", 0),
    })
    return out
