"""Every request's caller: its credentials resolved to an ``Identity``, checked against the route's rule
(corral.auth.rules), and put on ``request.state.identity`` (``scope["state"]["identity"]``).

Called by the API's edge (corral.api.edge) where the access token used to be checked, so that a refusal
comes before anything else reads the request, in the shape of the API the path belongs to: 401 with
``WWW-Authenticate`` for no or bad credentials, 403 for a known caller without the right, 429 after too
many failed logins from one address or for one user.
"""

from __future__ import annotations

from collections.abc import Sequence
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import Scope

from corral.api.ratelimit import client_key
from corral.api.tls import client_cn
from corral.auth import context
from corral.auth.identity import ANONYMOUS, NAMESPACE_RE, Identity, Perm
from corral.auth.rules import RuleTable
from corral.auth.service import Auth, Credential, parse_credentials

Refusal = tuple[int, str, dict[str, str]]
NAMESPACE_HEADER = "x-corral-namespace"  # where a caller's new jobs, schedules and pods go
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="corral", Basic realm="corral"'}


def identity_of(scope: Scope) -> Identity:
    """The caller the edge found (the anonymous admin where no edge ran, as in a unit test's app)."""
    ident = scope.get("state", {}).get("identity")
    return ident if isinstance(ident, Identity) else ANONYMOUS


def _credentials(scope: Scope, headers: Headers, cookie_name: str) -> list[Credential]:
    raw_query = scope.get("query_string", b"")
    query = parse_qs(raw_query.decode("latin-1")) if raw_query else {}
    cookie_value = ""
    if raw_cookie := headers.get("cookie"):
        cookie = SimpleCookie()
        try:
            cookie.load(raw_cookie)
        except Exception:  # a malformed cookie header carries no credential
            cookie = SimpleCookie()
        morsel = cookie.get(cookie_name)
        cookie_value = morsel.value if morsel else ""
    ws_token = (query.get("token") or [""])[0] if scope["type"] == "websocket" else ""
    api_key = headers.get("x-api-key", "") or (query.get("api_key") or [""])[0]
    return parse_credentials(headers.get("authorization", ""), api_key, cookie_value, ws_token)


async def authorize(auth: Auth, table: RuleTable, scope: Scope, headers: Headers, cookie_name: str,
                    passthrough: Sequence[str], hint: str) -> Refusal | None:
    """Sets the caller on the scope; returns the refusal to answer with, or None to go on.

    ``passthrough``: path prefixes whose routes check a credential of their own (the cluster token on
    /v1/agent/*, a configured Stacks key): a request there without a credential this server knows goes on
    to that check."""
    path = str(scope["path"])
    method = "WS" if scope["type"] == "websocket" else str(scope["method"])
    perm = table.perm(scope)
    ident: Identity | None = None
    creds = _credentials(scope, headers, cookie_name)
    own = any(path == p or path.startswith(p if p.endswith("/") else p + "/") for p in passthrough)
    for cred in creds:
        decided, ident = auth.cached(cred)
        if not decided:
            if cred.kind == "basic" and not await auth.login_allowed(client_key(scope), cred.user):
                return 429, "too many failed logins: wait a minute and try again", {"Retry-After": "60"}
            ident = await anyio.to_thread.run_sync(auth.resolve, cred)
        if ident is not None:
            break
        if cred.kind == "basic" and not own:  # a password: guessable, so its failures are counted
            await auth.login_failed(client_key(scope), cred.user)
    if ident is None and (cn := client_cn(scope)) is not None:
        # A verified client certificate (--tls-client-ca) whose common name names a user, directly or through
        # --tls-cn-map: that user, with its role and namespaces. Any other CN: anonymous.
        decided, ident = auth.cached_cn(cn)
        if not decided:
            ident = await anyio.to_thread.run_sync(auth.resolve_cn, cn)
    if ident is None and not auth.enabled and not auth.local_token:
        ident = ANONYMOUS  # an open server: its callers cannot be told apart
    scope.setdefault("state", {})["identity"] = ident or ANONYMOUS
    asked = headers.get(NAMESPACE_HEADER, "").strip() or None
    context.bind(ident or ANONYMOUS, asked)
    if perm is Perm.PUBLIC:
        return None
    if ident is None:
        if own:
            return None
        if auth.local_token:  # `corral up` (or --api-token): its token is what most callers lack
            return 401, ("this server needs its access token: send 'Authorization: Bearer TOKEN' with "
                         f"{hint} (the corral commands read it by themselves), or open the login link printed "
                         "at start; an API key or a token of a user works too"), {"WWW-Authenticate": "Bearer"}
        what = "these credentials are not valid (or expired, or revoked)" if creds else "this server needs credentials"
        return 401, (f"{what}: send 'Authorization: Bearer KEY' with an API key or a token from POST "
                     f"/v1/auth/token, a user's 'Authorization: Basic', or {hint}"), CHALLENGE
    if perm is None:
        return None  # no such route: the router answers 404 (or 405) to a known caller
    if not ident.can(perm):
        return 403, (f"{ident.kind} '{ident.name}' (role {ident.role.value}) may not {method} {path[:200]}: "
                     f"it needs the '{perm.value}' permission"), {}
    if asked is not None:
        if not NAMESPACE_RE.match(asked):
            return 400, f"{NAMESPACE_HEADER}: '{asked[:70]}' is not a namespace (a DNS label)", {}
        if not ident.sees(asked):
            return 403, f"{ident.kind} '{ident.name}' may not act in namespace '{asked}'", {}
    return None
