"""Cron expressions: validation and the next tick, in UTC, on the ``cronsim`` library.

Accepted: the standard five fields (minute hour day-of-month month day-of-week) and the aliases
``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight`` and ``@hourly``.
Times are UNIX seconds, as everywhere in the store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """Not a cron expression this server accepts."""


def _expand(expr: str) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("a cron expression is a non-empty string, such as '*/5 * * * *' or '@hourly'")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise CronError(f"unknown alias '{text}': one of " + ", ".join(ALIASES))
        return ALIASES[text.lower()]
    if len(text.split()) != 5:
        raise CronError(f"'{text}' has {len(text.split())} fields; a cron expression has 5: "
                        "minute hour day-of-month month day-of-week")
    return text


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def validate(expr: str) -> str:
    """The expression, with its whitespace normalised; raises CronError when it is not valid."""
    text = _expand(expr)
    try:
        CronSim(text, _dt(0))
    except CronSimError as e:
        raise CronError(f"'{expr}' is not a valid cron expression: {e}") from e
    canonical = " ".join(expr.split())
    return canonical.lower() if canonical.startswith("@") else canonical


def next_after(expr: str, ts: float) -> float:
    """The first tick strictly after ``ts``."""
    return next(CronSim(_expand(expr), _dt(ts))).timestamp()


def latest_at_or_before(expr: str, ts: float) -> float:
    """The last tick at or before ``ts``."""
    return next(CronSim(_expand(expr), _dt(ts) + timedelta(microseconds=1), reverse=True)).timestamp()


def catch_up(expr: str, due: float, now: float) -> tuple[float, float]:
    """For a schedule due at ``due`` (<= ``now``): the tick to fire, the latest one missed (never a burst
    of every missed one), and the next tick after ``now``."""
    fire = max(due, latest_at_or_before(expr, now))
    return fire, next_after(expr, now)
