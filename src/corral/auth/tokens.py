"""Short-lived signed tokens (JWT, HS256 through PyJWT) for ``POST /v1/auth/token``.

The signing key is made at first start and kept in the store (``auth_secrets``); rotating it
(``corral auth rotate``, ``POST /v1/auth/rotate``) ends every token signed before.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt

from corral.auth.identity import Identity, Role, parse_scopes

ALGORITHM = "HS256"
ISSUER = "corral"
DEFAULT_TTL = 15 * 60.0
MAX_TTL = 24 * 3600.0


def new_signing_key() -> str:
    return secrets.token_urlsafe(48)


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and value.startswith("eyJ")


def issue(identity: Identity, signing_key: str, ttl: float = DEFAULT_TTL, now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": identity.name, "kind": identity.kind if identity.kind != "token" else "user",
        "role": identity.role.value, "iat": int(now), "exp": int(now + ttl), "jti": secrets.token_hex(8),
        "ns": sorted(identity.namespaces) if identity.namespaces is not None else None,
        "scopes": sorted(p.value for p in identity.scopes) if identity.scopes is not None else None,
    }
    if identity.key_id:
        claims["key"] = identity.key_id  # revoking the key ends the tokens made with it
    return jwt.encode(claims, signing_key, algorithm=ALGORITHM)


def verify(token: str, signing_key: str) -> Identity | None:
    """The identity a valid, unexpired token carries; None for any other."""
    try:
        c = jwt.decode(token, signing_key, algorithms=[ALGORITHM], issuer=ISSUER,
                       options={"require": ["exp", "iat", "sub", "iss"]})
        ns = c.get("ns")
        return Identity("token", str(c["sub"]), Role(c["role"]),
                        frozenset(ns) if ns is not None else None, parse_scopes(c.get("scopes")),
                        key_id=c.get("key"))
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return None
