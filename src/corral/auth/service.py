"""The identities of one server over its store: resolve a credential to an ``Identity``; users, keys and
tokens; the first admin; failed logins rate limited per address and per user.

Credentials (docs/security.md): ``Authorization: Bearer <API key | JWT | the local token>``,
``Authorization: Basic <user:password>`` (Tork's users), ``X-API-KEY`` or ``?api_key=`` (the Stacks API's,
accepted everywhere), the login cookie of ``corral up``, and ``?token=`` on a WebSocket handshake.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.api import ratelimit
from corral.auth import keys as K
from corral.auth import passwords, tokens
from corral.auth.identity import (
    LOCAL,
    NAME_RE,
    Identity,
    Role,
    check_name,
    check_namespace,
    narrower,
    parse_role,
    parse_scopes,
)
from corral.coordinator.errors import Conflict, Forbidden, NotFound, ServiceError
from corral.coordinator.errors import Invalid as BadInput
from corral.store.sql import Store

log = logging.getLogger("corral.auth")
SIGNING_KEY = "jwt"
BOOTSTRAP = "bootstrap"
LAST_USED_EVERY = 60.0  # seconds between writes of one key's last_used_at
CN_TTL = 10.0  # seconds a certificate's common name keeps the identity it was found to have


@dataclass(frozen=True)
class AuthLimits:
    """How much one caller may make (docs/operations.md): keys not revoked per owner, users in all, join
    tokens still usable per maker. Past one: 409 that says which bound and what to do."""

    max_keys_per_owner: int = 100
    max_users: int = 1000
    max_join_tokens: int = 100


MAX_KEY_LIFE = 10 * 365 * 86400  # seconds: the longest expires_in of a key


class TooManyFailures(ServiceError):
    status = 429
    title = "Too many requests"


@dataclass(frozen=True)
class Credential:
    """What a request presented: ``kind`` bearer | basic | apikey | cookie."""

    kind: str
    value: str
    user: str = ""


def parse_credentials(authorization: str, api_key: str, cookie: str, ws_token: str) -> list[Credential]:
    out: list[Credential] = []
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        out.append(Credential("bearer", rest.strip()))
    elif scheme.lower() == "basic" and rest.strip():
        try:
            user, sep, password = base64.b64decode(rest.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        out.append(Credential("basic", password if sep else "", user))
    for kind, v in (("apikey", api_key), ("cookie", cookie), ("bearer", ws_token)):
        if v.strip():
            out.append(Credential(kind, v.strip()))
    return out


def _record(row: dict[str, Any]) -> K.KeyRecord:
    return K.KeyRecord(row["id"], row["name"], row["owner"], row["role"],
                       tuple(row["namespaces"]) if row["namespaces"] is not None else None,
                       tuple(row["scopes"]) if row["scopes"] is not None else None, row["hash"],
                       row["expires_at"], row["revoked_at"] is not None)


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    """A key as the API shows it: never its hash."""
    return {k: row[k] for k in ("id", "name", "owner", "role", "namespaces", "scopes", "created_at",
                                "expires_at", "last_used_at", "revoked_at")}


def user_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("name", "role", "namespaces", "created_at", "updated_at")}


class Auth:
    """One server's identities. ``enabled`` False: every caller is anonymous and may do everything (a
    loopback server without --auth); the local token (``corral up``) is always the local admin."""

    def __init__(self, store: Store, *, enabled: bool, local_token: str | None = None,
                 login_rate: str = "10/minute", clock: Callable[[], float] = time.time,
                 limits: AuthLimits | None = None, cn_map: dict[str, str] | None = None) -> None:
        self.store = store
        self.limits = limits or AuthLimits()
        # A verified client certificate's common name -> the user it acts as (--tls-cn-map CN=USER); a CN
        # not in the map names the user itself. An unknown user: no identity (anonymous).
        self.cn_map = dict(cn_map or {})
        self._cns: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()
        self.enabled = enabled
        self.local_token = local_token
        self.cache = K.KeyCache()
        self.clock = clock
        self._signing_key: str | None = None
        self._used: dict[str, float] = {}  # key id -> last use not written yet
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()
        cfg = ratelimit.Config(buckets={"login-address": ratelimit.make_bucket("login-address", login_rate),
                                        "login-user": ratelimit.make_bucket("login-user", login_rate)})
        self.limiter = ratelimit.Limiter(cfg)

    # -- start ---------------------------------------------------------------------------------------
    def bootstrap(self, first_admin: bool = False) -> str | None:
        """Makes the signing key if there is none; with ``first_admin`` at the first start so asked, an admin
        key, returned once (the caller prints it)."""
        now = self.clock()
        with self.store.transaction() as tx:
            self._signing_key = tx.put_secret(SIGNING_KEY, tokens.new_signing_key(), now, replace=False)
        if not first_admin:
            return None
        with self.store.transaction() as tx:
            marker = tx.put_secret(BOOTSTRAP, f"{now}", now, replace=False)
            if marker != f"{now}":
                return None  # an earlier start made the first admin
            key_id, key = K.new_key()
            tx.insert_key({"id": key_id, "name": "first-admin", "owner": "user:admin", "role": Role.ADMIN.value,
                           "namespaces": None, "scopes": None, "hash": K.key_hash(key), "created_at": now,
                           "expires_at": None, "last_used_at": None, "revoked_at": None})
        return key

    @property
    def signing_key(self) -> str:
        if self._signing_key is None:
            with self.store.read() as tx:
                self._signing_key = tx.secret(SIGNING_KEY)
            if self._signing_key is None:
                self.bootstrap()
        assert self._signing_key is not None
        return self._signing_key

    def rotate_signing_key(self) -> None:
        with self.store.transaction() as tx:
            self._signing_key = tx.put_secret(SIGNING_KEY, tokens.new_signing_key(), self.clock(), replace=True)

    # -- resolving a request's caller ----------------------------------------------------------------
    def is_local(self, value: str) -> bool:
        return bool(self.local_token) and hmac.compare_digest(value.encode(), str(self.local_token).encode())

    def cached(self, cred: Credential) -> tuple[bool, Identity | None]:
        """(decided, identity) without any store read or slow hash; not decided: ``resolve`` in a thread."""
        if cred.kind in ("bearer", "apikey", "cookie") and self.is_local(cred.value):
            return True, LOCAL
        if not self.enabled or (cred.kind == "cookie" and not tokens.looks_like_jwt(cred.value)):
            return True, None  # a cookie holds the local token or a signed token (the dashboard's sign-in)
        if cred.kind == "basic":
            return False, None
        if tokens.looks_like_jwt(cred.value):
            ident = tokens.verify(cred.value, self.signing_key)
            if ident is None or ident.key_id is None:
                return True, ident
            found, rec = self.cache.get(ident.key_id)
            if not found:
                return False, None
            return True, ident if rec is not None and rec.usable(self.clock()) else None
        key_id = K.key_id_of(cred.value)
        if key_id is None:
            return True, None
        found, rec = self.cache.get(key_id)
        if not found:
            return False, None
        return True, self._key_identity(rec, cred.value)

    def resolve(self, cred: Credential, address: str = "") -> Identity | None:
        """The identity of ``cred``, reading the store (blocking: call it off the event loop)."""
        decided, ident = self.cached(cred)
        if decided:
            return ident
        if cred.kind == "basic":
            return self.login(cred.user, cred.value)
        if tokens.looks_like_jwt(cred.value):
            ident = tokens.verify(cred.value, self.signing_key)
            if ident is None or ident.key_id is None:
                return ident
            rec = self._load(ident.key_id)
            return ident if rec is not None and rec.usable(self.clock()) else None
        key_id = K.key_id_of(cred.value)
        return self._key_identity(self._load(key_id), cred.value) if key_id else None

    def cached_key(self, key: str) -> tuple[bool, Identity | None]:
        """A key given in a body (``POST /v1/auth/token``): as ``cached``, but only an API key."""
        if K.key_id_of(key) is None:
            return True, None
        return self.cached(Credential("apikey", key))

    def resolve_key(self, key: str) -> Identity | None:
        return self.resolve(Credential("apikey", key)) if K.key_id_of(key) else None

    def _load(self, key_id: str) -> K.KeyRecord | None:
        with self.store.read() as tx:
            row = tx.key(key_id)
        rec = _record(row) if row else None
        self.cache.put(key_id, rec)
        return rec

    def _key_identity(self, rec: K.KeyRecord | None, key: str) -> Identity | None:
        now = self.clock()
        if rec is None or not rec.usable(now) or not K.matches(key, rec.hash):
            return None
        with self._lock:
            if now - self._written.get(rec.id, 0.0) >= LAST_USED_EVERY:
                self._used[rec.id] = now
        return Identity("key", rec.owner.partition(":")[2] or rec.owner, Role(rec.role),
                        frozenset(rec.namespaces) if rec.namespaces is not None else None,
                        parse_scopes(list(rec.scopes)) if rec.scopes is not None else None, key_id=rec.id)

    # -- client certificates (--tls-client-ca) ----------------------------------------------------------
    def cached_cn(self, cn: str) -> tuple[bool, Identity | None]:
        """(decided, identity) of a verified certificate's common name from the cache (CN_TTL seconds);
        not decided: ``resolve_cn`` in a thread."""
        if not self.enabled:
            return True, None
        with self._lock:
            hit = self._cns.get(cn)
        if hit is not None and hit[0] > self.clock():
            return True, hit[1]
        return False, None

    def resolve_cn(self, cn: str) -> Identity | None:
        """The user a certificate's common name stands for (blocking: it reads the store)."""
        if not self.enabled:
            return None
        name = self.cn_map.get(cn, cn)
        with self.store.read() as tx:
            row = tx.user(name) if NAME_RE.match(name) else None
        ident = None
        if row is not None:
            ns = row["namespaces"]
            ident = Identity("user", row["name"], Role(row["role"]), frozenset(ns) if ns is not None else None)
        with self._lock:
            self._cns[cn] = (self.clock() + CN_TTL, ident)
            while len(self._cns) > 1024:
                self._cns.popitem(last=False)
        return ident

    def flush_last_used(self) -> None:
        """Writes ``last_used_at`` of the keys used since the last flush (at most once a minute per key)."""
        with self._lock:
            used, self._used = self._used, {}
            self._written.update(used)
        if used:
            with self.store.transaction() as tx:
                tx.touch_keys(used)

    # -- logins (rate limited) -----------------------------------------------------------------------
    async def login_allowed(self, address: str, user: str) -> bool:
        """Whether this address, and this user, may try again (not over the failed-login rate)."""
        if not self.limiter.config.enabled:
            return True
        for bucket, key in (("login-address", address), ("login-user", user)):
            b = self.limiter.config.buckets[bucket]
            assert b.rate is not None
            if key and not await self.limiter.strategy.test(b.rate, b.name, key):
                return False
        return True

    async def login_failed(self, address: str, user: str) -> None:
        for bucket, key in (("login-address", address), ("login-user", user)):
            if key:
                await self.limiter.hit(self.limiter.config.buckets[bucket], key)

    def login(self, name: str, password: str) -> Identity | None:
        """A user's identity by name and password (argon2: slow by design)."""
        with self.store.read() as tx:
            row = tx.user(name) if name else None
        if not passwords.verify_password(row["password_hash"] if row else None, password) or row is None:
            return None
        ns = row["namespaces"]
        return Identity("user", row["name"], Role(row["role"]), frozenset(ns) if ns is not None else None)

    def issue_token(self, ident: Identity, ttl: float) -> str:
        return tokens.issue(ident, self.signing_key, ttl, self.clock())

    # -- users ---------------------------------------------------------------------------------------
    def create_user(self, name: str, password: str, role: str, namespaces: list[str] | None) -> dict[str, Any]:
        try:
            check_name(name)
            r = parse_role(role)
            ns = sorted({check_namespace(n) for n in namespaces}) if namespaces else None
            pw = passwords.hash_password(password)
        except ValueError as e:
            raise BadInput(str(e)) from None
        now = self.clock()
        row = {"name": name, "password_hash": pw, "role": r.value, "namespaces": ns, "created_at": now,
               "updated_at": now}
        with self.store.transaction() as tx:
            tx.lock_cap("users")
            if tx.user_count() >= self.limits.max_users:
                raise Conflict(f"this server has {self.limits.max_users} users, the most it keeps "
                               "(--max-users): remove one first")
            if not tx.insert_user(row):
                raise Conflict(f"user '{name}' exists")
        return user_view(row)

    def users(self) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            return [user_view(r) for r in tx.users()]

    def set_password(self, name: str, password: str) -> None:
        try:
            pw = passwords.hash_password(password)
        except ValueError as e:
            raise BadInput(str(e)) from None
        with self.store.transaction() as tx:
            if not tx.set_password(name, pw, self.clock()):
                raise NotFound(f"no user '{name[:63]}'")

    def delete_user(self, name: str) -> None:
        """Removes the user and revokes every key it made."""
        with self.store.transaction() as tx:
            if not tx.delete_user(name):
                raise NotFound(f"no user '{name[:63]}'")
            ids = tx.revoke_keys_of(f"user:{name}", self.clock())
        for key_id in ids:
            self.cache.forget(key_id)
        with self._lock:
            self._cns.clear()  # a certificate that named the user is anonymous from the next request

    # -- API keys ------------------------------------------------------------------------------------
    def create_key(self, owner: Identity, name: str, role: str | None, namespaces: list[str] | None,
                   scopes: list[str] | None, expires_in: float | None) -> tuple[dict[str, Any], str]:
        try:
            check_name(name)
            r = parse_role(role) if role else owner.role
            sc = parse_scopes(scopes)
            ns = sorted({check_namespace(n) for n in namespaces}) if namespaces is not None else None
        except ValueError as e:
            raise BadInput(str(e)) from None
        why = narrower(r, sc, owner)
        if why:
            raise Forbidden(why)
        if owner.namespaces is not None and not owner.all_namespaces:
            if ns is None:
                ns = sorted(owner.namespaces)
            elif not set(ns) <= owner.namespaces:
                raise Forbidden("a key cannot reach namespaces its maker cannot")
        if expires_in is not None and not 0 < expires_in <= MAX_KEY_LIFE:
            raise BadInput("expires_in must be between 1 second and 10 years")
        now = self.clock()
        key_id, key = K.new_key()
        row = {"id": key_id, "name": name, "owner": owner.principal, "role": r.value, "namespaces": ns,
               "scopes": sorted(p.value for p in sc) if sc is not None else None, "hash": K.key_hash(key),
               "created_at": now, "expires_at": now + expires_in if expires_in else None, "last_used_at": None,
               "revoked_at": None}
        with self.store.transaction() as tx:
            tx.lock_cap(f"keys:{owner.principal}")
            if tx.live_key_count(owner.principal) >= self.limits.max_keys_per_owner:
                raise Conflict(f"{owner.principal} has {self.limits.max_keys_per_owner} API keys not revoked, the "
                               "most one owner may have (--max-keys-per-owner): revoke one first")
            tx.insert_key(row)
        return key_view(row), key

    def keys(self, caller: Identity) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            rows = tx.keys(None if caller.can_admin else caller.principal)
        return [key_view(r) for r in rows]

    def revoke_key(self, caller: Identity, key_id: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            row = tx.key(key_id)
            if row is None or not caller.can_admin and row["owner"] != caller.principal:
                raise NotFound(f"no key '{key_id[:40]}'")
            if not tx.revoke_key(key_id, self.clock()):
                raise Conflict(f"key '{key_id}' is revoked already")
            row = tx.key(key_id)
        self.cache.forget(key_id)  # the next request with it reads the store, and is refused
        assert row is not None
        return key_view(row)
