"""The caller of the request being served, for the code under the routers: what the store shows of jobs,
schedules and pods (row-level visibility by namespace), and what a new object is stamped with.

The edge binds it for each request (corral.auth.middleware); a context variable follows the request into
the threads its route runs in (``asyncio.to_thread``, Starlette's thread pool copy the context). Background
threads (the scheduler, the reaper, cron) have no caller: they see everything, and what they create takes
its namespace from what it comes from (a subjob from its job, a fired job from its schedule).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

from corral.auth.identity import DEFAULT_NAMESPACE, Identity, Role

_caller: ContextVar[Identity | None] = ContextVar("corral_caller", default=None)
_namespace: ContextVar[str | None] = ContextVar("corral_namespace", default=None)
# What the request was granted beyond the hardened default (escalations), for its audit entry: a list the
# audit middleware sets before the request runs and reads after (the threads it runs in share the list).
_escalated: ContextVar[list[str] | None] = ContextVar("corral_escalated", default=None)


def bind(identity: Identity | None, namespace: str | None = None) -> None:
    """``namespace``: where the caller asked (``X-Corral-Namespace``) its new objects to go."""
    _caller.set(identity)
    _namespace.set(namespace)


def caller() -> Identity | None:
    return _caller.get()


def admin() -> bool | None:
    """Whether the current caller is an admin who may be given what the operator lets admins have
    (--allow-admin-escalation): the admin role with its admin rights, and known (the anonymous caller of an
    open server is anyone). None: no caller (a background thread)."""
    ident = _caller.get()
    if ident is None:
        return None
    return ident.role is Role.ADMIN and ident.can_admin and ident.kind != "anonymous"


def watch_escalations() -> list[str]:
    """A fresh list that ``note_escalation`` fills for the rest of this request (the audit middleware's)."""
    notes: list[str] = []
    _escalated.set(notes)
    return notes


def note_escalation(kinds: Iterable[str]) -> None:
    """The request asks for these escalations, and was allowed them: its audit entry says so."""
    notes = _escalated.get()
    if notes is not None:
        notes.extend(k for k in kinds if k not in notes)


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
