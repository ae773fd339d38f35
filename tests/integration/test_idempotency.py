"""Idempotency-Key on every submit route, against a real `corral server`: a retry with the same key gets the
same job (and only one exists), the same key with another body is a 409, and concurrent duplicates make
one job, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Cluster

Route = tuple[str, Callable[[str], dict[str, Any]], Callable[[httpx.Response], str]]


def _tork_job(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [{"name": "t", "run": "echo hi"}]}


# path, a body for a unique name, and what identifies what was created in the answer
ROUTES: list[Route] = [
    ("/v1/jobs", lambda n: {"name": n, "tasks": [{"run": "echo hi"}]}, lambda r: r.json()["id"]),
    ("/v1/jobs/batch", lambda n: {"jobs": [{"name": n, "tasks": [{"run": "echo a"}]},
                                           {"name": n, "tasks": [{"run": "echo b"}]}]},
     lambda r: ",".join(j["id"] for j in r.json()["items"])),
    ("/v1/schedules", lambda n: {"cron": "0 0 1 1 *", "job": {"name": n, "tasks": [{"run": "echo hi"}]}},
     lambda r: r.json()["id"]),
    ("/jobs", _tork_job, lambda r: r.json()["id"]),
    ("/scheduled-jobs", lambda n: {**_tork_job(n), "cron": "0 0 1 1 *"}, lambda r: r.json()["id"]),
    ("/api/jobs", lambda n: {"command": f"echo {n}"}, lambda r: r.json()["job_id"]),
    ("/api/tasks", lambda n: {"user_id": n, "docker_image": "busybox", "command": "echo hi"},
     lambda r: r.json()["task_id"]),
]


def _count(c: Cluster, path: str, name: str) -> int:
    """How many jobs (or schedules) the submissions named ``name`` made."""
    if "schedule" in path:
        return sum(1 for s in c.get("/v1/schedules")["items"] if s["name"] == name)
    jobs = c.get("/v1/jobs?limit=1000")["items"]
    if path == "/api/jobs":
        return sum(1 for j in jobs if j["name"] == "nomad-lite"
                   and name in str(c.get(f"/api/jobs/{uuid.UUID(hex=j['id'])}")["command"]))
    if path == "/api/tasks":
        return sum(1 for j in jobs if f"user:{name}" in j["tags"])
    return sum(1 for j in jobs if j["name"] == name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server for the module (each test uses names of its own); no worker: what is submitted stays
    pending, which is all these tests need."""
    c = Cluster(tmp_path_factory.mktemp("idempotency"))
    c.start_server()
    yield c
    c.close()


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_a_retry_with_the_same_key_gets_the_same_job(server: Cluster, route: Route) -> None:
    path, body, ident = route
    name = "idem-" + uuid.uuid4().hex[:8]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = server.client.post(path, json=body(name), headers=key)
    assert first.status_code in (200, 201), first.text
    again = server.client.post(path, json=body(name), headers=key)
    assert again.status_code == first.status_code, again.text
    assert ident(again) == ident(first)
    assert again.json().keys() == first.json().keys()
    assert _count(server, path, name) == (2 if path == "/v1/jobs/batch" else 1)
    # The same key with another body is refused, and says why.
    other = server.client.post(path, json=body(name + "x"), headers=key)
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.text and "different request" in other.text
    # Without a key, or with another one, a new job is made.
    assert ident(server.client.post(path, json=body(name), headers={"Idempotency-Key": "k-" + name})) != ident(first)


def test_a_key_is_scoped_to_its_route_and_must_be_well_formed(server: Cluster) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    native = server.client.post("/v1/jobs", json={"name": "n", "tasks": [{"run": "true"}]}, headers=key)
    tork = server.client.post("/jobs", json={"name": "n", "tasks": [{"name": "t", "run": "true"}]}, headers=key)
    assert native.status_code == 201 and tork.status_code == 200
    assert native.json()["id"] != tork.json()["id"]
    bad = server.client.post("/v1/jobs", json={"tasks": [{"run": "true"}]}, headers={"Idempotency-Key": "x" * 300})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.text
    bad = server.client.post("/api/jobs", json={"command": "true"}, headers={"Idempotency-Key": ""})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]


def test_concurrent_duplicates_make_one_job(database_url: str, cluster: Cluster) -> None:
    cluster.start_server(database_url=database_url)
    name = "race-" + uuid.uuid4().hex[:8]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def go() -> None:  # the harness's client: its connection pool is shared safely by threads
        barrier.wait()
        answers.append(cluster.client.post("/v1/jobs", json={"name": name, "tasks": [{"run": "true"}]},
                                           headers=key))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 8
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert _count(cluster, "/v1/jobs", name) == 1
