"""Node drain's and nomad-lite's gRPC pure parts: a drained node's pods, the log of committed changes,
the millisecond bounds of ListJobs."""

from __future__ import annotations

from typing import Any

import pytest

from corral.api.dialects.base import DialectError
from corral.api.dialects.nomadlite_core import _ms, job_uuid, state_changes, worker_number
from corral.domain import reconcile
from corral.domain.reconcile import NodeView, PodView

NOW = 1000.0
DRAINING = NodeView("n1", "one", "draining", NOW - 1)


def _pod(**kw: Any) -> PodView:
    base: dict[str, Any] = {"id": "p", "state": "running", "desired": "run", "restart_policy": "Always",
                            "node_id": "n1", "instance_id": "i1", "ttl_expires_at": None}
    return PodView(**{**base, **kw})


@pytest.mark.parametrize("policy, moved", [("Always", True), ("OnFailure", True), ("Never", False)])
def test_a_drained_nodes_pods_that_restart_are_placed_elsewhere(policy: str, moved: bool) -> None:
    out = reconcile.reconcile([_pod(restart_policy=policy)], {"n1": DRAINING}, NOW, heartbeat_interval=3)
    if moved:
        [d] = out
        assert (d.action, d.reason) == ("replace", "node one is draining: placing it again")
    else:
        assert out == []  # it finishes where it runs
    # not yet placed, or deleted: nothing to move
    assert reconcile.reconcile([_pod(state="pending", node_id=None, instance_id=None)], {"n1": DRAINING}, NOW,
                               heartbeat_interval=3) == []


def test_state_changes_count_and_order_as_the_store_counts_them() -> None:
    a, b, node = "a" * 32, "b" * 32, "c" * 32
    jobs = [{"seq": 1, "id": a, "state": "completed", "created_at": 10.0, "finished_at": 13.0},
            {"seq": 2, "id": b, "state": "cancelled", "created_at": 11.0, "finished_at": 12.5}]
    execs = [{"job_id": a, "node_id": node, "state": "lost", "exit_code": None, "scheduled_at": 10.5,
              "started_at": 10.6, "finished_at": 11.5},
             {"job_id": a, "node_id": node, "state": "completed", "exit_code": 0, "scheduled_at": 11.6,
              "started_at": None, "finished_at": 13.0}]
    out = state_changes(jobs, execs)
    # per job: its submission and its end; per attempt: placed, started (if it did), ended (if it did)
    assert len(out) == 2 + 2 + 3 + 2
    assert [(c.ts, c.kind, c.status) for c in out] == [
        (10.0, "submit", ""), (10.5, "assign", ""), (10.6, "status", "running"), (11.0, "submit", ""),
        (11.5, "status", "failed"), (11.6, "assign", ""), (12.5, "cancel", "cancelled"),
        (13.0, "status", "completed"), (13.0, "status", "completed")]
    assert out[0].job_id == job_uuid(a) and out[1].worker == worker_number(node)
    assert out[-2].exit_code == 0 or out[-1].exit_code == 0


def test_millisecond_bounds() -> None:
    assert _ms("x", 0) is None and _ms("x", 1500) == 1.5
    upper = _ms("x", 1500, upper=True)
    assert upper is not None and 1.5009 < upper < 1.501  # the whole millisecond 1500 is in
    with pytest.raises(DialectError):
        _ms("created_after_ms", -1)
