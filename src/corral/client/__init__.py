"""``corral.client``: a Python client for Corral's native API, sync (``Client``) and asyncio (``AsyncClient``).

    from corral.client import Client, JobSpec

    with Client("http://127.0.0.1:8000") as c:
        job = c.submit({"name": "hello", "tasks": [{"run": "echo hello"}]})
        c.wait(job["id"], timeout=60)
        for line in c.logs(job["id"]):
            print(line["line"])

Specs are the server's own pydantic models (``JobSpec``, ``TaskSpec``, ``PodSpec``, ``ServiceSpec``,
imported from corral.domain when first used), so a spec built here is validated as the server will.
Importing this package loads httpx and none of the server (FastAPI, SQLAlchemy, uvicorn). See docs/client.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.client._core import DEFAULT_URL, TERMINAL, Json, find_token
from corral.client.aio import AsyncClient
from corral.client.errors import (
    BadRequest,
    Conflict,
    CorralError,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from corral.client.remote import Submitted, Task, TaskFailed, task
from corral.client.sync import Client

if TYPE_CHECKING:
    from corral.domain.pods import PodSpec
    from corral.domain.services import ServiceSpec
    from corral.domain.spec import JobSpec, TaskSpec

_MODELS = {"JobSpec": "corral.domain.spec", "TaskSpec": "corral.domain.spec", "PodSpec": "corral.domain.pods",
           "ServiceSpec": "corral.domain.services"}


def __getattr__(name: str) -> Any:
    """The spec models, imported on first use (pydantic is not needed to talk to a server)."""
    if name in _MODELS:
        import importlib

        return getattr(importlib.import_module(_MODELS[name]), name)
    raise AttributeError(f"module 'corral.client' has no attribute {name!r}")


__all__ = ["DEFAULT_URL", "TERMINAL", "AsyncClient", "BadRequest", "Client", "Conflict", "CorralError", "Forbidden",
           "JobSpec", "Json", "NotFound", "PodSpec", "RateLimited", "ServerError", "ServiceSpec", "Submitted",
           "Task", "TaskFailed", "TaskSpec", "Unauthorized", "Unreachable", "WaitTimeout", "find_token", "task"]
