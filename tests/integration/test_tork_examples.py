"""Every job file in examples/tork/ submitted unchanged through Tork's POST /jobs to a real `corral up`,
running in real containers, with the result each file's header promises.

The files name `busybox:stable`; there is no registry here, so the test submits each file with the name of
its locally built busybox image in its place (the only thing it changes: it tags nothing, so a real
`busybox:stable` on this machine is left as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, wait_until
from tests.support import due_now

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tork"
IMAGE = "busybox:stable"


def _example(name: str, image: str) -> str:
    text = (EXAMPLES / name).read_text()
    assert IMAGE in text, f"{name} no longer names {IMAGE}: update this test"
    return text.replace(IMAGE, image)


def _submit(c: Cluster, name: str, image: str) -> dict[str, Any]:
    r = c.client.post("/jobs", content=_example(name, image), headers={"Content-Type": "text/yaml"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _finish(c: Cluster, job_id: str, timeout: float = 60) -> dict[str, Any]:
    done: dict[str, Any] = c.wait_for(f"/jobs/{job_id}", {"COMPLETED", "FAILED", "CANCELLED"}, timeout=timeout)
    return done


def _lines(c: Cluster, job_id: str) -> list[str]:
    return c.logs(job_id).splitlines()


def _check_hello(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED" and _lines(c, job["id"]) == ["hello world"]


def _check_env(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED" and _lines(c, job["id"]) == ["hello Corral from env"]


def _check_inputs(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED" and _lines(c, job["id"]) == ["deploying v1.2.3 to staging"]


def _check_retry(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    attempts = [e for e in job["execution"] if e["name"] == "flaky"]
    assert [e["state"] for e in attempts] == ["FAILED", "COMPLETED"]
    assert _lines(c, job["id"]) == ["attempt 1", "attempt 2"]


def _check_timeout(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "FAILED" and "timed out after 1s" in job["error"], job


def _check_parallel(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    lines = _lines(c, job["id"])
    runs = [(e.get("name"), e.get("state"), e.get("id")) for e in job["execution"]]  # says why, when it fails
    assert sorted(lines[:3]) == ["a", "b", "c"] and lines[3:] == ["all done"], (lines, runs)
    kids = [e for e in job["execution"] if e.get("parentId")]
    # Side by side: all three were handed to the node before the first ended (when each container got going
    # after that is the machine's speed, not Corral's: on a loaded machine a start can take over a second).
    placed = sorted(e["scheduledAt"] for e in kids)
    ends = sorted(e["completedAt"] for e in kids)
    assert len(kids) == 3 and placed[-1] < ends[0], "the three ran at the same time"


def _check_each(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    assert sorted(_lines(c, job["id"])) == [f"file {i}" for i in range(1, 6)]


def _check_subjob(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    build = next(e for e in job["execution"] if e["name"] == "build")
    assert build["result"] == "app.tar" and build["subjobId"]
    sub = c.get(f"/jobs/{build['subjobId']}")
    assert sub["state"] == "COMPLETED" and sub["result"] == "app.tar" and sub["parentId"] == build["taskId"]
    assert _lines(c, sub["id"]) == ["building app"]
    assert _lines(c, job["id"]) == ["built: app.tar"]


def _check_pre_post(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED" and _lines(c, job["id"]) == ["fetch", "work", "clean up"], job


def _check_if(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    states = {e["name"]: e["state"] for e in job["execution"]}
    assert states["staging only"] == "SKIPPED" and states["production only"] == "COMPLETED"
    assert _lines(c, job["id"]) == ["production path"]


def _check_outputs(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED" and job["result"] == "42", job
    assert _lines(c, job["id"]) == ["the answer is 42"]


def _check_depends_on(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    lines = _lines(c, job["id"])
    assert lines[0] == "checkout" and sorted(lines[1:3]) == ["lint", "test"] and lines[3] == "package"
    run = {e["name"]: e for e in job["execution"]}
    lint, test = run["lint"], run["test"]
    # Each waits for checkout alone, and package for both. That lint and test also overlap in time is not
    # asserted: every example runs at once on the one local node, so they may wait for room in turn (in a
    # CI run test started 180 ms after lint ended).
    assert run["checkout"]["completedAt"] <= min(lint["startedAt"], test["startedAt"]), "waited for checkout"
    assert max(lint["completedAt"], test["completedAt"]) <= run["package"]["startedAt"], "package waited for both"


def _check_mounts(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    assert _lines(c, job["id"]) == ["scratch ok", "data ok", "hello from a file"]


def _check_secrets(c: Cluster, job: dict[str, Any]) -> None:
    assert job["state"] == "COMPLETED", job
    assert _lines(c, job["id"]) == ["token is [REDACTED]"]
    secret = "hunter2-very-secret"
    for path in (f"/jobs/{job['id']}", "/jobs", f"/v1/jobs/{job['id']}", f"/jobs/{job['id']}/log"):
        assert secret not in c.client.get(path).text, path


CASES: dict[str, Callable[[Cluster, dict[str, Any]], None]] = {
    "hello.yaml": _check_hello, "env.yaml": _check_env, "inputs.yaml": _check_inputs, "retry.yaml": _check_retry,
    "timeout.yaml": _check_timeout, "parallel.yaml": _check_parallel, "each.yaml": _check_each,
    "subjob.yaml": _check_subjob, "pre-post.yaml": _check_pre_post, "if.yaml": _check_if,
    "outputs.yaml": _check_outputs, "depends-on.yaml": _check_depends_on, "mounts.yaml": _check_mounts,
    "secrets.yaml": _check_secrets,
}


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == {*CASES, "cron.yaml"}


@pytest.mark.slow
def test_examples_run_as_their_headers_say(standalone: Cluster, busybox_image: str) -> None:
    # Submit them all first: they run side by side, as a user's jobs would.
    submitted = {name: _submit(standalone, name, busybox_image) for name in CASES}
    for name, job in submitted.items():
        assert job["state"] in ("PENDING", "SCHEDULED", "RUNNING"), (name, job)
    failures = []
    for name, check in CASES.items():
        done = _finish(standalone, submitted[name]["id"])
        try:
            check(standalone, done)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


def test_cron_example_is_scheduled_and_fires(standalone: Cluster, busybox_image: str) -> None:
    r = standalone.client.post("/scheduled-jobs", content=_example("cron.yaml", busybox_image),
                               headers={"Content-Type": "text/yaml"})
    assert r.status_code == 200, r.text
    sched = r.json()
    assert sched["state"] == "ACTIVE" and sched["cron"] == "*/5 * * * *"
    due_now(standalone, sched["id"])  # instead of waiting up to five minutes
    job = wait_until(lambda: next((j for j in standalone.get("/jobs")["items"] if j["name"] == "every five minutes"),
                                  None), timeout=15, what="the tick's job")
    done = _finish(standalone, job["id"])
    assert done["state"] == "COMPLETED" and _lines(standalone, job["id"]) == ["tick"]
