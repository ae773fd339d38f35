"""Placement of pending pods: ``plan()`` for resources, runtime and node selector, plus the ports a pod
needs on its node (the ``hostPort`` it asks for, and a node port from the configured range for each other
published port). A node where a port cannot be had is not looked at; none anywhere: the pod waits with the
reason. Pure: no store, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.domain.quotas import Budgets
from corral.domain.resources import Resources
from corral.domain.services import ANY_NODE
from corral.scheduler.placement import NodeView, Strategy, TaskView, plan

POD_QUEUE = "\x00pods"  # pods are not queued: every ready node takes them


@dataclass(frozen=True, slots=True)
class PodRequest:
    id: str
    seq: int
    resources: Resources
    runtime: str
    node_selector: dict[str, str] = field(default_factory=dict)
    host_ports: tuple[tuple[int, str], ...] = ()  # (port, protocol) asked for as hostPort
    node_ports: tuple[str, ...] = ()  # the protocol of each port that needs a node port
    namespace: str = "default"


@dataclass(frozen=True, slots=True)
class PodPlacement:
    pod_id: str
    node_id: str
    node_ports: tuple[int, ...]  # in the order of PodRequest.node_ports


@dataclass(slots=True)
class PodPlan:
    placements: list[PodPlacement] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def _free_ports(used: set[tuple[int, str]], protocols: Sequence[str], lo: int, hi: int) -> tuple[int, ...] | None:
    """The lowest free port in ``lo..hi`` for each protocol in turn, or None if the range runs out."""
    taken = set(used)
    out = []
    for proto in protocols:
        port = next((p for p in range(lo, hi + 1) if (p, proto) not in taken), None)
        if port is None:
            return None
        taken.add((port, proto))
        out.append(port)
    return tuple(out)


def _ports_fit(pod: PodRequest, used: set[tuple[int, str]], in_range: Counter[str], size: int) -> bool:
    """Whether the node has the pod's host ports free, and enough free node ports (``in_range``: how many
    of the range's ports it holds, per protocol)."""
    if any(hp in used for hp in pod.host_ports):
        return False
    return all(size - in_range[proto] >= n for proto, n in Counter(pod.node_ports).items())


def _ports_reason(pod: PodRequest, n: int) -> str:
    what = [f"hostPort {p}/{proto}" for p, proto in pod.host_ports]
    if pod.node_ports:
        what.append(f"{len(pod.node_ports)} node port{'s' if len(pod.node_ports) != 1 else ''}")
    return (f"waiting for ports: none of the {n} node{'s' if n != 1 else ''} with room for it has "
            + " and ".join(what) + " free")


def place_pods(nodes: Iterable[NodeView], pods: Iterable[PodRequest], used: Mapping[str, set[tuple[int, str]]],
               port_range: tuple[int, int], strategy: Strategy = "spread", budgets: Budgets | None = None
               ) -> PodPlan:
    """Place ``pods`` (oldest first) on ``nodes`` without over-committing a node or taking a port twice.
    ``used``: the ports held on each node. The views are copied: the caller's stay as they were.
    ``budgets``: the namespaces' quotas and usage (a pod that would pass its namespace's waits)."""
    lo, hi = port_range
    views = [NodeView(n.id, n.name, n.capacity, n.allocated, n.labels, n.runtimes, frozenset({POD_QUEUE}),
                      list(n.free_gpus)) for n in nodes]
    # Ports held on every node (a NodePort service's, under the pseudo node ANY_NODE) count on each: a node
    # that joined after the service was made has no row of its own for them yet.
    everywhere = set(used.get(ANY_NODE, ()))
    held = {n.id: set(used.get(n.id, ())) | everywhere for n in views}
    in_range = {nid: Counter(proto for port, proto in ports if lo <= port <= hi) for nid, ports in held.items()}
    out = PodPlan()
    for pod in sorted(pods, key=lambda p: p.seq):
        over = budgets.check(pod.namespace, pod.resources, "pod") if budgets is not None else None
        if over is not None:
            out.reasons[pod.id] = over
            continue
        task = TaskView(pod.id, pod.id, POD_QUEUE, 0, pod.seq, pod.resources, pod.runtime, pod.node_selector)
        needs = pod.host_ports or pod.node_ports
        fit = [n for n in views if _ports_fit(pod, held[n.id], in_range[n.id], hi - lo + 1)] if needs else views
        result = plan(fit, [task], strategy)
        if not result.placements:
            anywhere = plan(views, [task], strategy)
            if anywhere.placements:  # room for it, but not with its ports
                room = sum(1 for n in views if plan([n], [task], strategy).placements)
                out.reasons[pod.id] = _ports_reason(pod, room)
            else:
                out.reasons[pod.id] = anywhere.reasons.get(pod.id) or result.reasons.get(pod.id, "cannot be placed")
            continue
        node = next(n for n in views if n.id == result.placements[0].node_id)
        ports = _free_ports(held[node.id], pod.node_ports, lo, hi)
        assert ports is not None  # _ports_fit said so
        taken = {*zip(ports, pod.node_ports, strict=True), *pod.host_ports} - held[node.id]
        held[node.id] |= taken
        in_range[node.id].update(proto for port, proto in taken if lo <= port <= hi)
        node.allocated = node.allocated + pod.resources
        out.placements.append(PodPlacement(pod.id, node.id, ports))
        if budgets is not None:
            budgets.take(pod.namespace, pod.resources, "pod")
    return out
