"""Pure rules: sizes, durations, states and job specifications."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.domain.resources import Resources, format_size, parse_duration, parse_size
from corral.domain.spec import JobSpec
from corral.domain.states import TaskState, job_state_from_tasks, task_can_move


@pytest.mark.parametrize(("text", "expected"), [
    ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1.5Gi", int(1.5 * 2**30)),
    ("1024", 1024), (2048, 2048), ("2gb", 2 * 10**9),
])
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "12 parsecs", "-1Mi", "Mi"])
def test_bad_sizes_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(bad)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2", 2.0), (1.5, 1.5),
])
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "1x", "s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_format_size_round_trips() -> None:
    assert format_size(parse_size("256Mi")) == "256Mi"
    assert format_size(2**30) == "1Gi"


def test_fits_and_shortfall() -> None:
    free = Resources(cpu=1, memory=2**30, gpu=0)
    assert Resources(cpu=0.5, memory=2**29).fits_in(free)
    need = Resources(cpu=2, memory=2**31, gpu=1)
    assert not need.fits_in(free)
    assert need.shortfall(free) == ["cpu 2 > 1", "memory 2Gi > 1Gi", "gpu 1 > 0"]


def test_finished_tasks_never_move_except_by_restart() -> None:
    assert not task_can_move(TaskState.COMPLETED, TaskState.RUNNING)
    assert not task_can_move(TaskState.CANCELLED, TaskState.COMPLETED)
    assert not task_can_move(TaskState.FAILED, TaskState.COMPLETED)
    assert task_can_move(TaskState.RUNNING, TaskState.LOST)
    assert task_can_move(TaskState.FAILED, TaskState.PENDING)  # restart


def test_job_state_from_tasks() -> None:
    assert job_state_from_tasks([TaskState.COMPLETED, TaskState.PENDING]) == "running"
    assert job_state_from_tasks([TaskState.COMPLETED, TaskState.COMPLETED]) == "completed"
    assert job_state_from_tasks([TaskState.FAILED, TaskState.PENDING]) == "failed"
    assert job_state_from_tasks([TaskState.PENDING]) == "pending"


def test_spec_defaults_and_names() -> None:
    spec = JobSpec.model_validate({"tasks": [{"run": "echo a"}, {"command": ["echo", "b"], "name": "b"}]})
    assert [t.name for t in spec.tasks] == ["task-1", "b"]
    assert spec.queue == "default" and spec.priority == 0
    assert spec.tasks[0].argv() == ["sh", "-c", "echo a"]
    assert spec.tasks[0].resources.resolve().cpu == 0.05


@pytest.mark.parametrize(("job", "field", "words"), [
    ({"tasks": []}, "tasks", "at least 1"),
    ({"tasks": [{}]}, "tasks.0", "needs 'run'"),
    ({"tasks": [{"run": "x", "command": ["y"]}]}, "tasks.0", "not both"),
    ({"tasks": [{"run": "x", "resources": {"memory": "lots"}}]}, "tasks.0.resources.memory", "not a size"),
    ({"tasks": [{"run": "x", "timeout": "soon"}]}, "tasks.0.timeout", "not a duration"),
    ({"tasks": [{"run": "x", "colour": "red"}]}, "tasks.0.colour", "Extra"),
    ({"tasks": [{"run": "x"}], "priority": 10}, "priority", "less than or equal"),
    ({"tasks": [{"run": "x", "name": "a"}, {"run": "y", "name": "a"}]}, "", "unique"),
    ({"tasks": [{"run": "x", "env": {"1BAD": "v"}}]}, "tasks.0.env", "not a valid environment"),
])
def test_bad_specs_name_the_field(job: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(job)
    err = e.value.errors()[0]
    assert ".".join(str(p) for p in err["loc"]).startswith(field)
    assert words in err["msg"]
