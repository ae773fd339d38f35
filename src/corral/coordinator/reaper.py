"""The reaper: nodes that stopped heartbeating are marked down and their work rescheduled."""

from __future__ import annotations

import logging
import time

from corral.coordinator.part import Part

log = logging.getLogger(__name__)


class Reaper(Part):
    """Leases: a node silent for the TTL is down, and what it ran is lost (rescheduled, see Nodes.lose)."""

    def reap_once(self) -> int:
        """Mark nodes that stopped heartbeating as down and reschedule their work. Returns how many."""
        now = time.time()
        ttl = self.settings.node_ttl
        if now - self.coord.started_at < ttl:
            return 0  # after a coordinator restart, give every node one full lease to check in
        down: list[tuple[str, str, float | None, int]] = []
        with self.store.transaction() as tx:
            self.coord.fence(tx)  # the leader's alone
            stale = tx.stale_nodes(now - ttl)
            for n in stale:
                if tx.cas_node(n["id"], n["state"], state="down"):  # ready, or draining
                    lost = tx.active_executions(n["id"])
                    for ex in lost:
                        self.coord.nodes.lose(tx, ex, now, f"node {n['name']} missed its heartbeats for {ttl:g}s")
                    down.append((n["id"], n["name"], n.get("last_heartbeat"), len(lost)))
        for node_id, name, seen, n_lost in down:  # said once committed: a rolled-back pass marked nothing
            last = time.strftime("%H:%M:%S", time.localtime(seen)) if isinstance(seen, int | float) else "never"
            log.warning("node %s (%s) marked down: no heartbeat for %gs (last at %s); %d task(s) rescheduled",
                        name, node_id, ttl, last, n_lost)
        if stale:
            self.coord.kick()
        return len(stale)
