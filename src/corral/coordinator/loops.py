"""The coordinator's background work: the scheduling loop, the reaper of dead nodes (and of jobs past their
autoDelete time), the firing of scheduled (cron) jobs, and the delivery of job webhooks."""

from __future__ import annotations

import logging
import threading

from corral.coordinator import retention
from corral.coordinator.schedules import Schedules
from corral.coordinator.service import Coordinator
from corral.coordinator.webhooks import Webhooks

log = logging.getLogger("corral.coordinator")


class BackgroundLoops:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.schedules = Schedules(coord)
        self.webhooks = Webhooks(coord.store, allowed_hosts=coord.settings.policy.webhook_hosts)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._schedule, name="corral-scheduler", daemon=True),
                         threading.Thread(target=self._reap, name="corral-reaper", daemon=True),
                         threading.Thread(target=self._fire, name="corral-cron", daemon=True),
                         threading.Thread(target=self.webhooks.run, name="corral-webhooks", daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.webhooks.stop()
        self.coord.kick()
        for t in self._threads:
            t.join(timeout=5)

    def _schedule(self) -> None:
        timeout = 0.0
        while not self._stop.is_set():
            self.coord.wait_for_kick(timeout)
            if self._stop.is_set():
                return
            try:
                self.coord.schedule_once()
                self.coord.pods.place_once()  # pods after tasks, in this thread: one placement pass at a time
                nxt = self.coord.next_retry_in()
                timeout = 1.0 if nxt is None else min(max(nxt, 0.01), 1.0)
            except Exception:
                log.exception("scheduling pass failed; trying again")
                timeout = 1.0

    def _reap(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.coord.refresh_pending()
                n = self.coord.reap_once()
                if n:
                    log.warning("marked %d node(s) down; their tasks are rescheduled", n)
            except Exception:
                log.exception("reaper pass failed; trying again")
            try:
                self.coord.nodes.drain_deadlines()  # drained nodes past their deadline: their tasks move
            except Exception:
                log.exception("drain deadline pass failed; trying again")
            try:
                self.coord.pods.reconcile_once()  # dead nodes' pods, silent nodes, TTLs, deletes
            except Exception:
                log.exception("pod reconcile pass failed; trying again")
            try:
                retention.delete_expired(self.coord.store)
            except Exception:
                log.exception("autoDelete pass failed; trying again")

    def _fire(self) -> None:
        """Every second: a job for each due tick of an active schedule (exactly once, see schedules.py)."""
        while not self._stop.wait(1.0):
            try:
                self.schedules.fire_due()
            except Exception:
                log.exception("schedule pass failed; trying again")
