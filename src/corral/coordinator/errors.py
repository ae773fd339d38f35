"""Errors the services raise; the API turns each into a 4xx problem response."""


class ServiceError(Exception):
    status = 400
    title = "Bad request"


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class Overloaded(ServiceError):
    status = 503
    title = "Overloaded"


class Invalid(ServiceError):
    """Well-formed input that this server refuses (a bind mount it does not allow, say)."""

    status = 400
    title = "Bad request"


class Unavailable(ServiceError):
    """What is asked for cannot be had now (no free node port anywhere, a quota reached): try later."""

    status = 503
    title = "Service unavailable"
