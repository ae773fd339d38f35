"""What each of the coordinator's concerns (jobs, the node protocol, scheduling, the reaper) works on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.coordinator.service import Coordinator


class Part:
    """One concern of the coordinator, over the state they all share: the store, the settings, the
    workflow engine and the counters (see coordinator/service.py)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.store = coord.store
        self.settings = coord.settings
        self.flow = coord.flow
        self.stats = coord.stats
