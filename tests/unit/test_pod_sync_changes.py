"""Which statuses of a node's pod sync change something (coordinator.pods._unchanged): only those are locked
and written. Pure."""

from __future__ import annotations

from typing import Any

from corral.coordinator.pods import _container_values, _unchanged
from corral.domain.agentwire import ContainerStatus, PodStatus

POD: dict[str, Any] = {"id": "p1", "state": "running", "ready": True, "reason": None, "started_at": 5.0,
                       "spec": {"containers": [{"name": "app"}]}}
RUNNING = ContainerStatus("app", "running", container_id="c1", ready=True, started_at=5.0)


def _stored(c: ContainerStatus) -> dict[tuple[str, str], dict[str, Any]]:
    return {("p1", c.name): {"pod_id": "p1", "name": c.name, **_container_values(c)}}


def test_a_status_as_stored_changes_nothing() -> None:
    assert _unchanged(POD, PodStatus("i1", "p1", "running", [RUNNING], 9.0), _stored(RUNNING))


def test_any_container_field_or_pod_field_that_differs_is_a_change() -> None:
    st = PodStatus("i1", "p1", "running", [ContainerStatus("app", "running", container_id="c1", ready=True,
                                                           started_at=5.0, restart_count=1)], 9.0)
    assert not _unchanged(POD, st, _stored(RUNNING))  # a restart
    unready = ContainerStatus("app", "running", container_id="c1", ready=False, started_at=5.0)
    assert not _unchanged(POD, PodStatus("i1", "p1", "running", [unready], 9.0), _stored(unready))  # pod's ready
    assert not _unchanged({**POD, "state": "scheduled"}, PodStatus("i1", "p1", "running", [RUNNING], 9.0),
                          _stored(RUNNING))  # the pod becomes running
    assert not _unchanged(POD, PodStatus("i1", "p1", "running", [RUNNING], 9.0), {})  # no row read


def test_an_end_is_always_a_change_and_a_final_pod_never_is() -> None:
    assert not _unchanged(POD, PodStatus("i1", "p1", "failed", [RUNNING], 9.0), _stored(RUNNING))
    assert _unchanged({**POD, "state": "failed"}, PodStatus("i1", "p1", "running", [RUNNING], 9.0), {})


def test_a_waiting_reader_stops_at_ready_at_an_end_or_at_a_delete() -> None:
    """GET /v1/pods/{id}?wait= answers at these states (coordinator.pods.settled)."""
    from corral.coordinator.pods import settled
    assert settled(POD)
    assert not settled({**POD, "ready": False})
    assert not settled({**POD, "state": "scheduled", "ready": False})
    assert not settled({**POD, "state": "pending", "ready": False})
    assert not settled({**POD, "state": "unknown", "ready": False})
    for state in ("succeeded", "failed", "terminated", "terminating"):
        assert settled({**POD, "state": state, "ready": False}), state


def test_a_pod_watch_wakes_only_the_readers_of_a_changed_pod() -> None:
    import asyncio
    import threading

    from corral.coordinator.pods import PodWatch

    async def main() -> tuple[bool, bool, int]:
        w = PodWatch()
        with w.watching("p1") as one, w.watching("p2") as two:
            threading.Thread(target=w.notify, args=(["p1", "p3"],)).start()  # from another thread
            await asyncio.wait_for(one.wait(), 5)
            await asyncio.sleep(0)
            return one.is_set(), two.is_set(), len(w._waiting)
    assert asyncio.run(main()) == (True, False, 2)
