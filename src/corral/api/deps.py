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


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
