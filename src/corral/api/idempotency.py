"""The ``Idempotency-Key`` request header of the submit routes (see corral.coordinator.idempotency)."""

from __future__ import annotations

from fastapi import Request

from corral.coordinator.errors import Invalid
from corral.coordinator.idempotency import HEADER, IdemKey, check_key


def idem_key(request: Request, scope: str) -> IdemKey | None:
    """The request's idempotency key for ``scope`` (the route), None without one; a 400 (in the route's
    own error shape) for a malformed one."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    try:
        return IdemKey(scope, check_key(value))
    except ValueError as e:
        raise Invalid(str(e)) from None
