"""The Stacks API's words for a pod's state, and its timestamps (coordinator/stacks.py, api/dialects/stacks.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.api.dialects.stacks import rfc3339_nano
from corral.coordinator.stacks import new_stack_id, status_of


@pytest.mark.parametrize(("pod", "status"), [
    (None, "stopped"),
    ({"state": "pending"}, "creating"),
    ({"state": "scheduled"}, "creating"),
    ({"state": "running", "ready": False}, "creating"),
    ({"state": "running", "ready": True}, "running"),
    ({"state": "unknown"}, "running"),
    ({"state": "failed", "reason": "node w1 is down; restartPolicy Never"}, "node_deleted"),
    ({"state": "failed", "reason": "container app exited with 1"}, "failed"),
    ({"state": "succeeded"}, "stopped"),
    ({"state": "terminating"}, "stopped"),
    ({"state": "terminated"}, "stopped"),
])
def test_status_of(pod: dict[str, object] | None, status: str) -> None:
    assert status_of(pod) == status


@pytest.mark.parametrize(("when", "text"), [
    (datetime(2026, 2, 10, 2, 2, 26, 535664, UTC), "2026-02-10T02:02:26.535664Z"),
    (datetime(2026, 2, 10, 2, 6, 33, 160310, UTC), "2026-02-10T02:06:33.16031Z"),
    (datetime(2026, 2, 10, 2, 6, 33, 0, UTC), "2026-02-10T02:06:33Z"),
])
def test_rfc3339_nano_drops_trailing_zeros_as_go_does(when: datetime, text: str) -> None:
    assert rfc3339_nano(when.timestamp()) == text


def test_stack_ids() -> None:
    ids = {new_stack_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and i.startswith("stack-") and int(i[6:], 16) >= 0 for i in ids)
