"""Task dependencies: checking a job's ``depends_on`` graph and ordering it. Pure, O(V + E).

A job in which no task names ``depends_on`` is a sequential chain (each task waits for the one before
it). Once any task names ``depends_on``, the job is a graph: a task waits for exactly the tasks it names,
a task that names none waits for nothing, and the order of the list implies nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DependencyError(ValueError):
    """An unknown name or a cycle in ``depends_on``."""


def check(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Validate ``{task name: names it depends on}`` and return the names in a topological order.

    Raises ``DependencyError`` naming the unknown task, or the tasks of one cycle (a task that depends on
    itself is a cycle of one).
    """
    for name, ds in deps.items():
        for d in ds:
            if d not in deps:
                raise DependencyError(f"task '{name}' depends on '{d}', which is not a task of this job")
    # Kahn's algorithm: repeatedly take the tasks whose dependencies are all taken.
    indegree = {name: len(set(ds)) for name, ds in deps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    for name, ds in deps.items():
        for d in set(ds):
            dependents[d].append(name)
    order = [name for name, n in indegree.items() if n == 0]
    i = 0
    while i < len(order):
        for nxt in dependents[order[i]]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                order.append(nxt)
        i += 1
    if len(order) < len(deps):
        cycle = _a_cycle(deps, {name for name, n in indegree.items() if n > 0})
        raise DependencyError("the tasks' depends_on form a cycle: " + " -> ".join(f"'{c}'" for c in cycle))
    return order


def _a_cycle(deps: Mapping[str, Sequence[str]], left: set[str]) -> list[str]:
    """One cycle among ``left`` (tasks Kahn could not order), closed: ``[a, b, a]``.

    Every task left depends on at least one other task left, so walking those edges must revisit one.
    """
    start = next(n for n in deps if n in left)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in left)
    return path[seen[node]:] + [node]


def ready(deps: Mapping[str, Sequence[str]], done: set[str], waiting: set[str]) -> list[str]:
    """The ``waiting`` tasks whose dependencies are all in ``done``."""
    return [n for n in deps if n in waiting and all(d in done for d in deps[n])]
