"""The store's queries about per-namespace quotas (corral.domain.quotas) and what each namespace holds.

``Tx`` (store/sql.py) takes these methods in as a mixin. Usage is derived from the executions and pods
(never a counter that can drift): the same sums as a node's allocation, grouped by namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from corral.domain.quotas import Quota, Usage
from corral.store import schema as s
from corral.store.rows import Row, chunks

_Q, _E, _J, _P = s.namespace_quotas.c, s.executions.c, s.jobs.c, s.pods.c
_EXEC_ACTIVE = ("scheduled", "running")  # an execution in these holds its request (store/sql.py ACTIVE)
_POD_PLACED = ("scheduled", "running", "unknown", "terminating")  # store/pods.py PLACED
_QUOTAS = sa.select(s.namespace_quotas)


def quota_of(row: Row) -> Quota:
    return Quota(row["cpu"], row["memory"], row["gpus"], row["tasks"], row["pods"])


class QuotaQueries:
    c: Connection

    def quotas(self) -> dict[str, Row]:
        """Every namespace's quota row, by namespace (an empty table costs one indexless read)."""
        return {r["namespace"]: dict(r) for r in self.c.execute(_QUOTAS).mappings()}

    def quota(self, namespace: str) -> Row | None:
        r = self.c.execute(_QUOTAS.where(_Q.namespace == namespace)).mappings().first()
        return dict(r) if r else None

    def put_quota(self, row: Row) -> None:
        """Insert or replace the namespace's quota."""
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        values = {k: v for k, v in row.items() if k != "namespace"}
        q = insert(s.namespace_quotas).values(**row).on_conflict_do_update(index_elements=[_Q.namespace],
                                                                           set_=values)
        self.c.execute(q)

    def delete_quota(self, namespace: str) -> bool:
        return self.c.execute(sa.delete(s.namespace_quotas).where(_Q.namespace == namespace)).rowcount == 1

    def namespace_usage(self, namespaces: Iterable[str]) -> dict[str, Usage]:
        """What each of ``namespaces`` holds: its scheduled and running executions and its placed pods."""
        out: dict[str, Usage] = {}
        for part in chunks(sorted(set(namespaces))):
            q = (sa.select(_J.namespace, sa.func.sum(_E.cpu), sa.func.sum(_E.memory), sa.func.sum(_E.gpu),
                           sa.func.count())
                 .select_from(s.executions.join(s.jobs, _J.id == _E.job_id))
                 .where(_E.state.in_(_EXEC_ACTIVE), _J.namespace.in_(part)).group_by(_J.namespace))
            _add_usage(out, self.c.execute(q), "tasks")
            q = (sa.select(_P.namespace, sa.func.sum(_P.cpu), sa.func.sum(_P.memory), sa.func.sum(_P.gpu),
                           sa.func.count())
                 .where(_P.state.in_(_POD_PLACED), _P.namespace.in_(part)).group_by(_P.namespace))
            _add_usage(out, self.c.execute(q), "pods")
        return out

    def job_namespaces(self, job_ids: Iterable[str]) -> dict[str, str]:
        """The namespace of each job."""
        out: dict[str, str] = {}
        for part in chunks(sorted(set(job_ids))):
            out.update((jid, ns) for jid, ns in self.c.execute(
                sa.select(_J.id, _J.namespace).where(_J.id.in_(part))))
        return out


def _add_usage(out: dict[str, Usage], rows: Iterable[Any], count: Literal["tasks", "pods"]) -> None:
    """Add rows of (namespace, cpu, memory, gpus, how many) to ``out``; ``count``: the Usage field the last
    column is (tasks for executions, pods for pods)."""
    for ns, cpu, mem, gpu, n in rows:
        u = out.setdefault(ns, Usage())
        u.cpu += float(cpu or 0)
        u.memory += int(mem or 0)
        u.gpus += int(gpu or 0)
        setattr(u, count, getattr(u, count) + int(n))
