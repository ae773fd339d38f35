"""A short path for the agent's most frequent call: ``POST /v1/agent/nodes/{id}/heartbeat``.

At 5,000 nodes a coordinator answers 1,700 heartbeats a second (one per node every 3 s). Through FastAPI a
heartbeat paid for the middleware inside the edge (the audit log's, the dialects' rate limiter, the error
handlers), the router's walk over every route, the dependency graph and its validation of headers; that was
most of its cost, not the store (docs/benchmarks.md, "Heartbeats"). This ASGI middleware sits just inside
the edge (which has already checked the Host, the Origin, the content type browsers may send, and counts the
body against its limit) and answers a heartbeat itself, with the same checks as the route, in order:

1. the caller (``agent.caller_ok``: the worker role, the cluster token, or a join token);
2. the node's credential bound to the node id in the path (``agent.check_node``: its secret; a cached
   dictionary lookup and a SHA-256, no thread hop once the node is known);
3. the body: JSON, read through ``corral.api.body.parse`` (nesting) and validated by the route's own model
   (``HeartbeatBody``: strict, bounded);
4. the lease, renewed with the other heartbeats queued meanwhile (``HeartbeatGroup``).

It never words a refusal of its own: a request it does not take as it is (a refused caller, a content type
or a header the route would refuse, a body the model refuses) goes on to the route, with the bytes it read
handed on, and the route answers it as before. Errors of the heartbeat itself (an unknown node) are the
native problem details the route's error handler writes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.body import BadBody, media_type, parse
from corral.api.deps import Services
from corral.api.errors import problem
from corral.api.native.agent import HeartbeatBody, caller_ok, check_node
from corral.coordinator.errors import Overloaded, ServiceError
from corral.domain.agentwire import NODE_SECRET_HEADER

HEARTBEAT = re.compile(r"/v1/agent/nodes/([0-9a-f]{32})/heartbeat")
_SECRET = NODE_SECRET_HEADER.lower().encode("latin-1")
MAX_SECRET = 200  # the route's bound on the header (agent.Secret)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The first value of each header the heartbeat reads."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in (b"authorization", b"content-type", _SECRET) and name not in out:
            out[name] = value
    return out


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then what the connection says next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()
    return again


async def _json(send: Send, status: int, body: bytes, ctype: bytes = b"application/json",
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", ctype), *extra]})
    await send({"type": "http.response.body", "body": body})


class AgentFastPath:
    """Answers heartbeats before the app's inner middleware and router (see the module's text)."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.svc = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = HEARTBEAT.fullmatch(scope["path"])
            if m is not None:
                rest = await self._heartbeat(m.group(1), scope, receive, send)
                if rest is None:
                    return
                receive = rest
        await self.app(scope, receive, send)

    async def _heartbeat(self, node_id: str, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """None when answered here; else the ``receive`` the route reads the request from."""
        h = _headers(scope)
        raw_secret = h.get(_SECRET)
        if media_type(h.get(b"content-type", b"").decode("latin-1")) != "application/json" or (
                raw_secret is not None and len(raw_secret) > MAX_SECRET):
            return receive
        secret = raw_secret.decode("latin-1") if raw_secret is not None else None
        authorization = h[b"authorization"].decode("latin-1") if b"authorization" in h else None
        try:
            caller_ok(scope, self.svc, authorization)
            await check_node(self.svc, node_id, secret, authorization)
        except ServiceError:
            return receive  # refused: the route refuses it again, in its words (nothing was read)
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the worker left: nobody to answer
                return None
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = HeartbeatBody.model_validate(parse(raw, "json"))
        except (BadBody, ValidationError):
            return _replay(raw, receive)
        usage = body.usage.model_dump() if body.usage is not None else None
        try:
            stop = await self.svc.coord.nodes.heartbeat_async(node_id, body.running, usage)
        except ServiceError as e:
            resp = problem(e.status, e.title, str(e), str(scope["path"]), getattr(e, "errors", None),
                           {"Retry-After": "1"} if isinstance(e, Overloaded) else None)
            await resp(scope, receive, send)
            return None
        out: dict[str, Any] = {"stop": stop}
        await _json(send, 200, json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode())
        return None
