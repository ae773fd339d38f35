"""Trust between the coordinator and its workers, against real processes: a node proves its identity
with its secret, only the node that runs an execution may report on it, agent input is checked at the
edge, a node directory belongs to one process, and a worker stops (and hands its work back) when told.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from corral.coordinator.errors import Forbidden, NotFound
from corral.coordinator.service import Coordinator, NodeInfo, Settings
from corral.domain.spec import JobSpec
from corral.store.sql import Store, Tx
from tests.harness import Cluster, Proc, free_port, wait_until

NODE_SECRET = "X-Corral-Node-Secret"
REG = {"name": "intruder", "hostname": "intruder", "version": "t", "cpu": 1.0, "memory": 2**30,
       "runtimes": ["process"], "queues": ["nothing-here"]}


def _node(cluster: Cluster, name: str) -> dict[str, Any]:
    return next(n for n in cluster.nodes() if n["name"] == name)


def _running_execution(cluster: Cluster, job_id: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        t = cluster.job(job_id)["tasks"][0]
        return t["executions"][-1] if t["state"] == "running" and t["executions"] else None
    return dict(wait_until(running, 20, what="the task to run"))


def _register(cluster: Cluster, **extra: Any) -> tuple[str, str]:
    """A node of the attacker's own, registered legitimately: its id and its secret."""
    r = cluster.client.post("/v1/agent/register", json={**REG, **extra})
    assert r.status_code == 200, r.text
    return r.json()["node_id"], r.json()["node_secret"]


def _metric(cluster: Cluster, name: str) -> float:
    for line in cluster.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _worker(cluster: Cluster, name: str, *extra: str, env: dict[str, str] | None = None,
            data_dir: Path | None = None) -> Proc:
    w = Proc(["worker", "--server", cluster.url, "--name", name, "--data-dir",
              str(data_dir or cluster.tmp / f"w-{name}"), "--log-level", "info", *extra],
             cluster.tmp / f"worker-{name}.log", env or {}).start()
    cluster.workers.append(w)
    return w


def test_an_existing_node_id_without_its_secret_is_refused_and_the_node_keeps_its_work(
        cluster: Cluster) -> None:
    cluster.start_server()
    cluster.add_worker("w1", "--runtime", "process")
    job = cluster.submit({"tasks": [{"run": "sleep 1.5; echo done by w1"}]})
    ex = _running_execution(cluster, job["id"])
    victim = _node(cluster, "w1")["id"]
    # Registering as w1 (to take over its work and receive its tasks): without, or with a wrong, secret.
    for headers in ({}, {NODE_SECRET: "guess"}):
        r = cluster.client.post("/v1/agent/register", json={**REG, "id": victim}, headers=headers)
        assert r.status_code == 403, r.text
        assert "secret" in r.json()["detail"]
        for call, body in (("heartbeat", {}), ("poll", {"wait": 0}), ("drain", {}), ("leave", {}),
                           ("report", {"updates": [{"execution_id": ex["id"], "state": "completed",
                                                    "ts": time.time(), "exit_code": 0}]})):
            r = cluster.client.post(f"/v1/agent/nodes/{victim}/{call}", json=body, headers=headers)
            assert r.status_code == 403, (call, r.text)
    # The real node is untouched: still ready, still running the task, which it finishes.
    assert _node(cluster, "w1")["state"] == "ready"
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed"
    assert [e["id"] for e in done["tasks"][0]["executions"]] == [ex["id"]]
    assert cluster.logs(job["id"]).strip() == "done by w1"
    # The secret is in the worker's data dir, readable by its owner only; the store has only its hash.
    secret_file = cluster.tmp / "w-w1" / "node-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(cluster.tmp / "server.db", timeout=30)
    [(stored,)] = db.execute("SELECT secret_hash FROM nodes WHERE id = ?", (victim,)).fetchall()
    db.close()
    assert stored and secret_file.read_text().strip() not in stored


