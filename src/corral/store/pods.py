"""The store's queries about pods, their containers, the ports they hold on nodes and their logs.

``Tx`` (store/sql.py) takes these methods in as a mixin: one transaction object, the SQL of one kind of
work kept together here. State changes are compare-and-set on the pod's state and instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from corral.auth import context
from corral.coordinator.errors import Forbidden
from corral.store import schema as s
from corral.store.rows import Row, chunks
from corral.store.rows import rows as _rows

_P, _C, _NP, _L = s.pods.c, s.pod_containers.c, s.node_ports.c, s.pod_logs.c
FINAL = ("succeeded", "failed", "terminated")
PLACED = ("scheduled", "running", "unknown", "terminating")  # a pod in these holds capacity on its node


_BRIEF = [_P.id, _P.state, _P.desired, _P.restart_policy, _P.node_id, _P.instance_id, _P.ttl_expires_at,
          _P.name, _P.namespace]


class PodQueries:
    c: Connection

    # -- pods ------------------------------------------------------------------------------------
    def insert_pod(self, row: Row, containers: Sequence[Row]) -> bool:
        """Add a pod and its containers; False if a pod with its id exists."""
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        if not context.sees(row["namespace"]):  # a caller may make pods only where it may see them
            raise Forbidden(f"you may not create pods in namespace '{row['namespace']}'")
        if "created_by" not in row:
            row = {**row, "created_by": context.stamp()[1]}
        q = insert(s.pods).values(**row).on_conflict_do_nothing(index_elements=[_P.id]).returning(_P.id)
        if self.c.execute(q).first() is None:
            return False
        self.c.execute(sa.insert(s.pod_containers), list(containers))
        return True

    def pod(self, pod_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.pods).where(_P.id == pod_id)).mappings().first()
        return dict(r) if r and context.sees(r["namespace"]) else None

    def pods_by_ids(self, ids: Iterable[str], lock: bool = False) -> list[Row]:
        """The pods; with ``lock``, their rows stay locked until the transaction ends (PostgreSQL; SQLite
        has one writer at a time already)."""
        out: list[Row] = []
        for part in chunks(sorted(set(ids))):
            q = sa.select(s.pods).where(_P.id.in_(part)).order_by(_P.id)
            if lock and self.c.dialect.name == "postgresql":
                q = q.with_for_update()
            out += _rows(self.c.execute(q))
        return out

    def pods_by_instances(self, instance_ids: Iterable[str]) -> list[Row]:
        """The pods whose current instance is one of these."""
        return [r for part in chunks(sorted(set(instance_ids))) for r in _rows(self.c.execute(
            sa.select(s.pods).where(_P.instance_id.in_(part))))]

    def find_pods(self, *, namespace: str | None = None, selector: Mapping[str, str] | None = None,
                  origin: str | None = None, states: Sequence[str] | None = None, node_id: str | None = None,
                  after_seq: int = 0, limit: int = 100) -> list[Row]:
        """Pods in creation order after ``after_seq``; ``selector``: every label given matches."""
        conds: list[Any] = [_P.seq > after_seq]
        if namespace is not None:
            conds.append(_P.namespace == namespace)
        if (visible := context.visible()) is not None:  # what the current caller may see (corral.auth.context)
            conds.append(_P.namespace.in_(sorted(visible)))
        if origin is not None:
            conds.append(_P.origin == origin)
        if states:
            conds.append(_P.state.in_(list(states)))
        if node_id is not None:
            conds.append(_P.node_id == node_id)
        for k, v in (selector or {}).items():
            conds.append(_P.labels[k].as_string() == v)
        return _rows(self.c.execute(sa.select(s.pods).where(*conds).order_by(_P.seq).limit(limit)))

    def pending_pods(self, limit: int, after_seq: int = 0) -> list[Row]:
        """Pods waiting for a placement, oldest first, after ``after_seq``."""
        q = (sa.select(_P.id, _P.seq, _P.spec, _P.runtime, _P.cpu, _P.memory, _P.disk, _P.gpu, _P.node_selector,
                       _P.reason, _P.namespace)
             .where(_P.state == "pending", _P.desired == "run", _P.seq > after_seq).order_by(_P.seq).limit(limit))
        return _rows(self.c.execute(q))

    def unfinished_pods(self) -> list[Row]:
        """What the reconciler looks at: every pod that is not final (brief)."""
        return _rows(self.c.execute(sa.select(*_BRIEF).where(_P.state.not_in(FINAL))))

    def node_pods(self, node_id: str) -> list[Row]:
        """The pods placed on a node (its desired set)."""
        return _rows(self.c.execute(sa.select(s.pods).where(_P.node_id == node_id, _P.state.in_(PLACED))
                                    .order_by(_P.seq)))

    def cas_pod(self, pod_id: str, expected: Sequence[str], on_instance: str | None, **values: Any) -> bool:
        """Compare-and-set: change the pod only while it is in one of ``expected`` on ``on_instance``."""
        inst = _P.instance_id.is_(None) if on_instance is None else _P.instance_id == on_instance
        q = sa.update(s.pods).where(_P.id == pod_id, _P.state.in_(list(expected)), inst).values(**values)
        return self.c.execute(q).rowcount == 1

    def delete_pod(self, pod_id: str, expected: Sequence[str]) -> bool:
        """Remove a pod in one of ``expected`` states, with its containers, ports and logs."""
        if self.c.execute(sa.delete(s.pods).where(_P.id == pod_id, _P.state.in_(list(expected)))).rowcount != 1:
            return False
        self.c.execute(sa.delete(s.pod_containers).where(_C.pod_id == pod_id))
        self.c.execute(sa.delete(s.node_ports).where(_NP.pod_id == pod_id))
        self.c.execute(sa.delete(s.pod_logs).where(_L.pod_id == pod_id))
        return True

    def count_pending_pods(self) -> int:
        q = sa.select(sa.func.count()).select_from(s.pods).where(_P.state == "pending")
        return int(self.c.execute(q).scalar_one())

    def count_pods_by_state(self) -> list[tuple[str, int]]:
        q = sa.select(_P.state, sa.func.count()).group_by(_P.state)
        return [(str(a), int(b)) for a, b in self.c.execute(q).all()]

    # -- containers ------------------------------------------------------------------------------
    def pod_containers(self, pod_ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(set(pod_ids)) for r in _rows(self.c.execute(
            sa.select(s.pod_containers).where(_C.pod_id.in_(part)).order_by(_C.pod_id, _C.position)))]

    def reset_containers(self, pod_id: str) -> None:
        """A new instance (a placement, a move): its containers start over."""
        self.c.execute(sa.update(s.pod_containers).where(_C.pod_id == pod_id).values(
            state="waiting", reason=None, container_id=None, restart_count=0, exit_code=None, ready=False,
            error=None, started_at=None, finished_at=None, log_bytes=0))

    def update_containers(self, rows: Sequence[Row]) -> None:
        """``{"pod_id", "name", ...values}``, every row with the same keys."""
        if not rows:
            return
        keys = [k for k in rows[0] if k not in ("pod_id", "name")]
        q = (sa.update(s.pod_containers).where(_C.pod_id == sa.bindparam("b_pod"), _C.name == sa.bindparam("b_name"))
             .values({k: sa.bindparam(f"v_{k}") for k in keys}))
        self.c.execute(q, [{"b_pod": r["pod_id"], "b_name": r["name"], **{f"v_{k}": r[k] for k in keys}}
                           for r in rows])

    def add_container_log_bytes(self, counts: Sequence[tuple[str, str, int, int]]) -> None:
        """``(pod id, container, bytes before, bytes after)``: compare-and-set of the stored log size."""
        if counts:
            q = (sa.update(s.pod_containers)
                 .where(_C.pod_id == sa.bindparam("b_pod"), _C.name == sa.bindparam("b_name"),
                        _C.log_bytes == sa.bindparam("b_old")).values(log_bytes=sa.bindparam("v")))
            self.c.execute(q, [{"b_pod": p, "b_name": n, "b_old": old, "v": new} for p, n, old, new in counts])

    # -- ports -----------------------------------------------------------------------------------
    def take_ports(self, rows: Sequence[Row]) -> bool:
        """Take every port in ``rows`` ({node_id, port, protocol, ...}) or none: False (nothing taken) if one
        is held already. The primary key makes each a compare-and-set."""
        if not rows:
            return True
        insert = pg_insert if self.c.dialect.name == "postgresql" else sqlite_insert
        taken: list[Row] = []
        for r in rows:
            q = (insert(s.node_ports).values(**r).on_conflict_do_nothing()
                 .returning(_NP.port))
            if self.c.execute(q).first() is None:
                for t in taken:
                    self.c.execute(sa.delete(s.node_ports).where(
                        _NP.node_id == t["node_id"], _NP.port == t["port"], _NP.protocol == t["protocol"]))
                return False
            taken.append(r)
        return True

    def release_ports(self, pod_id: str, instance_id: str | None = None) -> int:
        conds = [_NP.pod_id == pod_id]
        if instance_id is not None:
            conds.append(_NP.instance_id == instance_id)
        return int(self.c.execute(sa.delete(s.node_ports).where(*conds)).rowcount)

    def pod_ports(self, pod_ids: Iterable[str]) -> list[Row]:
        return [r for part in chunks(set(pod_ids)) for r in _rows(self.c.execute(
            sa.select(s.node_ports).where(_NP.pod_id.in_(part)).order_by(_NP.port)))]

    # A task's published ports (kind 'task'): held under its execution's id (pod_id and instance_id), from
    # when the execution is handed to its node until it ends.
    def task_port_owners(self) -> set[str]:
        """The executions that hold node ports."""
        return {str(r[0]) for r in self.c.execute(sa.select(_NP.pod_id).where(_NP.kind == "task").distinct())}

    def release_task_ports(self, execution_ids: Iterable[str]) -> int:
        n = 0
        for part in chunks(set(execution_ids)):
            n += int(self.c.execute(sa.delete(s.node_ports).where(_NP.pod_id.in_(part), _NP.kind == "task")).rowcount)
        return n

    def used_ports(self, node_ids: Iterable[str] | None = None) -> dict[str, set[tuple[int, str]]]:
        """Per node: the ports held there, ``(port, protocol)``."""
        q = sa.select(_NP.node_id, _NP.port, _NP.protocol)
        if node_ids is not None:
            q = q.where(_NP.node_id.in_(list(node_ids)))
        out: dict[str, set[tuple[int, str]]] = {}
        for nid, port, proto in self.c.execute(q).all():
            out.setdefault(nid, set()).add((int(port), str(proto)))
        return out

    # -- allocations (see Tx.allocations) ------------------------------------------------------------
    def pod_allocations(self) -> list[Row]:
        """Per node: resources held by its placed pods."""
        q = (sa.select(_P.node_id, sa.func.sum(_P.cpu).label("cpu"), sa.func.sum(_P.memory).label("memory"),
                       sa.func.sum(_P.disk).label("disk"), sa.func.sum(_P.gpu).label("gpu"),
                       sa.func.count().label("n"))
             .where(_P.state.in_(PLACED), _P.node_id.is_not(None)).group_by(_P.node_id))
        return _rows(self.c.execute(q))

    # -- logs ------------------------------------------------------------------------------------
    def append_pod_logs(self, rows: Sequence[Row]) -> None:
        if rows:
            self.c.execute(sa.insert(s.pod_logs), list(rows))

    def pod_logs(self, pod_id: str, *, container: str | None = None, after_seq: int = 0,
                 limit: int = 1000) -> list[Row]:
        conds = [_L.pod_id == pod_id, _L.seq > after_seq]
        if container is not None:
            conds.append(_L.container == container)
        q = (sa.select(_L.seq, _L.instance_id, _L.container, _L.stream, _L.line, _L.ts).where(*conds)
             .order_by(_L.seq).limit(limit))
        return _rows(self.c.execute(q))
