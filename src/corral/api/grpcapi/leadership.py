"""The coordinators as nomad-lite's cluster: who leads, in which term, and handing leadership over.

The one place the gRPC service asks about leadership; it answers from the coordinator's leadership lease
(``Coordinator.cluster_status``, ``transfer_leadership``, ``drain_coordinator``): the term is the lease's
fencing epoch and each coordinator is known by its small stable number (``state_numbers``,
docs/api/nomad-lite.md). The handlers read ``ClusterState`` itself; nothing here copies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.api.dialects.nomadlite_core import cluster_members, state_numbers
from corral.coordinator.errors import Conflict, NotFound
from corral.coordinator.leadership import ClusterState
from corral.coordinator.service import Coordinator


@dataclass
class Transfer:
    success: bool
    message: str
    new_leader_id: int = 0


def cluster_view(coord: Coordinator) -> tuple[ClusterState, list[dict[str, Any]]]:
    """The cluster state and its members (coordinators first, then workers), read in one go."""
    state = coord.cluster_status()
    with coord.store.read() as tx:
        return state, cluster_members(tx, state)


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
