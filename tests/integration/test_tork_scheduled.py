"""Tork's scheduled-jobs API on a real `corral up`: a tick fires a job that GET /jobs lists and that
completes; pause, resume, delete and their errors; bad input; YAML bodies; paging."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Cluster, wait_until
from tests.support import ID_RE, cron_pass_evidence, due_now
from tests.support import TORK_DONE as DONE
from tests.support import TORK_TIME_RE as TIME_RE

YAML_JOB = """
name: every minute
description: says hi
tags: [cron]
inputs:
  greeting: hi
cron: "* * * * *"
tasks:
- name: hello
  run: echo hi
"""


def _create(c: Cluster, body: str | dict[str, Any], ctype: str = "text/yaml") -> dict[str, Any]:
    if isinstance(body, dict):
        r = c.client.post("/scheduled-jobs", json=body)
    else:
        r = c.client.post("/scheduled-jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _jobs(c: Cluster, name: str) -> list[dict[str, Any]]:
    """Tork's GET /jobs, the jobs of that name (the evidence of a cron pass makes jobs of its own)."""
    return [j for j in c.get("/jobs")["items"] if j["name"] == name]


def test_a_tick_fires_a_tork_job_that_completes(standalone: Cluster) -> None:
    c = standalone
    sch = _create(c, YAML_JOB)
    assert ID_RE.match(sch["id"]) and TIME_RE.match(sch["createdAt"]) and TIME_RE.match(sch["nextRunAt"])
    assert {k: sch[k] for k in ("name", "description", "cron", "state", "tags", "inputs", "secrets")} == {
        "name": "every minute", "description": "says hi", "cron": "* * * * *", "state": "ACTIVE",
        "tags": ["cron"], "inputs": {"greeting": "hi"}, "secrets": {}}
    assert sch["tasks"] == [{"name": "hello", "run": "echo hi"}]
    assert sch["lastRunAt"] is None and sch["lastJobId"] is None
    assert c.get(f"/scheduled-jobs/{sch['id']}") == sch
    assert c.get("/jobs")["items"] == []  # a scheduled job is not a job

    due_now(c, sch["id"])
    jobs = wait_until(lambda: _jobs(c, "every minute"), 5, what="the fired job in GET /jobs")
    assert len(jobs) == 1 and jobs[0]["name"] == "every minute" and jobs[0]["tags"] == ["cron"]
    job_id = jobs[0]["id"]
    done = c.wait_for(f"/jobs/{job_id}", DONE)
    assert done["state"] == "COMPLETED" and done["tasks"] == [{"name": "hello", "run": "echo hi"}]
    assert [p["contents"] for p in c.get(f"/jobs/{job_id}/log")["items"]] == ["hi\n"]
    got = c.get(f"/scheduled-jobs/{sch['id']}")
    assert got["lastJobId"] == job_id and TIME_RE.match(got["lastRunAt"])
    assert got["nextRunAt"] > got["lastRunAt"]
    cron_pass_evidence(c)  # another full firing pass: still one job for that tick
    # (the schedule's own next tick, at the next minute, may come meanwhile on a slow run: not that tick)
    assert len([j for j in _jobs(c, "every minute") if j["createdAt"] < got["nextRunAt"]]) == 1


def test_pause_resume_delete(standalone: Cluster) -> None:
    c = standalone
    sch = _create(c, {"name": "nightly", "cron": "0 3 * * *", "tasks": [{"run": "echo night"}]})
    base = f"/scheduled-jobs/{sch['id']}"
    r = c.client.put(f"{base}/resume")
    assert r.status_code == 400 and r.json() == {"message": "scheduled job is not paused"}
    assert c.client.put(f"{base}/pause").json() == {"status": "OK"}
    assert c.get(base)["state"] == "PAUSED"
    r = c.client.put(f"{base}/pause")
    assert r.status_code == 400 and r.json() == {"message": "scheduled job is not active"}

    due_now(c, sch["id"])
    cron_pass_evidence(c)  # a firing pass that saw it due
    assert _jobs(c, "nightly") == []  # paused: nothing fires
    assert c.client.put(f"{base}/resume").json() == {"status": "OK"}
    resumed = c.get(base)
    assert resumed["state"] == "ACTIVE" and resumed["nextRunAt"] == sch["nextRunAt"]  # the next real tick

    assert c.client.delete(base).json() == {"status": "OK"}
    for method, path in (("GET", base), ("PUT", f"{base}/pause"), ("PUT", f"{base}/resume"), ("DELETE", base)):
        r = c.client.request(method, path)
        assert r.status_code == 404 and r.json() == {"message": "scheduled job not found"}, (method, path)
    assert c.get("/scheduled-jobs")["totalItems"] == 0


