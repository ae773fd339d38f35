"""Pods: long-running work next to jobs. Create, read, delete; the placement pass; the reconciler's pass;
and the node's level-triggered sync (what it runs → what it should run).

Each public method is one transaction (or a read, then one); every state change is a compare-and-set on
the pod's state and instance, so a late report about an old instance, or a report racing a delete,
changes nothing it should not. The rules (restart policy, dead nodes, TTL, deletes) are in
domain/reconcile.py, the placement in scheduler/pods.py; this module reads, asks and commits.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from corral.auth import context
from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.policy import PolicyError, pod_container
from corral.domain import reconcile
from corral.domain.agentwire import ContainerStatus, PodLogLine, PodStatus, cap_lines, truncation_marker
from corral.domain.ids import new_id
from corral.domain.pods import FINAL_POD_STATES, PLACED_POD_STATES, ContainerSpec, PodSpec, PodState, dump_pod
from corral.domain.quotas import Budgets
from corral.domain.resources import Resources
from corral.scheduler.pods import PodRequest, place_pods
from corral.store.quotas import quota_of
from corral.store.sql import Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

log = logging.getLogger("corral.pods")
FINAL = [s.value for s in FINAL_POD_STATES]
PLACED = [s.value for s in PLACED_POD_STATES]
LIVE = [PodState.SCHEDULED.value, PodState.RUNNING.value, PodState.UNKNOWN.value]
PLACE_BATCH = 64  # pending pods read per step of a placement pass
UNPLACED = "waiting for a placement pass"  # a new pod's reason, until a pass places it or says why it waits
PLACE_PAGES = 50  # steps in one pass at most: pods past the first 3,200 waiting ones wait their turn
MAX_LIST = 1000
WAIT_CHECK_S = 0.5  # a reader waiting on a pod looks again this often (changes made by another coordinator)
ASSIGNED_CACHE = 20_000  # pods whose assignment is kept built (see Pods._built)


def published_ports(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every port the pod's containers declare, in order: each is published on the node (its hostPort,
    or a node port)."""
    return [{"container": c["name"], "name": p.get("name"), "containerPort": p["containerPort"],
             "protocol": p.get("protocol", "TCP"), "hostPort": p.get("hostPort")}
            for c in spec.get("containers") or () for p in c.get("ports") or ()]


def settled(pod: Mapping[str, Any]) -> bool:
    """Whether a pod is where a waiting reader stops waiting (``GET /v1/pods/{id}?wait=``): running and
    ready, ended, or being deleted. Pure."""
    state = pod["state"]
    return state in FINAL or state == PodState.TERMINATING.value or (state == PodState.RUNNING.value
                                                                       and bool(pod["ready"]))


