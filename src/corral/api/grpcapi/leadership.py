"""The coordinators as nomad-lite's cluster: who leads, in which term, and handing leadership over.

The one place the gRPC service asks about leadership. Today a coordinator needs no election: each commits
through the store, so each answers as the leader (node 1) of the cluster it sees, in a term that is the
second its process started (docs/api/nomad-lite.md#the-cluster). Where the coordinator offers
``cluster_status()`` and ``transfer_leadership(target)`` (several coordinators with a leadership lease),
these functions are where they are called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.api.dialects.nomadlite_core import LEADER_ID, cluster_members
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
    with coord.store.read() as tx:
        members = [Member(int(m["node_id"]), str(m["address"]), bool(m["is_alive"]))
                   for m in cluster_members(tx, address)]
    return ClusterStatus(node_id=LEADER_ID, term=int(coord.started_at), leader_id=LEADER_ID, members=members)


def transfer_leadership(coord: Coordinator, target: int) -> Transfer:
    """Hand leadership to coordinator ``target`` (0: any other). With one coordinator there is no other."""
    if target in (0, LEADER_ID):
        why = "it leads already" if target == LEADER_ID else "there is no other coordinator to lead"
        return Transfer(target == LEADER_ID, f"node {LEADER_ID} stays the leader: {why}", LEADER_ID)
    return Transfer(False, f"no coordinator {target} in this cluster (coordinators: {LEADER_ID})", LEADER_ID)


def hand_over(coord: Coordinator) -> str:
    """This coordinator is draining: let another lead. Returns what happened, in a few words."""
    result = transfer_leadership(coord, 0)
    return result.message
