"""Bounds that hold after evaluation: an evaluated task is held to a submitted task's limits, and one task's
expressions share one time budget."""

from __future__ import annotations

from typing import Any

import pytest

from corral.coordinator import flow
from corral.coordinator.flow import Flow, task_row
from corral.domain import expr
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


def test_one_tasks_expressions_share_one_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves 10 ms at every look: each value's loop takes about 0.5 s of it, under the 1 s one
    # expression may take, but 20 of them take 10 s, past the task's budget.
    clock = [0.0]

    def tick() -> float:
        clock[0] += 0.01
        return clock[0]

    monkeypatch.setattr(expr.time, "monotonic", tick)
    slow = "{% for i in sequence(0, 50) %}{% endfor %}x"
    o = _decide({"name": "t", "run": "true", "env": {f"E{i}": slow for i in range(20)}})
    assert o.action == "fail" and "longer than" in (o.error or "")
    assert clock[0] < 2 * flow.TASK_BUDGET  # it stopped at the task's deadline, not after all 20 values
    assert _decide({"name": "t", "run": "true", "env": {"E": slow}}).action == "evaluate"


def test_a_long_name_given_by_a_composite_does_not_fail_the_evaluated_task() -> None:
    t = JobSpec.model_validate({"tasks": [{"name": "t", "run": "echo {{ job.name }}"}]}).tasks[0]
    row = task_row("j1", 0, t, "default", 0, 0.0, True)
    row.update(name="n" * 150, job_seq=1)
    row["spec"]["name"] = "n" * 150
    [opening] = Flow().decide([row], {"j1": JOB}, {"j1": CTX}, 0.0)
    assert opening.action == "evaluate", opening.error
