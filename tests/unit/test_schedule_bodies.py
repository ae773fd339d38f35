"""Schedule bodies (up to 10 MiB) are validated in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fastapi import Response

from corral.api.dialects import tork, tork_scheduled
from corral.api.native import schedules


class Stop(Exception):
    pass


def _recording(seen: list[int]) -> Any:
    def validate(*_: Any) -> Any:
        seen.append(threading.get_ident())
        raise Stop

    return validate


def test_native_and_tork_schedule_bodies_are_validated_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(schedules, "validate_spec", _recording(seen))
    monkeypatch.setattr(tork_scheduled, "to_scheduled_spec", _recording(seen))

    async def read_job(_: Any) -> dict[str, Any]:
        return {"cron": "* * * * *", "tasks": []}

    monkeypatch.setattr(tork, "read_job", read_job)

    async def main() -> int:
        with pytest.raises(Stop):  # POST /v1/schedules and POST /v1/jobs with a schedule
            await schedules.create_schedule(None, Response(), "* * * * *", {"tasks": []}, None)  # type: ignore[arg-type]
        with pytest.raises(Stop):  # Tork's POST /scheduled-jobs
            await tork_scheduled.create(None, None)  # type: ignore[arg-type]
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(seen) == 2 and loop_thread not in seen
