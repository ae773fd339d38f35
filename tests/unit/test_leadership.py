"""The leadership rule (a lease with a fencing epoch) and its in-memory election, with a fake clock; the
NOTIFY payloads that carry wake-ups across coordinators."""

from __future__ import annotations

import pytest

from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.leadership import Fenced, Leadership, Me, MemoryElection, decide
from corral.coordinator.wakeups import parse, payloads

TTL = 3.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


RUNS = {"a": "a1", "b": "b1", "c": "c1"}


def lease(leader: str | None, epoch: int, expires: float, transfer: str | None = None) -> dict[str, object]:
    return {"leader_id": leader, "holder": RUNS.get(leader or ""), "epoch": epoch, "expires_at": expires,
            "transfer_to": transfer}


def decide_for(row: dict[str, object], me: str, now: float, draining: bool = False, heir: str | None = None,
               run: str | None = None) -> dict[str, object] | None:
    return decide(row, me, run or RUNS[me], now, TTL, draining, heir, RUNS)


def test_decide_takes_an_expired_lease_with_a_new_epoch_and_renews_its_own() -> None:
    assert decide_for(lease(None, 0, 0.0), "a", 10.0) == {
        "leader_id": "a", "holder": "a1", "epoch": 1, "expires_at": 13.0, "transfer_to": None, "changed_at": 10.0}
    assert decide_for(lease("a", 4, 11.0), "a", 10.0) == {"expires_at": 13.0, "transfer_to": None}
    assert decide_for(lease("a", 4, 11.0), "b", 10.0) is None  # held by another
    assert decide_for(lease("a", 4, 9.0), "b", 10.0)["epoch"] == 5  # type: ignore[index]
    assert decide_for(lease("a", 4, 9.0), "b", 10.0, draining=True) is None  # draining: never takes it
    # A restarted "a" (another run) does not renew what its previous run held: it waits for the expiry.
    assert decide_for(lease("a", 4, 11.0), "a", 10.0, run="a2") is None
    assert decide_for(lease("a", 4, 9.0), "a", 10.0, run="a2")["holder"] == "a2"  # type: ignore[index]


def test_decide_hands_over_on_transfer_and_while_draining() -> None:
    out = decide_for(lease("a", 4, 11.0, transfer="b"), "a", 10.0)
    assert out is not None and out["leader_id"] == "b" and out["holder"] == "b1" and out["epoch"] == 5
    assert out["transfer_to"] is None
    out = decide_for(lease("a", 4, 11.0), "a", 10.0, draining=True, heir="c")
    assert out is not None and out["leader_id"] == "c" and out["epoch"] == 5
    # Draining with no one to hand to: it keeps leading rather than leave the cluster without a leader.
    assert decide_for(lease("a", 4, 11.0), "a", 10.0, draining=True) == {"expires_at": 13.0, "transfer_to": None}


def test_one_leader_at_a_time_and_a_paused_leader_is_fenced() -> None:
    clock = Clock()
    el = MemoryElection(clock)
    a, b = Me("a", "http://a", 0.0), Me("b", "http://b", 0.0)
    assert el.step(a, TTL) == 1
    assert el.step(b, TTL) == 0
    el.fence(None, 1)  # type: ignore[arg-type]
    clock.t += TTL + 0.1  # a is paused past its lease: b takes over
    el.step(b, TTL)  # b's registration is renewed
    assert el.step(b, TTL) == 2
    with pytest.raises(Fenced):
        el.fence(None, 1)  # type: ignore[arg-type]  # a's write, with its old epoch
    assert el.step(a, TTL) == 0  # a wakes up: it follows
    st = el.state("a", TTL)
    assert st.leader_id == "b" and st.epoch == 2 and [m.role for m in st.members] == ["follower", "leader"]


def test_leadership_transfer_and_drain_through_the_runner() -> None:
    clock = Clock()
    el = MemoryElection(clock)
    la, lb = Leadership(el, Me("a", "http://a", 0.0), TTL), Leadership(el, Me("b", "http://b", 0.0), TTL)
    la.step()
    lb.step()
    assert la.is_leader() and not lb.is_leader()
    with pytest.raises(NotFound):
        la.transfer("nobody")
    el.request_transfer("b")
    la.step()  # the leader hands over
    assert not la.is_leader()
    lb.step()  # and b adopts the lease
    assert lb.is_leader() and lb.epoch == 2
    la.set_draining("a", True)
    with pytest.raises(Conflict):
        lb.transfer("a")  # draining: it may not lead
    clock.t += TTL + 1
    la.step()
    assert not la.is_leader()  # the lease expired, but a draining coordinator does not take it
    lb.set_draining("b", True)
    with pytest.raises(Conflict):
        lb.transfer(None)  # no live coordinator that is not draining


def test_notify_payloads_round_trip_and_stay_under_the_limit() -> None:
    ids = {f"{i:032x}" for i in range(600)}
    parts = payloads("coord-a", ids, kick=True)
    assert len(parts) > 1 and all(len(p.encode()) < 8000 for p in parts)
    got: set[str] = set()
    for p in parts:
        origin, kick, nodes = parse(p)
        assert origin == "coord-a" and kick
        got |= nodes
    assert got == ids
    assert parse(payloads("x", set(), kick=True)[0]) == ("x", True, set())
    assert payloads("x", set(), kick=False) == []
