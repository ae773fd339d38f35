"""Identities, roles, keys, tokens and the route rule table (corral.auth): pure logic, no server."""

from __future__ import annotations

import pytest

from corral.auth import keys as K
from corral.auth import passwords, tokens
from corral.auth.identity import ANONYMOUS, LOCAL, Identity, Perm, Role, narrower, parse_role, parse_scopes
from corral.auth.rules import RULES, RuleTable, all_routes, missing
from corral.auth.service import parse_credentials

SECRET = "s" * 48
R, S, OP, A, AG = Perm.READ, Perm.SUBMIT, Perm.OPERATE, Perm.ADMIN, Perm.AGENT

# role -> the permissions it must have, and those it must not
ROLE_TABLE = [
    (Role.ADMIN, {R, S, OP, A, AG, Perm.METRICS, Perm.DOCS, Perm.SELF}, set()),
    (Role.OPERATOR, {R, S, OP, Perm.METRICS, Perm.SELF}, {A, AG}),
    (Role.USER, {R, S, Perm.SELF}, {OP, A, AG, Perm.METRICS}),
    (Role.VIEWER, {R, Perm.SELF}, {S, OP, A, AG, Perm.METRICS}),
    (Role.WORKER, {AG}, {R, S, OP, A, Perm.METRICS, Perm.SELF}),
]


@pytest.mark.parametrize(("role", "has", "lacks"), ROLE_TABLE)
def test_each_role_has_what_the_issue_gives_it_and_nothing_more(role: Role, has: set[Perm], lacks: set[Perm]) -> None:
    ident = Identity("user", "u", role, frozenset({"a"}))
    assert {p for p in has if not ident.can(p)} == set()
    assert {p for p in lacks if ident.can(p)} == set()
    assert ident.can(Perm.PUBLIC)


def test_scopes_narrow_a_role_and_never_widen_it() -> None:
    viewer_key = Identity("key", "k", Role.VIEWER, None, frozenset({Perm.READ, Perm.SUBMIT}))
    assert viewer_key.can(R) and not viewer_key.can(S)  # the role does not have it: the scope cannot add it
    metrics_only = Identity("key", "m", Role.ADMIN, None, frozenset({Perm.METRICS}))
    assert metrics_only.can(Perm.METRICS) and not metrics_only.can(R) and not metrics_only.can(A)
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(["read", "root"])
    with pytest.raises(ValueError, match="unknown role"):
        parse_role("superuser")


def test_namespaces_users_see_theirs_operators_and_admins_see_all() -> None:
    alice = Identity("user", "alice", Role.USER, frozenset({"team-a"}))
    assert alice.sees("team-a") and not alice.sees("team-b") and not alice.sees(None)
    assert alice.visible() == frozenset({"team-a"}) and alice.default_namespace() == "team-a"
    op = Identity("user", "op", Role.OPERATOR, frozenset({"x"}))
    assert op.sees("anything") and op.visible() is None
    assert ANONYMOUS.visible() is None and LOCAL.can(A)
    assert Identity("user", "d", Role.USER, frozenset({"default", "z"})).default_namespace() == "default"


def test_no_key_gives_more_than_its_maker_has() -> None:
    user = Identity("user", "u", Role.USER, frozenset({"a"}))
    assert narrower(Role.USER, None, user) is None and narrower(Role.VIEWER, None, user) is None
    assert narrower(Role.ADMIN, None, user) and narrower(Role.OPERATOR, None, user)
    assert narrower(Role.WORKER, None, user)  # a user cannot mint worker credentials
    scoped = Identity("key", "s", Role.ADMIN, None, frozenset({R}))
    assert narrower(Role.ADMIN, None, scoped) and narrower(Role.ADMIN, frozenset({R}), scoped) is None


def test_keys_are_random_parse_back_and_only_their_hash_matches() -> None:
    key_id, key = K.new_key()
    assert K.key_id_of(key) == key_id and key.startswith("crl_") and len(key) > 50
    assert K.new_key()[1] != key
    h = K.key_hash(key)
    assert K.matches(key, h) and not K.matches(key + "x", h) and key not in h
    for bad in ("", "crl_", "crl_zz_x", "Bearer x", "crl_0123456789abcdef", "x" * 300):
        assert K.key_id_of(bad) is None


def test_the_key_cache_expires_and_forgets() -> None:
    cache = K.KeyCache(ttl=2.0, size=2)
    rec = K.KeyRecord("a" * 16, "n", "user:u", "user", None, None, "h", None, False)
    cache.put("a", rec, now=100.0)
    assert cache.get("a", now=101.0) == (True, rec)
    assert cache.get("a", now=102.5) == (False, None)  # older than its ttl: read the store again
    cache.put("a", rec, now=200.0)
    cache.forget("a")  # a revoke in this process
    assert cache.get("a", now=200.0) == (False, None)
    for i in range(3):
        cache.put(str(i), None, now=300.0)
    assert cache.get("0", now=300.0) == (False, None) and cache.get("2", now=300.0) == (True, None)
    assert not K.KeyRecord("b", "n", "o", "user", None, None, "h", 10.0, False).usable(10.0)
    assert not K.KeyRecord("b", "n", "o", "user", None, None, "h", None, True).usable(0.0)


