"""Scheduled jobs: exactly one job per tick with two coordinators on one database (SQLite and
PostgreSQL), pause, resume and delete; and end to end over HTTP against `corral up`."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from corral.coordinator.errors import Conflict, Invalid, NotFound, Overloaded
from corral.coordinator.schedules import Schedules
from corral.coordinator.service import Coordinator, Settings
from corral.domain.spec import JobSpec
from corral.store.sql import Store
from tests.harness import Cluster, wait_until
from tests.support import cron_pass_evidence, due_now, jobs_named

SPEC = JobSpec.model_validate({"name": "nightly", "tasks": [{"name": "t", "run": "echo tick"}]})


def _set_due(store: Store, schedule_id: str, due: float) -> None:
    import sqlalchemy as sa

    from corral.store import schema as s
    with store.transaction() as tx:
        tx.c.execute(sa.update(s.schedules).where(s.schedules.c.id == schedule_id).values(next_run_at=due))


def _job_count(store: Store) -> int:
    with store.read() as tx:
        return tx.list_jobs(limit=1000)[1]


def _race(s: Schedules, barrier: threading.Barrier, fired: list[list[str]]) -> None:
    barrier.wait()
    fired.append(s.fire_due())


@pytest.fixture
def two(database_url: str) -> Any:
    a, b = Store(database_url), Store(database_url)
    yield Schedules(Coordinator(a)), Schedules(Coordinator(b))
    a.close()
    b.close()


def test_each_tick_fires_exactly_once_across_two_coordinators(two: tuple[Schedules, Schedules]) -> None:
    one, other = two
    # Once a year: a real tick never comes due while the test runs (every minute, a minute's boundary passed
    # between the race and the last check fired the next minute, rightly)
    sch = one.create("0 0 1 1 *", SPEC)
    for tick in range(6):
        due = time.time() - 30 - tick
        _set_due(one.store, sch["id"], due)
        fired: list[list[str]] = []
        barrier = threading.Barrier(2)

        threads = [threading.Thread(target=_race, args=(s, barrier, fired)) for s in (one, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        ids = [j for f in fired for j in f]
        assert len(ids) == 1, fired
        row = one.get(sch["id"])
        assert row["last_job_id"] == ids[0]
        assert row["last_run_at"] >= due
        assert row["next_run_at"] > time.time() - 1
        assert _job_count(one.store) == tick + 1
        # The tick is claimed: nothing more fires for it.
        assert one.fire_due() == [] and other.fire_due() == []
    job = one.coord.job_row(one.get(sch["id"])["last_job_id"])
    assert job["name"] == "nightly" and job["state"] == "pending"


def test_pause_resume_delete(two: tuple[Schedules, Schedules]) -> None:
    one, other = two
    sch = one.create("*/5 * * * *", SPEC, name="every five")
    assert sch["name"] == "every five" and sch["state"] == "active"
    assert one.pause(sch["id"])["state"] == "paused"
    with pytest.raises(Conflict):
        other.pause(sch["id"])
    _set_due(one.store, sch["id"], time.time() - 60)
    assert one.fire_due() == [] and other.fire_due() == []  # paused: nothing fires
    resumed = other.resume(sch["id"])
    assert resumed["state"] == "active" and resumed["next_run_at"] > time.time()  # counted from now
    with pytest.raises(Conflict):
        one.resume(sch["id"])
    _set_due(one.store, sch["id"], time.time() - 1)
    assert len(one.fire_due()) == 1
    assert [r["id"] for r in other.all()] == [sch["id"]]
    one.delete(sch["id"])
    with pytest.raises(NotFound):
        other.get(sch["id"])
    with pytest.raises(NotFound):
        other.delete(sch["id"])
    with pytest.raises(NotFound):
        other.pause(sch["id"])
    assert _job_count(one.store) == 1  # the job it created stays


def test_a_schedule_passes_the_size_cap_and_back_pressure_when_created_and_when_it_fires(database_url: str) -> None:
    store = Store(database_url)
    try:
        coord = Coordinator(store, Settings(max_tasks_per_job=3, max_pending_tasks=4))
        s = Schedules(coord)
        with pytest.raises(Invalid, match="at most 3"):
            s.create("* * * * *", JobSpec.model_validate({"tasks": [{"run": "true"}] * 4}))
        two = JobSpec.model_validate({"name": "two", "tasks": [{"run": "true"}] * 2})
        coord.pending_tasks = 3
        with pytest.raises(Overloaded):
            s.create("* * * * *", two)
        coord.pending_tasks = 0
        sch = s.create("* * * * *", two)

        def fire() -> dict[str, Any]:
            _set_due(store, sch["id"], time.time() - 1)
            [job_id] = s.fire_due()
            return coord.get_job(job_id)[0]

        coord.settings.max_tasks_per_job = 1  # the limit lowered since it was created: its tick's job fails
        job = fire()
        assert job["state"] == "failed" and "at most 1" in job["error"], job
        coord.settings.max_tasks_per_job, coord.pending_tasks = 3, 3  # the queue full: the same
        job = fire()
        assert job["state"] == "failed" and "overloaded" in job["error"], job
        assert coord.pending_tasks == 3
        coord.pending_tasks = 0
        assert fire()["state"] == "pending" and coord.pending_tasks == 2
    finally:
        store.close()


# -- end to end ----------------------------------------------------------------------------------
JOB = {"name": "cron-e2e", "tasks": [{"name": "t", "run": "echo scheduled"}]}


def test_schedule_over_http(standalone: Cluster) -> None:
    c = standalone.client
    r = c.post("/v1/schedules", json={"cron": "0 0 1 1 *", "job": JOB})
    assert r.status_code == 201, r.text
    sch = r.json()
    assert r.headers["location"] == f"/v1/schedules/{sch['id']}"
    assert sch["state"] == "active" and sch["name"] == "cron-e2e" and sch["last_job_id"] is None
    assert sch["next_run_at"].endswith("Z") and sch["job"]["tasks"][0]["run"] == "echo scheduled"
    assert c.get("/v1/jobs").json()["total"] == 0

    due_now(standalone, sch["id"])
    wait_until(lambda: jobs_named(standalone, "cron-e2e"), 5, what="the scheduled job")
    cron_pass_evidence(standalone)  # another full pass of the cron loop: still one job for the tick
    jobs = jobs_named(standalone, "cron-e2e")
    assert len(jobs) == 1
    done = standalone.wait_job(jobs[0]["id"])
    assert done["state"] == "completed"
    assert standalone.logs(jobs[0]["id"]) == "scheduled\n"
    got = c.get(f"/v1/schedules/{sch['id']}").json()
    assert got["last_job_id"] == jobs[0]["id"] and got["last_run_at"] is not None
    assert got["next_run_at"] == sch["next_run_at"]  # back to the next real tick, in the future

    assert c.post(f"/v1/schedules/{sch['id']}/pause").json()["state"] == "paused"
    r = c.post(f"/v1/schedules/{sch['id']}/pause")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    due_now(standalone, sch["id"])
    cron_pass_evidence(standalone)  # a pass that saw it due
    assert len(jobs_named(standalone, "cron-e2e")) == 1  # paused: nothing fires
    assert c.post(f"/v1/schedules/{sch['id']}/resume").json()["state"] == "active"
    assert [s["id"] for s in c.get("/v1/schedules").json()["items"]] == [sch["id"]]
    assert c.delete(f"/v1/schedules/{sch['id']}").status_code == 204
    assert c.get(f"/v1/schedules/{sch['id']}").status_code == 404
    assert c.post(f"/v1/schedules/{sch['id']}/resume").status_code == 404
    assert c.delete(f"/v1/schedules/{sch['id']}").status_code == 404


def test_job_with_a_schedule_and_bad_input(standalone: Cluster) -> None:
    c = standalone.client
    yaml_body = "name: from-jobs\nschedule:\n  cron: '@hourly'\ntasks:\n  - name: t\n    run: echo hi\n"
    r = c.post("/v1/jobs", content=yaml_body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    sch = r.json()
    assert r.headers["location"] == f"/v1/schedules/{sch['id']}"
    assert sch["cron"] == "@hourly" and sch["name"] == "from-jobs" and "schedule" not in sch["job"]
    assert c.get("/v1/jobs").json()["total"] == 0  # a schedule, not a job

    r = c.post("/v1/jobs", json={**JOB, "schedule": {"cron": "every minute"}})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "schedule.cron"
    r = c.post("/v1/schedules", json={"cron": "61 * * * *", "job": JOB})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "cron"
    r = c.post("/v1/schedules", json={"cron": "* * * * *", "job": {"tasks": []}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"].startswith("job.")
    r = c.post("/v1/schedules", json={"cron": "* * * * *", "job": JOB, "every": 5})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "every"
    assert len(c.get("/v1/schedules").json()["items"]) == 1
