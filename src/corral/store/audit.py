"""The store's queries about the audit log and the join tokens workers register with.

``Tx`` (store/sql.py) takes these methods in as a mixin. A join token is revoked by a compare-and-set on
``revoked_at``; the audit log only grows, and its oldest entries are deleted past its retention.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from corral.store import schema as s
from corral.store.rows import Row

_A, _T = s.audit_log.c, s.join_tokens.c


class AuditQueries:
    c: Connection

    # -- audit log ---------------------------------------------------------------------------------
    def insert_audit(self, rows: Sequence[Row]) -> None:
        if rows:
            self.c.execute(sa.insert(s.audit_log), list(rows))

    def audit_page(self, limit: int, before: int | None = None, actor: str | None = None,
                   action: str | None = None) -> list[Row]:
        """Entries newest first, those with a seq below ``before`` when given."""
        q = sa.select(s.audit_log).order_by(_A.seq.desc()).limit(limit)
        if before is not None:
            q = q.where(_A.seq < before)
        if actor is not None:
            q = q.where(_A.actor == actor)
        if action is not None:
            q = q.where(_A.action == action)
        return [dict(r) for r in self.c.execute(q).mappings()]

    def prune_audit(self, older_than: float, keep: int) -> int:
        """Delete entries from before ``older_than`` and all but the newest ``keep``; how many went."""
        n = self.c.execute(sa.delete(s.audit_log).where(_A.at < older_than)).rowcount or 0
        cut = self.c.execute(sa.select(_A.seq).order_by(_A.seq.desc()).offset(keep).limit(1)).scalar()
        if cut is not None:
            n += self.c.execute(sa.delete(s.audit_log).where(_A.seq <= cut)).rowcount or 0
        return int(n)

    # -- join tokens -------------------------------------------------------------------------------
    def insert_join_token(self, row: Row) -> None:
        self.c.execute(sa.insert(s.join_tokens).values(**row))

    def join_token_by_hash(self, token_hash: str) -> Row | None:
        r = self.c.execute(sa.select(s.join_tokens).where(_T.token_hash == token_hash)).mappings().first()
        return dict(r) if r else None

    def join_tokens(self, limit: int = 1000) -> list[Row]:
        q = sa.select(s.join_tokens).order_by(_T.seq.desc()).limit(limit)
        return [dict(r) for r in self.c.execute(q).mappings()]

    def live_join_token_count(self, created_by: str, now: float) -> int:
        """The join tokens this maker made that are neither revoked nor expired."""
        q = (sa.select(sa.func.count()).select_from(s.join_tokens)
             .where(_T.created_by == created_by, _T.revoked_at.is_(None),
                    sa.or_(_T.expires_at.is_(None), _T.expires_at > now)))
        return int(self.c.execute(q).scalar_one())

    def revoke_join_token(self, token_id: str, now: float) -> bool:
        """Revoke it (a compare-and-set: False if it is unknown or was revoked already)."""
        q = sa.update(s.join_tokens).where(_T.id == token_id, _T.revoked_at.is_(None)).values(revoked_at=now)
        return bool(self.c.execute(q).rowcount)

    def touch_join_token(self, token_id: str, now: float) -> None:
        self.c.execute(sa.update(s.join_tokens).where(_T.id == token_id).values(last_used_at=now))

    def node_with_secret_hash(self, secret_hash: str) -> str | None:
        """The id of the node whose secret has this hash, if any."""
        return self.c.execute(sa.select(s.nodes.c.id).where(s.nodes.c.secret_hash == secret_hash)
                              .limit(1)).scalar()
