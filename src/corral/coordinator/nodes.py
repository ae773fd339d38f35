"""The node protocol: register, authenticate, heartbeat, poll (a node's assignments), report (its updates
and output lines), drain and leave; and what happens to the work of a node that is gone.

Each public method is one transaction over the store. Every state change is a compare-and-set, so a late
or duplicate report (a completion after a cancel, a stale heartbeat) never changes a finished task.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets as secrets_mod
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.coordinator.errors import Conflict, Forbidden, Invalid, NotFound
from corral.coordinator.part import Part
from corral.domain import workflow
from corral.domain.agentwire import NODE_SECRET_HEADER, LogLine, NodeInfo, Update, cap_logs
from corral.domain.ids import new_id
from corral.domain.resources import parse_duration
from corral.domain.services import pick_node_ports
from corral.domain.spec import TaskSpec, argv_of
from corral.domain.states import JobState
from corral.store.sql import ACTIVE, LIVE_NODE, Row, Tx

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator

log = logging.getLogger("corral.coordinator")
MAX_LOST_RESCHEDULES = 3


JOIN_TOKEN_PREFIX = "cjt_"  # a join token (corral tokens create --worker), told apart from the cluster token


def secret_hash(secret: str) -> str:
    """What the store keeps of a node secret: its sha256, hex (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _secret_ok(given: str | None, stored: str | None) -> bool:
    return bool(given) and bool(stored) and hmac.compare_digest(secret_hash(given or ""), stored or "")


@dataclass
class _Changes:
    """What one report batch changes, gathered so that it is written in bulk."""

    started: list[Row] = field(default_factory=list)  # executions scheduled -> running
    tasks_started: list[Row] = field(default_factory=list)
    execs: list[Row] = field(default_factory=list)  # executions that ended
    tasks: list[Row] = field(default_factory=list)  # tasks that ended
    retries: list[Row] = field(default_factory=list)  # tasks back to pending for another attempt
    done: list[Row] = field(default_factory=list)  # completed tasks: what waited for them may start
    failures: list[tuple[Row, str, str]] = field(default_factory=list)  # (task, state, error): ended for good
    jobs_started: dict[str, float] = field(default_factory=dict)

    def start(self, ex: Row, task: Row | None, u: Update) -> None:
        self.started.append({"id": ex["id"], "state": "running", "started_at": u.ts,
                             "container_id": u.container_id})
        if task is not None and task["execution_id"] == ex["id"] and task["state"] == "scheduled":
            self.tasks_started.append({"id": task["id"], "_exec": ex["id"], "state": "running",
                                       "started_at": u.ts})
            self.jobs_started[task["job_id"]] = u.ts


HEARTBEAT_GROUP_MAX = 500  # heartbeats one grouped transaction renews at most


class HeartbeatGroup:
    """Concurrent heartbeats share one transaction (like jobs.GroupCommit): a heartbeat waits in the event
    loop's queue; one writer at a time takes everything queued, renews all those nodes' leases in one
    statement and reads the executions they report in one query, in one worker thread, and answers each
    after the commit. A heartbeat costs no thread hop and no transaction of its own: at 5,000 nodes the
    coordinator's CPU goes to the HTTP request, not to the store."""

    def __init__(self, nodes: Nodes) -> None:
        self._nodes = nodes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[str, Sequence[str], dict[str, Any] | None, asyncio.Future[list[str]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None) -> list[str]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the first call, or a new event loop (tests): start afresh
            self._loop, self._queue, self._writer = loop, [], None
        future: asyncio.Future[list[str]] = loop.create_future()
        self._queue.append((node_id, running, usage, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[:HEARTBEAT_GROUP_MAX], self._queue[HEARTBEAT_GROUP_MAX:]
                try:
                    results = await asyncio.to_thread(self._nodes.heartbeat_many, [b[:3] for b in group])
                except BaseException as e:
                    results = [e] * len(group)
                    if not isinstance(e, Exception):
                        for b in group:
                            b[3].cancel()
                        raise
                for (_, _, _, future), res in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(res, BaseException):
                        future.set_exception(res)
                    else:
                        future.set_result(res)
        finally:
            self._writer = None


class Nodes(Part):
    """The coordinator's side of the agent protocol."""

    def __init__(self, coord: Coordinator) -> None:
        super().__init__(coord)
        # Secret values by job, so that output lines are redacted before they are stored (bounded).
        self._secrets: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        # Node id -> sha256 of its secret. A node's secret never changes once given, so this is only a
        # cache of the store (bounded), saving a read on every heartbeat, poll and report.
        self._node_secrets: OrderedDict[str, str] = OrderedDict()
        self.heartbeats = HeartbeatGroup(self)

    def register(self, info: NodeInfo, running: Iterable[str] = (), secret: str | None = None) -> Row:
        """Add a node, or bring back one that restarted. Work the coordinator believes is on the node
        but that the node no longer has is lost, and is rescheduled; what it still has (``running``: a
        restarted worker's adopted attempts) is kept, and returned in ``kept``: execution id -> ``log_bytes``
        (the bytes of its output stored, from where a runtime that reads it again goes on), ``timeout``
        (its task's, in seconds, or None) and ``elapsed`` (seconds since it started).

        A new node is given a secret (in the answer's ``node_secret``, once; the store keeps its hash).
        A registration that names a node that exists must present that node's secret, or it is refused:
        an identity is never taken over. A node id the store does not know (its state was lost) is
        registered with the secret presented, if any.
        """
        now = time.time()
        node_id = info.id or new_id()
        row = {"id": node_id, "name": info.name, "hostname": info.hostname, "version": info.version,
               "state": "ready", "cpu": info.cpu, "memory": info.memory, "disk": info.disk,
               "gpus": info.gpus, "labels": info.labels, "runtimes": info.runtimes, "queues": info.queues,
               "usage": {}, "registered_at": now, "last_heartbeat": now, "address": info.address}
        keep = set(running)
        issued: str | None = None
        with self.store.transaction() as tx:
            # A compare-and-set: the row is locked while its secret is checked, and a new one is added
            # only if no concurrent registration of the same id added it first (then that one's secret
            # must be presented, like any existing node's). An update never changes the secret.
            exists, stored = tx.node_secret_hash(node_id, lock=True) if info.id else (False, None)
            if not exists:
                if not secret or not info.id:
                    secret = issued = secrets_mod.token_urlsafe(32)
                stored = secret_hash(secret)
                if not tx.insert_node({**row, "secret_hash": stored}):
                    issued = None
                    exists, stored = tx.node_secret_hash(node_id, lock=True)
                    if not exists:  # added and removed again meanwhile
                        raise Conflict(f"node '{node_id}' is being registered concurrently: try again")
            if exists:
                if not _secret_ok(secret, stored):
                    log.warning("refused a registration as node %s (%s) without its secret", node_id, info.name)
                    raise Forbidden(f"node '{node_id}' is registered already, and this registration does not "
                                    f"present its secret ({NODE_SECRET_HEADER}); a node's secret is kept in "
                                    "its data dir (node-secret). Without it, register as a new node (no id)")
                tx.update_node(row)
            # Read under the node's lock, in the transaction that renews it: an execution the reaper
            # has marked lost (the node came back after its lease ran out), or that was cancelled, is no
            # longer active here and is not kept, whatever the node claims.
            kept: dict[str, dict[str, Any]] = {}
            for ex in tx.active_executions(node_id):
                if ex["id"] in keep:
                    timeout = (tx.task_spec(ex["task_id"]) or {}).get("timeout")
                    kept[ex["id"]] = {"log_bytes": int(ex.get("log_bytes") or 0),
                                      "timeout": None if timeout is None else parse_duration(timeout),
                                      "elapsed": max(now - float(ex.get("started_at") or now), 0.0)}
                else:
                    self.lose(tx, ex, now, f"node {info.name} restarted without it")
        self._remember_node(node_id, stored)
        if kept:
            log.info("node %s (%s) restarted and kept %d execution(s) it still runs", node_id, info.name, len(kept))
        self.coord.kick()
        out = {k: v for k, v in row.items() if k != "secret_hash"}
        out["node_secret"] = issued
        out["kept"] = kept
        return out

    def _remember_node(self, node_id: str, stored: str | None) -> None:
        if stored:
            self._node_secrets[node_id] = stored
            self._node_secrets.move_to_end(node_id)
            while len(self._node_secrets) > 10_000:
                self._node_secrets.popitem(last=False)

    def authenticate_cached(self, node_id: str, secret: str | None) -> bool:
        """``authenticate`` from the cache alone (no I/O: for the event loop): False when the node's secret
        is not cached and the store must be read (``authenticate``); a wrong secret raises Forbidden."""
        stored = self._node_secrets.get(node_id)
        if stored is None:
            return False
        if not _secret_ok(secret, stored):
            raise Forbidden(f"a call for node '{node_id}' must present that node's secret ({NODE_SECRET_HEADER}), "
                            "which the node was given when it first registered")
        return True

    def authenticate(self, node_id: str, secret: str | None) -> None:
        """Refuse a call for ``node_id`` that does not present its secret (NotFound: an unknown node,
        which should register again)."""
        stored = self._node_secrets.get(node_id)
        if stored is None:
            with self.store.read() as tx:
                exists, stored = tx.node_secret_hash(node_id)
            if not exists:
                raise NotFound(f"no node with id '{node_id}': register again")
            self._remember_node(node_id, stored)
        if not _secret_ok(secret, stored):
            raise Forbidden(f"a call for node '{node_id}' must present that node's secret ({NODE_SECRET_HEADER}), "
                            "which the node was given when it first registered")

    def secret_owner(self, secret: str) -> str | None:
        """The id of the node whose secret this is, if any."""
        with self.store.read() as tx:
            return tx.node_with_secret_hash(secret_hash(secret))

    # -- join tokens ------------------------------------------------------------------------------
    def create_join_token(self, created_by: str, ttl: float | None, cap: int | None = None) -> tuple[Row, str]:
        """A new join token for workers (the token once; the store keeps its hash). ``cap``: how many usable
        tokens (not revoked, not expired) one maker may have; past it, Conflict."""
        token = JOIN_TOKEN_PREFIX + secrets_mod.token_urlsafe(32)
        now = time.time()
        row = {"id": new_id(), "token_hash": secret_hash(token), "kind": "worker", "created_by": created_by,
               "created_at": now, "expires_at": now + ttl if ttl else None, "revoked_at": None,
               "last_used_at": None}
        with self.store.transaction() as tx:
            if cap is not None:
                tx.lock_cap(f"join_tokens:{created_by}")
            if cap is not None and tx.live_join_token_count(created_by, now) >= cap:
                raise Conflict(f"{created_by} has {cap} usable join tokens, the most one maker may have "
                               "(--max-join-tokens): revoke one first")
            tx.insert_join_token(row)
        return row, token

    def join_token_ok(self, token: str) -> bool:
        """Whether ``token`` is a join token that is neither revoked nor expired (its use is recorded)."""
        now = time.time()
        with self.store.transaction() as tx:
            row = tx.join_token_by_hash(secret_hash(token))
            if row is None or row["revoked_at"] is not None or (row["expires_at"] is not None
                                                                 and row["expires_at"] <= now):
                return False
            tx.touch_join_token(row["id"], now)
        return True

    def drain(self, node_id: str, running: Iterable[str] = ()) -> list[str]:
        """The node is shutting down: it takes no new work, and what was assigned to it that it has not
        started (not in ``running``) is handed back at once. Returns the executions handed back, which
        the node must not start."""
        now = time.time()
        keep = set(running)
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            tx.cas_node(node_id, "ready", state="draining")
            handed = [ex["id"] for ex in tx.active_executions(node_id)
                      if ex["id"] not in keep and self._hand_back(tx, ex, now, f"node {node['name']} is shutting down")]
        log.info("node %s (%s) is draining; %d assignment(s) handed back", node_id, node["name"], len(handed))
        self.coord.kick()
        return handed

    def admin_drain(self, node_id: str, deadline: float | None = None) -> Row:
        """An operator drains the node (``corral nodes drain``): nothing new is placed on it; what runs
        there may finish, and ``deadline`` seconds from now (if given) what still runs is stopped and
        placed elsewhere without using up a retry (``drain_deadlines``). Its pods that restart are placed
        on other nodes at once (domain/reconcile.py). Draining again sets the new deadline."""
        now = time.time()
        if deadline is not None and deadline < 0:
            raise Invalid("the drain deadline cannot be negative")
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}'")
            if node["state"] == "down":
                raise Conflict(f"node {node['name']} is down: nothing runs there to drain")
            if node["state"] == "draining" and node.get("drain_requested_at") is None:
                raise Conflict(f"node {node['name']} is shutting down already (its worker is stopping)")
            values = {"state": "draining", "drain_requested_at": node.get("drain_requested_at") or now,
                      "drain_deadline": None if deadline is None else now + deadline}
            if not tx.cas_node(node_id, node["state"], **values):
                raise Conflict(f"node {node['name']} changed meanwhile: try again")
            node.update(values)
        log.info("node %s (%s) drained by an operator%s", node_id, node["name"],
                 "" if deadline is None else f"; what runs there in {deadline:g}s is placed elsewhere")
        self.coord.kick()
        return node

    def undrain(self, node_id: str) -> Row:
        """Undo ``admin_drain``: the node takes new work again."""
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}'")
            if node["state"] == "ready":
                return node
            if node["state"] != "draining" or node.get("drain_requested_at") is None:
                raise Conflict(f"node {node['name']} is {node['state']}, not drained by an operator: "
                               "it takes work again when its worker registers")
            values = {"state": "ready", "drain_requested_at": None, "drain_deadline": None}
            if not tx.cas_node(node_id, "draining", **values):
                raise Conflict(f"node {node['name']} changed meanwhile: try again")
            node.update(values)
        self.coord.kick()
        return node

    def drain_deadlines(self, now: float | None = None) -> int:
        """Drained nodes whose deadline passed: what still runs there is handed back (pending again,
        without using up an attempt; the node stops it at its next heartbeat). Returns how many."""
        now = time.time() if now is None else now
        n = 0
        woken: set[str] = set()
        with self.store.transaction() as tx:
            for node in tx.nodes("draining"):
                if node.get("drain_deadline") is None or node["drain_deadline"] > now:
                    continue
                for ex in tx.active_executions(node["id"]):
                    if self._hand_back(tx, ex, now, f"node {node['name']} was drained and its deadline passed"):
                        n += 1
                        woken.add(node["id"])
        if n:
            log.info("%d task(s) of drained nodes past their deadline are placed elsewhere", n)
            self.coord.on_nodes_changed(woken)
            self.coord.kick()
        return n

    def leave(self, node_id: str) -> int:
        """The node stops now: it is down at once (no wait for its lease to expire), and whatever still
        runs on it is handed back (pending again, without using up an attempt). Returns how many."""
        now = time.time()
        with self.store.transaction() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            for state in LIVE_NODE:
                tx.cas_node(node_id, state, state="down", usage={})
            n = sum(self._hand_back(tx, ex, now, f"node {node['name']} stopped before it finished")
                    for ex in tx.active_executions(node_id))
        log.info("node %s (%s) left; %d task(s) handed back", node_id, node["name"], n)
        self.coord.kick()
        return n

    def _hand_back(self, tx: Tx, ex: Row, now: float, why: str) -> bool:
        """A node gives back an execution it will not finish: the task is pending again at once, and
        this attempt is not counted (neither a failure nor a loss)."""
        if not tx.cas_execution(ex["id"], ACTIVE, state="lost", finished_at=now, error=f"handed back: {why}"):
            return False
        tx.release_task_ports([ex["id"]])
        task = tx.task(ex["task_id"])
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return True
        if tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="pending", ready_at=now, node_id=None,
                       execution_id=None, attempts=max(int(task["attempts"]) - 1, 0),
                       reason=f"rescheduling: {why}"):
            self.stats["tasks_handed_back"] += 1
        return True

    def heartbeat(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None = None) -> list[str]:
        """Renew the node's lease; returns the executions it runs that it must stop."""
        now = time.time()
        cpu_percent = (usage or {}).get("cpu_percent")
        if isinstance(cpu_percent, (int, float)) and cpu_percent > 100:
            with self.store.read() as tx:
                node = tx.node(node_id)
            cores = max(float(node["cpu"]), 1.0) if node else 1.0
            if cpu_percent > 100 * cores:
                raise Invalid(f"usage.cpu_percent {cpu_percent:g} is more than 100 per core ({cores:g} cores)")
        with self.store.transaction() as tx:
            if not tx.touch_node(node_id, now, usage):
                node = tx.node(node_id)
                if node is None:
                    raise NotFound(f"no node with id '{node_id}': register again")
                # A node marked down that speaks again is back; its old work was already rescheduled.
                tx.cas_node(node_id, "down", state="ready", last_heartbeat=now, usage=usage or {})
                self.coord.kick()
            return self._to_stop(tx, node_id, running)

    async def heartbeat_async(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None = None
                              ) -> list[str]:
        """``heartbeat`` for the API's event loop: renewed with the heartbeats sent meanwhile (HeartbeatGroup)."""
        cpu_percent = (usage or {}).get("cpu_percent")
        if isinstance(cpu_percent, (int, float)) and cpu_percent > 100:  # checked against the node's cores
            return await asyncio.to_thread(self.heartbeat, node_id, running, usage)
        return await self.heartbeats.add(node_id, running, usage)

    def heartbeat_many(self, beats: Sequence[tuple[str, Sequence[str], dict[str, Any] | None]]
                       ) -> list[list[str] | BaseException]:
        """Several nodes' heartbeats in one transaction: each one's executions to stop, or what its
        heartbeat raised. When a node in the group is not live (down, gone), each is done alone."""
        now = time.time()
        with self.store.transaction() as tx:
            if tx.touch_nodes([(n, now, u) for n, _, u in beats]):
                known = [x for _, running, _ in beats for x in running]
                execs = {ex["id"]: ex for ex in tx.executions_by_ids(known, brief=True)} if known else {}
                return [[k for k in running if not ((ex := execs.get(k)) and ex["state"] in ACTIVE
                                                     and ex["node_id"] == n)] for n, running, _ in beats]
        out: list[list[str] | BaseException] = []
        for n, running, usage in beats:
            try:
                out.append(self.heartbeat(n, running, usage))
            except Exception as e:
                out.append(e)
        return out

    def _to_stop(self, tx: Tx, node_id: str, known: Sequence[str]) -> list[str]:
        if not known:
            return []
        alive = {ex["id"] for ex in tx.executions_by_ids(known, brief=True)
                 if ex["state"] in ACTIVE and ex["node_id"] == node_id}
        return [k for k in known if k not in alive]

    def poll(self, node_id: str, known: Sequence[str]) -> tuple[list[Row], list[str]]:
        """New assignments for the node (scheduled, and not yet known to it) and executions to stop."""
        with self.store.read() as tx:
            node = tx.node(node_id)
            if node is None:
                raise NotFound(f"no node with id '{node_id}': register again")
            known_set = set(known)
            fresh = [ex for ex in tx.active_executions(node_id, "scheduled") if ex["id"] not in known_set]
            work = self._assignments(tx, fresh) if fresh else []
            stop = self._to_stop(tx, node_id, known)
        if any(w["ports"] for w in work):
            self._publish(node_id, work)
        return work, stop

    def _publish(self, node_id: str, work: list[Row]) -> None:
        """Node ports for the assignments' published ports, from the node-port range the pods' ports come
        from; each assignment's ``ports`` become ``{port, protocol, node_port}`` (or it gets
        ``ports_error`` when the range is full on this node). The ports are held under the execution's id
        (kind 'task') until it ends (see report, lose, _hand_back); any held by an execution that is no
        longer active are given back here too, at the next task with ports. An assignment handed out
        again keeps the ports it was given."""
        low, high = self.settings.node_port_range
        with self.store.transaction() as tx:
            owners = tx.task_port_owners()
            if owners:
                alive = {e["id"] for e in tx.executions_by_ids(owners, brief=True) if e["state"] in ACTIVE}
                if owners - alive:
                    tx.release_task_ports(owners - alive)
            wanting = [w for w in work if w["ports"]]
            held: dict[str, dict[tuple[int, str], int]] = {}
            for r in tx.pod_ports([w["execution_id"] for w in wanting]):
                held.setdefault(r["pod_id"], {})[(r["container_port"], r["protocol"])] = r["port"]
            for w in wanting:
                ex_id, ports = w["execution_id"], w["ports"]
                got = held.get(ex_id)
                for _ in range(5 if got is None else 0):  # another placement may take a port meanwhile
                    taken = {p for p, _proto in tx.used_ports([node_id]).get(node_id, set())}
                    fresh = pick_node_ports(len(ports), taken, low, high, secrets_mod.randbelow(high - low + 1))
                    if len(fresh) < len(ports):
                        break
                    rows = [{"node_id": node_id, "port": n, "protocol": p["protocol"], "pod_id": ex_id,
                             "instance_id": ex_id, "container": str(w["task_name"])[:63],
                             "container_port": p["port"], "kind": "task"} for p, n in zip(ports, fresh, strict=True)]
                    if tx.take_ports(rows):
                        got = {(p["port"], p["protocol"]): n for p, n in zip(ports, fresh, strict=True)}
                        break
                if got is None:
                    w["ports_error"] = (f"no free node port on this node for {len(ports)} port(s) in "
                                        f"{low}-{high}")
                    w["ports"] = []
                    continue
                w["ports"] = [{**p, "node_port": got[(p["port"], p["protocol"])]} for p in ports]

    def attach_task_ports(self, tasks: Iterable[Row], execs: Iterable[Row], tx: Tx | None = None) -> None:
        """Give each running (or scheduled) execution of a task that publishes ports its ``ports`` (see
        task_ports), for the views; one read (in ``tx`` when given), and none when no task publishes any."""
        wanting = {t["id"] for t in tasks if (t.get("spec") or {}).get("ports")}
        live = [e for e in execs if e["task_id"] in wanting and e["state"] in ACTIVE]
        got = self.task_ports((e["id"] for e in live), tx) if live else {}
        for e in live:
            e["ports"] = got.get(e["id"], [])

    def task_ports(self, execution_ids: Iterable[str], tx: Tx | None = None) -> dict[str, list[Row]]:
        """Per execution: the ports it publishes now, ``{port, protocol, node_port, address}`` (address: the
        node's public address and the node port; None while the node's address is unknown)."""
        ids = list(execution_ids)
        if not ids:
            return {}
        if tx is None:
            with self.store.read() as tx:
                return self.task_ports(ids, tx)
        rows = [r for r in tx.pod_ports(ids) if r["kind"] == "task"]
        nodes = {n["id"]: n for n in tx.nodes_by_ids({r["node_id"] for r in rows})} if rows else {}
        out: dict[str, list[Row]] = {}
        for r in rows:
            addr = (nodes.get(r["node_id"]) or {}).get("address")
            out.setdefault(r["pod_id"], []).append({
                "port": r["container_port"], "protocol": r["protocol"], "node_port": r["port"],
                "address": f"{addr}:{r['port']}" if addr else None})
        return out

    def _secrets_of(self, tx: Tx, job_ids: set[str]) -> dict[str, tuple[str, ...]]:
        missing = [j for j in job_ids if j not in self._secrets]
        if missing:
            for jid, spec in tx.job_specs(missing).items():
                self._remember_secrets(jid, spec)
        return {j: self._secrets.get(j, ()) for j in job_ids}

    def _remember_secrets(self, job_id: str, spec: dict[str, Any]) -> None:
        self._secrets[job_id] = workflow.secrets_in(spec)  # its subjobs' secrets too: their output reaches it
        self._secrets.move_to_end(job_id)
        while len(self._secrets) > 10_000:
            self._secrets.popitem(last=False)

    def _assignments(self, tx: Tx, execs: list[Row]) -> list[Row]:
        tasks = {t["id"]: t for t in tx.tasks_by_ids({e["task_id"] for e in execs})}
        specs = tx.job_specs({e["job_id"] for e in execs})
        envs = {}
        for jid, job_spec in specs.items():
            envs[jid] = dict(job_spec.get("env") or {})
            self._remember_secrets(jid, job_spec)
        out = []
        policy = self.settings.policy
        host_policy = policy.for_worker()
        for ex in execs:
            t, job_env = tasks.get(ex["task_id"]), envs.get(ex["job_id"])
            if t is None or job_env is None:
                continue
            spec = t["spec"]  # validated at submit (or when its expressions were evaluated): read as stored
            env = {**job_env, **(spec.get("env") or {}), "CORRAL_JOB_ID": ex["job_id"], "CORRAL_TASK_ID": t["id"],
                   "CORRAL_TASK_NAME": t["name"],
                   "CORRAL_EXECUTION_ID": ex["id"], "CORRAL_ATTEMPT": str(ex["attempt"])}
            cpu_limit, memory_limit = policy.limits(spec.get("resources") or {})
            out.append({
                "execution_id": ex["id"], "job_id": ex["job_id"], "task_id": t["id"], "task_name": t["name"],
                "attempt": ex["attempt"], "image": spec.get("image"), "argv": argv_of(spec),
                "entrypoint": spec.get("entrypoint"), "env": env, "workdir": spec.get("workdir"),
                "timeout": None if spec.get("timeout") is None else parse_duration(spec["timeout"]),
                "cpu_limit": cpu_limit, "memory_limit": memory_limit, "policy": host_policy,
                "gpus": ex["gpus"], "files": spec.get("files") or {},
                "mounts": [{"source": None, "readonly": False, **m} for m in spec.get("mounts") or ()],
                "registry": spec.get("registry"), "networks": spec.get("networks") or [],
                "ports": [dict(p) for p in spec.get("ports") or ()], "probe": spec.get("probe"),
                "escalations": policy.grants(spec),
                "sidecars": [{"name": c.get("name"), "image": c.get("image"), "argv": argv_of(c),
                              "entrypoint": c.get("entrypoint"), "env": {**job_env, **(c.get("env") or {})}}
                             for c in spec.get("sidecars") or ()],
            })
        return out

    def report(self, node_id: str, updates: Sequence[Update], logs: Sequence[LogLine]) -> list[str]:
        """Apply an agent's batch of state changes and output lines, in one transaction.

        The rows involved are read (and on PostgreSQL locked) once, the decisions are made here, and
        the changes are written back in a few bulk compare-and-set statements, whatever the batch size.
        Returns the executions of the batch's lines whose stored log is full: their agent may keep
        the rest of their output.
        """
        if not updates and not logs:
            return []
        full: list[str] = []
        now = time.time()
        with self.store.transaction() as tx:
            asked = {u.execution_id for u in updates} | {ln.execution_id for ln in logs}
            found = tx.executions_by_ids(asked, lock=True, brief=True)
            # Only what is assigned to the calling node counts; lines for an execution that has ended
            # (or is another node's, or unknown) are not appended.
            execs = {e["id"]: e for e in found if e["node_id"] == node_id}
            foreign = asked - set(execs)
            if foreign:
                n = sum(u.execution_id in foreign for u in updates) + sum(ln.execution_id in foreign for ln in logs)
                self.stats["agent_reports_ignored"] += n
                # Another node's execution: a node never legitimately reports one (an execution is one
                # attempt on one node), so the whole batch is refused and nothing of it is written.
                others = sorted(e["id"] for e in found if e["node_id"] != node_id)
                if others:
                    log.warning("node %s reported on %d execution(s) of other nodes (such as %s): refused",
                                node_id, len(others), others[0])
                    raise Forbidden(f"execution '{others[0]}' is not assigned to node '{node_id}': a node "
                                    "reports only on its own executions")
                log.warning("node %s sent %d update(s) or line(s) about %d execution(s) not assigned to it "
                            "(such as %s): ignored", node_id, n, len(foreign), min(foreign))
            if logs:
                open_ = {i: e for i, e in execs.items() if e["state"] in ACTIVE}
                full = self._append_logs(tx, open_, [ln for ln in logs if ln.execution_id in open_])
            # Per execution: when it started, and how it ended (if it did). A start and an end in one
            # batch (a quick task) become one change.
            started: dict[str, Update] = {}
            ended: dict[str, Update] = {}
            progress: dict[str, float] = {}
            for u in updates:
                ex = execs.get(u.execution_id)
                if ex is None or ex["node_id"] != node_id or ex["state"] not in ACTIVE:
                    continue  # unknown, someone else's, or already finished: a late report changes nothing
                if u.state != "running":
                    ended[u.execution_id] = u
                elif u.progress is not None:
                    progress[u.execution_id] = u.progress
                else:
                    started.setdefault(u.execution_id, u)
            if progress:
                tx.set_progress([{"id": execs[i]["task_id"], "_exec": i, "progress": p}
                                 for i, p in progress.items() if i not in ended])
            # A task's published ports go with its attempt, once the node says it has ended there (also
            # when it had ended in the store already: a cancel, a timeout the coordinator decided).
            done_here = {u.execution_id for u in updates if u.state != "running" and u.execution_id in execs}
            if done_here:
                tx.release_task_ports(done_here)
            if not started and not ended:
                return full
            tasks = {t["id"]: t for t in tx.tasks_by_ids({execs[i]["task_id"] for i in {*started, *ended}},
                                                         lock=True, brief=True)}
            ch = _Changes()
            for ex_id, u in started.items():
                if ex_id not in ended and execs[ex_id]["state"] == "scheduled":
                    ch.start(execs[ex_id], tasks.get(execs[ex_id]["task_id"]), u)
            for ex_id, u in ended.items():
                self._end(tx, ch, execs[ex_id], tasks.get(execs[ex_id]["task_id"]), u, started.get(ex_id), now)
            nodes = self._apply(tx, ch, now)
        if nodes:
            self.coord.on_nodes_changed(nodes)
        if ended:
            self.coord.kick()
        return full

    def _append_logs(self, tx: Tx, execs: dict[str, Row], logs: Sequence[LogLine]) -> list[str]:
        """Store the lines of a batch, within each execution's stored log cap: the first line past it
        is replaced by one truncation marker, and what comes after is dropped. Returns the executions
        whose stored log is full."""
        cap = self.settings.max_log_bytes
        stored = {i: e["log_bytes"] or 0 for i, e in execs.items()}
        kept, sizes = cap_logs(logs, stored, cap)
        full = sorted({i for i in {ln.execution_id for ln in logs} if sizes.get(i, stored.get(i, 0)) > cap})
        if not kept:
            return full
        secrets = self._secrets_of(tx, {execs[ln.execution_id]["job_id"] for ln in kept})
        rows = []
        for ln in kept:
            ex = execs[ln.execution_id]
            hidden = secrets.get(ex["job_id"])
            rows.append({"job_id": ex["job_id"], "task_id": ex["task_id"], "execution_id": ln.execution_id,
                         "stream": ln.stream, "line": workflow.redact(ln.line, hidden) if hidden else ln.line,
                         "ts": ln.ts})
        tx.append_logs(rows)
        tx.add_log_bytes([(i, execs[i]["log_bytes"] or 0, n) for i, n in sizes.items()])
        return full

    def _end(self, tx: Tx, ch: _Changes, ex: Row, task: Row | None, u: Update, start: Update | None,
             now: float) -> None:
        ok = u.state == "completed" and u.exit_code == 0
        state = "completed" if ok else ("cancelled" if u.state == "cancelled" else "failed")
        error = None if ok else (u.error or (f"exit code {u.exit_code}" if u.exit_code is not None
                                             else "the attempt ended without an exit code"))
        started_at = start.ts if start else ex["started_at"]
        ch.execs.append({"id": ex["id"], "state": state, "exit_code": u.exit_code, "error": error,
                         "finished_at": u.ts, "started_at": started_at,
                         "container_id": u.container_id or (start.container_id if start else None)
                         or ex["container_id"]})
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return
        if started_at is not None:
            ch.jobs_started[task["job_id"]] = started_at
        if ok:
            self.stats["tasks_completed"] += 1
            ch.tasks.append({"id": task["id"], "_exec": ex["id"], "state": "completed", "exit_code": 0,
                             "error": None, "finished_at": u.ts, "reason": None,
                             "started_at": started_at, "output": u.output})
            ch.done.append(task)
            return
        spec = TaskSpec.model_validate(tx.task_spec(task["id"]))
        # A lost attempt is the infrastructure's fault, not the task's: it does not use up a retry.
        failures = task["attempts"] - task["lost_count"]
        if state == "failed" and failures <= spec.retry.limit:
            delay = spec.retry.delay(failures)
            self.stats["tasks_retried"] += 1
            ch.retries.append({"id": task["id"], "_exec": ex["id"], "state": "pending", "ready_at": now + delay,
                               "node_id": None, "execution_id": None, "exit_code": u.exit_code, "error": error,
                               "reason": f"retrying in {delay:g}s after attempt {failures} failed: {error}"})
            return
        self.stats["tasks_failed"] += 1
        ch.tasks.append({"id": task["id"], "_exec": ex["id"], "state": state, "exit_code": u.exit_code,
                         "error": error, "finished_at": u.ts, "reason": None, "started_at": started_at,
                         "output": u.output})
        ch.failures.append((task, state, f"task '{task['name']}' {state}: {error}"))

    def _apply(self, tx: Tx, ch: _Changes, now: float) -> set[str]:
        """Write the batch's changes; returns the nodes that have executions to stop."""
        expected = len(ch.started) + len(ch.execs)
        changed = tx.cas_many("executions", ["scheduled"], ch.started)
        changed += tx.cas_many("executions", ACTIVE, ch.execs)
        changed += tx.cas_many("tasks", ["scheduled"], ch.tasks_started, on_execution=True)
        changed += tx.cas_many("tasks", ACTIVE, ch.tasks + ch.retries, on_execution=True)
        expected += len(ch.tasks_started) + len(ch.tasks) + len(ch.retries)
        if changed != expected:  # the rows were read under lock: this would be a bug, not a race
            log.warning("report: %d of %d compare-and-set changes applied", changed, expected)
        tx.jobs_to_state(ch.jobs_started, ["pending", "scheduled"], state=JobState.RUNNING.value)
        tx.jobs_started(ch.jobs_started)
        failed_jobs = {t["job_id"] for t, _, _ in ch.failures}
        if ch.done:
            self.flow.advance(tx, [t for t in ch.done if t["job_id"] not in failed_jobs], now)
        nodes: set[str] = set()
        for task, state, error in ch.failures:
            nodes |= self.flow.fail(tx, task, error, now, state)
        return nodes

    def lose(self, tx: Tx, ex: Row, now: float, why: str) -> None:
        """The node running ``ex`` is gone: reschedule its task, unless it was lost too often."""
        if not tx.cas_execution(ex["id"], ACTIVE, state="lost", finished_at=now, error=why):
            return
        tx.release_task_ports([ex["id"]])  # its published ports, if it had any
        task = tx.task(ex["task_id"])
        if task is None or task["execution_id"] != ex["id"] or task["state"] not in ACTIVE:
            return
        self.stats["tasks_lost"] += 1
        if task["lost_count"] < MAX_LOST_RESCHEDULES:
            tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="pending", ready_at=now,
                        node_id=None, execution_id=None, lost_count=task["lost_count"] + 1,
                        reason=f"rescheduling: {why}")
        elif tx.cas_task(task["id"], ACTIVE, on_execution=ex["id"], state="lost", error=why, finished_at=now):
            self.coord.on_nodes_changed(self.flow.fail(
                tx, task, f"task '{task['name']}' lost {task['lost_count'] + 1} times: {why}", now))
