"""Stacks: a pod exposed on node ports with a time to live, as the Stacks API (docs/api/stacks.md) sees it.

A stack is a pod of the core (``origin="stacks"``, id ``stack-<16 hex>``, namespace ``stacks``,
``restartPolicy: Never``) whose target ports are published on node ports, plus a row of the ``stacks``
table for what a pod does not hold: the sanitized manifest, the target ports, what it reserves against the
namespace's quota and when it expires. Creating one checks the manifest (domain/k8s.py), the LimitRange
and, with the insert in one locked step, the ResourceQuota; then the pod is created and placed before the
answer, so the answer carries its node and node ports (none to be had: 503, and nothing is left behind).

Deleting a stack deletes its row first, a compare-and-set, then stops its pod; a background pass (every
second, on every coordinator) deletes expired stacks the same way, so each is deleted exactly once, works
through batch-delete jobs one id at a time, and stops and purges the pods of stacks whose row is gone.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded, ServiceError
from corral.coordinator.pods import UNPLACED
from corral.domain import k8s
from corral.domain.quotas import Quota
from corral.store.quotas import quota_of

if TYPE_CHECKING:
    from corral.coordinator.pods import Pods
    from corral.coordinator.service import Coordinator
    from corral.store.sql import Tx

log = logging.getLogger("corral.stacks")
Row = dict[str, Any]
ORIGIN = "stacks"
MAX_BATCH = 1000  # stack ids in one batch-delete request
MAX_ERRORS = 100  # errors kept per batch-delete job
MAX_ERROR_CHARS = 512
PODS_FINAL = ("succeeded", "failed", "terminated")


@dataclass
class StacksConfig:
    ttl: float = 7200.0  # seconds a stack lives
    limits: k8s.LimitRange = field(default_factory=k8s.LimitRange)
    quota: k8s.Quota = field(default_factory=k8s.Quota)  # --stacks-quota: used while namespace stacks has none
    placement_wait: float = 10.0  # how long a create waits for a node with room and ports
    # Creates that may be under way at once (each holds a thread of the API's pool while it waits for
    # placement); one more is a 503 at once, so that waiting creates never take every thread.
    max_creating: int = 16
    api_key: str | None = None  # X-API-KEY / ?api_key= on every Stacks route when set


class NoNodePort(Overloaded):
    pass


def stack_quota(q: Quota) -> k8s.Quota:
    """The Stacks ResourceQuota that namespace ``stacks``'s own quota stands for: its CPU, memory and pods
    (each stack is one pod; GPUs and tasks do not apply)."""
    return k8s.Quota(None if q.cpu is None else round(q.cpu * 1000), q.memory, q.pods)


def new_stack_id() -> str:
    return "stack-" + secrets.token_hex(8)


def _batch_status(ids: Sequence[str], done: int, counts: Row) -> str:
    """A batch job's status once ``done`` of its ``ids`` are worked through."""
    if done < len(ids):
        return "running"
    return "failed" if ids and counts["deleted"] == 0 and counts["not_found"] == 0 else "completed"


def status_of(pod: Row | None) -> str:
    """A pod's state in the Stacks API's words."""
    if pod is None:
        return "stopped"
    state = pod["state"]
    if state in ("pending", "scheduled"):
        return "creating"
    if state == "running":
        return "running" if pod.get("ready") else "creating"
    if state == "unknown":
        return "running"  # its node is silent: the last known state, until its lease runs out
    if state == "failed":
        return "node_deleted" if " is down" in str(pod.get("reason") or "") else "failed"
    return "stopped"  # succeeded, terminating, terminated


