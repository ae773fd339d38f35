"""``flow.job_rows``: each task row's stored spec is the task's own stored form (``dump_spec`` of the task),
though it is taken from the job's spec, dumped once, instead of dumped again per task."""

from __future__ import annotations

from typing import Any

import pytest

from corral.coordinator.flow import job_rows
from corral.domain.spec import JobSpec, dump_spec

SPECS: list[dict[str, Any]] = [
    {"name": "one", "tasks": [{"run": "echo hi"}]},
    {"name": "rich", "queue": "q", "priority": 3, "tags": ["a"], "secrets": {"TOKEN": "s3cret"},
     "tasks": [
         {"name": "build", "image": "busybox", "run": "make", "env": {"A": "1"},
          "resources": {"cpu": 0.5, "memory": "64Mi"}, "retry": {"limit": 2}, "timeout": "5m",
          "node_selector": {"arch": "amd64"}},
         {"name": "fan", "parallel": {"tasks": [{"run": "echo a"}, {"run": "echo b"}]}},
         {"name": "loop", "each": {"list": "{{ [1, 2] }}", "task": {"run": "echo {{ item.value }}"}}},
         {"name": "wrapped", "run": "main", "pre": [{"run": "setup"}], "post": [{"run": "teardown"}]},
     ]},
    {"name": "graph", "tasks": [{"name": "a", "run": "a"}, {"name": "b", "run": "b", "depends_on": ["a"]}]},
]


@pytest.mark.parametrize("raw", SPECS, ids=[s["name"] for s in SPECS])
def test_a_task_rows_spec_is_the_tasks_own_stored_form(raw: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(raw)
    job, tasks = job_rows(spec, 0.0)
    assert [t["spec"] for t in tasks] == [dump_spec(t) for t in spec.tasks]
    assert job["spec"] == dump_spec(spec)