def test_listing_is_newest_first_and_paged(standalone: Cluster) -> None:
    c = standalone
    for i in range(3):
        _create(c, f"name: s{i}\ncron: '@daily'\ntasks:\n- run: 'true'\n", "application/x-yaml")
    lst = c.get("/scheduled-jobs?size=2")
    assert {k: lst[k] for k in ("number", "size", "totalPages", "totalItems")} == {
        "number": 1, "size": 2, "totalPages": 2, "totalItems": 3}
    assert [s["name"] for s in lst["items"]] == ["s2", "s1"]
    assert lst["items"][0]["cron"] == "@daily" and "tasks" not in lst["items"][0]
    assert [s["name"] for s in c.get("/scheduled-jobs?size=2&page=2")["items"]] == ["s0"]
    assert c.get("/scheduled-jobs")["size"] == 3  # size 10 by default
    # As Tork's handler: a size above 20 is 20, below 1 is 1, and a page below 1 is page 1.
    for i in range(3, 22):
        _create(c, f"name: s{i}\ncron: '@daily'\ntasks:\n- run: 'true'\n", "application/x-yaml")
    big = c.get("/scheduled-jobs?size=50&page=0")
    assert (big["number"], big["size"], big["totalPages"], big["totalItems"]) == (1, 20, 2, 22)
    assert [s["name"] for s in c.get("/scheduled-jobs?size=50&page=2")["items"]] == ["s1", "s0"]
    one = c.get("/scheduled-jobs?size=0")
    assert (one["size"], one["totalPages"], [s["name"] for s in one["items"]]) == (1, 22, ["s21"])


@pytest.mark.parametrize(("ctype", "body", "message"), [
    ("text/yaml", "name: x\ntasks:\n- run: 'true'\n", "cron: a scheduled job needs a cron expression"),
    ("text/yaml", "name: x\ncron: '61 * * * *'\ntasks:\n- run: 'true'\n", "cron: '61 * * * *' is not a valid"),
    ("text/yaml", "name: x\ncron: every minute\ntasks:\n- run: 'true'\n", "cron: 'every minute' has 2 fields"),
    ("text/yaml", "name: x\ncron: '@often'\ntasks:\n- run: 'true'\n", "cron: unknown alias '@often'"),
    ("text/yaml", "name: x\ncron: '* * * * *'\ntasks: []\n", "tasks: a job needs at least one task"),
    ("text/yaml", "cron: '* * * * *'\ntasks:\n- run: 'true'\n  colour: red\n", "tasks[0].colour is not a known"),
    ("text/yaml", "cron: '* * * * *'\ninputs: {a: [1]}\ntasks:\n- run: 'true'\n", "inputs.a: Input should be"),
    ("text/plain", "cron: '* * * * *'\ntasks:\n- run: 'true'\n", "content type 'text/plain' is not accepted"),
    ("application/json", "{not json", "the job cannot be parsed"),
    ("application/json", "[1]", "the job must be a mapping"),
])
def test_bad_scheduled_jobs(module_standalone: Cluster, ctype: str, body: str, message: str) -> None:
    """One `corral up` for every case (tests/conftest.py), used by no other test: none leaves a schedule."""
    r = module_standalone.client.post("/scheduled-jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == (415 if ctype == "text/plain" else 400) and list(r.json()) == ["message"]
    assert r.json()["message"].startswith(message), r.json()
    assert module_standalone.get("/scheduled-jobs")["totalItems"] == 0


def test_secrets_are_redacted(standalone: Cluster) -> None:
    c = standalone
    body = {"name": "with a secret", "cron": "@hourly", "secrets": {"token": "s3cr3t-value"},
            "tasks": [{"name": "call", "run": "echo calling", "env": {"TOKEN": "s3cr3t-value"}}]}
    sch = _create(c, body)
    for view in (sch, c.get(f"/scheduled-jobs/{sch['id']}"), c.get("/scheduled-jobs")["items"][0]):
        assert "s3cr3t-value" not in str(view)
    assert sch["secrets"] == {"token": "[REDACTED]"}
    assert sch["tasks"][0]["env"] == {"TOKEN": "[REDACTED]"}
