"""One error envelope for the native API: RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from corral.coordinator.errors import Overloaded, ServiceError
from corral.coordinator.policy import escalation_message

log = logging.getLogger("corral.api")
PROBLEM = "application/problem+json"


class BadInput(ServiceError):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None, status: int = 400) -> None:
        super().__init__(detail)
        self.errors = errors
        self.status = status
        if status == 413:
            self.title = "Payload too large"


def problem(status: int, title: str, detail: str, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_errors(e: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in e.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden" and "did you mean" not in msg:
            refused = escalation_message(".".join(loc))
            msg = refused.split(": ", 1)[1] if refused else "unknown field"
        out.append({"field": ".".join(loc) or "(body)", "message": msg})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(request: Request, e: ServiceError) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(e, Overloaded) else None
        return problem(e.status, e.title, str(e), request.url.path, getattr(e, "errors", None), headers)

    @app.exception_handler(ValidationError)
    async def _pydantic(request: Request, e: ValidationError) -> JSONResponse:
        errs = field_errors(e)
        return problem(400, "Invalid input", "; ".join(f"{x['field']}: {x['message']}" for x in errs),
                       request.url.path, errs)

    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = field_errors(e)
        return problem(400, "Invalid input", "; ".join(f"{x['field']}: {x['message']}" for x in errs),
                       request.url.path, errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return problem(e.status_code, str(e.detail), str(e.detail), request.url.path,
                       headers=getattr(e, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect) -> JSONResponse:
        # The client left while its body was being read (a worker stopped mid-report): nothing failed here.
        log.info("client left during %s %s", request.method, request.url.path)
        return problem(400, "Bad request", "the client disconnected before its body was read",
                       request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", "the server failed on this request; it is logged",
                       request.url.path)
