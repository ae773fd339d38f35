"""Bounds that hold after evaluation: an evaluated task is held to a submitted task's limits, and one task's
expressions share one time budget."""

from __future__ import annotations

from typing import Any

from corral.coordinator.flow import Flow, task_row
from corral.domain.spec import JobSpec

JOB: dict[str, Any] = {"id": "j1", "name": "job", "state": "running", "spec": {}}
CTX: dict[str, Any] = {"inputs": {}, "secrets": {}, "tasks": {}, "job": {"id": "j1", "name": "job", "state": "RUNNING"}}


def _decide(task: dict[str, Any]) -> Any:
    t = JobSpec.model_validate({"tasks": [task]}).tasks[0]
    row = task_row("j1", 0, t, "default", 0, 0.0, True)
    row["job_seq"] = 1
    [opening] = Flow().decide([row], {"j1": JOB}, {"j1": CTX}, 0.0)
    return opening


def test_an_evaluated_task_is_held_to_the_bounds_of_a_submitted_one() -> None:
    ok = _decide({"name": "t", "run": "echo {{ job.name }}", "env": {"A": "{{ 'x' * 10 }}"}})
    assert ok.action == "evaluate" and ok.values["spec"]["env"] == {"A": "x" * 10}
    for bad in ({"env": {"A": "{{ 'x' * 1000000 }}"}},  # one value over 128 KiB
                {"env": {f"E{i}": "{{ 'x' * 1000000 }}" for i in range(20)}},  # stopped while it renders
                {"env": {"A": "{{ '\\ud800' }}"}},  # a lone surrogate
                {"command": ["{{ '\\ud800' }}"]}, {"files": {"f": "{{ 'x' * 600000 }}", "g": "{{ 'y' * 600000 }}"}}):
        o = _decide({"name": "t", **({"run": "true"} if "command" not in bad else {}), **bad})
        assert o.action == "fail", bad
        assert "t" in (o.error or "")
