"""The caller of the request being served, for the code under the routers: what the store shows of jobs,
schedules and pods (row-level visibility by namespace), and what a new object is stamped with.

The edge binds it for each request (corral.auth.middleware); a context variable follows the request into
the threads its route runs in (``asyncio.to_thread``, Starlette's thread pool copy the context). Background
threads (the scheduler, the reaper, cron) have no caller: they see everything, and what they create takes
its namespace from what it comes from (a subjob from its job, a fired job from its schedule).
"""

from __future__ import annotations

from contextvars import ContextVar

from corral.auth.identity import DEFAULT_NAMESPACE, Identity

_caller: ContextVar[Identity | None] = ContextVar("corral_caller", default=None)
_namespace: ContextVar[str | None] = ContextVar("corral_namespace", default=None)


def bind(identity: Identity | None, namespace: str | None = None) -> None:
    """``namespace``: where the caller asked (``X-Corral-Namespace``) its new objects to go."""
    _caller.set(identity)
    _namespace.set(namespace)


def caller() -> Identity | None:
    return _caller.get()


def visible() -> frozenset[str] | None:
    """The namespaces the current caller sees; None: every one (no caller, or one that sees all)."""
    ident = _caller.get()
    return None if ident is None else ident.visible()


def sees(namespace: str | None) -> bool:
    ns = visible()
    return ns is None or (namespace or DEFAULT_NAMESPACE) in ns


def stamp() -> tuple[str, str | None]:
    """(namespace, created_by) for an object the current caller creates."""
    ident = _caller.get()
    asked = _namespace.get()
    if ident is None:
        return asked or DEFAULT_NAMESPACE, None
    return asked or ident.default_namespace(), ident.principal
