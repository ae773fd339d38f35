"""What every query module of the store shares: rows as dicts, and id lists bound in parts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

Row = dict[str, Any]
# Ids bound in one IN (...): a list of any length is sent in parts of this many (SQLite refuses statements
# with more than 32,766 variables, and long lists plan badly on both engines).
CHUNK = 500


def chunks(ids: Iterable[Any], n: int = CHUNK) -> Iterator[list[Any]]:
    items = list(ids)
    for i in range(0, len(items), n):
        yield items[i:i + n]


def rows(result: sa.CursorResult[Any]) -> list[Row]:
    keys = list(result.keys())
    return [dict(zip(keys, r, strict=True)) for r in result]
