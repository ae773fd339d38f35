"""/v1/audit (the audit log) and /v1/tokens (join tokens for workers): an admin's routes.

Until the identity model reaches a request (``request.state.identity``), these are guarded like every
other route by the server's access token (corral.api.edge); with an identity, only the admin role passes.
The audit middleware here records every successful change, on every API, with the caller's name.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.body import model_body
from corral.api.deps import Services, services
from corral.api.errors import BadInput
from corral.api.tls import client_cn
from corral.auth import context
from corral.coordinator import audit
from corral.coordinator.audit import AuditLog
from corral.coordinator.errors import Forbidden, NotFound
from corral.store.sql import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["admin"])
Svc = Annotated[Services, Depends(services)]
MAX_LIMIT = 1000
MAX_TTL = 366 * 86400


def admin_only(request: Request, svc: Svc) -> Services:
    """An admin's route: with an identity on the request, only the admin role passes (403 for any other)."""
    identity = getattr(request.state, "identity", None)
    if identity is not None and getattr(identity, "role", None) != "admin":
        raise Forbidden("only an admin may do this")
    return svc


Admin = Annotated[Services, Depends(admin_only)]


def _log(request: Request) -> AuditLog:
    log: AuditLog = request.app.state.audit
    return log


@router.get("/audit", summary="The audit log, newest first: who created, cancelled, deleted, drained or changed "
                              "a permission, and when (admin)")
def get_audit(request: Request, svc: Admin,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
              cursor: Annotated[str | None, Query(max_length=200)] = None,
              actor: Annotated[str | None, Query(max_length=200)] = None,
              action: Annotated[str | None, Query(max_length=32)] = None) -> dict[str, Any]:
    try:
        before = decode_cursor(cursor) if cursor else None
    except ValueError as e:
        raise BadInput(str(e), [{"field": "cursor", "message": str(e)}]) from e
    rows = list(_log(request).page(limit + 1, before, actor, action))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [{k: r[k] for k in ("seq", "at", "actor", "action", "method", "path", "status", "address")}
                      for r in rows],
            "next_cursor": encode_cursor(rows[-1]["seq"]) if more and rows else None}


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str = Field("worker", pattern="^worker$", description="What the token lets its holder do: join as a worker")
    ttl: float | None = Field(None, gt=0, le=MAX_TTL, description="Seconds the token can be used; none: until revoked")


TokenIn = Annotated[TokenBody, Depends(model_body(TokenBody, guard=admin_only))]


@router.post("/tokens", status_code=201, summary="Create a join token for workers (admin); the token is shown once")
def create_token(request: Request, body: TokenIn, svc: Admin) -> dict[str, Any]:
    who = audit.actor(getattr(request.state, "identity", None), request.app.state.audit_local,
                      client_cn(request.scope))
    row, token = svc.coord.nodes.create_join_token(who, body.ttl, request.app.state.auth.limits.max_join_tokens)
    return {**_token_view(row), "token": token}


@router.get("/tokens", summary="Join tokens (never the tokens themselves) (admin)")
def list_tokens(svc: Admin) -> dict[str, Any]:
    with svc.coord.store.read() as tx:
        return {"items": [_token_view(r) for r in tx.join_tokens()]}


@router.delete("/tokens/{token_id}", status_code=204,
               summary="Revoke a join token: no worker joins with it any more (admin)")
def revoke_token(token_id: Annotated[str, Path(pattern="^[0-9a-f]{32}$")], svc: Admin) -> None:
    with svc.coord.store.transaction() as tx:
        if not tx.revoke_join_token(token_id, time.time()):
            raise NotFound(f"no unrevoked join token with id '{token_id}'")


def _token_view(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("id", "kind", "created_by", "created_at", "expires_at", "revoked_at", "last_used_at")}


class AuditMiddleware:
    """Records each successful (2xx) change made through any API, after its answer has gone out."""

    def __init__(self, app: ASGIApp, log: AuditLog, local: bool) -> None:
        self.app, self.log, self.local = app, log, local

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (what := audit.action(scope["method"], scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        status = 0
        escalated = context.watch_escalations()  # filled by the submit it makes, if it escalates

        async def watch(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        finally:
            if 200 <= status < 300:
                identity = (scope.get("state") or {}).get("identity")
                client = scope.get("client")
                if escalated:  # an admin's task given what the operator allows admins (the job's spec says what)
                    what = f"{what}.escalated"
                self.log.record(audit.actor(identity, self.local, client_cn(scope)), what, scope["method"],
                                scope["path"], status, client[0] if client else None)
