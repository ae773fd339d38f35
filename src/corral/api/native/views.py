"""How jobs, tasks, executions and nodes look in the native API."""

from __future__ import annotations

from typing import Any

from corral.api.timefmt import rfc3339
from corral.domain import workflow
from corral.domain.nodes import safe_node
from corral.domain.resources import format_size
from corral.store.sql import Row


def execution_view(e: Row) -> dict[str, Any]:
    return {"id": e["id"], "attempt": e["attempt"], "node_id": e["node_id"], "state": e["state"],
            "container_id": e["container_id"], "exit_code": e["exit_code"], "error": e["error"],
            "gpus": e["gpus"], "scheduled_at": rfc3339(e["scheduled_at"]),
            "started_at": rfc3339(e["started_at"]), "finished_at": rfc3339(e["finished_at"]),
            **({"ports": e["ports"]} if "ports" in e else {})}


def task_view(t: Row, executions: list[Row] | dict[str, list[Row]] | None = None,
              secrets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A task; ``executions``: all of the job's (a list) or, cheaper for many tasks, by task id."""
    spec = t["spec"]
    out: dict[str, Any] = {
        "id": t["id"], "name": t["name"], "position": t["position"], "state": t["state"],
        "kind": t["kind"], "parent_id": t["parent_id"], "output": t["output"], "progress": _progress(t),
        "image": spec.get("image"), "run": spec.get("run"), "command": spec.get("command"),
        "entrypoint": spec.get("entrypoint"), "env": spec.get("env", {}), "workdir": spec.get("workdir"),
        "queue": t["queue"], "runtime": t["runtime"], "node_selector": t["node_selector"],
        "resources": {"cpu": t["cpu"], "memory": format_size(t["memory"]), "disk": format_size(t["disk"]),
                      "gpu": t["gpu"]},
        "timeout": spec.get("timeout"), "retry": spec.get("retry"),
        "attempts": t["attempts"], "node_id": t["node_id"], "exit_code": t["exit_code"], "error": t["error"],
        "reason": t["reason"] or ("waiting in queue" if t["state"] == "pending" and t["ready_at"] else None),
        "created_at": rfc3339(t["created_at"]), "started_at": rfc3339(t["started_at"]),
        "finished_at": rfc3339(t["finished_at"]),
    }
    for k in ("if", "var", "depends_on", "parallel", "each", "subjob", "pre", "post", "sidecars", "mounts", "files",
              "ports", "probe"):
        if k in spec:
            out[k] = spec[k]
    if t["subjob_id"]:
        out["subjob_id"] = t["subjob_id"]
    if t["state"] == "pending" and t["ready_at"] is None:
        deps = spec.get("depends_on")
        if deps:  # a task of a graph job waits for its dependencies, not for the task listed before it
            out["reason"] = "waiting for " + ", ".join(f"'{d}'" for d in deps)
        elif t["position"] > 0:
            out["reason"] = "waiting for its turn" if t["parent_id"] else "waiting for the task before it"
    if isinstance(executions, dict):
        out["executions"] = [execution_view(e) for e in executions.get(t["id"], ())]
    elif executions is not None:
        out["executions"] = [execution_view(e) for e in executions if e["task_id"] == t["id"]]
    return workflow.shown(out, secrets or ())  # a subjob's or each's spec in it: its secrets masked too


def _progress(t: Row) -> float:
    """0-100: what the task reported while it ran; 100 once it completed."""
    if t["state"] == "completed":
        return 100.0
    return float(t["progress"] or 0.0)


def job_view(j: Row, tasks: list[Row] | None = None, executions: list[Row] | None = None) -> dict[str, Any]:
    spec = j["spec"]
    secrets = workflow.secrets_in(spec)  # its subjobs' too
    out: dict[str, Any] = {
        "id": j["id"], "name": j["name"], "state": j["state"], "queue": j["queue"],
        "priority": j["priority"], "tags": j["tags"], "env": spec.get("env", {}), "error": j["error"],
        "task_count": j["task_count"], "created_at": rfc3339(j["created_at"]),
        "started_at": rfc3339(j["started_at"]), "finished_at": rfc3339(j["finished_at"]),
        "output": j.get("output"), "parent_job_id": j["parent_job_id"], "parent_task_id": j["parent_task_id"],
        "namespace": j.get("namespace") or "default", "created_by": j.get("created_by"),
    }
    for k in ("description", "inputs", "secrets", "defaults", "webhooks", "autoDelete"):
        if spec.get(k):
            out[k] = spec[k]
    out = workflow.shown(out, secrets)
    if tasks is not None:
        by_task: dict[str, list[Row]] = {}
        for e in executions or ():
            by_task.setdefault(e["task_id"], []).append(e)
        out["tasks"] = [task_view(t, by_task, secrets) for t in tasks]
    return out


def tasks_page_view(j: Row, tasks: list[Row], executions: list[Row], next_cursor: str | None) -> dict[str, Any]:
    """One page of a job's tasks, with their executions, for GET /v1/jobs/{id}/tasks."""
    secrets = workflow.secrets_in(j["spec"])
    by_task: dict[str, list[Row]] = {}
    for e in executions:
        by_task.setdefault(e["task_id"], []).append(e)
    return {"items": [task_view(t, by_task, secrets) for t in tasks], "next_cursor": next_cursor}


def node_view(n: Row, alloc: Row | None = None) -> dict[str, Any]:
    n = safe_node(n)  # a malformed stored row still answers
    a = alloc or {}
    return {
        "id": n["id"], "name": n["name"], "hostname": n["hostname"], "version": n["version"],
        "state": n["state"],
        "capacity": {"cpu": n["cpu"], "memory": n["memory"], "disk": n["disk"], "gpu": len(n["gpus"] or [])},
        "allocated": {"cpu": round(float(a.get("cpu") or 0), 3), "memory": int(a.get("memory") or 0),
                      "disk": int(a.get("disk") or 0), "gpu": int(a.get("gpu") or 0)},
        "running": int(a.get("n") or 0),
        "gpus": n["gpus"], "labels": n["labels"], "runtimes": n["runtimes"], "queues": n["queues"],
        "usage": n["usage"], "registered_at": rfc3339(n["registered_at"]),
        "last_heartbeat": rfc3339(n["last_heartbeat"]),
        "address": n.get("address"), "pods": int(a.get("pods") or 0),
        # an operator's drain (POST /v1/nodes/{id}/drain): since when, and when what still runs moves
        "drain": None if n.get("drain_requested_at") is None else {
            "since": rfc3339(n["drain_requested_at"]),
            "deadline": rfc3339(n["drain_deadline"]) if n.get("drain_deadline") is not None else None},
    }
