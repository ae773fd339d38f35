"""Job, task and execution states and the transition table every change is checked against."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    LOST = "lost"


class JobState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeState(StrEnum):
    READY = "ready"
    DRAINING = "draining"  # shutting down: finishes what it runs, takes nothing new
    DOWN = "down"


TERMINAL_TASK_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED, TaskState.LOST}
)
TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_TASK_STATES = frozenset({TaskState.SCHEDULED, TaskState.RUNNING})

# Which state may follow which. "running -> pending" and "scheduled -> pending" are a retry
# (or a reschedule after the node was lost); everything terminal is final.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # A task made of others (parallel, each, subjob, pre/post) is never placed: the coordinator opens it
    # (pending -> running), or it ends at once (an empty each, a detached subjob, an expression that fails).
    TaskState.PENDING: frozenset({TaskState.SCHEDULED, TaskState.CANCELLED, TaskState.SKIPPED, TaskState.RUNNING,
                                  TaskState.COMPLETED, TaskState.FAILED}),
    TaskState.SCHEDULED: frozenset(
        {TaskState.RUNNING, TaskState.PENDING, TaskState.COMPLETED, TaskState.FAILED,
         TaskState.CANCELLED, TaskState.LOST}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.LOST, TaskState.PENDING}
    ),
    # A finished task moves again only when the user restarts its job: a new run with a new execution.
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset({TaskState.PENDING}),
    TaskState.CANCELLED: frozenset({TaskState.PENDING}),
    TaskState.SKIPPED: frozenset({TaskState.PENDING}),
    TaskState.LOST: frozenset({TaskState.PENDING}),
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.SCHEDULED, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SCHEDULED: frozenset(
        {JobState.RUNNING, JobState.PENDING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.PENDING, JobState.SCHEDULED, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    ),
    # A restart takes a failed or cancelled job back to pending.
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.CANCELLED: frozenset({JobState.PENDING}),
}


def task_can_move(src: TaskState, dst: TaskState) -> bool:
    return dst in TASK_TRANSITIONS[src]


def job_can_move(src: JobState, dst: JobState) -> bool:
    return dst in JOB_TRANSITIONS[src]


def task_sources(dst: TaskState) -> list[str]:
    """Every state a task may be in for a move to ``dst``: the 'expected' side of a compare-and-set."""
    return sorted(s.value for s, targets in TASK_TRANSITIONS.items() if dst in targets)


def job_sources(dst: JobState) -> list[str]:
    return sorted(s.value for s, targets in JOB_TRANSITIONS.items() if dst in targets)


def job_state_from_tasks(states: list[TaskState]) -> JobState:
    """The state a job with tasks in these states is in (tasks run in order)."""
    if any(s in (TaskState.FAILED, TaskState.LOST) for s in states):
        return JobState.FAILED
    if any(s == TaskState.CANCELLED for s in states):
        return JobState.CANCELLED
    if all(s in (TaskState.COMPLETED, TaskState.SKIPPED) for s in states):
        return JobState.COMPLETED
    if any(s == TaskState.RUNNING for s in states):
        return JobState.RUNNING
    if any(s == TaskState.SCHEDULED for s in states):
        return JobState.SCHEDULED
    started = any(s in (TaskState.COMPLETED, TaskState.SKIPPED) for s in states)
    return JobState.RUNNING if started else JobState.PENDING
