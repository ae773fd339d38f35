"""Placement of pending tasks onto nodes.

``plan`` takes plain views of the nodes (with what is already allocated on them) and of the tasks that
are ready to run, and returns which task goes where, plus a reason for each task that cannot be placed
now. It never touches the store, so it is fast, deterministic and testable on thousands of nodes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from corral.domain.quotas import Budgets
from corral.domain.resources import Resources, format_size

Strategy = Literal["spread", "binpack"]
# A node_selector key every node matches with its own id: how a task is pinned to one node (Podling's
# execute on a worker's port, for one).
NODE_ID_LABEL = "corral.io/node-id"


@dataclass(slots=True)
class NodeView:
    id: str
    name: str
    capacity: Resources
    allocated: Resources
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset({"default"})
    free_gpus: list[int] = field(default_factory=list)

    @property
    def free(self) -> Resources:
        return self.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    job_id: str
    queue: str
    priority: int
    seq: int  # submission order: lower is older
    resources: Resources
    runtime: str
    node_selector: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"  # its job's: what its namespace's quota counts


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    node_id: str
    gpus: tuple[int, ...] = ()


@dataclass(slots=True)
class Plan:
    placements: list[Placement] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    # Of the tasks with a reason, those that no node of the snapshot could hold even empty (a queue nobody
    # serves, a runtime nobody offers, a selector nothing matches, more than the largest node has): they
    # cannot be placed until the nodes change, whatever finishes.
    never: set[str] = field(default_factory=set)


def _score(node: NodeView, need: Resources, strategy: Strategy) -> float:
    """Higher is better. Spread prefers the emptiest node, bin-pack the fullest that still fits."""
    cap = node.capacity
    after = node.allocated + need
    used = 0.0
    dims = 0
    for a, c in ((after.cpu, cap.cpu), (after.memory, cap.memory), (after.gpu, cap.gpu)):
        if c > 0:
            used += a / c
            dims += 1
    frac = used / dims if dims else 0.0
    return -frac if strategy == "spread" else frac


def unserved_reason(queue: str, any_nodes: bool) -> str:
    """Why a task of a queue that no ready node serves waits."""
    return f"no ready worker serves queue '{queue}'" if any_nodes else "no worker is registered and ready"


def _why_not(task: TaskView, nodes: Sequence[NodeView]) -> str:
    serving = [n for n in nodes if task.queue in n.queues]
    if not serving:
        return unserved_reason(task.queue, bool(nodes))
    with_runtime = [n for n in serving if task.runtime in n.runtimes]
    if not with_runtime:
        return f"no node offers runtime {task.runtime}" + (
            f" on queue '{task.queue}'" if task.queue != "default" else "")
    matching = [n for n in with_runtime if _labels_match(n, task.node_selector)]
    if not matching:
        sel = ", ".join(f"{k}={v}" for k, v in sorted(task.node_selector.items()))
        return f"no node matches node_selector {sel}"
    need = task.resources
    big = max(matching, key=lambda n: (n.capacity.gpu, n.capacity.cpu, n.capacity.memory))
    if need.gpu > max(n.capacity.gpu for n in matching):
        return f"needs {need.gpu} GPU{'s' if need.gpu != 1 else ''}; the largest node has {big.capacity.gpu}"
    if need.cpu > max(n.capacity.cpu for n in matching) + 1e-9:
        top = max(n.capacity.cpu for n in matching)
        return f"needs {need.cpu:g} CPU cores; the largest node has {top:g}"
    if need.memory > max(n.capacity.memory for n in matching):
        top_m = max(n.capacity.memory for n in matching)
        return f"needs {format_size(need.memory)} memory; the largest node has {format_size(top_m)}"
    if need.disk > max(n.capacity.disk for n in matching):
        top_d = max(n.capacity.disk for n in matching)
        return f"needs {format_size(need.disk)} disk; the largest node has {format_size(top_d)}"
    return _no_room(need, len(matching))


def _why_never(task: TaskView, nodes: Sequence[NodeView]) -> tuple[str, bool]:
    """Why a task was not placed, and whether no node could hold it even empty."""
    reason = _why_not(task, nodes)
    return reason, not reason.startswith(_NO_ROOM)


_NO_ROOM = "waiting for capacity: "


def _no_room(need: Resources, n: int) -> str:
    # Kept free of changing numbers so that the reason is written once, not on every pass.
    wants = [f"cpu {need.cpu:g}", f"memory {format_size(need.memory)}"]
    if need.disk:
        wants.append(f"disk {format_size(need.disk)}")
    if need.gpu:
        wants.append(f"{need.gpu} GPU")
    return (f"{_NO_ROOM}none of the {n} eligible node{'s' if n != 1 else ''} has "
            + ", ".join(wants) + " free")


def _labels_match(node: NodeView, selector: dict[str, str]) -> bool:
    return all((node.id if k == NODE_ID_LABEL else node.labels.get(k)) == v for k, v in selector.items())


# A group of tasks (same queue, runtime, node selector and request) of this many or more keeps its eligible
# nodes in a heap ordered by score; a smaller one scans them, which costs no more than building the heap. At
# most _MAX_HEAPS groups get a heap in one plan (the largest first), bounding the memory a plan of thousands
# of different requests takes; the others are scanned, as every task was before heaps.
_HEAP_MIN_TASKS = 2
_MAX_HEAPS = 256


class _Slot:
    """A node during one plan: what placement reads and changes, in plain numbers (no Resources per step).
    ``version`` grows with each placement on it, so that a heap entry scored before is known to be stale."""

    __slots__ = ("alloc_cpu", "alloc_disk", "alloc_gpu", "alloc_mem", "buckets", "cap_cpu", "cap_disk",
                 "cap_gpu", "cap_mem", "free_gpus", "index", "logged", "node", "version")

    def __init__(self, index: int, node: NodeView) -> None:
        self.index = index
        self.node = node
        c, a = node.capacity, node.allocated
        self.cap_cpu, self.cap_mem, self.cap_disk, self.cap_gpu = c.cpu, c.memory, c.disk, c.gpu
        self.alloc_cpu, self.alloc_mem, self.alloc_disk, self.alloc_gpu = a.cpu, a.memory, a.disk, a.gpu
        self.free_gpus = list(node.free_gpus)
        self.version = 0
        self.buckets: list[_Bucket] = []  # its bucket in each pool it is in
        self.logged = False  # in the plan's ``changed``: heaps push it themselves

    def fits(self, need: Resources) -> bool:
        """``need.fits_in(free)`` and enough free GPU indexes, with the same arithmetic."""
        return (need.cpu <= (self.cap_cpu - self.alloc_cpu) + 1e-9
                and need.memory <= self.cap_mem - self.alloc_mem and need.disk <= self.cap_disk - self.alloc_disk
                and (not need.gpu or (need.gpu <= self.cap_gpu - self.alloc_gpu and len(self.free_gpus) >= need.gpu)))

    def score(self, need: Resources, spread: bool) -> float:
        """``_score`` on the slot's numbers (the same sums in the same order, so the same float)."""
        used = 0.0
        dims = 0
        if self.cap_cpu > 0:
            used += (self.alloc_cpu + need.cpu) / self.cap_cpu
            dims += 1
        if self.cap_mem > 0:
            used += (self.alloc_mem + need.memory) / self.cap_mem
            dims += 1
        if self.cap_gpu > 0:
            used += (self.alloc_gpu + need.gpu) / self.cap_gpu
            dims += 1
        frac = used / dims if dims else 0.0
        return -frac if spread else frac

    def key(self, need: Resources, spread: bool) -> float | None:
        """The slot's heap key for ``need`` (its score, negated), or None if the request does not fit."""
        return -self.score(need, spread) if self.fits(need) else None

    def take(self, need: Resources) -> tuple[int, ...]:
        self.alloc_cpu += need.cpu
        self.alloc_mem += need.memory
        self.alloc_disk += need.disk
        self.alloc_gpu += need.gpu
        gpus = tuple(self.free_gpus[: need.gpu])
        del self.free_gpus[: need.gpu]
        self.version += 1
        return gpus


