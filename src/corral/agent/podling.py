"""A worker's Podling port (``corral worker --podling-port PORT``): Podling's worker endpoints for the
tasks this node runs.

- ``POST /api/v1/tasks/{id}/execute`` (body ``{"task": {...}}``): run the task on this node. The worker
  does not start anything itself: it asks the coordinator to pin the task here (a task it does not know
  is created there, pinned here), and the task then comes through the agent's usual poll, so nothing
  bypasses the store. 202 ``{"message": "task execution started", "taskId"}``.
- ``GET /api/v1/tasks/{id}/status``: the task as Podling shows it, if it is this node's (404 otherwise).
- ``GET /api/v1/tasks/{id}/logs?tail=100``: ``{"taskId", "logs", "tail"}``, the last lines of its output
  as the coordinator stored them.

Each is one call to the coordinator's node routes (``/v1/agent/nodes/{id}/podling/...``, api/dialects/
podling.py), made with this node's identity (its secret, and the cluster token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from corral.agent.transport import HttpTransport
from corral.domain.agentwire import NODE_SECRET_HEADER

log = logging.getLogger("corral.agent.podling")
MAX_BODY = 1 << 20


class _Identity:
    """This worker as the coordinator knows it (set once it has registered)."""

    def __init__(self, agent: Any, transport: HttpTransport) -> None:
        self.agent = agent
        self.transport = transport

    def headers(self) -> dict[str, str]:
        return {NODE_SECRET_HEADER: self.transport.node_secret} if self.transport.node_secret else {}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def make_app(agent: Any, transport: HttpTransport) -> FastAPI:
    me = _Identity(agent, transport)
    app = FastAPI(title="Corral: a worker's Podling port", openapi_url=None, docs_url=None, redoc_url=None)

    async def ask(method: str, path: str, body: bytes | None = None, params: dict[str, str] | None = None
                  ) -> Response:
        node_id = agent.node_id
        if not node_id or not transport.node_secret:
            return _error(503, "this worker has not registered with its coordinator yet; try again shortly")
        headers = me.headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            r = await transport.client.request(method, f"{transport.server}/v1/agent/nodes/{node_id}/podling{path}",
                                               content=body, params=params, headers=headers, timeout=10.0)
        except httpx.HTTPError as e:
            log.warning("the coordinator did not answer a Podling call: %s", e)
            return _error(503, "the coordinator does not answer; try again shortly")
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text[:500] or f"the coordinator answered {r.status_code}"}
        if isinstance(data, dict) and "detail" in data and "error" not in data:  # a native error
            data = {"error": str(data.get("detail"))}
        return JSONResponse(data, status_code=r.status_code)

    @app.post("/api/v1/tasks/{task_id}/execute")
    async def execute(task_id: str, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"the body is larger than {MAX_BODY} bytes")
        return await ask("POST", f"/tasks/{task_id}/execute", body)

    @app.get("/api/v1/tasks/{task_id}/status")
    async def status(task_id: str) -> Response:
        return await ask("GET", f"/tasks/{task_id}")

    @app.get("/api/v1/tasks/{task_id}/logs")
    async def logs(task_id: str, request: Request) -> Response:
        tail = request.query_params.get("tail", "100")
        try:
            n = int(tail)
        except ValueError:
            return _error(400, "invalid tail parameter")
        return await ask("GET", f"/tasks/{task_id}/logs", params={"tail": str(n)})

    return app


class _Server(uvicorn.Server):
    """Stops when the worker does (the worker handles the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(agent: Any, transport: HttpTransport, bind: str, port: int, stop: asyncio.Event) -> None:
    """Serve the Podling port until ``stop`` is set."""
    server = _Server(uvicorn.Config(make_app(agent, transport), host=bind, port=port, log_level="warning",
                                    access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
