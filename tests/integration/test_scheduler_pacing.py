"""The scheduling loop's pacing (coordinator/loops.py, PASS_GAP), on a real coordinator and store.

A kick on a quiet system is served at once; under a stream of kicks (submits' commits, reports), the
kicks that come within the gap share one pass instead of each paying for a pass of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.coordinator import loops
from corral.coordinator.loops import BackgroundLoops
from corral.coordinator.service import Coordinator
from corral.store.sql import Store


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Coordinator]:
    store = Store(f"sqlite:///{tmp_path / 'corral.db'}")
    coord = Coordinator(store)
    background = BackgroundLoops(coord)
    background.start()
    try:
        yield coord
    finally:
        background.stop()
        store.close()


def _passes(coord: Coordinator) -> int:
    return int(coord.stats["schedule_passes"])


def _wait_for_pass(coord: Coordinator, after: int, within: float) -> float | None:
    """Seconds until the pass count goes past ``after`` (None: not within ``within`` seconds)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if _passes(coord) > after:
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def test_a_lone_kick_is_served_at_once_and_a_second_one_soon_after_waits_out_the_gap(
        monkeypatch: pytest.MonkeyPatch, running: Coordinator) -> None:
    monkeypatch.setattr(loops, "PASS_GAP", 2.0)
    assert _wait_for_pass(running, 0, 10) is not None  # the first pass, at start
    time.sleep(0.3)
    before = _passes(running)
    running.kick()  # quiet until now: served at once, though the last pass was well within the gap
    assert _wait_for_pass(running, before, 1.5) is not None
    before = _passes(running)
    running.kick()  # a second kick right after: a stream, so it waits for the gap
    assert _wait_for_pass(running, before, 1.0) is None
    assert _wait_for_pass(running, before, 5.0) is not None


def test_a_stream_of_kicks_shares_passes(monkeypatch: pytest.MonkeyPatch, running: Coordinator) -> None:
    monkeypatch.setattr(loops, "PASS_GAP", 0.25)
    assert _wait_for_pass(running, 0, 10) is not None
    time.sleep(0.1)
    before = _passes(running)
    t0 = time.monotonic()
    kicks = 0
    while time.monotonic() - t0 < 1.5:
        running.kick()
        kicks += 1
        time.sleep(0.003)
    assert _wait_for_pass(running, _passes(running), 3.0) is not None  # the last kicks' pass
    passes = _passes(running) - before
    # About one pass per gap (1.5 s / 0.25 s, and the first at once); without pacing, one per kick or two.
    assert kicks > 100
    assert passes <= 12, (passes, kicks)
