"""The coordinators as nomad-lite's cluster: who leads, in which term, and handing leadership over.

The one place the gRPC service asks about leadership; it answers from the coordinator's leadership lease
(``Coordinator.cluster_status``, ``transfer_leadership``, ``drain_coordinator``): the term is the lease's
fencing epoch and each coordinator is known by its small stable number (docs/api/nomad-lite.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.api.dialects.nomadlite_core import cluster_members, state_numbers
from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.service import Coordinator


@dataclass
class Member:
    node_id: int
    address: str
    is_alive: bool


@dataclass
class ClusterStatus:
    node_id: int  # the coordinator answering
    term: int
    leader_id: int | None
    members: list[Member] = field(default_factory=list)


@dataclass
class Transfer:
    success: bool
    message: str
    new_leader_id: int = 0


def cluster_status(coord: Coordinator, address: str) -> ClusterStatus:
    """This coordinator, the leader, and every member (coordinators first, then workers)."""
    state = coord.cluster_status()
    me, leader = state_numbers(state)
    with coord.store.read() as tx:  # this coordinator by its gRPC address (the others: by their API's)
        members = [Member(int(m["node_id"]), address if (m["role"], m["node_id"]) == ("coordinator", me)
                          else str(m["address"]), bool(m["is_alive"])) for m in cluster_members(tx, state)]
    return ClusterStatus(node_id=me, term=state.epoch, leader_id=leader, members=members)


def transfer_leadership(coord: Coordinator, target: int) -> Transfer:
    """Hand leadership to coordinator ``target`` (0: any other live one that is not draining)."""
    state = coord.cluster_status()
    _, leader = state_numbers(state)
    by_number = {m.node_no: m.id for m in state.members}
    if target and target not in by_number:
        known = ", ".join(str(n) for n in sorted(by_number))
        return Transfer(False, f"no coordinator {target} in this cluster (coordinators: {known})", leader or 0)
    try:
        after = coord.transfer_leadership(by_number[target] if target else None)
    except (Conflict, NotFound) as e:
        return Transfer(False, str(e), leader or 0)
    _, new = state_numbers(after)
    return Transfer(True, f"node {new} leads (term {after.epoch})", new or 0)


def hand_over(coord: Coordinator) -> str:
    """This coordinator is draining: it takes no leadership and hands it over if it leads. Returns what
    happened, in a few words."""
    state = coord.drain_coordinator(None, True)
    _, leader = state_numbers(state)
    return f"coordinator draining; leader: node {leader}" if leader else "coordinator draining; no leader now"
