"""ListJobs' filters are bounded in nomad-lite's core, so that its gRPC API (which has no query parameters for
FastAPI to check) refuses what its REST API refuses: a 400 (INVALID_ARGUMENT) naming the filter."""

from __future__ import annotations

from typing import Any

import pytest

from corral.api.dialects.base import DialectError
from corral.api.dialects.nomadlite_core import MAX_COMMAND_BYTES, MAX_MS, JobFilter, find_jobs


class _Tx:
    """The store's two calls ListJobs makes: no nodes, no jobs; the filters it was asked for."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return []

    def find_jobs(self, **kw: Any) -> tuple[list[dict[str, Any]], int]:
        self.asked.append(kw)
        return [], 0


@pytest.mark.parametrize(("f", "name"), [
    (JobFilter(command="x" * (MAX_COMMAND_BYTES + 1)), "command"),
    (JobFilter(status="x" * 65), "status"),
    (JobFilter(worker="x" * 201), "worker_id"),
    (JobFilter(page_token="x" * 201), "page_token"),
    (JobFilter(created_after_ms=MAX_MS + 1), "created_after_ms"),
    (JobFilter(created_before_ms=10**400), "created_before_ms"),  # as a float, an OverflowError (a 500)
])
def test_over_long_or_too_large_filters_are_refused_naming_them(f: JobFilter, name: str) -> None:
    tx = _Tx()
    with pytest.raises(DialectError) as e:
        find_jobs(tx, f)  # type: ignore[arg-type]
    assert e.value.status == 400 and e.value.message.startswith(name), e.value.message
    assert tx.asked == []  # refused before the store is asked


def test_filters_at_their_bounds_are_searched() -> None:
    tx = _Tx()
    find_jobs(tx, JobFilter(command="x" * MAX_COMMAND_BYTES, created_before_ms=MAX_MS))  # type: ignore[arg-type]
    assert tx.asked[0]["command"] == "x" * MAX_COMMAND_BYTES


@pytest.mark.parametrize("worker", ["²", "٣", "9" * 200])  # digits to str.isdigit, not all of them to int()
def test_a_worker_that_is_no_number_is_looked_up_by_name(worker: str) -> None:
    tx = _Tx()
    find_jobs(tx, JobFilter(worker=worker))  # type: ignore[arg-type]
    assert tx.asked and tx.asked[0]["node_prefix"] is not None
