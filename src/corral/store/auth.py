"""The store's queries about identities: users, API keys and the server's own secrets (corral.auth).

``Tx`` (store/sql.py) takes these methods in as a mixin. Changes are compare-and-sets: a revoke changes a
key only while it is not revoked, a password only for a user that is still there.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from corral.store import schema as s
from corral.store.rows import Row, rows

_U, _K, _S = s.users.c, s.api_keys.c, s.auth_secrets.c


class AuthQueries:
    c: Connection

    # -- caps ----------------------------------------------------------------------------------------
    def lock_cap(self, name: str) -> None:
        """Take the lock on the cap ``name`` (say ``keys:user:ann``) until this transaction ends, so that its
        count and the insert it allows are one step: two creates at once cannot both pass a cap by one.
        On PostgreSQL a transaction-level advisory lock on a 64-bit hash of the name (a collision only
        makes two caps take turns); SQLite's writes already take turns (Store._write_lock)."""
        if self.c.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
            self.c.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    # -- users ---------------------------------------------------------------------------------------
    def insert_user(self, row: Row) -> bool:
        """False when a user of that name exists."""
        try:
            with self.c.begin_nested():
                self.c.execute(sa.insert(s.users).values(**row))
        except IntegrityError:
            return False
        return True

    def user(self, name: str) -> Row | None:
        r = self.c.execute(sa.select(s.users).where(_U.name == name)).mappings().first()
        return dict(r) if r else None

    def users(self) -> list[Row]:
        return rows(self.c.execute(sa.select(s.users).order_by(_U.name)))

    def user_count(self) -> int:
        return int(self.c.execute(sa.select(sa.func.count()).select_from(s.users)).scalar_one())

    def set_password(self, name: str, password_hash: str, now: float) -> bool:
        r = self.c.execute(sa.update(s.users).where(_U.name == name).values(password_hash=password_hash,
                                                                             updated_at=now))
        return r.rowcount == 1

    def delete_user(self, name: str) -> bool:
        return self.c.execute(sa.delete(s.users).where(_U.name == name)).rowcount == 1

    # -- API keys ------------------------------------------------------------------------------------
    def insert_key(self, row: Row) -> None:
        self.c.execute(sa.insert(s.api_keys).values(**row))

    def key(self, key_id: str) -> Row | None:
        r = self.c.execute(sa.select(s.api_keys).where(_K.id == key_id)).mappings().first()
        return dict(r) if r else None

    def keys(self, owner: str | None = None) -> list[Row]:
        q = sa.select(s.api_keys).order_by(_K.created_at, _K.id)
        if owner is not None:
            q = q.where(_K.owner == owner)
        return rows(self.c.execute(q))

    def live_key_count(self, owner: str) -> int:
        """The owner's keys not revoked (expired ones included: revoke them to make room)."""
        q = sa.select(sa.func.count()).select_from(s.api_keys).where(_K.owner == owner, _K.revoked_at.is_(None))
        return int(self.c.execute(q).scalar_one())

    def revoke_key(self, key_id: str, now: float) -> bool:
        """Compare-and-set: only a key not revoked yet."""
        r = self.c.execute(sa.update(s.api_keys).where(_K.id == key_id, _K.revoked_at.is_(None))
                           .values(revoked_at=now))
        return r.rowcount == 1

    def revoke_keys_of(self, owner: str, now: float) -> list[str]:
        ids = [r[0] for r in self.c.execute(sa.select(_K.id).where(_K.owner == owner, _K.revoked_at.is_(None)))]
        if ids:
            self.c.execute(sa.update(s.api_keys).where(_K.id.in_(ids), _K.revoked_at.is_(None))
                           .values(revoked_at=now))
        return ids

    def touch_keys(self, used: dict[str, float]) -> None:
        """``last_used_at`` of many keys (only forward)."""
        for key_id, at in used.items():
            self.c.execute(sa.update(s.api_keys).where(
                _K.id == key_id, sa.or_(_K.last_used_at.is_(None), _K.last_used_at < at)).values(last_used_at=at))

    # -- the server's secrets ------------------------------------------------------------------------
    def secret(self, name: str) -> str | None:
        v: Any = self.c.execute(sa.select(_S.value).where(_S.name == name)).scalar_one_or_none()
        return str(v) if v is not None else None

    def put_secret(self, name: str, value: str, now: float, *, replace: bool) -> str:
        """Stores ``value`` under ``name`` (``replace``: whatever was there; else only if none was) and
        returns what is stored now: two servers starting at once agree on one value."""
        if replace:
            self.c.execute(sa.delete(s.auth_secrets).where(_S.name == name))
        try:
            with self.c.begin_nested():
                self.c.execute(sa.insert(s.auth_secrets).values(name=name, value=value, created_at=now))
        except IntegrityError:
            pass
        return self.secret(name) or value