def test_forged_reports_and_log_lines_change_nothing(cluster: Cluster, database_url: str) -> None:
    cluster.start_server(database_url=database_url)
    cluster.add_worker("w1", "--runtime", "process")
    job = cluster.submit({"tasks": [{"run": "sleep 1.5; echo real line"}]})
    ex = _running_execution(cluster, job["id"])
    node, secret = _register(cluster)
    forged = {"updates": [{"execution_id": ex["id"], "state": "completed", "ts": time.time(), "exit_code": 0}],
              "logs": [{"execution_id": ex["id"], "stream": "stdout", "line": "forged line", "ts": time.time()}]}
    # From a node of its own, with its own valid secret: refused (another node's execution), nothing changes.
    r = cluster.client.post(f"/v1/agent/nodes/{node}/report", json=forged, headers={NODE_SECRET: secret})
    assert r.status_code == 403 and "not assigned" in r.json()["detail"], r.text
    # Under a made-up node id: that node does not exist.
    r = cluster.client.post(f"/v1/agent/nodes/{'f' * 32}/report", json=forged, headers={NODE_SECRET: "x"})
    assert r.status_code == 404, r.text
    now = cluster.job(job["id"])
    assert now["state"] == "running" and now["tasks"][0]["executions"][0]["state"] == "running"
    assert "forged" not in cluster.logs(job["id"])
    assert _metric(cluster, "corral_agent_reports_ignored_total") >= 2  # the update and the line
    done = cluster.wait_job(job["id"])  # ...and it completes from the real worker
    assert done["state"] == "completed"
    assert cluster.logs(job["id"]).strip() == "real line"
    # Lines for a finished execution are not appended either, even from the node that ran it.
    w1_dir = cluster.tmp / "w-w1"
    w1 = (w1_dir / "node-id").read_text().strip()
    late = {"logs": [{"execution_id": ex["id"], "stream": "stdout", "line": "late line", "ts": time.time()}]}
    r = cluster.client.post(f"/v1/agent/nodes/{w1}/report", json=late,
                            headers={NODE_SECRET: (w1_dir / "node-secret").read_text().strip()})
    assert r.status_code == 200 and r.json() == {"log_full": []}, r.text  # accepted, and nothing appended
    assert cluster.logs(job["id"]).strip() == "real line"


def test_agent_input_is_strict_and_node_views_keep_answering(cluster: Cluster) -> None:
    cluster.start_server()
    node, secret = _register(cluster)
    auth = {NODE_SECRET: secret}
    refused: list[tuple[str, str, dict[str, str]]] = [
        ("/v1/agent/register", json.dumps({**REG, "cpu": "4"}), {}),
        ("/v1/agent/register", json.dumps({**REG, "gpus": [{"name": "no index"}]}), {}),
        ("/v1/agent/register", json.dumps({**REG, "gpus": [{"index": "0"}]}), {}),
        # A lone surrogate in a label value and in a key (json.dumps writes it escaped, as an attacker would).
        ("/v1/agent/register", json.dumps({**REG, "labels": {"zone": "\ud800"}}), {}),
        ("/v1/agent/register", json.dumps({**REG, "labels": {"\ud800": "a"}}), {}),
        ("/v1/agent/register", json.dumps({**REG, "labels": {f"k{i}": "v" for i in range(65)}}), {}),
        ("/v1/agent/register", json.dumps({**REG, "version": "v" * 51}), {}),
        ("/v1/agent/register", json.dumps({**REG, "memory": 10**30}), {}),
        (f"/v1/agent/nodes/{node}/heartbeat", json.dumps({"usage": {"cpu_percent": "abc"}}), auth),
        (f"/v1/agent/nodes/{node}/heartbeat", json.dumps({"usage": {"cpu_percent": 250.0}}), auth),  # 1 core
        (f"/v1/agent/nodes/{node}/heartbeat", '{"usage": {"cpu_percent": NaN}}', auth),
        (f"/v1/agent/nodes/{node}/heartbeat", json.dumps({"running": ["x" * 10]}), auth),
        (f"/v1/agent/nodes/{node}/report",
         json.dumps({"updates": [{"execution_id": "a" * 32, "state": "completed", "ts": False}]}), auth),
        (f"/v1/agent/nodes/{node}/report",
         json.dumps({"logs": [{"execution_id": "a" * 32, "stream": "stdout", "line": "\ud800", "ts": 1.0}]}), auth),
    ]
    for path, body, headers in refused:
        r = cluster.client.post(path, content=body, headers={"content-type": "application/json", **headers})
        assert r.status_code in (400, 422), (path, body[:80], r.status_code, r.text)
        assert r.json()["detail"], r.text
    ok = cluster.client.post(f"/v1/agent/nodes/{node}/heartbeat", headers=auth,
                             json={"usage": {"cpu_percent": 12.5, "memory_percent": 40.0, "extra": "ignored"}})
    assert ok.status_code == 200, ok.text
    r = cluster.client.get("/v1/nodes")
    assert r.status_code == 200, r.text
    [mine] = [n for n in r.json()["items"] if n["id"] == node]
    assert mine["usage"] == {"cpu_percent": 12.5, "memory_percent": 40.0}
    r = cluster.client.get("/nodes")  # Tork
    assert r.status_code == 200, r.text
    assert [n["cpuPercent"] for n in r.json() if n["id"] == node] == [12.5]


