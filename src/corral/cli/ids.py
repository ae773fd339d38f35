"""Short ids: the 12-character prefixes the tables show are accepted wherever a full id is.

``pick`` is the pure rule; the ``*_id`` functions find the candidates. Jobs, the one collection that grows
without bound, are looked up on the server by prefix (``GET /v1/jobs?id_prefix=``, an index range);
schedules, services and pods are read a page at a time and matched here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from corral.cli.api import Client, CliError, Json

FULL_ID = re.compile(r"[0-9a-f]{32}")
MIN_PREFIX = 4
# How many of the ids an ambiguous prefix matches are named in the error.
SHOWN = 5
# Pods and services are matched on the client: at most this many pages of them are read.
MAX_PAGES = 20


def pick(given: str, kind: str, candidates: Sequence[tuple[str, str]], total: int | None = None) -> str:
    """The one id among ``candidates`` ((id, name) pairs) that is ``given`` or starts with it.

    A prefix shorter than ``MIN_PREFIX`` only matches a whole id. ``total`` is how many match in all when
    ``candidates`` holds only the first of them. No match, or several, is a one-line ``CliError`` (exit 1)
    that says so and names the first few matches.
    """
    exact = [i for i, _ in candidates if i == given]
    if exact:
        return exact[0]
    found = [(i, n) for i, n in candidates if len(given) >= MIN_PREFIX and i.startswith(given)]
    if len(found) == 1:
        return found[0][0]
    if not found:
        if len(given) < MIN_PREFIX:
            raise CliError(f"no {kind} with the id '{given}' (a short id has at least {MIN_PREFIX} characters)")
        raise CliError(f"no {kind} with an id that starts with '{given}'")
    n = max(total or 0, len(found))
    named = ", ".join(f"{i[:12]} ({name})" if name else i[:12] for i, name in found[:SHOWN])
    more = f", and {n - SHOWN} more" if n > SHOWN else ""
    raise CliError(f"id prefix {given} matches {n} {kind}s: {named}{more}; give more of it")


def _short(given: str) -> bool:
    """Whether ``given`` may be a short id: lowercase hex, shorter than a full id."""
    return not FULL_ID.fullmatch(given) and re.fullmatch(r"[0-9a-f]{1,31}", given) is not None


def job_id(c: Client, given: str) -> str:
    """The full id of the job ``given`` names: its id, or the start of it (at least 4 characters)."""
    if not _short(given) or len(given) < MIN_PREFIX:
        return given  # for the server to find, or to say what is wrong with it
    page = c.list_jobs(id_prefix=given, limit=SHOWN + 1)
    items: list[Json] = page.get("items") or []
    total = page.get("total")
    return pick(given, "job", [(str(j["id"]), str(j.get("name") or "")) for j in items],
                total if isinstance(total, int) else None)


def _pages(c: Client, path: str) -> Iterator[Json]:
    params: dict[str, str | int] = {"limit": 1000}
    for _ in range(MAX_PAGES):
        page = c.json("GET", path, params=params)
        yield from page.get("items") or []
        cursor = page.get("next_cursor")
        if not cursor:
            return
        params["cursor"] = str(cursor)


def _listed(c: Client, given: str, kind: str, path: str) -> str:
    if len(given) < MIN_PREFIX or FULL_ID.fullmatch(given) or "/" in given:
        return given
    return pick(given, kind, [(str(x["id"]), str(x.get("name") or "")) for x in _pages(c, path)])


def schedule_id(c: Client, given: str) -> str:
    """The full id of the schedule ``given`` names (its id or the start of it)."""
    return _listed(c, given, "schedule", "/v1/schedules")


def service_id(c: Client, given: str) -> str:
    """The full id of the service ``given`` names (its id or the start of it)."""
    return _listed(c, given, "service", "/v1/services")


def pod_id(c: Client, given: str) -> str:
    """The full id of the pod ``given`` names (its id or the start of it)."""
    return _listed(c, given, "pod", "/v1/pods")
