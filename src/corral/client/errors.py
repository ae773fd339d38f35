"""The exceptions of ``corral.client``: one per kind of failure, each carrying the server's problem
details (RFC 9457: ``status``, ``title``, ``detail`` and, for bad input, the field ``errors``)."""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """The server refused a request (``status`` is its HTTP status) or could not be reached (``status`` 0).

    ``errors`` lists the fields at fault for bad input: ``[{"field": "tasks.0.image", "message": ...}]``."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
                 url: str | None = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        if not self.status:
            return self.detail
        head = f"{self.status} {self.title}" if self.status else self.title
        text = f"{head}: {self.detail}" if self.detail and self.detail != self.title else head
        fields = "; ".join(f"{e.get('field', '?')}: {e.get('message', 'invalid')}" for e in self.errors)
        return f"{text} ({fields})" if fields and fields != self.detail else text


class BadRequest(CorralError):
    """400, 413, 415 or 422: what was sent is wrong (see ``errors``)."""


class Unauthorized(CorralError):
    """401: no token, or one the server does not accept."""


class Forbidden(CorralError):
    """403: the token is good but may not do this."""


class NotFound(CorralError):
    """404: no such job, task, node, pod or service."""


class Conflict(CorralError):
    """409: the object is not in a state that allows this (cancel a finished job, delete a running one)."""


class RateLimited(CorralError):
    """429: too many requests; try again later."""


class ServerError(CorralError):
    """5xx: the server failed, or is overloaded or restarting (503)."""


class Unreachable(CorralError):
    """No answer: the server is not there, or the connection broke (``status`` is 0)."""

    def __init__(self, detail: str, url: str | None = None) -> None:
        super().__init__(0, "cannot reach the Corral server", detail, None, url)


class WaitTimeout(TimeoutError):
    """``wait`` gave up: the job had not ended within its timeout. ``job`` is the job as last seen."""

    def __init__(self, job_id: str, timeout: float, job: dict[str, Any]) -> None:
        super().__init__(f"job {job_id} is still {job.get('state')} after {timeout:g}s")
        self.job = job


_BY_STATUS: dict[int, type[CorralError]] = {400: BadRequest, 413: BadRequest, 415: BadRequest, 422: BadRequest,
                                            401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                            429: RateLimited}


def error_for(status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
              url: str | None = None) -> CorralError:
    """The exception for an error answer with this status."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else CorralError)
    return cls(status, title, detail, errors, url)
