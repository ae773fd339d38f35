"""Identities in the store, on SQLite and PostgreSQL: users, keys and their revocation, the signing key,
and what a caller of one namespace is shown (corral.auth.context), without a server process."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from corral.auth import context
from corral.auth.identity import Identity, Role
from corral.auth.service import Auth, Credential
from corral.coordinator.errors import Conflict, Forbidden, NotFound
from corral.coordinator.service import Coordinator, Settings
from corral.domain.spec import JobSpec
from corral.store.sql import Store


def as_caller(ident: Identity | None, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` as a request of ``ident`` would run it (its own context, as each request has)."""
    ctx = contextvars.copy_context()
    return ctx.run(lambda: (context.bind(ident), fn(*args))[1])


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    from corral.auth import passwords
    monkeypatch.setattr(passwords, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))


def test_users_keys_and_the_signing_key_in_the_store(database_url: str) -> None:
    store = Store(database_url)
    try:
        auth = Auth(store, enabled=True)
        first = auth.bootstrap(first_admin=True)
        assert first and auth.bootstrap(first_admin=True) is None  # the first admin is made once
        assert Auth(store, enabled=True).signing_key == auth.signing_key  # kept in the store
        admin = auth.resolve(Credential("bearer", first))
        assert admin is not None and admin.role is Role.ADMIN

        auth.create_user("alice", "alice-password", "user", ["team-a"])
        with pytest.raises(Conflict):
            auth.create_user("alice", "other-password", "viewer", None)
        alice = auth.login("alice", "alice-password")
        assert alice is not None and alice.namespaces == frozenset({"team-a"})
        assert auth.login("alice", "wrong-password") is None and auth.login("nobody", "x" * 8) is None

        view, key = auth.create_key(alice, "ci", None, None, None, None)
        assert view["owner"] == "user:alice" and view["namespaces"] == ["team-a"] and "hash" not in view
        assert auth.resolve(Credential("bearer", key)) is not None
        with pytest.raises(Forbidden):
            auth.create_key(alice, "up", "admin", None, None, None)
        with pytest.raises(NotFound):  # not alice's to revoke... for bob, it does not exist
            auth.revoke_key(Identity("user", "bob", Role.USER, frozenset({"b"})), view["id"])
        auth.revoke_key(alice, view["id"])
        with pytest.raises(Conflict):
            auth.revoke_key(alice, view["id"])  # a compare-and-set: once
        assert auth.resolve(Credential("bearer", key)) is None
        old = auth.signing_key
        auth.rotate_signing_key()
        assert auth.signing_key != old

        auth.create_key(alice, "second", None, None, None, None)
        auth.delete_user("alice")  # its keys go with it
        assert all(k["revoked_at"] for k in auth.keys(admin) if k["owner"] == "user:alice")
    finally:
        store.close()


def test_a_caller_sees_only_its_namespaces(database_url: str) -> None:
    store = Store(database_url)
    try:
        coord = Coordinator(store, Settings())
        spec = JobSpec.model_validate({"name": "j", "tasks": [{"name": "a", "run": "true"}]})
        alice = Identity("user", "alice", Role.USER, frozenset({"team-a"}))
        bob = Identity("user", "bob", Role.USER, frozenset({"team-b"}))
        job = as_caller(alice, coord.submit, spec)
        assert (job["namespace"], job["created_by"]) == ("team-a", "user:alice")

        def seen() -> tuple[bool, list[str]]:
            with store.read() as tx:
                rows, total = tx.list_jobs()
                return tx.job(job["id"]) is not None, [r["id"] for r in rows]

        assert as_caller(alice, seen) == (True, [job["id"]])
        assert as_caller(bob, seen) == (False, [])
        assert as_caller(None, seen) == (True, [job["id"]])  # the background loops see everything
        with pytest.raises(NotFound):
            as_caller(bob, coord.cancel, job["id"])
        assert as_caller(alice, coord.cancel, job["id"])["state"] == "cancelled"
    finally:
        store.close()


def test_caps_are_exact_under_concurrent_creates(pg_url: str) -> None:
    """Eight creates at once against a cap of three keys, users and join tokens: exactly three pass each cap,
    the others are refused (409), on PostgreSQL, where the count and the insert could interleave."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from corral.auth.service import AuthLimits

    store = Store(pg_url)
    try:
        auth = Auth(store, enabled=True, limits=AuthLimits(max_keys_per_owner=3, max_users=3, max_join_tokens=3))
        coord = Coordinator(store, Settings())
        ann = Identity("user", "ann", Role.ADMIN)
        n = 8
        for what, make in (
                ("keys", lambda i: auth.create_key(ann, f"k{i}", None, None, None, None)),
                ("users", lambda i: auth.create_user(f"u{i}", "a-password", "viewer", None)),
                ("join tokens", lambda i: coord.nodes.create_join_token("user:ann", None, 3))):
            barrier = threading.Barrier(n)

            def one(i: int, make: Any = make, barrier: threading.Barrier = barrier) -> str:
                barrier.wait(timeout=10)
                try:
                    make(i)
                except Conflict:
                    return "409"
                return "ok"

            with ThreadPoolExecutor(n) as pool:
                got = sorted(pool.map(one, range(n)))
            assert got == ["409"] * (n - 3) + ["ok"] * 3, what
    finally:
        store.close()
