"""Corral: a distributed container job orchestrator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.client import AsyncClient as AsyncClient
    from corral.client import Client as Client
    from corral.client import task as task

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``corral.task``, ``corral.Client`` and ``corral.AsyncClient``: the client library's, imported on first
    use (the server's processes never load it)."""
    if name in ("task", "Client", "AsyncClient"):
        from corral import client

        return getattr(client, name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