class Stacks:
    def __init__(self, coord: Coordinator, config: StacksConfig | None = None) -> None:
        self.coord = coord
        self.store = coord.store
        self.config = config or StacksConfig()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._creating = threading.BoundedSemaphore(max(self.config.max_creating, 1))

    @property
    def pods(self) -> Pods:
        return self.coord.pods

    # -- commands -----------------------------------------------------------------------------------
    def create(self, pod_spec: Any, target_port: Any) -> Row:
        """Check, reserve and place a stack; its view (status ``creating`` until its pod is ready). At most
        ``max_creating`` at once (they wait for placement up to ``placement_wait``): one more is Overloaded
        at once."""
        if not self._creating.acquire(blocking=False):
            raise Overloaded(f"{self.config.max_creating} stack creates are under way, the most this server "
                             "takes at once: try again shortly")
        try:
            return self._create(pod_spec, target_port)
        finally:
            self._creating.release()

    def _create(self, pod_spec: Any, target_port: Any) -> Row:
        from corral.domain.pods import PodSpec
        try:
            targets = k8s.target_ports(target_port)
            manifest = k8s.parse_manifest(pod_spec, targets)
            k8s.check_limits(manifest, self.config.limits)
        except k8s.InvalidInput as e:
            raise Invalid(str(e)) from None
        stack_id = new_stack_id()
        try:
            spec = PodSpec.model_validate(k8s.native_pod(manifest, stack_id))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            raise Invalid(f"invalid pod spec: {where}: {msg}" if where else f"invalid pod spec: {msg}") from None
        try:  # escalations: an admin's, where the server allows them (checked again as the pod is made)
            self.pods.check_policy(spec)
        except Invalid as e:
            raise Invalid(f"invalid pod spec: {e}") from None
        now = time.time()
        with self.store.transaction() as tx:
            tx.lock_stack_quota()
            cpu, memory, count = tx.stack_totals()
            own = tx.quota(k8s.NAMESPACE)  # the namespace's own quota (corral quotas set stacks ...), if any
            quota = self.config.quota if own is None else stack_quota(quota_of(own))
            try:
                k8s.check_quota(manifest, quota, cpu, memory, count)
            except k8s.QuotaExceeded as e:
                raise Overloaded(str(e)) from None
            tx.insert_stack({"id": stack_id, "pod_spec": manifest.yaml,
                             "target_ports": [{"container_port": t.container_port, "protocol": t.protocol}
                                              for t in targets],
                             "cpu_milli": manifest.cpu_milli, "memory_bytes": manifest.memory_bytes,
                             "ttl_expires_at": now + self.config.ttl, "created_at": now, "updated_at": now})
        try:
            self.pods.create(spec, pod_id=stack_id, origin=ORIGIN)
            self._await_placement(stack_id)
        except BaseException:
            self._undo(stack_id)
            raise
        return self.get(stack_id)

    def _await_placement(self, stack_id: str) -> None:
        """Until the placement pass has looked at the pod: placed, it has a node (and so its node ports);
        not, Overloaded at once with the pass's reason (no node, no room, no node port). ``placement_wait``
        bounds the wait for that pass (a busy scheduler)."""
        deadline = time.monotonic() + self.config.placement_wait
        delay = 0.005
        while True:
            with self.store.read() as tx:  # the pod's row alone: its view (containers, ports, node) is not needed
                pod = tx.pod(stack_id)
            if pod is None:
                raise NotFound(f"no pod with id '{stack_id}'")
            if pod["node_id"] is not None or pod["state"] != "pending":
                return
            reason = str(pod.get("reason") or "")
            if reason.startswith("waiting for ports"):
                raise NoNodePort(f"no available nodeport: {reason}")
            if reason and reason != UNPLACED:  # the pass could not place it: waiting on would not change that
                raise Overloaded(f"cluster saturated: {reason}")
            if time.monotonic() >= deadline:
                raise Overloaded(f"cluster saturated: {reason or 'no node could take it'}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _undo(self, stack_id: str) -> None:
        try:
            with self.store.transaction() as tx:
                tx.delete_stack(stack_id)
            self._stop_pod(stack_id)
        except Exception:
            log.exception("could not undo stack %s; the background pass will", stack_id)

    def _stop_pod(self, stack_id: str) -> None:
        """Stop the stack's pod, and purge it if it is over already."""
        try:
            pod = self.pods.delete(stack_id, grace=1.0)
            if pod["state"] in PODS_FINAL:
                self.pods.purge(stack_id)
        except NotFound:
            pass

    def delete(self, stack_id: str) -> None:
        """Delete a stack: its row (NotFound if there is none), then its pod."""
        with self.store.transaction() as tx:
            if not tx.delete_stack(stack_id):
                raise NotFound("stack not found")
        try:
            self._stop_pod(stack_id)
        except ServiceError:  # changed meanwhile: the background pass stops it
            self._wake.set()

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, stack_id: str) -> Row:
        with self.store.read() as tx:
            row = tx.stack(stack_id)
        if row is None:
            raise NotFound("stack not found")
        return self._view(row, self._pod(stack_id))

    def _pod(self, stack_id: str) -> Row | None:
        try:
            pod: Row = self.pods.get(stack_id)
            return pod
        except NotFound:
            return None

    def list(self) -> list[Row]:
        with self.store.read() as tx:
            rows = tx.all_stacks()
        pods = self._pods_of([r["id"] for r in rows])
        return [self._view(r, pods.get(r["id"])) for r in rows]

    def _pods_of(self, ids: Sequence[str]) -> dict[str, Row]:
        want = set(ids)
        out: dict[str, Row] = {}
        after = 0
        while len(out) < len(want):
            page = self.pods.list(origin=ORIGIN, limit=1000, after=after)
            if not page:
                break
            out.update({p["id"]: p for p in page if p["id"] in want})
            after = page[-1]["seq"]
        return out

    @staticmethod
    def _view(row: Row, pod: Row | None) -> Row:
        held = {(p["containerPort"], p["protocol"]): p.get("nodePort") for p in (pod or {}).get("ports") or ()}
        ports = [{"container_port": t["container_port"], "protocol": t["protocol"],
                  "node_port": held.get((t["container_port"], t["protocol"]))} for t in row["target_ports"]]
        updated = max(row["updated_at"], float((pod or {}).get("updated_at") or 0))
        return {"stack_id": row["id"], "pod_id": row["id"], "namespace": k8s.NAMESPACE,
                "node_id": (pod or {}).get("node_id") or "", "node_public_ip": (pod or {}).get("address"),
                "pod_spec": row["pod_spec"], "ports": ports, "service_name": f"svc-{row['id']}",
                "status": status_of(pod), "ttl_expires_at": row["ttl_expires_at"], "created_at": row["created_at"],
                "updated_at": updated, "requested_cpu_milli": row["cpu_milli"],
                "requested_memory_bytes": row["memory_bytes"]}

    def stats(self) -> Row:
        stacks = self.list()
        dist: dict[str, int] = {}
        for s in stacks:
            if s["node_id"]:
                dist[s["node_id"]] = dist.get(s["node_id"], 0) + 1
        return {"total_stacks": len(stacks),
                "active_stacks": sum(1 for s in stacks if s["status"] in ("creating", "running")),
                "node_distribution": dist,
                "used_node_ports": sum(1 for s in stacks for p in s["ports"] if p["node_port"] is not None),
                "reserved_cpu_milli": sum(s["requested_cpu_milli"] for s in stacks),
                "reserved_memory_bytes": sum(s["requested_memory_bytes"] for s in stacks)}

    # -- batch delete ---------------------------------------------------------------------------------
    def start_batch_delete(self, stack_ids: Sequence[str]) -> str:
        job_id = "job-" + secrets.token_hex(8)
        now = time.time()
        with self.store.transaction() as tx:
            tx.insert_batch_job({"id": job_id, "status": "queued", "stack_ids": list(stack_ids), "done": 0,
                                 "deleted": 0, "not_found": 0, "failed": 0, "errors": [], "created_at": now,
                                 "updated_at": now})
        self._wake.set()
        return job_id

    def batch_job(self, job_id: str) -> Row:
        with self.store.read() as tx:
            job = tx.batch_job(job_id)
        if job is None:
            raise NotFound("job not found")
        out = {"job_id": job["id"], "status": job["status"], "total": len(job["stack_ids"]),
               "deleted": job["deleted"], "not_found": job["not_found"], "failed": job["failed"],
               "created_at": job["created_at"], "updated_at": job["updated_at"]}
        if job["errors"]:
            out["errors"] = job["errors"]
        return out

    def run_batches_once(self, budget: float = 0.5) -> int:
        """Work through unfinished batch-delete jobs, one stack id per step, for about ``budget`` seconds."""
        done = 0
        end = time.monotonic() + budget
        with self.store.read() as tx:
            jobs = tx.unfinished_batch_jobs()
        for first in jobs:
            job: Row | None = first
            while job is not None and job["status"] in ("queued", "running") and time.monotonic() < end:
                job = self._batch_step(job["id"])
                done += 1
        return done

    @staticmethod
    def _take(tx: Tx, stack_id: str) -> bool:
        """Delete a stack's row in ``tx``; False if there is none."""
        return tx.delete_stack(stack_id)

    def _batch_step(self, job_id: str) -> Row | None:
        """One id of a job, in one transaction that holds the job's row: the stack's row is deleted and the
        job's progress and counts are written together, so each id is counted once, by one coordinator.
        The pod of a deleted stack is stopped after the commit (or by the orphan pass)."""
        stop: str | None = None
        try:
            with self.store.transaction() as tx:
                job = tx.batch_job(job_id, lock=True)
                if job is None or job["status"] not in ("queued", "running"):
                    return job
                ids, i = job["stack_ids"], job["done"]
                values: Row = {k: job[k] for k in ("deleted", "not_found", "failed")}
                if i < len(ids):
                    if self._take(tx, ids[i]):
                        values["deleted"] += 1
                        stop = ids[i]
                    else:
                        values["not_found"] += 1
                tx.cas_batch_job(job_id, ["queued", "running"], at_done=i, done=min(i + 1, len(ids)),
                                 status=_batch_status(ids, i + 1, values), updated_at=time.time(), **values)
                out = tx.batch_job(job_id)
        except Exception as e:
            log.warning("batch delete %s: a delete failed: %s", job_id, e)
            stop = None
            with self.store.transaction() as tx:
                job = tx.batch_job(job_id, lock=True)
                if job is None or job["status"] not in ("queued", "running"):
                    return job
                ids, i = job["stack_ids"], job["done"]
                values = {k: job[k] for k in ("deleted", "not_found", "failed")}
                values["failed"] += 1
                errors = list(job["errors"])
                if len(errors) < MAX_ERRORS and i < len(ids):
                    errors.append({"stack_id": ids[i][:MAX_ERROR_CHARS],
                                   "error": f"delete pod/service failed: {e}"[:MAX_ERROR_CHARS]})
                tx.cas_batch_job(job_id, ["queued", "running"], at_done=i, done=min(i + 1, len(ids)),
                                 status=_batch_status(ids, i + 1, values), updated_at=time.time(), errors=errors,
                                 **values)
                out = tx.batch_job(job_id)
        if stop is not None:
            with contextlib.suppress(ServiceError):  # else the orphan pass stops it
                self._stop_pod(stop)
        return out

    # -- the background pass ------------------------------------------------------------------------
    def expire_once(self, now: float | None = None) -> int:
        """Delete the stacks whose time is up (each by exactly one coordinator) and stop their pods."""
        now = time.time() if now is None else now
        with self.store.read() as tx:
            due = tx.expired_stacks(now)
        n = 0
        for stack_id in due:
            with self.store.transaction() as tx:
                won = tx.delete_stack(stack_id, expired_before=now)
            if won:
                n += 1
                log.info("stack %s expired: deleting it", stack_id)
                with contextlib.suppress(ServiceError):  # else the orphan pass stops it
                    self._stop_pod(stack_id)
        return n

    def collect_orphans(self) -> int:
        """Stop the pods of stacks whose row is gone, and purge them once they are over."""
        n = 0
        after = 0
        while True:
            page = self.pods.list(origin=ORIGIN, limit=500, after=after)
            if not page:
                return n
            after = page[-1]["seq"]
            with self.store.read() as tx:
                live = tx.existing_stacks([p["id"] for p in page])
            for p in page:
                if p["id"] in live:
                    continue
                try:
                    if p["state"] in PODS_FINAL:
                        self.pods.purge(p["id"])
                        n += 1
                    elif p["state"] != "terminating":
                        self.pods.delete(p["id"], grace=1.0)
                except (NotFound, Conflict):
                    pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-stacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.coord.is_leader():  # TTL expiry and batches: the leader's (coordinator/leadership.py)
                continue
            for step in (self.expire_once, self.run_batches_once, self.collect_orphans):
                try:
                    step()
                except Exception:
                    log.exception("stacks pass (%s) failed; trying again", step.__name__)
            with self.store.read() as tx:
                if tx.unfinished_batch_jobs(1):
                    self._wake.set()
