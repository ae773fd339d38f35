"""What the dialects share: a route class that gives a dialect its own error shape, and JSON bodies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from corral.api.body import BadBody, read_body
from corral.coordinator.errors import ServiceError

log = logging.getLogger("corral.api")
CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
         413: "INVALID_REQUEST", 414: "INVALID_REQUEST", 415: "INVALID_REQUEST", 503: "SERVICE_UNAVAILABLE"}


class DialectError(Exception):
    """An error a dialect answers in its own shape: HTTP status, code, message and details."""

    def __init__(self, status: int, message: str, code: str = "", details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.headers = headers


def validation_error(e: RequestValidationError) -> DialectError:
    """A FastAPI validation error (a bad query parameter) as a 400 naming the field."""
    err = e.errors()[0] if e.errors() else {}
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")]
    field = ".".join(loc) or "(request)"
    reason = str(err.get("msg", "invalid"))
    return DialectError(400, f"{field}: {reason}", "INVALID_REQUEST", {"field": field, "reason": reason})


def as_dialect_error(e: Exception) -> DialectError:
    if isinstance(e, DialectError):
        return e
    if isinstance(e, RequestValidationError):
        return validation_error(e)
    if isinstance(e, ServiceError):
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return DialectError(e.status, str(e), CODES.get(e.status, "ERROR"), headers=headers)
    if isinstance(e, HTTPException):
        return DialectError(e.status_code, str(e.detail), "ERROR", headers=dict(e.headers or {}))
    log.error("unexpected error in a dialect route", exc_info=e)
    return DialectError(500, "the server failed on this request; it is logged", "INTERNAL_ERROR")


def route_class(render: Callable[[Request, DialectError], Response]) -> type[APIRoute]:
    """An APIRoute whose errors, bad parameters included, are answered by ``render``."""

    class DialectRoute(APIRoute):
        dialect_render = staticmethod(render)  # for the hot path (corral.api.hot), which calls the endpoint itself

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as e:  # every error leaves in the dialect's shape
                    return render(request, as_dialect_error(e))

            return run

    return DialectRoute


async def json_object(request: Request, what: str = "the body") -> dict[str, Any]:
    """The request's JSON object (read by corral.api.body), or a 4xx that says what is wrong with it."""
    try:
        data = await read_body(request)
    except BadBody as e:
        message = str(e).replace("the body", what, 1)
        raise DialectError(e.status, message, "INVALID_REQUEST",
                           {"field": "(body)", "reason": message.removeprefix(what).strip()}) from e
    if not isinstance(data, dict):
        raise DialectError(400, f"{what} must be a JSON object", "INVALID_REQUEST",
                           {"field": "(body)", "reason": "not a JSON object"})
    return data
