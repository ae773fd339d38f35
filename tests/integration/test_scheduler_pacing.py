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
from tests.harness import wait_until


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


def _a_pass_after(coord: Coordinator, before: int, within: float) -> None:
    wait_until(lambda: _passes(coord) > before, within, interval=0.002, what=f"a pass after pass {before}")


def test_a_lone_kick_is_served_at_once_and_a_second_one_soon_after_waits_out_the_gap(
        monkeypatch: pytest.MonkeyPatch, running: Coordinator) -> None:
    monkeypatch.setattr(loops, "PASS_GAP", 2.0)
    _a_pass_after(running, 0, 10)  # the first pass, at start
    time.sleep(0.3)
    before = _passes(running)
    running.kick()  # quiet until now: served at once, though the last pass was well within the gap
    _a_pass_after(running, before, 1.5)
    before = _passes(running)
    running.kick()  # a second kick right after: a stream, so it waits for the gap
    time.sleep(1.0)
    assert _passes(running) == before
    _a_pass_after(running, before, 5.0)


def test_a_stream_of_kicks_shares_passes(monkeypatch: pytest.MonkeyPatch, running: Coordinator) -> None:
    monkeypatch.setattr(loops, "PASS_GAP", 0.25)
    _a_pass_after(running, 0, 10)
    time.sleep(0.1)
    before = _passes(running)
    t0 = time.monotonic()
    kicks = 0
    while time.monotonic() - t0 < 1.5:
        running.kick()
        kicks += 1
        time.sleep(0.003)
    _a_pass_after(running, _passes(running), 3.0)  # the last kicks' pass
    passes = _passes(running) - before
    # About one pass per gap (1.5 s / 0.25 s, and the first at once); without pacing, one per kick or two.
    assert kicks > 100
    assert passes <= 12, (passes, kicks)
