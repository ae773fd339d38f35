"""The workflow graph of a job's tasks, laid out for an SVG: pure, no I/O.

A *scope* (the job's top-level tasks, or a composite's children) is drawn left to right: a chain as one
column per task with an edge from each to the next; a graph (``depends_on``) as one column per layer (a
task's layer is one more than its deepest dependency) with an edge per dependency; the children of a
``parallel`` or ``each`` as one column, stacked. A composite whose children exist is a frame around its
scope, its name on top; ``steps`` (pre, the task, post) are a chain inside theirs. A subjob is one box
that links to the job it started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BOX_W, BOX_H = 168, 38
GAP_X, GAP_Y = 36, 14
PAD, HEADER = 10, 22
MAX_LABEL = 22  # characters of a name shown in a box (the whole name is its tooltip)
STACKED = frozenset({"parallel", "each"})


@dataclass(frozen=True)
class Box:
    id: str
    name: str
    state: str
    kind: str
    x: float
    y: float
    w: float
    h: float
    frame: bool = False  # a composite drawn around its children
    href: str | None = None  # a subjob: the job it started

    @property
    def label(self) -> str:
        return self.name if len(self.name) <= MAX_LABEL else self.name[: MAX_LABEL - 1] + "…"


@dataclass(frozen=True)
class Edge:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Graph:
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: float = 0
    height: float = 0


@dataclass
class _Block:
    """A task (or a scope) drawn at the origin; ``at`` moves it."""

    w: float
    h: float
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    mid: float = BOX_H / 2  # where edges meet its sides, from its top

    def at(self, dx: float, dy: float) -> tuple[list[Box], list[Edge]]:
        boxes = [Box(b.id, b.name, b.state, b.kind, b.x + dx, b.y + dy, b.w, b.h, b.frame, b.href) for b in self.boxes]
        edges = [Edge(e.x1 + dx, e.y1 + dy, e.x2 + dx, e.y2 + dy) for e in self.edges]
        return boxes, edges


def layout(tasks: Sequence[Mapping[str, Any]], subjob_href: str = "/ui/jobs/{}") -> Graph:
    """``tasks``: the job's task views (``id``, ``name``, ``state``, ``kind``, ``parent_id``, ``position``,
    and ``depends_on``/``subjob_id`` where they have them). A child whose parent is not among them is drawn
    at the top level."""
    ids = {str(t["id"]) for t in tasks}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for t in tasks:
        parent = t.get("parent_id")
        children.setdefault(parent if parent in ids else None, []).append(t)
    for kids in children.values():
        kids.sort(key=lambda t: (int(t.get("position") or 0), str(t["name"])))
    block = _scope(children.get(None, []), children, "job", subjob_href, set())
    return Graph(*block.at(0, 0), width=block.w, height=block.h)


def _task(t: Mapping[str, Any], children: Mapping[str | None, list[Mapping[str, Any]]], href: str,
          seen: set[str]) -> _Block:
    tid, kind, state = str(t["id"]), str(t.get("kind") or "run"), str(t.get("state") or "pending")
    name = str(t.get("name") or tid[:12])
    kids = children.get(tid, [])
    if not kids or tid in seen:
        link = href.format(t["subjob_id"]) if t.get("subjob_id") else None
        return _Block(BOX_W, BOX_H, [Box(tid, name, state, kind, 0, 0, BOX_W, BOX_H, href=link)])
    inner = _scope(kids, children, kind, href, seen | {tid})
    w, h = max(inner.w + 2 * PAD, BOX_W), HEADER + inner.h + PAD
    boxes, edges = inner.at(PAD, HEADER)
    return _Block(w, h, [Box(tid, name, state, kind, 0, 0, w, h, frame=True), *boxes], edges, mid=HEADER + inner.mid)


def layers(tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each task's column in a graph: 0 with no dependency (or only unknown ones), else one more than its
    deepest dependency's. A cycle (which submission refuses) is cut where it is met."""
    by_name = {str(t["name"]): t for t in tasks}
    out: dict[str, int] = {}

    def depth(name: str, path: frozenset[str]) -> int:
        if name in out:
            return out[name]
        deps = [str(d) for d in by_name[name].get("depends_on") or () if str(d) in by_name and str(d) not in path]
        out[name] = max((depth(d, path | {name}) + 1 for d in deps), default=0)
        return out[name]

    for n in by_name:
        depth(n, frozenset())
    return out


def _scope(tasks: Sequence[Mapping[str, Any]], children: Mapping[str | None, list[Mapping[str, Any]]],
           kind: str, href: str, seen: set[str]) -> _Block:
    if not tasks:
        return _Block(0, 0)
    blocks = [_task(t, children, href, seen) for t in tasks]
    graph = any(t.get("depends_on") for t in tasks)
    if graph:
        layer = layers(tasks)
        columns: list[list[int]] = [[] for _ in range(max(layer.values()) + 1)]
        for i, t in enumerate(tasks):
            columns[layer[str(t["name"])]].append(i)
    elif kind in STACKED:
        columns = [list(range(len(tasks)))]
    else:
        columns = [[i] for i in range(len(tasks))]
    placed: dict[int, tuple[float, float]] = {}  # block index -> its origin
    out = _Block(0, 0)
    x = 0.0
    for col in columns:
        y = 0.0
        for i in col:
            placed[i] = (x, y)
            boxes, edges = blocks[i].at(x, y)
            out.boxes += boxes
            out.edges += edges
            y += blocks[i].h + GAP_Y
        out.h = max(out.h, y - GAP_Y)
        x += max(blocks[i].w for i in col) + GAP_X
    out.w = x - GAP_X

    def link(a: int, b: int) -> None:
        (ax, ay), (bx, by) = placed[a], placed[b]
        out.edges.append(Edge(ax + blocks[a].w, ay + blocks[a].mid, bx, by + blocks[b].mid))

    if graph:
        index = {str(t["name"]): i for i, t in enumerate(tasks)}
        for i, t in enumerate(tasks):
            for d in t.get("depends_on") or ():
                if str(d) in index and layer[str(d)] < layer[str(t["name"])]:
                    link(index[str(d)], i)
    elif kind not in STACKED:
        for a, b in zip(columns, columns[1:], strict=False):
            link(a[0], b[0])
    out.mid = blocks[columns[0][0]].mid
    return out