def test_a_malformed_node_row_is_skipped_by_scheduling_and_shown_by_views(cluster: Cluster) -> None:
    """Rows written before the checks at the edge (or by a bug): a GPU without an index, a usage that is
    not a number, a lone surrogate in a label. Scheduling goes on without that node; the views answer."""
    cluster.start_server()
    cluster.add_worker("w1", "--runtime", "process", "--cpus", "1")
    db = sqlite3.connect(cluster.tmp / "server.db", timeout=30)
    now = time.time() + 3600  # not reaped during the test
    with db:
        db.execute("INSERT INTO nodes (id, name, hostname, version, state, cpu, memory, disk, gpus, labels, "
                   "runtimes, queues, usage, registered_at, last_heartbeat) VALUES "
                   "(?, 'bad', 'bad', 't', 'ready', 64, 1099511627776, 0, ?, ?, ?, ?, ?, ?, ?)",
                   ("b" * 32, json.dumps([{"name": "gpu without index"}]), json.dumps({"zone": "\ud800"}),
                    json.dumps(["process"]), json.dumps(["default"]), json.dumps({"cpu_percent": "abc"}),
                    now, now))
    db.close()
    for path in ("/v1/nodes", f"/v1/nodes/{'b' * 32}", "/nodes", "/api/workers", "/api/cluster", "/metrics"):
        r = cluster.client.get(path)
        assert r.status_code == 200, (path, r.text)
    # The bad node is the emptiest (64 cores): a pass that read it as it is would pick it, or fail.
    job = cluster.submit({"tasks": [{"run": "echo placed"}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed" and done["tasks"][0]["node_id"] == _node(cluster, "w1")["id"]
    assert _metric(cluster, "corral_schedule_rows_skipped_total") >= 1
    assert cluster.server is not None and f"skipped node {'b' * 32}" in cluster.server.output()


def test_a_second_process_on_a_node_directory_exits_at_once(cluster: Cluster) -> None:
    cluster.up("--runtime", "process")
    job = cluster.submit({"tasks": [{"run": "sleep 1; echo still mine"}]})
    _running_execution(cluster, job["id"])
    # `corral worker` started where `corral up` keeps its local worker.
    intruder = _worker(cluster, "intruder", "--runtime", "process", data_dir=cluster.tmp / "data" / "worker")
    assert intruder.popen is not None
    code = intruder.popen.wait(15)
    assert code != 0
    assert "in use by another Corral process" in intruder.output()
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed" and cluster.logs(job["id"]).strip() == "still mine"
    assert [n["name"] for n in cluster.nodes()] == ["local"]


def test_a_worker_with_a_wrong_or_no_token_exits_at_once(cluster: Cluster) -> None:
    cluster.start_server("--token", "right")
    for extra in (("--token", "wrong"), ()):
        w = _worker(cluster, "w" + str(len(extra)), "--runtime", "process", *extra)
        assert w.popen is not None
        t0 = time.monotonic()
        code = w.popen.wait(15)
        assert code != 0 and time.monotonic() - t0 < 10
        assert "the coordinator refused the token" in w.output()
    assert cluster.nodes() == []


def test_agent_callers_are_checked_before_their_body_is_read(cluster: Cluster) -> None:
    """Without the cluster token (or a node's secret), a body is refused unread: a malformed one gets the
    401 or 403, not the 400 that parsing it would give."""
    cluster.start_server("--token", "right")
    r = cluster.client.post("/v1/agent/register", json=REG, headers={"Authorization": "Bearer right"})
    assert r.status_code == 200, r.text
    node = r.json()["node_id"]
    malformed = b'{"updates": [' + b"x" * 100_000  # not JSON: a parse would answer 400
    ctype = {"content-type": "application/json"}
    for path in ("/v1/agent/register", *(f"/v1/agent/nodes/{node}/{op}" for op in ("heartbeat", "poll", "report",
                                                                                     "drain"))):
        for token in (None, "wrong"):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            r = cluster.client.post(path, content=malformed, headers={**ctype, **auth})
            assert r.status_code == 401, (path, token, r.status_code, r.text)
        if path != "/v1/agent/register":  # the token, but not the node's secret
            for secret in ({}, {NODE_SECRET: "guess"}):
                r = cluster.client.post(path, content=malformed,
                                        headers={**ctype, "Authorization": "Bearer right", **secret})
                assert r.status_code == 403, (path, secret, r.status_code, r.text)


def test_a_worker_with_the_token_runs_jobs_in_a_clean_environment(cluster: Cluster) -> None:
    """`corral worker --token` (from CORRAL_TOKEN here) registers and runs a job; a host task sees the
    variables it asked for, Corral's own, PATH, HOME and LANG, and nothing of the worker's environment."""
    cluster.start_server("--token", "tok-123")
    _worker(cluster, "w1", "--runtime", "process",
            env={"CORRAL_TOKEN": "tok-123", "CORRAL_DATABASE_URL": "postgresql://u:pw@db/x",
                 "WORKER_ONLY_SECRET": "leak-me"})
    wait_until(lambda: cluster.nodes(), 20, what="the worker to register")
    job = cluster.submit({"env": {"ASKED": "yes"},
                          "tasks": [{"run": "env; echo out-$ASKED > $TORK_OUTPUT", "workdir": str(cluster.tmp)}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert done["tasks"][0]["output"].strip() == "out-yes"
    env = dict(line.split("=", 1) for line in cluster.logs(job["id"]).splitlines() if "=" in line)
    assert env["ASKED"] == "yes" and env["HOME"] == str(cluster.tmp) and env["LANG"] == "C.UTF-8"
    assert "/usr/bin" in env["PATH"].split(":")
    leaked = {k for k in env if k in {"CORRAL_TOKEN", "CORRAL_DATABASE_URL", "CORRAL_SERVER", "WORKER_ONLY_SECRET",
                                      "VIRTUAL_ENV", "PYTHONPATH"}}
    assert not leaked and "tok-123" not in cluster.logs(job["id"])
    corral_vars = {k for k in env if k.startswith("CORRAL_")}
    assert corral_vars <= {"CORRAL_JOB_ID", "CORRAL_TASK_ID", "CORRAL_TASK_NAME", "CORRAL_EXECUTION_ID",
                           "CORRAL_ATTEMPT", "CORRAL_OUTPUT", "CORRAL_PROGRESS"}, corral_vars


def test_a_worker_that_cannot_reach_the_coordinator_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    w = Proc(["worker", "--server", f"http://127.0.0.1:{port}", "--data-dir", str(tmp_path / "w"),
              "--runtime", "process"], tmp_path / "worker.log").start()
    try:
        wait_until(lambda: "cannot register" in w.output(), 20, what="a failed registration")
        assert w.popen is not None
        t0 = time.monotonic()
        os.killpg(w.popen.pid, signal.SIGTERM)
        w.popen.wait(10)
        assert time.monotonic() - t0 < 3, w.output()
    finally:
        w.stop()


def test_sigterm_lets_a_short_task_finish_and_the_node_is_down_at_once(cluster: Cluster) -> None:
    cluster.start_server()  # node TTL 15 s: "at once" is well before that
    w1 = _worker(cluster, "w1", "--runtime", "process", "--grace", "20s")
    wait_until(lambda: cluster.nodes(), 20, what="the worker to register")
    job = cluster.submit({"tasks": [{"run": "sleep 1.5; echo finished"}]})
    _running_execution(cluster, job["id"])
    assert w1.popen is not None
    t0 = time.monotonic()
    os.killpg(w1.popen.pid, signal.SIGTERM)
    wait_until(lambda: _node(cluster, "w1")["state"] == "draining", 2, what="the node to drain")
    # No new work goes to a draining node.
    waiting = cluster.submit({"tasks": [{"run": "echo later"}]})
    assert w1.popen.wait(10) == 0, w1.output()
    assert _node(cluster, "w1")["state"] == "down"
    assert time.monotonic() - t0 < 8
    done = cluster.job(job["id"])
    assert done["state"] == "completed" and cluster.logs(job["id"]).strip() == "finished"
    assert [e["state"] for e in done["tasks"][0]["executions"]] == ["completed"]
    assert cluster.job(waiting["id"])["tasks"][0]["executions"] == []


def test_sigterm_hands_a_long_task_back_to_another_node_at_once(cluster: Cluster) -> None:
    cluster.start_server()
    w1 = _worker(cluster, "w1", "--runtime", "process", "--grace", "0.5s")
    wait_until(lambda: cluster.nodes(), 20, what="the worker to register")
    job = cluster.submit({"tasks": [{"run": "sleep 60", "retry": {"limit": 0}}]})
    _running_execution(cluster, job["id"])
    cluster.add_worker("w2", "--runtime", "process")
    assert w1.popen is not None
    t0 = time.monotonic()
    os.killpg(w1.popen.pid, signal.SIGTERM)
    assert w1.popen.wait(10) == 0, w1.output()
    names = {n["id"]: n["name"] for n in cluster.nodes()}

    def moved() -> dict[str, Any] | None:
        t = cluster.job(job["id"])["tasks"][0]
        return t if t["state"] == "running" and names.get(t["node_id"]) == "w2" else None

    task = wait_until(moved, 5, what="the task to run on w2")
    assert time.monotonic() - t0 < 8
    assert _node(cluster, "w1")["state"] == "down"
    first = task["executions"][0]
    assert first["state"] == "lost" and "handed back" in first["error"] and names[first["node_id"]] == "w1"
    assert task["attempts"] == 1  # the attempt handed back is not counted
    r = cluster.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200, r.text


def test_a_restarted_worker_comes_back_as_itself(cluster: Cluster) -> None:
    """With the secret in its data dir, a worker that restarts keeps its identity; an intruder does not."""
    cluster.start_server()
    w1 = cluster.add_worker("w1", "--runtime", "process")
    first = _node(cluster, "w1")["id"]
    w1.stop()
    cluster.workers.remove(w1)
    w1 = cluster.add_worker("w1", "--runtime", "process")
    assert [n["id"] for n in cluster.nodes()] == [first]
    r = cluster.client.post("/v1/agent/register", json={**REG, "id": first})
    assert r.status_code == 403


# -- the same rules straight over the coordinator (what LocalTransport calls), on both stores ----------
def test_the_coordinator_checks_node_secrets_and_hands_work_back(database_url: str) -> None:
    store = Store(database_url)
    try:
        coord = Coordinator(store)
        info = NodeInfo(name="n1", hostname="n1", version="t", cpu=2, memory=2**32, disk=0, runtimes=["process"])
        row = coord.register(info)
        node, secret = row["id"], row["node_secret"]
        assert secret and "secret_hash" not in row
        coord.authenticate(node, secret)
        for wrong in (None, "", "guess"):
            with pytest.raises(Forbidden):
                coord.authenticate(node, wrong)
            with pytest.raises(Forbidden):
                coord.register(NodeInfo(**{**info.__dict__, "id": node}), secret=wrong)
        with pytest.raises(NotFound):
            coord.authenticate("e" * 32, secret)
        again = coord.register(NodeInfo(**{**info.__dict__, "id": node}), secret=secret)
        assert again["id"] == node and again["node_secret"] is None  # given once only
        # A fresh coordinator (a restart) reads the hash from the store.
        Coordinator(store).authenticate(node, secret)

        jobs = coord.submit_many([JobSpec.model_validate({"tasks": [{"run": "sleep 9"}]}) for _ in range(2)])
        coord.schedule_once()
        work, _ = coord.poll(node, [])
        started, unstarted = work[0]["execution_id"], work[1]["execution_id"]
        assert coord.drain(node, [started]) == [unstarted]  # what it had not started goes back at once
        assert coord.schedule_once() == 0  # nothing goes to a draining node
        assert coord.leave(node) == 1
        with store.read() as tx:
            assert tx.node(node)["state"] == "down"  # type: ignore[index]
        for j in jobs:
            _, tasks, execs = coord.get_job(j["id"])
            assert tasks[0]["state"] == "pending" and tasks[0]["attempts"] == 0 and tasks[0]["lost_count"] == 0
            assert [e["state"] for e in execs] == ["lost"] and execs[0]["error"].startswith("handed back")
        assert coord.stats["tasks_handed_back"] == 2
    finally:
        store.close()


def test_two_registrations_of_one_id_at_once_keep_one_secret(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registrations of the same (unknown) id, each with its own secret, both read "no such node"
    before either writes: one wins, the other is refused (403, not a 500), and the winner's secret stays."""
    store = Store(pg_url)
    try:
        coord = Coordinator(store)
        node = "c" * 32
        info = NodeInfo(id=node, name="n1", hostname="n1", version="t", cpu=2, memory=2**32, disk=0,
                        runtimes=["process"])
        both_read = threading.Barrier(2, timeout=10)
        first_reads: list[str] = []
        real = Tx.node_secret_hash

        def node_secret_hash(self: Tx, node_id: str, *args: Any, **kw: Any) -> tuple[bool, str | None]:
            out = real(self, node_id, *args, **kw)
            me = threading.current_thread().name
            if me not in first_reads:  # each registration's first read: wait until both have read
                first_reads.append(me)
                both_read.wait()
            return out

        monkeypatch.setattr(Tx, "node_secret_hash", node_secret_hash)
        results: dict[str, Any] = {}

        def register(secret: str) -> None:
            try:
                results[secret] = coord.register(info, secret=secret)
            except Exception as e:
                results[secret] = e

        threads = [threading.Thread(target=register, args=(s,), name=s) for s in ("secret-a", "secret-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        monkeypatch.undo()
        won = [s for s, r in results.items() if isinstance(r, dict)]
        lost = [r for r in results.values() if not isinstance(r, dict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Forbidden), repr(lost[0])
        fresh = Coordinator(store)  # reads the hash from the store
        fresh.authenticate(node, won[0])
        with pytest.raises(Forbidden):
            fresh.authenticate(node, "secret-b" if won[0] == "secret-a" else "secret-a")
        # Coming back with its secret updates the node and keeps that secret.
        again = fresh.register(NodeInfo(**{**info.__dict__, "name": "n1-again"}), secret=won[0])
        assert again["node_secret"] is None
        Coordinator(store).authenticate(node, won[0])
        with store.read() as tx:
            assert tx.node(node)["name"] == "n1-again"  # type: ignore[index]
    finally:
        store.close()


def test_a_draining_node_that_dies_is_still_reaped(database_url: str) -> None:
    store = Store(database_url)
    try:
        coord = Coordinator(store, Settings(node_ttl=0.2))
        node = coord.register(NodeInfo(name="n1", hostname="n1", version="t", cpu=2, memory=2**32, disk=0,
                                       runtimes=["process"]))["id"]
        job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "sleep 9"}]}))
        coord.schedule_once()
        [w] = coord.poll(node, [])[0]
        coord.drain(node, [w["execution_id"]])
        coord.heartbeat(node, [w["execution_id"]])  # a draining node still renews its lease...
        with store.read() as tx:
            assert tx.node(node)["state"] == "draining"  # type: ignore[index]
        wait_until(lambda: coord.reap_once() == 1, 5, what="the reaper to find the silent node")  # ...until it dies
        _, tasks, execs = coord.get_job(job["id"])
        assert tasks[0]["state"] == "pending" and execs[0]["state"] == "lost"
        assert "missed its heartbeats" in execs[0]["error"]
    finally:
        store.close()
