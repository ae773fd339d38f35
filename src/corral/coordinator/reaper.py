"""The reaper: nodes that stopped heartbeating are marked down and their work rescheduled."""

from __future__ import annotations

import time

from corral.coordinator.part import Part


class Reaper(Part):
    """Leases: a node silent for the TTL is down, and what it ran is lost (rescheduled, see Nodes.lose)."""

    def reap_once(self) -> int:
        """Mark nodes that stopped heartbeating as down and reschedule their work. Returns how many."""
        now = time.time()
        ttl = self.settings.node_ttl
        if now - self.coord.started_at < ttl:
            return 0  # after a coordinator restart, give every node one full lease to check in
        with self.store.transaction() as tx:
            self.coord.fence(tx)  # the leader's alone
            stale = tx.stale_nodes(now - ttl)
            for n in stale:
                if tx.cas_node(n["id"], n["state"], state="down"):  # ready, or draining
                    for ex in tx.active_executions(n["id"]):
                        self.coord.nodes.lose(tx, ex, now, f"node {n['name']} missed its heartbeats for {ttl:g}s")
        if stale:
            self.coord.kick()
        return len(stale)