def test_passwords_are_argon2_and_checked() -> None:
    h = passwords.hash_password("correct horse")
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert passwords.verify_password(h, "correct horse")
    assert not passwords.verify_password(h, "wrong horse") and not passwords.verify_password(None, "x" * 8)
    assert not passwords.verify_password("not a hash", "correct horse")
    with pytest.raises(ValueError, match="8 to 1024"):
        passwords.hash_password("short")


def test_tokens_carry_the_identity_and_expire() -> None:
    alice = Identity("user", "alice", Role.USER, frozenset({"a"}), frozenset({R}), key_id="k" * 16)
    t = tokens.issue(alice, SECRET, ttl=60, now=1000.0)
    assert tokens.looks_like_jwt(t)
    assert tokens.verify(t, "o" * 40) is None
    fresh = tokens.issue(alice, SECRET, ttl=60)
    got = tokens.verify(fresh, SECRET)
    assert got is not None and (got.name, got.role, got.namespaces, got.scopes, got.key_id) == (
        "alice", Role.USER, frozenset({"a"}), frozenset({R}), "k" * 16)
    assert tokens.verify(t, SECRET) is None  # expired long ago
    assert tokens.verify("eyJ.x.y", SECRET) is None


def test_credentials_are_read_from_each_place_a_dialect_puts_them() -> None:
    import base64
    basic = "Basic " + base64.b64encode(b"alice:pw:with:colons").decode()
    assert [(c.kind, c.user, c.value) for c in parse_credentials(basic, "", "", "")] == [
        ("basic", "alice", "pw:with:colons")]
    got = parse_credentials("Bearer abc", "key1", "cookie1", "")
    assert [(c.kind, c.value) for c in got] == [("bearer", "abc"), ("apikey", "key1"), ("cookie", "cookie1")]
    assert parse_credentials("Basic !!!", "", "", "")[0].value == ""
    assert parse_credentials("", "", "", "") == []


def test_every_route_of_the_app_has_a_rule(tmp_path: object) -> None:
    """A new route without a rule fails here: add it to corral.auth.rules.RULES."""
    from corral.api.app import ServerConfig, create_app

    app = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path}/rules.db"))
    routes = all_routes(app)
    assert len(routes) > 100
    assert missing(routes) == []
    assert {p for p in RULES} - {str(getattr(r, "path", "")) for r in routes} == set(), "rules of no route"


def test_a_route_without_a_rule_is_reported() -> None:
    from starlette.routing import Route, WebSocketRoute

    async def nothing() -> None: ...

    assert missing([Route("/v1/new", nothing, methods=["POST"]), WebSocketRoute("/ws/new", nothing),
                    Route("/v1/jobs", nothing, methods=["PATCH"])]) == ["POST /v1/new", "WS /ws/new", "PATCH /v1/jobs"]


@pytest.mark.parametrize(("method", "path", "perm"), [
    ("GET", "/v1/jobs", R), ("POST", "/v1/jobs", S), ("GET", "/v1/jobs/abc", R), ("DELETE", "/v1/jobs/abc", S),
    ("POST", "/v1/jobs/batch", S), ("HEAD", "/v1/jobs", R), ("POST", "/v1/agent/nodes/n/report", AG),
    ("GET", "/metrics", Perm.METRICS), ("GET", "/docs", Perm.DOCS), ("GET", "/docs-assets/swagger.js", Perm.DOCS),
    ("GET", "/healthz", Perm.PUBLIC), ("POST", "/v1/auth/token", Perm.PUBLIC), ("GET", "/v1/users", A),
    ("DELETE", "/queues/q", OP), ("POST", "/stacks/batch-delete", S), ("GET", "/stacks/batch-delete/j", R),
    ("GET", "/stacks/s1", R), ("PUT", "/api/v1/tasks/t/status", AG), ("WS", "/ws/telemetry", R),
    ("PATCH", "/v1/jobs", R),  # a method no route has: the 405 needs what the path's least rule needs
    ("GET", "/no/such/path", None),
])
def test_the_rule_table_finds_the_route_of_a_request(method: str, path: str, perm: Perm | None) -> None:
    scope = {"type": "websocket", "path": path} if method == "WS" else {"type": "http", "method": method,
                                                                            "path": path}
    table = RuleTable()
    assert table.perm(scope) == perm
    assert table.perm(scope) == perm  # from its cache of recent paths
