"""What the ASGI middlewares (the edge, the rate limiter) share."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


async def refuse(scope: Scope, receive: Receive, send: Send, response: Response, reason: str) -> None:
    """Answer a request with ``response`` before the app sees it. A WebSocket handshake gets the response
    where the server supports it, else a close with policy-violation code 1008 and ``reason``."""
    if scope["type"] == "http":
        await response(scope, receive, send)
    elif "websocket.http.response" in scope.get("extensions", {}):
        await receive()  # websocket.connect
        await response(scope, receive, send)
    else:
        await receive()
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