class _Pool:
    """The eligible nodes of one (queue, runtime, node selector), in snapshot order, and the same nodes in
    buckets of identical state in the snapshot (capacity, allocation, free GPUs): the nodes of a bucket that
    have been given nothing yet in this plan fit and score alike, so a heap holds one entry for them
    instead of one per node. On a cluster of a few node sizes that is a few dozen entries, not thousands."""

    __slots__ = ("buckets", "members", "slots")

    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots
        self.members = {s.index for s in slots}
        by_state: dict[tuple[float, ...], _Bucket] = {}
        for s in slots:
            n = s.node
            c, a = n.capacity, n.allocated
            state = (c.cpu, c.memory, c.disk, c.gpu, a.cpu, a.memory, a.disk, a.gpu, len(n.free_gpus))
            bucket = by_state.get(state)
            if bucket is None:
                bucket = by_state[state] = _Bucket()
            bucket.members.append(s)
            if s.version and not s.logged:
                bucket.departed.append(s)
            s.buckets.append(bucket)
        self.buckets = list(by_state.values())


def _ties(s: _Slot) -> bool:
    """Whether the node, given work in this plan, still scores as it did in the snapshot for any request:
    the work used none of the CPU, memory or GPUs its score counts (only disk, say)."""
    a = s.node.allocated
    return ((s.cap_cpu <= 0 or s.alloc_cpu == a.cpu) and (s.cap_mem <= 0 or s.alloc_mem == a.memory)
            and (s.cap_gpu <= 0 or s.alloc_gpu == a.gpu))


