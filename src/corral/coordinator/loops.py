"""The coordinator's background work: the scheduling loop, the reaper of dead nodes (and of jobs past their
autoDelete time), the firing of scheduled (cron) jobs, and the delivery of job webhooks. With several
coordinators on one database, these run on the leader alone (coordinator/leadership.py); the others
serve the API."""

from __future__ import annotations

import logging
import threading
import time

from corral.coordinator import retention
from corral.coordinator.leadership import Fenced
from corral.coordinator.schedules import Schedules
from corral.coordinator.service import Coordinator
from corral.coordinator.webhooks import Webhooks

log = logging.getLogger("corral.coordinator")
FOLLOWER_WAIT = 0.5  # seconds between looks at the leadership while following
# Under a stream of kicks (a submit's commit, a report, a node: one came while the last pass ran, or a kick
# started the last pass within this gap of the one before), the next pass starts no sooner than this after
# the last one's start, and the kicks of the wait share it, instead of every group commit paying a pass of
# its own (docs/benchmarks.md, "One job per request"). A kick on a quiet system is served at once.
PASS_GAP = 0.02


class BackgroundLoops:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.schedules = Schedules(coord)
        self.webhooks = Webhooks(coord.store, allowed_hosts=coord.settings.policy.webhook_hosts,
                                 leading=coord.is_leader)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._schedule, name="corral-scheduler", daemon=True),
                         threading.Thread(target=self._reap, name="corral-reaper", daemon=True),
                         threading.Thread(target=self._fire, name="corral-cron", daemon=True),
                         threading.Thread(target=self.webhooks.run, name="corral-webhooks", daemon=True)]
        if coord.settings.retain is not None:
            self._threads.append(threading.Thread(target=self._retire, name="corral-retention", daemon=True))

    def start(self) -> None:
        self.coord.leadership.on_elected = self.coord.kick_local  # a new leader looks at once
        self.coord.leadership.start()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.webhooks.stop()
        self.coord.kick_local()
        for t in self._threads:
            t.join(timeout=5)
        self.coord.leadership.stop()

    def _fenced(self, e: Fenced) -> None:
        log.warning("a leader-only write was refused (%s): following", e)
        self.coord.leadership.lost()

    def _schedule(self) -> None:
        timeout = 0.0
        started = float("-inf")  # when the last pass started (time.monotonic)
        streaming = False  # under a stream of kicks (see PASS_GAP)
        while not self._stop.is_set():
            kicked = self.coord.wait_for_kick(timeout)
            if self._stop.is_set():
                return
            if not self.coord.is_leader():
                timeout = FOLLOWER_WAIT
                continue
            now = time.monotonic()
            early = started + PASS_GAP - now
            if streaming and early > 0:  # the stream goes on: this pass waits out the gap
                if self._stop.wait(early):
                    return
                self.coord.wait_for_kick(0)  # the kicks of the wait are this pass's
                now = time.monotonic()
            else:
                streaming = kicked and early > 0
            started = now
            try:
                self.coord.schedule_once()
                self.coord.pods.place_once()  # pods after tasks, in this thread: one placement pass at a time
                nxt = self.coord.next_retry_in()
                timeout = 1.0 if nxt is None else min(max(nxt, 0.01), 1.0)
                streaming = streaming or self.coord.kicked()
            except Fenced as e:
                self._fenced(e)
                timeout = FOLLOWER_WAIT
            except Exception:
                log.exception("scheduling pass failed; trying again")
                timeout = 1.0

    def _reap(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.coord.refresh_pending()
            except Exception:
                log.exception("counting pending tasks failed; trying again")
            if not self.coord.is_leader():
                continue
            try:
                n = self.coord.reap_once()
                if n:
                    log.warning("marked %d node(s) down; their tasks are rescheduled", n)
            except Fenced as e:
                self._fenced(e)
                continue
            except Exception:
                log.exception("reaper pass failed; trying again")
            try:
                self.coord.nodes.drain_deadlines()  # drained nodes past their deadline: their tasks move
            except Exception:
                log.exception("drain deadline pass failed; trying again")
            try:
                self.coord.pods.reconcile_once()  # dead nodes' pods, silent nodes, TTLs, deletes
            except Fenced as e:
                self._fenced(e)
                continue
            except Exception:
                log.exception("pod reconcile pass failed; trying again")
            try:
                retention.delete_expired(self.coord.store)
            except Exception:
                log.exception("autoDelete pass failed; trying again")

    def _retire(self) -> None:
        """Every second on the leader: jobs finished longer ago than --retain are deleted (retention.py)."""
        retain = self.coord.settings.retain
        while retain is not None and not self._stop.wait(1.0):
            if not self.coord.is_leader():
                continue
            try:
                retention.delete_retired(self.coord.store, retain, self._stop)
            except Exception:
                log.exception("retention pass failed; trying again")

    def _fire(self) -> None:
        """Every second: a job for each due tick of an active schedule (exactly once, see schedules.py)."""
        while not self._stop.wait(1.0):
            if not self.coord.is_leader():
                continue
            try:
                self.schedules.fire_due()
            except Exception:
                log.exception("schedule pass failed; trying again")
