"""The heartbeat's short path (corral.api.native.agent_fast): what it answers itself, and what it hands on to
the route unchanged (a refused caller, a body the route's model refuses: with the bytes it read)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from corral.api.deps import Services
from corral.api.native.agent_fast import AgentFastPath
from corral.coordinator.errors import Forbidden, NotFound
from corral.coordinator.nodes import secret_hash

NODE = "a" * 32
SECRET = "s3cret"
EXEC = "b" * 32


class FakeNodes:
    def __init__(self) -> None:
        self.beats: list[tuple[str, list[str], dict[str, Any] | None]] = []
        self.hashes = {NODE: secret_hash(SECRET)}

    def authenticate_cached(self, node_id: str, secret: str | None) -> bool:
        stored = self.hashes.get(node_id)
        if stored is None:
            return False
        if secret is None or secret_hash(secret) != stored:
            raise Forbidden("not this node's secret")
        return True

    def authenticate(self, node_id: str, secret: str | None) -> None:
        raise NotFound("no node: register again")

    def secret_owner(self, secret: str) -> str | None:
        return None

    async def heartbeat_async(self, node_id: str, running: Sequence[str], usage: dict[str, Any] | None) -> list[str]:
        self.beats.append((node_id, list(running), usage))
        return [x for x in running if x == EXEC]


class FakeCoord:
    def __init__(self) -> None:
        self.nodes = FakeNodes()


class Inner:
    """The app behind the short path: records what reached it and the body it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"route"})


def call(path: str, body: bytes, headers: dict[str, str], token: str | None = None
         ) -> tuple[int, bytes, Inner, FakeNodes]:
    coord = FakeCoord()
    inner = Inner()
    app = AgentFastPath(inner, Services(coord, None, token))  # type: ignore[arg-type]
    scope: Scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    chunks = [body[:5], body[5:]]
    sent: list[Message] = []

    async def receive() -> Message:
        if chunks:
            part = chunks.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(msg: Message) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    status = int(sent[0]["status"])
    return status, b"".join(m.get("body", b"") for m in sent[1:]), inner, coord.nodes


JSON = {"content-type": "application/json"}
BEAT = json.dumps({"running": [EXEC], "usage": {"cpu_percent": 5.0, "memory_percent": 1.0}}).encode()


def test_a_heartbeat_with_the_nodes_secret_is_answered_without_the_route() -> None:
    status, body, inner, nodes = call(f"/v1/agent/nodes/{NODE}/heartbeat", BEAT,
                                      {**JSON, "X-Corral-Node-Secret": SECRET})
    assert (status, json.loads(body)) == (200, {"stop": [EXEC]})
    assert inner.bodies == []
    assert nodes.beats == [(NODE, [EXEC], {"cpu_percent": 5.0, "memory_percent": 1.0})]


def test_what_the_short_path_does_not_take_reaches_the_route_whole() -> None:
    path = f"/v1/agent/nodes/{NODE}/heartbeat"
    cases: list[tuple[str, bytes, dict[str, str], str | None]] = [
        (path, BEAT, {**JSON, "X-Corral-Node-Secret": "wrong"}, None),           # another node's secret
        (path, BEAT, JSON, None),                                                # no secret
        (path, BEAT, {**JSON, "X-Corral-Node-Secret": SECRET}, "cluster-token"),  # no cluster token
        (path, BEAT, {"content-type": "text/json", "X-Corral-Node-Secret": SECRET}, None),  # the route's words
        (path, BEAT, {**JSON, "X-Corral-Node-Secret": "x" * 201}, None),         # a header over its bound
        (path, b'{"running": ["x"]}', {**JSON, "X-Corral-Node-Secret": SECRET}, None),  # the model refuses it
        (path, b'{"running": [', {**JSON, "X-Corral-Node-Secret": SECRET}, None),      # not JSON
        (f"/v1/agent/nodes/{'c' * 32}/heartbeat", BEAT, {**JSON, "X-Corral-Node-Secret": SECRET}, None),  # unknown
        (f"/v1/agent/nodes/{NODE}/poll", b'{"wait": 0}', {**JSON, "X-Corral-Node-Secret": SECRET}, None),
    ]
    for path_, body, headers, token in cases:
        status, answer, inner, nodes = call(path_, body, headers, token)
        assert (status, answer) == (299, b"route"), (path_, headers, body)
        assert inner.bodies == [body], (path_, headers)  # read once, handed on whole
        assert nodes.beats == []
