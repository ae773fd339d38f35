"""GroupCommit: submissions made while a group is written share the next commit, each is answered only after
its commit, and one that fails fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from corral.coordinator.jobs import GroupCommit

Group = Sequence[tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], int]]


class FakeJobs:
    """Records each commit (the job names in it); holds the first one until released; refuses 'bad'."""

    def __init__(self) -> None:
        self.commits: list[list[str]] = []
        self.committed: set[str] = set()
        self.release = threading.Event()

    def commit_group(self, group: Group) -> list[BaseException | None]:
        if not self.commits:
            self.release.wait(5)
        names = [job["name"] for items, _ in group for job, _ in items]
        self.commits.append(names)
        out: list[BaseException | None] = []
        for items, _ in group:
            bad = any(job["name"] == "bad" for job, _ in items)
            out.append(ValueError("refused") if bad else None)
            if not bad:
                self.committed |= {job["name"] for job, _ in items}
        return out


def items(name: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    return [({"name": name}, [])]


def test_submissions_made_while_a_group_is_written_share_the_next_commit() -> None:
    jobs = FakeJobs()
    group = GroupCommit(jobs)  # type: ignore[arg-type]

    async def main() -> None:
        answered: list[str] = []

        async def submit(name: str) -> None:
            await group.add(items(name), 1)
            assert name in jobs.committed  # never answered before its commit
            answered.append(name)

        first = asyncio.create_task(submit("a"))
        await asyncio.sleep(0.05)  # "a" is being written (held): the next ones queue
        rest = [asyncio.create_task(submit(n)) for n in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        assert answered == []
        jobs.release.set()
        await asyncio.gather(first, *rest)
        assert sorted(answered) == ["a", "b", "c", "d"]

    asyncio.run(main())
    assert jobs.commits == [["a"], ["b", "c", "d"]]


def test_a_submission_that_fails_fails_alone() -> None:
    jobs = FakeJobs()
    jobs.release.set()
    group = GroupCommit(jobs)  # type: ignore[arg-type]

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(*(group.add(items(n), 1) for n in ("x", "bad", "y")), return_exceptions=True)
        return list(results)  # type: ignore[arg-type]

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert jobs.committed == {"x", "y"}


def test_the_group_commit_starts_afresh_on_a_new_event_loop() -> None:
    n = 3
    jobs = FakeJobs()
    jobs.release.set()
    group = GroupCommit(jobs)  # type: ignore[arg-type]
    for i in range(n):
        asyncio.run(group.add(items(f"j{i}"), 1))
    assert jobs.committed == {f"j{i}" for i in range(n)}
