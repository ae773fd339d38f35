"""`corral schedules ...` as real subprocesses against a real `corral up`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_until
from tests.support import ID_RE, corral, due_now

pytestmark = pytest.mark.timeout(90)


@pytest.mark.slow
def test_create_ls_fire_pause_resume_rm(standalone: Cluster, tmp_path: Path) -> None:
    url = standalone.url
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: tick\ntasks:\n  - name: say\n    run: echo from the schedule\n")
    r = corral("schedules", "create", "--cron", "0 0 29 2 *", str(job_file), server=url)
    assert r.returncode == 0, r.stderr
    sch_id = r.stdout.strip()
    assert ID_RE.match(sch_id) and "next run" in r.stderr and "0 0 29 2 *" in r.stderr

    ls = corral("schedules", "ls", server=url)
    assert ls.returncode == 0, ls.stderr
    row = next(line for line in ls.stdout.splitlines() if line.startswith(sch_id[:12]))
    assert "tick" in row and "0 0 29 2 *" in row and "active" in row
    raw = json.loads(corral("schedules", "ls", "-o", "json", server=url).stdout)
    assert [s["id"] for s in raw["items"]] == [sch_id] and raw["items"][0]["job"]["tasks"][0]["name"] == "say"

    due_now(standalone, sch_id)
    jobs = wait_until(lambda: standalone.client.get("/v1/jobs").json()["items"], 5, what="the fired job")
    assert standalone.wait_job(jobs[0]["id"])["state"] == "completed"
    got = corral("schedules", "get", sch_id, server=url)
    assert got.returncode == 0 and jobs[0]["id"] in got.stdout and "say" in got.stdout
    assert json.loads(corral("schedules", "get", sch_id, "-o", "json", server=url).stdout)["last_job_id"] == \
        jobs[0]["id"]

    pause = corral("schedules", "pause", sch_id, server=url)
    assert pause.returncode == 0 and pause.stdout.strip() == f"{sch_id} paused", pause.stderr
    again = corral("schedules", "pause", sch_id, server=url)
    assert again.returncode == 1 and "is paused, not active" in again.stderr
    assert "paused" in corral("schedules", "ls", server=url).stdout
    resume = corral("schedules", "resume", sch_id, "-o", "json", server=url)
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout)["state"] == "active"
    plain = corral("schedules", "resume", sch_id, server=url)
    assert plain.returncode == 1 and "is active, not paused" in plain.stderr

    rm = corral("schedules", "rm", sch_id, server=url)
    assert rm.returncode == 0 and rm.stdout.strip() == f"{sch_id} deleted"
    gone = corral("schedules", "rm", sch_id, server=url)
    assert gone.returncode == 1 and f"no schedule with id '{sch_id}'" in gone.stderr
    empty = corral("schedules", "ls", server=url)
    assert empty.returncode == 0 and empty.stdout == "" and "no schedules" in empty.stderr
    assert standalone.client.get("/v1/jobs").json()["total"] == 1  # the job it created stays


def test_create_from_stdin_json_inline_cron_and_bad_input(standalone: Cluster, tmp_path: Path) -> None:
    url = standalone.url
    job = json.dumps({"name": "from-stdin", "tasks": [{"run": "true"}]})
    r = corral("schedules", "create", "-c", "@daily", "--name", "daily one", "-o", "json", "-", stdin=job,
               server=url)
    assert r.returncode == 0, r.stderr
    sch = json.loads(r.stdout)
    assert sch["name"] == "daily one" and sch["cron"] == "@daily" and sch["state"] == "active"

    inline = tmp_path / "inline.yaml"
    inline.write_text("name: inline\nschedule: {cron: '@hourly'}\ntasks:\n  - run: 'true'\n")
    r = corral("schedules", "create", str(inline), server=url)
    assert r.returncode == 0, r.stderr
    assert standalone.get(f"/v1/schedules/{r.stdout.strip()}")["cron"] == "@hourly"

    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\ntasks:\n  - run: 'true'\n")
    r = corral("schedules", "create", str(plain), server=url)
    assert r.returncode == 2 and "no cron expression" in r.stderr
    r = corral("schedules", "create", "--cron", "61 * * * *", str(plain), server=url)
    assert r.returncode == 2 and "'61 * * * *' is not a cron expression" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - run: echo hi\n    colour: red\n")
    r = corral("schedules", "create", "--cron", "@daily", str(bad), server=url)
    assert r.returncode == 2 and "not a valid job" in r.stderr and "tasks.0.colour: unknown field" in r.stderr
    r = corral("schedules", "pause", "0" * 32, server=url)
    assert r.returncode == 1 and "no schedule with id" in r.stderr
    assert len(standalone.get("/v1/schedules")["items"]) == 2
