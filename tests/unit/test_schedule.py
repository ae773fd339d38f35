"""Cron expressions: validation, the next tick, and catching up after missed ticks (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.domain import schedule as cron


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_next_tick_is_strictly_after() -> None:
    assert cron.next_after("*/5 * * * *", ts(2026, 1, 1, 0, 0)) == ts(2026, 1, 1, 0, 5)
    assert cron.next_after("*/5 * * * *", ts(2026, 1, 1, 0, 3, 7)) == ts(2026, 1, 1, 0, 5)
    assert cron.next_after("30 2 * * 1", ts(2026, 1, 1)) == ts(2026, 1, 5, 2, 30)  # the first Monday


@pytest.mark.parametrize(("alias", "expected"), [
    ("@hourly", (2026, 1, 1, 1, 0)), ("@daily", (2026, 1, 2)), ("@midnight", (2026, 1, 2)),
    ("@weekly", (2026, 1, 4)), ("@monthly", (2026, 2, 1)), ("@yearly", (2027, 1, 1)), ("@ANNUALLY", (2027, 1, 1)),
])
def test_aliases(alias: str, expected: tuple[int, ...]) -> None:
    assert cron.next_after(alias, ts(2026, 1, 1, 0, 0)) == ts(*expected)


def test_validate_normalises() -> None:
    assert cron.validate("  */5   *  * * * ") == "*/5 * * * *"
    assert cron.validate("@Hourly") == "@hourly"


@pytest.mark.parametrize("bad", ["", "   ", "* * * *", "* * * * * *", "61 * * * *", "* 25 * * *",
                                 "0 0 30 2 *", "abc * * * *", "@sometimes", None, 5])
def test_bad_expressions(bad: object) -> None:
    with pytest.raises(cron.CronError):
        cron.validate(bad)  # type: ignore[arg-type]


def test_catch_up_fires_once_for_the_latest_missed_tick() -> None:
    due = ts(2026, 1, 1, 0, 5)
    fire, nxt = cron.catch_up("*/5 * * * *", due, ts(2026, 1, 1, 3, 7, 30))
    assert fire == ts(2026, 1, 1, 3, 5)
    assert nxt == ts(2026, 1, 1, 3, 10)


def test_catch_up_on_time() -> None:
    due = ts(2026, 1, 1, 0, 5)
    assert cron.catch_up("*/5 * * * *", due, due) == (due, ts(2026, 1, 1, 0, 10))
    assert cron.catch_up("*/5 * * * *", due, due + 0.4) == (due, ts(2026, 1, 1, 0, 10))