class _Bucket:
    """Nodes in one snapshot state, by index, and (``departed``) those of them given work since that now
    score worse than the bucket does under spread, for any request (they never come back to it)."""

    __slots__ = ("departed", "members", "pos")

    def __init__(self) -> None:
        self.members: list[_Slot] = []
        self.departed: list[_Slot] = []
        self.pos = 0

    def first(self) -> _Slot | None:
        """The first node given nothing yet."""
        members, pos = self.members, self.pos
        while pos < len(members) and members[pos].version:
            pos += 1
        self.pos = pos
        return members[pos] if pos < len(members) else None


class _Heap:
    """The eligible nodes of one group of tasks, best score first; on a tie the earlier node, as a scan
    picks. Entries are (-score, node index, node version, node) for a node given work in this plan, and
    (-score, index of its first untouched node, -1, bucket) for a bucket's untouched nodes.

    Nothing is freed during a plan, so a node that no longer fits the group's request never will, and a
    node's score only moves one way as it is given work: down under spread, up under bin-pack.
    Under spread a node that left a bucket scores worse than the bucket (it uses more), so it is pushed with
    its own entry only once the bucket has no untouched node left; one that may still tie with it (it was
    given only what its score does not count, see ``_ties``) is logged in ``changed`` and pushed before the
    heap's next pick. A stale entry overrates its node, so it is re-scored when it reaches the top. Nodes
    that never come near the top cost nothing. (Spread's "worse" is in real numbers: a float sum could
    round a tiny difference away, and then the node picked is one of equal score.)
    Under bin-pack a node given work may now beat the top, so before each pick the heap pushes a fresh entry
    for each node given work since it last looked (``changed``: every placement's node, in order), once per
    node however much it was given, and drops stale entries."""

    __slots__ = ("entries", "members", "need", "seen", "spread")

    def __init__(self, pool: _Pool, need: Resources, spread: bool, touched: list[_Slot], changed: list[_Slot]
                 ) -> None:
        self.need = need
        self.spread = spread
        self.members = members = pool.members
        self.seen = len(changed)  # how much of ``changed`` the entries account for
        entries: list[tuple[float, int, int, _Slot | _Bucket]] = []
        self.entries = entries
        for bucket in pool.buckets:
            s = bucket.first()
            if s is not None:
                if s.fits(need):
                    entries.append((-s.score(need, spread), s.index, -1, bucket))
            elif spread:  # all of it has departed: no bucket entry to bring them in later
                entries.extend((-d.score(need, True), d.index, d.version, d) for d in bucket.departed
                               if d.fits(need))
        # Under spread, ``changed`` holds only the nodes that were given work and still tie: their buckets
        # do not stand for them.
        logged = {s.index: s for s in changed}.values() if spread else touched
        entries.extend((-s.score(need, spread), s.index, s.version, s) for s in logged
                       if s.index in members and s.fits(need))
        heapq.heapify(entries)

    def best(self, changed: list[_Slot]) -> _Slot | None:
        entries, need, spread = self.entries, self.need, self.spread
        push = heapq.heappush
        if self.seen < len(changed):
            members = self.members
            for s in {s.index: s for s in changed[self.seen:] if s.index in members}.values():
                if s.fits(need):
                    push(entries, (-s.score(need, spread), s.index, s.version, s))
            self.seen = len(changed)
        while entries:
            key, index, version, obj = entries[0]
            if isinstance(obj, _Bucket):
                first = obj.first()
                if first is None:
                    heapq.heappop(entries)
                    if spread:  # now its departed nodes may come next
                        for d in obj.departed:
                            if d.fits(need):
                                push(entries, (-d.score(need, True), d.index, d.version, d))
                elif first.index != index:  # its first node was given work: the next one stands for it
                    heapq.heapreplace(entries, (key, first.index, -1, obj))
                else:
                    return first
            elif version == obj.version:
                return obj  # it fitted when scored, and has been given nothing since
            elif spread and obj.fits(need):
                heapq.heapreplace(entries, (-obj.score(need, True), index, obj.version, obj))
            else:  # no longer fits, or (bin-pack) a fresh entry for it was pushed above
                heapq.heappop(entries)
        return None


def _scan(eligible: list[_Slot], need: Resources, spread: bool) -> _Slot | None:
    best: _Slot | None = None
    best_score = 0.0
    for s in eligible:
        if not s.fits(need):
            continue
        sc = s.score(need, spread)
        if best is None or sc > best_score:
            best, best_score = s, sc
    return best


