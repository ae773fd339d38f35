"""What every query module of the store shares: rows as dicts, and id lists bound in parts."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from corral.store.sealing import PREFIX as SEALED
from corral.store.sealing import SecretText

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


def command_search(spec: dict[str, Any]) -> str | None:
    """What nomad-lite's ``command`` filter searches in a job: its first task's command as nomad-lite shows
    it (``run``, else the argv list joined as a shell would read it), lower-cased; None for a task without
    one, or whose command holds a secret (sealed in the spec: kept out of this plain column)."""
    run = spec.get("run")
    if run is not None:
        text = str(run)
        if isinstance(run, SecretText) or text.startswith(SEALED):
            return None
    else:
        argv = spec.get("command") or spec.get("entrypoint") or []
        if not isinstance(argv, list) or any(isinstance(a, SecretText) or str(a).startswith(SEALED) for a in argv):
            return None
        text = shlex.join(str(a) for a in argv)
    return text.lower() or None
