"""/v1/auth/token, /v1/whoami, /v1/keys and /v1/users: identities (corral.auth; docs/security.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.config import JsonDict

from corral.api.openapi import own_errors
from corral.api.ratelimit import client_key
from corral.auth import passwords, tokens
from corral.auth.identity import NAME_RE, NAMESPACE_RE, Identity, Perm, Role
from corral.auth.middleware import identity_of
from corral.auth.service import MAX_KEY_LIFE, Auth, TooManyFailures
from corral.coordinator.errors import Forbidden, Unauthorized
from corral.coordinator.errors import Invalid as BadInput

router = APIRouter(prefix="/v1", tags=["auth"])


def auth_of(request: Request) -> Auth:
    a: Auth = request.app.state.auth
    return a


def caller(request: Request) -> Identity:
    return identity_of(request.scope)


AuthDep = Annotated[Auth, Depends(auth_of)]
Caller = Annotated[Identity, Depends(caller)]


# What the service checks by hand (corral.auth.identity, corral.auth.passwords), said in the schemas.
_NAME: JsonDict = {"pattern": NAME_RE.pattern}
_NAMESPACES: JsonDict = {"items": {"type": "string", "pattern": NAMESPACE_RE.pattern}}
_ROLES: list[JsonValue] = [r.value for r in Role]
_ROLE: JsonDict = {"enum": _ROLES}
_PASSWORD: JsonDict = {"minLength": passwords.MIN_LENGTH, "maxLength": passwords.MAX_LENGTH}
_SCOPES: JsonDict = {"items": {"type": "string", "enum": [p.value for p in Perm]}}
_KEY_LIFE: JsonDict = {"maximum": MAX_KEY_LIFE}


class TokenRequest(BaseModel):
    """A password (with ``username``) or an API key in, a signed token out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [  # what token() reads
        {"required": ["username", "password"], "properties": {
            "username": {"type": "string", "minLength": 1}, "password": {"type": "string", "minLength": 1},
            "key": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]}}},
        {"required": ["key"], "properties": {
            "key": {"type": "string", "minLength": 1},
            "password": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]}}}]})
    username: str | None = Field(None, max_length=63)
    password: str | None = Field(None, max_length=1024)
    key: str | None = Field(None, max_length=200)
    ttl: float | None = Field(None, gt=0, le=tokens.MAX_TTL, description="seconds the token lives (default 900)")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=63, json_schema_extra=_NAME)
    role: str | None = Field(None, description="admin, operator, user, viewer or worker; default: the maker's",
                             json_schema_extra={"anyOf": [{"type": "null"}, {"type": "string", "enum": _ROLES}]})
    namespaces: list[str] | None = Field(None, max_length=100, json_schema_extra=_NAMESPACES)
    scopes: list[str] | None = Field(None, max_length=20, json_schema_extra=_SCOPES)
    expires_in: float | None = Field(None, gt=0, description="seconds until the key expires",
                                     json_schema_extra=_KEY_LIFE)


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=63, json_schema_extra=_NAME)
    password: str = Field(..., min_length=1, max_length=1024, json_schema_extra=_PASSWORD)
    role: str = Field("user", json_schema_extra=_ROLE)
    namespaces: list[str] | None = Field(None, max_length=100, json_schema_extra=_NAMESPACES)


class PasswordRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(..., min_length=1, max_length=1024, json_schema_extra=_PASSWORD)


def who(ident: Identity) -> dict[str, Any]:
    return {"kind": ident.kind, "name": ident.name, "role": ident.role.value,
            "namespaces": sorted(ident.namespaces) if ident.namespaces is not None else None,
            "scopes": sorted(p.value for p in ident.scopes) if ident.scopes is not None else None,
            "key_id": ident.key_id}


@router.post("/auth/token", summary="A short-lived signed token (JWT) for a password or an API key",
             responses=own_errors(401))
async def token(body: TokenRequest, request: Request, auth: AuthDep) -> dict[str, Any]:
    address = client_key(request.scope)
    user = body.username or ""
    if not await auth.login_allowed(address, user):
        raise TooManyFailures("too many failed logins: wait a minute and try again")
    if body.key and not body.password:
        decided, ident = auth.cached_key(body.key)
        if not decided:
            ident = await asyncio.to_thread(auth.resolve_key, body.key)
    elif body.username and body.password and not body.key:
        ident = await asyncio.to_thread(auth.login, body.username, body.password)
    else:
        raise BadInput("send either 'username' and 'password', or 'key'")
    if ident is None:
        await auth.login_failed(address, user)
        raise Unauthorized("wrong user name or password, or a key that is not valid")
    ttl = body.ttl or tokens.DEFAULT_TTL
    return {"token": auth.issue_token(ident, ttl), "token_type": "Bearer", "expires_in": int(ttl),
            "identity": who(ident)}


@router.post("/auth/rotate", status_code=204, summary="A new token signing key: every token issued before ends")
async def rotate(auth: AuthDep) -> Response:
    await asyncio.to_thread(auth.rotate_signing_key)
    return Response(status_code=204)


@router.get("/whoami", summary="The caller: its kind, name, role, namespaces and scopes")
async def whoami(ident: Caller) -> dict[str, Any]:
    return who(ident)


@router.post("/keys", status_code=201, summary="A new API key: the key itself is shown in this answer only")
async def create_key(body: KeyRequest, ident: Caller, auth: AuthDep, response: Response) -> dict[str, Any]:
    view, key = await asyncio.to_thread(auth.create_key, ident, body.name, body.role, body.namespaces,
                                        body.scopes, body.expires_in)
    response.headers["Location"] = f"/v1/keys/{view['id']}"
    return {**view, "key": key}


@router.get("/keys", summary="API keys: one's own (an admin: every key); never the keys themselves")
async def list_keys(ident: Caller, auth: AuthDep) -> dict[str, Any]:
    return {"items": await asyncio.to_thread(auth.keys, ident)}


@router.delete("/keys/{key_id}", summary="Revoke a key: the next request with it is refused")
async def revoke_key(key_id: str, ident: Caller, auth: AuthDep) -> dict[str, Any]:
    return await asyncio.to_thread(auth.revoke_key, ident, key_id)


@router.post("/users", status_code=201, summary="A new user (admin)")
async def create_user(body: UserRequest, auth: AuthDep, response: Response) -> dict[str, Any]:
    view = await asyncio.to_thread(auth.create_user, body.name, body.password, body.role, body.namespaces)
    response.headers["Location"] = f"/v1/users/{view['name']}"
    return view


@router.get("/users", summary="Users (admin)")
async def list_users(auth: AuthDep) -> dict[str, Any]:
    return {"items": await asyncio.to_thread(auth.users)}


@router.delete("/users/{name}", status_code=204, summary="Remove a user (admin); its keys are revoked")
async def delete_user(name: str, auth: AuthDep) -> Response:
    await asyncio.to_thread(auth.delete_user, name)
    return Response(status_code=204)


@router.put("/users/{name}/password", status_code=204, summary="Set a user's password (one's own, or an admin)")
async def set_password(name: str, body: PasswordRequest, ident: Caller, auth: AuthDep) -> Response:
    if not ident.can(Perm.ADMIN) and not (ident.kind in ("user", "token", "key") and ident.name == name):
        raise Forbidden("only an admin may set another user's password")
    await asyncio.to_thread(auth.set_password, name, body.password)
    return Response(status_code=204)
