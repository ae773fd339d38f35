"""What happens while a part is away: a task that ends while the coordinator is down, and a coordinator whose
database goes away and comes back (the catch-all 500, /readyz)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import pg
from tests.harness import Cluster, wait_until
from tests.support import process_gone

pytestmark = pytest.mark.slow


def test_a_task_that_ends_while_the_coordinator_is_down_reports_after_the_restart(cluster: Cluster,
                                                                                 tmp_path: Path) -> None:
    cluster.start_server()
    cluster.add_worker("w1", "--runtime", "process")
    pidfile, go = tmp_path / "pid", tmp_path / "go"
    # The task waits for the test's signal, so that it ends exactly while the coordinator is down.
    job = cluster.submit({"tasks": [{"run": f"echo $$ > {pidfile}; echo before; "
                                            f"while [ ! -e {go} ]; do sleep 0.05; done; echo after; exit 3"}]})
    wait_until(lambda: cluster.job(job["id"])["tasks"][0]["state"] == "running" and pidfile.exists()
               and pidfile.read_text().strip(), 20, what="the task to run")
    wait_until(lambda: cluster.logs(job["id"]) == "before\n", 10, what="its first line to reach the coordinator")
    assert cluster.server is not None
    cluster.server.kill9()
    go.touch()
    pid = int(pidfile.read_text())
    wait_until(lambda: process_gone(pid), 10, what="the task to end while the coordinator is down")

    cluster.start_server()  # same port, same database
    done = cluster.wait_job(job["id"], timeout=30)
    assert done["state"] == "failed", done
    task = done["tasks"][0]
    assert task["exit_code"] == 3 and [e["state"] for e in task["executions"]] == ["failed"], task
    assert cluster.logs(job["id"]) == "before\nafter\n"  # the line written while it was down is not lost


@pytest.mark.postgres
def test_the_store_going_away_is_a_500_that_hides_the_cause_and_readyz_says_so(cluster: Cluster) -> None:
    bindir = pg.find_bindir()
    if bindir is None:
        pytest.skip("NO POSTGRESQL: this test stops and starts a PostgreSQL server of its own")
    with pg.TempServer(bindir) as server:  # a server of its own, to stop: the session's is shared
        cluster.start_server(database_url=server.url)
        cluster.add_worker("w1", "--runtime", "process")
        assert wait_until(lambda: cluster.client.get("/readyz").json()["status"] == "ready", 10,
                          what="a leader to be known")

        server.stop()
        r = wait_until(lambda: (x := cluster.client.get("/readyz")).status_code == 503 and x, 10,
                       what="/readyz to notice")
        assert r.json() == {"status": "store unreachable"}
        assert cluster.client.get("/healthz").status_code == 200  # the process itself is up
        r = cluster.client.get("/v1/jobs")
        assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "the server failed on this request; it is logged"
        for leak in ("psycopg", "OperationalError", "connection", str(server.port), "Traceback"):
            assert leak not in r.text, leak
        assert cluster.server is not None
        wait_until(lambda: "unexpected error on GET /v1/jobs" in cluster.server.output(), 5,
                   what="the error in the server's log")

        server.start()
        wait_until(lambda: cluster.client.get("/readyz").status_code == 200, 30, what="/readyz to recover")
        t0 = time.monotonic()
        job = cluster.submit({"tasks": [{"run": "echo back"}]})  # scheduling, reports and logs work again
        assert cluster.wait_job(job["id"], timeout=30)["state"] == "completed"
        assert cluster.logs(job["id"]) == "back\n" and time.monotonic() - t0 < 30
        cluster.close()  # before its database is dropped
