"""What the routers share: the coordinator and the wake-ups, reached through the app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from corral.coordinator.service import Coordinator
from corral.coordinator.wakeups import NodeWakeups


@dataclass
class Services:
    coord: Coordinator
    wakeups: NodeWakeups
    agent_token: str | None = None
    auth: bool = False  # the server checks a token (the API's or the cluster's): its callers are known


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain function dependency in a worker thread, a hop on every request
    svc: Services = request.app.state.services
    return svc
