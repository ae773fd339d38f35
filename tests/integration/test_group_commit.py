"""Group commit keeps "a 2xx means it is stored": the server killed with SIGKILL in the middle of a burst of
concurrent one-job submissions has, after a restart, every job it answered 201 for."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.slow  # two server starts (the burst itself takes about a second)

CLIENTS = 16
JOB = {"name": "burst", "queue": "nobody-serves-this", "tasks": [{"name": "t", "run": "echo hi"}]}


def test_every_job_answered_201_is_there_after_a_kill_9_during_a_burst(cluster: Cluster) -> None:
    cluster.start_server()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def client() -> None:
        while not stop.is_set():
            try:
                r = cluster.client.post("/v1/jobs", json=JOB, timeout=10)
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code != 201:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            with lock:
                acked.append(r.json()["id"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(client)
        # The kill comes while all the clients are sending: after the burst has had 200 answers.
        wait_until(lambda: len(acked) >= 200 or errors, 30, what="200 submissions to be answered")
        assert cluster.server is not None
        cluster.server.kill9()
        stop.set()
    assert not errors, errors[:3]
    answered = list(acked)

    cluster.start_server()  # same port, same database
    stored: set[str] = set()
    cursor: str | None = ""
    while cursor is not None:
        page = cluster.get(f"/v1/jobs?queue={JOB['queue']}&limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        stored |= {j["id"] for j in page["items"]}
        cursor = page["next_cursor"]
    missing = [j for j in answered if j not in stored]
    assert not missing, f"{len(missing)} of {len(answered)} jobs answered 201 are gone after the restart"
    assert cluster.job(answered[-1])["state"] == "pending"