class PodWatch:
    """The readers waiting on a pod (``GET /v1/pods/{id}?wait=``), woken from any thread when this
    coordinator changes the pod (a node's sync, the reconciler's pass, a delete). Changes made by another
    coordinator wake nobody here: a waiting reader also looks again every ``WAIT_CHECK_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, builtins.list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, pod_ids: Iterable[str]) -> None:
        with self._lock:
            if not self._waiting:
                return
            hits = [w for i in pod_ids for w in self._waiting.get(i, ())]
        for loop, ev in hits:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(ev.set)

    @contextlib.contextmanager
    def watching(self, pod_id: str) -> Iterator[asyncio.Event]:
        """An event set when the pod changes, for as long as the block runs (on an event loop)."""
        w = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiting.setdefault(pod_id, []).append(w)
        try:
            yield w[1]
        finally:
            with self._lock:
                ws = self._waiting.get(pod_id, [])
                if w in ws:
                    ws.remove(w)
                if not ws:
                    self._waiting.pop(pod_id, None)


class Pods:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.store = coord.store
        self.stats = {"pods_created": 0, "pods_placed": 0, "pods_replaced": 0, "pod_reports_ignored": 0}
        # pod id -> (the spec they were built from, its containers as assigned, its declared ports)
        self._assigned: OrderedDict[str, tuple[Row, builtins.list[Row], builtins.list[Row]]] = OrderedDict()
        self._assigned_lock = threading.Lock()
        self.watch = PodWatch()

    @property
    def settings(self) -> Any:
        return self.coord.settings

    # -- commands ---------------------------------------------------------------------------------
    def create(self, spec: PodSpec, *, pod_id: str | None = None, origin: str = "native", ttl: float | None = None,
               extra_ports: Sequence[Mapping[str, Any]] = ()) -> Row:
        """Add a pod (``pending``) and ask for a placement pass. ``ttl`` (seconds) overrides the spec's;
        ``extra_ports`` ({containerPort, protocol?, container?}) are published too, each on a node port
        (a dialect's target ports). Conflict if ``pod_id`` is taken."""
        now = time.time()
        spec = self._with_ports(spec, extra_ports)
        self.check_policy(spec)
        pid = pod_id or new_id()
        if not 1 <= len(pid) <= 64:
            raise Invalid("a pod id is 1 to 64 characters")
        life = ttl if ttl is not None else spec.ttl_seconds()
        need = spec.requests()
        row = {"id": pid, "origin": origin, "name": spec.name, "namespace": spec.namespace,
               "labels": dict(spec.labels), "spec": dump_pod(spec), "state": PodState.PENDING.value,
               "reason": UNPLACED, "desired": "run", "restart_policy": spec.restartPolicy,
               "runtime": spec.runtime, "cpu": need.cpu, "memory": need.memory, "disk": need.disk,
               "gpu": need.gpu, "node_selector": dict(spec.node_selector), "node_id": None, "instance_id": None,
               "ready": False, "ttl_expires_at": None if life is None else now + life, "grace": spec.grace(),
               "created_at": now, "scheduled_at": None, "started_at": None, "finished_at": None,
               "updated_at": now}
        containers = [{"pod_id": pid, "name": c.name, "position": i, "state": "waiting", "reason": None,
                       "container_id": None, "restart_count": 0, "exit_code": None, "ready": False, "error": None,
                       "started_at": None, "finished_at": None, "log_bytes": 0}
                      for i, c in enumerate(spec.containers)]
        with self.store.transaction() as tx:
            limit = self.settings.max_pending_tasks
            if tx.count_pending_pods() >= limit:  # back-pressure, as for tasks (--max-pending)
                raise Overloaded(f"{limit} pods are waiting to be placed, the most this server holds: try again "
                                 "shortly")
            if not tx.insert_pod(row, containers):
                raise Conflict(f"a pod with id '{pid}' exists")
        self.stats["pods_created"] += 1
        created = self.get(pid)  # the answer is the pod as created (pending): read before the pass can place it
        self.coord.kick()
        return created

    def check_policy(self, spec: PodSpec) -> None:
        """The operator's policy for a pod about to be created (escalations: an admin's, where the server allows
        them; see policy.py): Invalid if it asks for what this caller may not have."""
        try:
            kinds = self.settings.policy.check_pod(dump_pod(spec), context.admin())
        except PolicyError as e:
            raise Invalid(str(e)) from None
        if kinds:
            context.note_escalation(kinds)

    @staticmethod
    def _with_ports(spec: PodSpec, extra: Sequence[Mapping[str, Any]]) -> PodSpec:
        if not extra:
            return spec
        data = dump_pod(spec)
        by_name = {c["name"]: c for c in data["containers"]}
        for e in extra:
            c = by_name.get(str(e.get("container") or data["containers"][0]["name"]))
            if c is None:
                raise Invalid(f"no container named '{e.get('container')}' for an extra port")
            port = {"containerPort": e["containerPort"], "protocol": e.get("protocol", "TCP")}
            have = c.setdefault("ports", [])
            if not any(p["containerPort"] == port["containerPort"] and p.get("protocol", "TCP") == port["protocol"]
                       for p in have):
                have.append(port)
        return PodSpec.model_validate(data)

    def delete(self, pod_id: str, grace: float | None = None) -> Row:
        """Stop the pod: ``terminating`` until its node says its containers are gone (at once
        ``terminated`` if it was never placed or its node is down). The record stays until purged; a pod
        that has ended already is left as it is."""
        now = time.time()
        woken: set[str] = set()
        with self.store.transaction() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise NotFound(f"no pod with id '{pod_id}'")
            if pod["state"] not in FINAL and pod["state"] != PodState.TERMINATING.value:
                node = tx.node(pod["node_id"]) if pod["node_id"] else None
                g = pod["grace"] if grace is None else grace
                if pod["node_id"] is None or node is None or node["state"] == "down":
                    self._end(tx, pod, PodState.TERMINATED.value, "deleted", now)
                elif tx.cas_pod(pod_id, [pod["state"]], pod["instance_id"], state=PodState.TERMINATING.value,
                                desired="stop", grace=g, ready=False, reason="deleted: stopping its containers",
                                updated_at=now):
                    woken.add(pod["node_id"])
                else:
                    raise Conflict(f"pod '{pod_id}' changed meanwhile: try again")
        if woken:
            self.coord.on_nodes_changed(woken)
        self.watch.notify([pod_id])
        self.coord.kick()
        return self.get(pod_id)

    def purge(self, pod_id: str) -> None:
        """Remove a pod that has ended, with its logs."""
        with self.store.transaction() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise NotFound(f"no pod with id '{pod_id}'")
            if not tx.delete_pod(pod_id, FINAL):
                raise Conflict(f"pod '{pod_id}' is {pod['state']}; delete it and wait until it is terminated "
                               "before purging it")

    # -- reads ------------------------------------------------------------------------------------
    def get(self, pod_id: str) -> Row:
        with self.store.read() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise NotFound(f"no pod with id '{pod_id}'")
            return self._views(tx, [pod])[0]

    async def get_settled(self, pod_id: str, wait: float) -> Row:
        """The pod once it is :func:`settled`, or as it is after ``wait`` seconds. Each look is one read
        (on a worker thread), made when this coordinator changes the pod, or every ``WAIT_CHECK_S``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.watch.watching(pod_id) as changed:
            while True:
                changed.clear()
                pod = await anyio.to_thread.run_sync(self.get, pod_id)
                left = deadline - loop.time()
                if settled(pod) or left <= 0:
                    return pod
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, WAIT_CHECK_S)):
                        await changed.wait()

    def list(self, namespace: str | None = None, selector: Mapping[str, str] | None = None,
             origin: str | None = None, limit: int = 100, after: int = 0, states: Sequence[str] | None = None
             ) -> builtins.list[Row]:
        """Pods in creation order; ``after``: the ``seq`` of the last one of the previous page."""
        with self.store.read() as tx:
            rows = tx.find_pods(namespace=namespace, selector=selector, origin=origin, states=states,
                                after_seq=after, limit=min(max(limit, 1), MAX_LIST))
            return self._views(tx, rows)

    def _views(self, tx: Tx, pods: Sequence[Row]) -> builtins.list[Row]:
        ids = [p["id"] for p in pods]
        containers: dict[str, list[Row]] = {}
        for c in tx.pod_containers(ids):
            containers.setdefault(c["pod_id"], []).append(c)
        held: dict[tuple[str, str, int, str], Row] = {}
        for r in tx.pod_ports(ids):
            if r["container"] is not None:
                held[(r["pod_id"], r["container"], r["container_port"], r["protocol"])] = r
        nodes = {n["id"]: n for n in tx.nodes_by_ids(p["node_id"] for p in pods if p["node_id"])}
        out = []
        for p in pods:
            images = {c["name"]: c.get("image") for c in p["spec"].get("containers") or ()}
            cs = [{k: v for k, v in c.items() if k not in ("pod_id", "position", "log_bytes")}
                  | {"image": images.get(c["name"])} for c in containers.get(p["id"], [])]
            ports = []
            for port in published_ports(p["spec"]):
                h = held.get((p["id"], port["container"], port["containerPort"], port["protocol"]))
                ports.append({**port, "hostPort": h["port"] if h else port["hostPort"],
                              "nodePort": h["port"] if h and h["kind"] == "node" else None})
            node = nodes.get(p["node_id"]) if p["node_id"] else None
            out.append({**p, "containers": cs, "ports": ports,
                        "node_name": node["name"] if node else None,
                        "address": (node.get("address") or None) if node else None})
        return out

    def logs(self, pod_id: str, container: str | None = None, after: int = 0, limit: int = 1000
             ) -> builtins.list[Row]:
        with self.store.read() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise NotFound(f"no pod with id '{pod_id}'")
            names = [c["name"] for c in pod["spec"].get("containers") or ()]
            if container is not None and container not in names:
                raise NotFound(f"pod '{pod_id}' has no container '{container}' (it has {', '.join(names)})")
            return tx.pod_logs(pod_id, container=container, after_seq=after, limit=limit)

    def state(self, pod_id: str) -> str:
        with self.store.read() as tx:
            pod = tx.pod(pod_id)
        if pod is None:
            raise NotFound(f"no pod with id '{pod_id}'")
        return str(pod["state"])

    # -- the placement pass ---------------------------------------------------------------------------
    def place_once(self) -> int:
        """Place pending pods where they fit (resources, runtime, selector, ports); record why the others
        wait. Runs in the scheduler's thread, after the task pass: no two placement passes at once."""
        placed_total, after = 0, 0
        for _ in range(PLACE_PAGES):
            with self.store.read() as tx:
                pending = tx.pending_pods(PLACE_BATCH, after)
                if not pending:
                    return placed_total
                node_rows = tx.nodes("ready")
                alloc = {a["node_id"]: a for a in tx.allocations()}
                used = tx.used_ports()
                quotas = tx.quotas()
                budgets = (Budgets({ns: quota_of(r) for ns, r in quotas.items()}, tx.namespace_usage(quotas))
                           if quotas else None)
            views = self.coord.scheduling.node_views(node_rows, alloc)
            requests = {p["id"]: self._request(p) for p in pending}
            result = place_pods(views, requests.values(), used, self.settings.node_port_range,
                                self.settings.strategy, budgets)
            now = time.time()
            woken: set[str] = set()
            by_id = {p["id"]: p for p in pending}
            placed = 0
            with self.store.transaction() as tx:
                self.coord.fence(tx)  # the leader's alone (coordinator/leadership.py)
                for pl in result.placements:
                    inst = new_id()
                    spec_ports = published_ports(by_id[pl.pod_id]["spec"])
                    rows, it = [], iter(pl.node_ports)
                    for port in spec_ports:
                        kind = "host" if port["hostPort"] is not None else "node"
                        rows.append({"node_id": pl.node_id, "port": port["hostPort"] or next(it),
                                     "protocol": port["protocol"], "pod_id": pl.pod_id, "instance_id": inst,
                                     "container": port["container"], "container_port": port["containerPort"],
                                     "kind": kind})
                    if not tx.take_ports(rows):
                        continue  # taken since the snapshot: the next pass tries again
                    if not tx.cas_pod(pl.pod_id, [PodState.PENDING.value], None, state=PodState.SCHEDULED.value,
                                      node_id=pl.node_id, instance_id=inst, scheduled_at=now, reason=None,
                                      ready=False, updated_at=now):
                        tx.release_ports(pl.pod_id, inst)
                        continue
                    tx.reset_containers(pl.pod_id)
                    woken.add(pl.node_id)
                    placed += 1
                for pid, why in result.reasons.items():
                    if by_id[pid]["reason"] != why:
                        tx.cas_pod(pid, [PodState.PENDING.value], None, reason=why, updated_at=now)
            placed_total += placed
            self.stats["pods_placed"] += placed
            if woken:
                self.coord.on_nodes_changed(woken)
            # Pods that wait do not hold up those behind them: the pass pages on through the pending ones.
            if len(pending) < PLACE_BATCH:
                return placed_total
            after = pending[-1]["seq"]
        return placed_total

    @staticmethod
    def _request(p: Row) -> PodRequest:
        ports = published_ports(p["spec"])
        sel = p["node_selector"] or {}
        return PodRequest(p["id"], int(p["seq"]), _resources(p), p["runtime"], dict(sel),
                          tuple((int(x["hostPort"]), x["protocol"]) for x in ports if x["hostPort"] is not None),
                          tuple(x["protocol"] for x in ports if x["hostPort"] is None), p["namespace"])

    # -- the reconciler's pass ------------------------------------------------------------------------
    def reconcile_once(self, now: float | None = None) -> int:
        """Dead nodes' pods placed again (or failed), silent nodes' pods ``unknown``, TTLs expired, deletes
        finished: what domain/reconcile.py decides, each committed with a compare-and-set. Returns how
        many pods changed."""
        now = time.time() if now is None else now
        if now - self.coord.started_at < self.settings.node_ttl:
            return 0  # after a coordinator restart, every node gets one full lease to check in
        with self.store.read() as tx:
            pods = tx.unfinished_pods()
            if not pods:
                return 0
            nodes = {n["id"]: reconcile.NodeView(n["id"], n["name"], n["state"], float(n["last_heartbeat"]))
                     for n in tx.nodes()}
        views = [reconcile.PodView(p["id"], p["state"], p["desired"], p["restart_policy"], p["node_id"],
                                   p["instance_id"], p["ttl_expires_at"]) for p in pods]
        decisions = reconcile.reconcile(views, nodes, now, self.settings.heartbeat_interval)
        if not decisions:
            return 0
        changed, woken, replaced = 0, set(), 0
        with self.store.transaction() as tx:
            self.coord.fence(tx)
            for d in decisions:
                ok = self._apply(tx, d, now)
                changed += ok
                if ok and d.action == "delete" and (node_id := nodes_of(pods, d.pod_id)):
                    woken.add(node_id)
                replaced += ok and d.action == "replace"
        if replaced:
            self.stats["pods_replaced"] += replaced
            log.warning("%d pod(s) of dead nodes are placed again", replaced)
        if woken:
            self.coord.on_nodes_changed(woken)
        if changed:
            self.watch.notify(d.pod_id for d in decisions)
            self.coord.kick()
        return changed

    def _apply(self, tx: Tx, d: reconcile.Decision, now: float) -> bool:
        base = {"updated_at": now}
        if d.action == "replace":
            if not tx.cas_pod(d.pod_id, [d.state], d.instance_id, state=PodState.PENDING.value, node_id=None,
                              instance_id=None, ready=False, reason=d.reason, scheduled_at=None, started_at=None,
                              **base):
                return False
            tx.release_ports(d.pod_id, d.instance_id)
            tx.reset_containers(d.pod_id)
            return True
        if d.action in ("fail", "terminated"):
            state = PodState.FAILED.value if d.action == "fail" else PodState.TERMINATED.value
            extra = {"desired": "stop"} if d.action == "terminated" else {}
            if not tx.cas_pod(d.pod_id, [d.state], d.instance_id, state=state, ready=False, reason=d.reason,
                              finished_at=now, **extra, **base):
                return False
            tx.release_ports(d.pod_id)
            return True
        if d.action == "delete":
            return tx.cas_pod(d.pod_id, [d.state], d.instance_id, state=PodState.TERMINATING.value, desired="stop",
                              ready=False, reason=f"{d.reason}: stopping its containers", **base)
        if d.action == "unknown":
            return tx.cas_pod(d.pod_id, [d.state], d.instance_id, state=PodState.UNKNOWN.value, ready=False,
                              reason=d.reason, **base)
        return False

    def _end(self, tx: Tx, pod: Row, state: str, reason: str, now: float) -> bool:
        if not tx.cas_pod(pod["id"], [pod["state"]], pod["instance_id"], state=state, desired="stop", ready=False,
                          reason=reason, finished_at=now, updated_at=now):
            raise Conflict(f"pod '{pod['id']}' changed meanwhile: try again")
        tx.release_ports(pod["id"])
        return True

    # -- the node's sync --------------------------------------------------------------------------
    def sync(self, node_id: str, pods: Sequence[PodStatus], logs: Sequence[PodLogLine]) -> Row:
        """Apply what a node says about the pod instances it runs, store their output, and answer with
        the node's whole desired set. Only the node that holds an instance may report about it: anything
        about another node's pod, an old instance or an unknown pod changes nothing."""
        now = time.time()
        ended = False
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            asked = {p.pod_id for p in pods}
            # A sync lists every pod of the node, and most have not changed since the last one: those are
            # found by one read of their rows and containers, and only the others are locked and written.
            desired = tx.node_pods(node_id)  # read once: for the statuses, and for the answer
            current = {r["id"]: r for r in desired}
            others = asked - set(current)  # not placed here: ended here (a no-op), or not this node's
            if others:
                current.update((r["id"], r) for r in tx.pods_by_ids(others))
            ours = [st for st in pods if (pod := current.get(st.pod_id)) is not None
                    and pod["node_id"] == node_id and pod["instance_id"] == st.instance_id]
            self.stats["pod_reports_ignored"] += len(pods) - len(ours)
            stored: dict[tuple[str, str], Row] = {}
            for c in tx.pod_containers({st.pod_id for st in ours}) if ours else ():
                stored[(c["pod_id"], c["name"])] = c
            moved = [st for st in ours if not _unchanged(current[st.pod_id], st, stored)]
            # Locked while the statuses are applied: a move or a delete in between waits, then wins or loses.
            rows = {r["id"]: r for r in tx.pods_by_ids({st.pod_id for st in moved}, lock=True)} if moved else {}
            writes: builtins.list[Row] = []
            for st in moved:
                pod = rows.get(st.pod_id)
                if pod is None or pod["node_id"] != node_id or pod["instance_id"] != st.instance_id:
                    self.stats["pod_reports_ignored"] += 1  # moved or gone since it was read
                    continue
                ended |= self._status(tx, pod, st, now, writes)
            tx.update_containers(writes)  # one statement for every changed container of the sync
            full = self._append_logs(tx, node_id, logs)
            # A status changes no pod's instance or wish to stop, which is all the answer reads of them,
            # unless it ended the pod: the set is read again then.
            if ended:
                desired = tx.node_pods(node_id)
            # A sync lists every instance the node has: a pod being deleted that it does not list is not
            # running there any more (it never started, or its containers went with a restart).
            mentioned = {p.instance_id for p in pods}
            gone = [p["id"] for p in desired
                    if p["state"] == PodState.TERMINATING.value and p["instance_id"] not in mentioned]
            for pod in desired:
                if pod["id"] in gone:
                    ended |= tx.cas_pod(pod["id"], [pod["state"]], pod["instance_id"],
                                        state=PodState.TERMINATED.value, ready=False, reason="deleted",
                                        finished_at=now, updated_at=now)
                    tx.release_ports(pod["id"], pod["instance_id"])
            if ended:
                desired = tx.node_pods(node_id)
            answer = {"pods": self._assignments(tx, desired),
                      "log_full": sorted({i for i, _ in full}),
                      "log_full_containers": [{"instance_id": i, "container": c} for i, c in sorted(full)]}
        if moved or gone:  # wakes the readers waiting on these pods (GET /v1/pods/{id}?wait=)
            self.watch.notify([st.pod_id for st in moved] + gone)
        if ended:
            self.coord.kick()
        return answer

    def _status(self, tx: Tx, pod: Row, st: PodStatus, now: float, writes: builtins.list[Row]) -> bool:
        """Apply one status (its containers' rows are added to ``writes``, written after); True if the pod
        ended (its capacity is free)."""
        names = {c["name"] for c in pod["spec"].get("containers") or ()}
        cs = [c for c in st.containers if c.name in names]
        if pod["state"] in FINAL:
            return False
        writes += [{"pod_id": pod["id"], "name": c.name, **_container_values(c)} for c in cs]
        final = reconcile.final_state(st.phase)
        if pod["state"] == PodState.TERMINATING.value and final is not None:
            final = PodState.TERMINATED.value  # deleted: however its containers ended on the way out
        elif final == PodState.TERMINATED.value:
            final = None  # the node stopped what it was not told to stop: it is told again to run it
        if final is not None:
            reason = {PodState.FAILED.value: _failure(cs), PodState.TERMINATED.value: "deleted"}.get(final)
            if tx.cas_pod(pod["id"], [pod["state"]], pod["instance_id"], state=final, ready=False, reason=reason,
                          finished_at=st.ts or now, updated_at=now):
                tx.release_ports(pod["id"])
                return True
            return False
        if st.phase != "running":
            return False
        values = _running_values(pod, st, cs, len(names), now)
        changed = any(pod.get(k) != v for k, v in values.items() if k != "updated_at")
        if changed:
            tx.cas_pod(pod["id"], [pod["state"]], pod["instance_id"], **values)
        return False

    def _append_logs(self, tx: Tx, node_id: str, logs: Sequence[PodLogLine]) -> set[tuple[str, str]]:
        """Store the lines of instances this node holds, within each container's cap; returns the
        (instance, container) pairs whose stored log is full."""
        if not logs:
            return set()
        pods = {p["instance_id"]: p for p in tx.pods_by_instances({ln.instance_id for ln in logs})
                if p["node_id"] == node_id}
        stored = {(c["pod_id"], c["name"]): int(c["log_bytes"] or 0)
                  for c in tx.pod_containers({p["id"] for p in pods.values()})}
        cap = self.settings.max_log_bytes
        # A line of an instance this node does not hold has no key in ``stored`` and is dropped.
        keys = [(pods[ln.instance_id]["id"], ln.container) if ln.instance_id in pods else ("", "") for ln in logs]
        kept, sizes = cap_lines(keys, [ln.line for ln in logs], stored, cap)
        rows = []
        for i, cut in kept:
            ln = logs[i]
            rows.append({"pod_id": keys[i][0], "instance_id": ln.instance_id, "container": ln.container,
                         "stream": "stderr" if cut else ln.stream,
                         "line": truncation_marker(cap, "this container's output") if cut else ln.line,
                         "ts": ln.ts})
        full = {(ln.instance_id, ln.container) for ln, k in zip(logs, keys, strict=True)
                if sizes.get(k, stored.get(k, 0)) > cap}
        tx.append_pod_logs(rows)
        tx.add_container_log_bytes([(p, c, stored[(p, c)], n) for (p, c), n in sizes.items()])
        return full

    def _assignments(self, tx: Tx, pods: Sequence[Row]) -> builtins.list[Row]:
        ports: dict[str, list[Row]] = {}
        for r in tx.pod_ports([p["id"] for p in pods]):
            ports.setdefault(r["pod_id"], []).append(r)
        out = []
        for p in pods:
            containers, declared = self._built(p)
            held = {(r["container"], r["container_port"], r["protocol"]): r["port"]
                    for r in ports.get(p["id"], []) if r["instance_id"] == p["instance_id"]}
            out.append({
                "instance_id": p["instance_id"], "pod_id": p["id"], "name": p["name"], "namespace": p["namespace"],
                "restart_policy": p["restart_policy"], "grace": p["grace"],
                "desired": "stop" if p["desired"] == "stop" or p["state"] == PodState.TERMINATING.value else "run",
                "containers": [{**c, "env": dict(c["env"])} for c in containers],
                "ports": [{**d, "hostPort": held.get((d["container"], d["containerPort"], d["protocol"]),
                                                     d["hostPort"])} for d in declared],
            })
        return out

    def _built(self, p: Row) -> tuple[builtins.list[Row], builtins.list[Row]]:
        """A pod's containers as its node is told to run them, and its declared ports: built from its stored
        spec once, and again only when the spec is not the one they were built from (a sync answers with
        every pod of the node, and validating each spec every time was most of a sync's cost)."""
        with self._assigned_lock:  # syncs run on several threads
            hit = self._assigned.get(p["id"])
            if hit is not None and hit[0] == p["spec"]:
                self._assigned.move_to_end(p["id"])
                return hit[1], hit[2]
        spec = PodSpec.model_validate(p["spec"])
        env = {"CORRAL_POD_ID": p["id"], "CORRAL_POD_NAME": p["name"], "CORRAL_NAMESPACE": p["namespace"]}
        containers = [_container(p["spec"], c, env, self.settings.policy) for c in spec.containers]
        declared = [{"container": c.name, "name": port.name, "containerPort": port.containerPort,
                     "protocol": port.protocol, "hostPort": port.hostPort} for c in spec.containers for port in c.ports]
        with self._assigned_lock:
            self._assigned[p["id"]] = (copy.deepcopy(p["spec"]), containers, declared)
            while len(self._assigned) > ASSIGNED_CACHE:
                self._assigned.popitem(last=False)
        return containers, declared


CONTAINER_FIELDS = ("state", "reason", "container_id", "restart_count", "exit_code", "ready", "error", "started_at",
                    "finished_at")


def _container_values(c: ContainerStatus) -> Row:
    return {k: getattr(c, k) for k in CONTAINER_FIELDS}


def _running_values(pod: Row, st: PodStatus, cs: Sequence[ContainerStatus], n: int, now: float) -> Row:
    """What a running instance's status sets on its pod's row (``n``: how many containers the pod has)."""
    ready = bool(cs) and len(cs) == n and all(c.ready for c in cs)
    waiting = [c.reason for c in cs if c.state != "running" and c.reason]
    values: dict[str, Any] = {"ready": ready and pod["state"] != PodState.TERMINATING.value, "updated_at": now}
    if pod["state"] != PodState.TERMINATING.value:
        values["state"] = PodState.RUNNING.value
        values["reason"] = "; ".join(waiting) if waiting else None
    if pod["started_at"] is None:
        values["started_at"] = min([c.started_at for c in cs if c.started_at] or [st.ts or now])
    return values


def _unchanged(pod: Row, st: PodStatus, stored: Mapping[tuple[str, str], Row]) -> bool:
    """Whether applying ``st`` to ``pod`` (read, not locked) would write nothing: its containers' rows say
    what it says, and the pod's row is as the status would leave it. Pure."""
    if pod["state"] in FINAL:
        return True
    names = {c["name"] for c in pod["spec"].get("containers") or ()}
    cs = [c for c in st.containers if c.name in names]
    if reconcile.final_state(st.phase) is not None:
        return False
    for c in cs:
        row = stored.get((pod["id"], c.name))
        if row is None or any(row.get(k) != v for k, v in _container_values(c).items()):
            return False
    if st.phase != "running":
        return True
    values = _running_values(pod, st, cs, len(names), 0.0)
    return all(pod.get(k) == v for k, v in values.items() if k != "updated_at")


def nodes_of(pods: Sequence[Row], pod_id: str) -> str | None:
    return next((p["node_id"] for p in pods if p["id"] == pod_id), None)


def _resources(p: Row) -> Resources:
    return Resources(float(p["cpu"]), int(p["memory"]), int(p["disk"]), int(p["gpu"]))


def _failure(cs: Sequence[ContainerStatus]) -> str:
    bad = [c for c in cs if c.exit_code not in (0, None) or c.error]
    if not bad:
        return "its containers ended"
    c = bad[0]
    return f"container {c.name} " + (c.error or f"exited with code {c.exit_code}")


def _container(pod: Mapping[str, Any], c: ContainerSpec, env: Mapping[str, str], policy: Any) -> Row:
    d = c.model_dump(mode="json", exclude_none=True)
    if grants := policy.grants(pod_container(pod, d)):  # an admin's escalations the server still allows
        d["escalations"] = grants
    d["env"] = {**env, **c.env}
    limits = c.resources.limits
    cpu = limits.cores()
    mem = limits.bytes()
    default_cpu, default_mem = policy.limits({})
    d["cpu_limit"] = cpu if cpu else default_cpu
    d["memory_limit"] = mem if mem else default_mem
    return d

