"""What now, for pods: what should run against what runs, as pure functions (no I/O, no clock).

The coordinator reads the pods and nodes, asks ``reconcile`` what to do, and commits each answer with a
compare-and-set on the pod's state and instance; a worker's supervisor asks ``restart_decision`` and
``backoff`` when a container exits. Every rule about restarts, dead nodes, TTLs and deletes is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from corral.domain.pods import PodState

BACKOFF_START = 10.0  # seconds before the first restart of a container that exited
BACKOFF_MAX = 300.0  # the back-off doubles up to this
BACKOFF_RESET = 600.0  # a container that ran this long starts again from BACKOFF_START

Action = Literal["replace", "fail", "terminated", "delete", "unknown"]


# -- restarts on the node ------------------------------------------------------------------------------
def backoff(streak: int) -> float:
    """Seconds to wait before restarting a container that has exited ``streak`` times in a row (each time
    before it had run for BACKOFF_RESET): 10 s, 20 s, 40 s, ... at most 5 min. 0 for a streak of 0."""
    if streak <= 0:
        return 0.0
    return min(BACKOFF_START * 2.0 ** min(streak - 1, 30), BACKOFF_MAX)


def next_streak(streak: int, ran_for: float) -> int:
    """The streak after a container exits having run ``ran_for`` seconds: a run of BACKOFF_RESET or more
    starts the count again."""
    return 1 if ran_for >= BACKOFF_RESET else streak + 1


def restart_decision(policy: str, exit_code: int | None) -> bool:
    """Whether a container that exited with ``exit_code`` (None: killed, or its start failed) is started
    again under the pod's restart policy. A failed liveness probe counts as a failure."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def pod_phase(policy: str, containers: Sequence[tuple[str, int | None]]) -> str:
    """The phase a node reports for a pod from its containers' ``(state, exit_code)``: ``running`` while
    any runs or will be restarted; else ``succeeded`` if all exited 0, ``failed`` otherwise."""
    if not containers:
        return "running"
    if any(state != "terminated" or restart_decision(policy, code) for state, code in containers):
        return "running"
    return "succeeded" if all(code == 0 for _, code in containers) else "failed"


def backoff_reason(container: str, delay: float) -> str:
    """The reason shown while a container waits to be started again."""
    return f"back-off {delay:g}s restarting {container}"


# -- the coordinator's pass ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodView:
    id: str
    state: str
    desired: str  # run | stop
    restart_policy: str
    node_id: str | None
    instance_id: str | None
    ttl_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    name: str
    state: str  # ready | draining | down
    last_heartbeat: float


@dataclass(frozen=True, slots=True)
class Decision:
    """One change to one pod, to commit only if the pod is still in ``state`` on ``instance_id``.

    ``replace``: pending again with no node (ports and capacity released) to be placed elsewhere;
    ``fail``: failed with ``reason``; ``terminated``: a deleted pod whose containers are gone (or never
    ran); ``delete``: desired stop (its TTL ran out); ``unknown``: its node is silent."""

    pod_id: str
    action: Action
    state: str
    instance_id: str | None
    reason: str


LIVE = (PodState.SCHEDULED.value, PodState.RUNNING.value, PodState.UNKNOWN.value)


def reconcile(pods: Iterable[PodView], nodes: Mapping[str, NodeView], now: float,
              heartbeat_interval: float) -> list[Decision]:
    """For each pod that is not final: what changes now. ``nodes`` holds every node the pods name (one
    that is missing is gone). A node is silent after two heartbeat intervals without one, and dead once
    it is ``down`` (the reaper marks it after its lease, ``--node-ttl``)."""
    out: list[Decision] = []
    silent_after = 2 * heartbeat_interval
    for p in pods:
        node = nodes.get(p.node_id) if p.node_id else None
        dead = p.node_id is not None and (node is None or node.state == "down")
        where = f"node {node.name if node else p.node_id}"
        if p.desired == "stop" or p.state == PodState.TERMINATING.value:
            # Deleted: over at once if it never ran anywhere or its node is gone; else its node says so.
            if p.state == PodState.PENDING.value or p.node_id is None or dead:
                why = "deleted" if not dead else f"deleted; {where} is down, so its containers are not waited for"
                out.append(Decision(p.id, "terminated", p.state, p.instance_id, why))
            elif p.state != PodState.TERMINATING.value:
                out.append(Decision(p.id, "delete", p.state, p.instance_id, "deleted"))
            continue
        if p.ttl_expires_at is not None and now >= p.ttl_expires_at:
            # Expired: deleted, over at once where nothing runs (never placed, or its node is gone).
            over = p.state == PodState.PENDING.value or p.node_id is None or dead
            out.append(Decision(p.id, "terminated" if over else "delete", p.state, p.instance_id, "its ttl ran out"))
            continue
        if p.state not in LIVE:
            continue
        if dead:
            why = f"{where} is down"
            if p.restart_policy == "Never":
                out.append(Decision(p.id, "fail", p.state, p.instance_id, f"{why}; restartPolicy Never"))
            else:
                out.append(Decision(p.id, "replace", p.state, p.instance_id, f"{why}: placing it again"))
        elif node is not None and node.state == "draining" and p.restart_policy != "Never":
            # A drained node: a pod that restarts anyway is placed on another node now (its containers here
            # are stopped once it is placed again); one that never restarts finishes where it is.
            out.append(Decision(p.id, "replace", p.state, p.instance_id, f"{where} is draining: placing it again"))
        elif node is not None and p.state != PodState.UNKNOWN.value and now - node.last_heartbeat > silent_after:
            out.append(Decision(p.id, "unknown", p.state, p.instance_id,
                                f"{where} has not been heard from for {now - node.last_heartbeat:.0f}s"))
    return out


def final_state(phase: str) -> str | None:
    """The pod state a node's report of ``phase`` ends the pod in, if it ends it (``stopped``: the
    containers of a pod being deleted are gone)."""
    return {"succeeded": PodState.SUCCEEDED.value, "failed": PodState.FAILED.value,
            "stopped": PodState.TERMINATED.value}.get(phase)