class _Group:
    """Tasks that ask for the same thing (queue, runtime, node selector, request) in one plan."""

    __slots__ = ("heap", "key", "pool", "size")

    def __init__(self, key: tuple[str, str, tuple[tuple[str, str], ...], Resources]) -> None:
        self.key = key
        self.size = 0
        self.pool: _Pool | None = None
        self.heap: _Heap | None = None


def plan(nodes: Iterable[NodeView], tasks: Iterable[TaskView], strategy: Strategy = "spread",
         budgets: Budgets | None = None) -> Plan:
    """Place ``tasks`` (highest priority first, then oldest) onto ``nodes`` without over-committing any.

    Each task goes to the node that scoring every eligible node would pick (the best score; the earliest
    such node on a tie) without scoring every node: the nodes that serve a queue, offer a runtime and match
    a node selector are found once per distinct combination, and the tasks that ask for the same thing
    share a heap of those nodes ordered by score, kept up to date lazily (see ``_Heap``). The caller's node
    views are left as they were. ``budgets``: the quotas and usage of the namespaces that have a quota (a
    task that would pass its namespace's waits with that reason; each placement counts against it).
    """
    views = list(nodes)
    slots = [_Slot(i, n) for i, n in enumerate(views)]
    by_id = {s.node.id: s for s in slots}
    spread = strategy == "spread"
    result = Plan()
    by_queue: dict[str, list[_Slot]] = {}
    for s in slots:
        for q in s.node.queues:
            by_queue.setdefault(q, []).append(s)
    ordered = sorted(tasks, key=lambda t: (-t.priority, t.seq))
    groups: dict[tuple[str, str, tuple[tuple[str, str], ...], Resources], _Group] = {}
    task_groups = []
    for task in ordered:
        sel = tuple(sorted(task.node_selector.items())) if task.node_selector else ()
        key = (task.queue, task.runtime, sel, task.resources)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(key)
        g.size += 1
        task_groups.append(g)
    # The largest groups get a heap: those of one task are cheaper to scan.
    heaped = {id(g) for g in sorted((g for g in groups.values() if g.size >= _HEAP_MIN_TASKS),
                                    key=lambda g: -g.size)[:_MAX_HEAPS]}
    pool_of: dict[tuple[object, ...], _Pool] = {}
    why: dict[int, tuple[str, bool]] = {}
    touched: list[_Slot] = []  # the nodes given work, the first time each is (they leave their buckets)
    # The nodes given work that heaps must push themselves, in order: under bin-pack every placement's node,
    # under spread those that still tie with their bucket.
    changed: list[_Slot] = []
    placements = result.placements
    for task, g in zip(ordered, task_groups, strict=True):
        need = task.resources
        if budgets is not None:
            over = budgets.check(task.namespace, need, "task")
            if over is not None:
                result.reasons[task.id] = over
                continue
        pool = g.pool
        if pool is None:
            ekey = g.key[:3]
            pool = pool_of.get(ekey)
            if pool is None:
                pool = pool_of[ekey] = _Pool(_eligible(task, by_queue, by_id))
            g.pool = pool
        heap = g.heap
        if heap is None and id(g) in heaped:
            heap = g.heap = _Heap(pool, need, spread, touched, changed)
        best = heap.best(changed) if heap is not None else _scan(pool.slots, need, spread)
        if best is None:
            # Tasks that ask for the same thing wait for the same reason: work it out once per pass.
            known = why.get(id(g))
            if known is None:
                known = why[id(g)] = _why_never(task, views)
            result.reasons[task.id] = known[0]
            if known[1]:
                result.never.add(task.id)
            continue
        if not best.version:
            touched.append(best)
        gpus = best.take(need)
        if not spread or _ties(best):
            changed.append(best)
            best.logged = True
        elif best.version == 1:
            for bucket in best.buckets:
                bucket.departed.append(best)
        placements.append(Placement(task.id, best.node.id, gpus))
        if budgets is not None:
            budgets.take(task.namespace, need, "task")
    return result


def _eligible(task: TaskView, by_queue: dict[str, list[_Slot]], by_id: dict[str, _Slot]) -> list[_Slot]:
    """The nodes (in snapshot order) that serve the task's queue, offer its runtime and match its selector;
    a selector that names a node by id looks that one node up."""
    sel = task.node_selector
    pinned = sel.get(NODE_ID_LABEL)
    if pinned is not None:
        one = by_id.get(pinned)
        pool = [one] if one is not None and task.queue in one.node.queues else []
    else:
        pool = by_queue.get(task.queue, [])
    return [s for s in pool if task.runtime in s.node.runtimes and (not sel or _labels_match(s.node, sel))]
