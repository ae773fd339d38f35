"""The coordinator's services straight over the store, on SQLite and on PostgreSQL: compare-and-set rules.

No HTTP here: these drive `Coordinator` the way the agent protocol does, to pin down what late,
duplicate and stale reports may and may not change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from corral.coordinator.errors import Forbidden
from corral.coordinator.service import Coordinator, LogLine, NodeInfo, Update
from corral.domain.spec import JobSpec
from corral.store.sql import Store


@pytest.fixture
def coord(database_url: str) -> Iterator[Coordinator]:
    store = Store(database_url)
    yield Coordinator(store)
    store.close()


SECRETS: dict[str, str] = {}  # node id -> the secret it was given


def _node(coord: Coordinator, name: str = "n1") -> str:
    row = coord.register(NodeInfo(name=name, hostname=name, version="t", cpu=2, memory=2**32, disk=0,
                                  runtimes=["process"]))
    SECRETS[row["id"]] = row["node_secret"]
    return str(row["id"])


def _assigned(coord: Coordinator, node: str) -> list[str]:
    coord.schedule_once()
    work, _ = coord.poll(node, [])
    return [w["execution_id"] for w in work]


def _report(coord: Coordinator, node: str, ex: str, state: str, code: int | None = None) -> None:
    coord.report(node, [Update(ex, state, time.time(), exit_code=code)], [])


def test_a_completion_after_a_cancel_changes_nothing(coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "sleep 9"}]}))
    [ex] = _assigned(coord, node)
    _report(coord, node, ex, "running")
    coord.cancel(job["id"])
    _report(coord, node, ex, "completed", 0)  # the agent finished just as the cancel landed
    j, tasks, execs = coord.get_job(job["id"])
    assert j["state"] == "cancelled"
    assert tasks[0]["state"] == "cancelled" and execs[0]["state"] == "cancelled"
    # ...and the node is told to stop it, and holds nothing any more.
    assert coord.heartbeat(node, [ex]) == [ex]
    assert coord.poll(node, [ex]) == ([], [ex])


def test_duplicate_and_stale_reports_are_no_ops(coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "a"}, {"run": "b"}]}))
    [ex1] = _assigned(coord, node)
    _report(coord, node, ex1, "completed", 0)
    _report(coord, node, ex1, "completed", 0)  # sent twice (the first reply was lost)
    _report(coord, node, ex1, "failed", 1)  # a stale report that contradicts it
    [ex2] = _assigned(coord, node)
    _report(coord, node, ex2, "completed", 0)
    j, tasks, execs = coord.get_job(job["id"])
    assert j["state"] == "completed"
    assert [t["state"] for t in tasks] == ["completed", "completed"]
    assert len(execs) == 2 and all(e["state"] == "completed" for e in execs)


def test_a_report_from_another_node_is_refused(coord: Coordinator) -> None:
    n1, n2 = _node(coord, "n1"), _node(coord, "n2")
    job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "a"}]}))
    coord.schedule_once()
    owner, other = (n1, n2) if coord.poll(n1, [])[0] else (n2, n1)
    [ex] = [w["execution_id"] for w in coord.poll(owner, [])[0]]
    with pytest.raises(Forbidden):
        _report(coord, other, ex, "completed", 0)
    assert coord.get_job(job["id"])[0]["state"] == "scheduled"
    _report(coord, owner, ex, "completed", 0)
    assert coord.get_job(job["id"])[0]["state"] == "completed"


def test_a_node_that_restarts_loses_its_work_which_is_rescheduled(coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "a"}]}))
    [ex] = _assigned(coord, node)
    _report(coord, node, ex, "running")
    coord.register(NodeInfo(id=node, name="n1", hostname="n1", version="t", cpu=2, memory=2**32, disk=0,
                            runtimes=["process"]), running=[], secret=SECRETS[node])
    _report(coord, node, ex, "completed", 0)  # the old attempt's last word comes too late
    [ex2] = _assigned(coord, node)
    assert ex2 != ex
    _, tasks, execs = coord.get_job(job["id"])
    assert tasks[0]["state"] == "scheduled" and tasks[0]["attempts"] == 2
    assert [e["state"] for e in execs] == ["lost", "scheduled"]


def test_capacity_is_released_on_every_terminal_state(coord: Coordinator) -> None:
    node = _node(coord)
    specs = [JobSpec.model_validate({"tasks": [{"run": "x", "resources": {"cpu": 1}}]}) for _ in range(3)]
    jobs = coord.submit_many(specs)
    first = _assigned(coord, node)
    assert len(first) == 2  # 2 cores, 1 each
    job_of = {e["id"]: j["id"] for j in jobs for e in coord.get_job(j["id"])[2]}
    _report(coord, node, first[0], "failed", 3)
    coord.cancel(job_of[first[1]])
    second = _assigned(coord, node)
    assert len(second) == 1  # both slots came back; one job was left to place
    with coord.store.read() as tx:
        alloc = {a["node_id"]: a for a in tx.allocations()}
    assert alloc[node]["cpu"] == 1


def test_one_pass_places_a_large_backlog_in_growing_steps_without_overcommitting(coord: Coordinator) -> None:
    """A pass reads 64 tasks, then four times more after each step in which all fitted (and the next pass
    starts there): 100 small tasks are placed in one pass; then exactly what fits of 100 more is placed."""
    row = coord.register(NodeInfo(name="big", hostname="big", version="t", cpu=2, memory=2**40, disk=0,
                                  runtimes=["process"]))  # 2 cores, memory for all (64Mi per task)
    node = str(row["id"])
    coord.submit_many([JobSpec.model_validate({"tasks": [{"run": "x", "resources": {"cpu": 0.001}}]})
                       for _ in range(100)])
    assert coord.schedule_once() == 100
    coord.submit_many([JobSpec.model_validate({"tasks": [{"run": "x", "resources": {"cpu": 0.025}}]})
                       for _ in range(100)])
    assert coord.schedule_once() == 76  # 1.9 cores left, 0.025 each
    with coord.store.read() as tx:
        alloc = {a["node_id"]: a for a in tx.allocations()}
        assert tx.count_pending_tasks() == 24
    assert alloc[node]["cpu"] <= 2 + 1e-9
    coord.authenticate(node, row["node_secret"])
    work, _ = coord.poll(node, [])
    assert len(work) == 176


def test_tasks_that_wait_do_not_hide_those_behind_them(coord: Coordinator) -> None:
    """300 tasks for a queue no node serves come first: a job submitted after them in a served queue is
    placed (a pass looks past the waiting ones), and the waiting ones keep their reason."""
    row = coord.register(NodeInfo(name="n", hostname="n", version="t", cpu=2, memory=2**34, disk=0,
                                  runtimes=["process"]))
    coord.submit_many([JobSpec.model_validate({"queue": "nobody", "tasks": [{"run": "x"}]}) for _ in range(300)])
    late = coord.submit(JobSpec.model_validate({"tasks": [{"run": "late"}]}))
    for _ in range(3):  # 300 waiting: a pass looks at 256 of them, the next goes on from there
        coord.schedule_once()
    assert coord.get_job(late["id"])[0]["state"] == "scheduled"
    coord.authenticate(str(row["id"]), row["node_secret"])
    work, _ = coord.poll(str(row["id"]), [])
    assert [w["job_id"] for w in work] == [late["id"]]
    with coord.store.read() as tx:
        assert tx.count_pending_tasks() == 300


def test_a_full_node_pauses_the_look_past_waiting_tasks(coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog that no longer fits (a full node, tasks alike): after a look past the waiting tasks that
    placed none, the passes read the queue's first page alone for LOOK_PAST_PAUSE, and then look past again:
    a small task deep in the queue is placed then, not at every pass's cost. (The pause is set long, then
    none, so that the machine's speed does not decide which side of it a pass falls on.)"""
    from corral.coordinator import scheduling
    monkeypatch.setattr(scheduling, "LOOK_PAST_PAUSE", 3600.0)
    node = _node(coord)  # 2 cores
    coord.submit_many([JobSpec.model_validate({"tasks": [{"run": "big", "resources": {"cpu": 1.5}}]})
                       for _ in range(100)])
    assert coord.schedule_once() == 1  # one fits; the next 99 wait, a look past them places none
    small = coord.submit(JobSpec.model_validate({"tasks": [{"run": "small", "resources": {"cpu": 0.5}}]}))
    assert coord.schedule_once() == 0  # within the pause: the first page alone; the small task is behind it
    assert coord.get_job(small["id"])[0]["state"] == "pending"
    monkeypatch.setattr(scheduling, "LOOK_PAST_PAUSE", 0.0)
    assert coord.schedule_once() == 1  # the pause over: it looks past the waiting ones again
    assert coord.get_job(small["id"])[0]["state"] == "scheduled"
    assert len(_assigned(coord, node)) == 2


def test_parked_tasks_are_placed_when_a_node_that_can_hold_them_registers(coord: Coordinator) -> None:
    """Tasks no ready node could hold are parked (not read by later passes) with their reason; a node that
    can hold them registering makes the next pass read and place them (the write that places them clears
    the flag, as any write to the row does)."""
    _node(coord, "plain")
    eu = coord.submit(JobSpec.model_validate({"tasks": [{"run": "x", "node_selector": {"zone": "eu"}}]}))
    lost = coord.submit(JobSpec.model_validate({"queue": "gpu", "tasks": [{"run": "x"}]}))
    assert coord.schedule_once() == 0
    with coord.store.read() as tx:
        parked = {t["job_id"]: (t["parked"], t["reason"]) for t in tx.tasks_of_jobs([eu["id"], lost["id"]])}
    assert parked == {eu["id"]: (True, "no node matches node_selector zone=eu"),
                      lost["id"]: (True, "no ready worker serves queue 'gpu'")}
    assert coord.schedule_once() == 0  # nothing changed: still parked
    coord.register(NodeInfo(name="eu", hostname="eu", version="t", cpu=2, memory=2**32, disk=0,
                            runtimes=["process"], labels={"zone": "eu"}, queues=["default", "gpu"]))
    assert coord.schedule_once() == 2
    assert coord.get_job(eu["id"])[0]["state"] == "scheduled"
    with coord.store.read() as tx:
        assert not any(t["parked"] for t in tx.tasks_of_jobs([eu["id"], lost["id"]]))


# -- task dependencies (depends_on) ---------------------------------------------------------------
DIAMOND = {"tasks": [{"name": "a", "run": "a"}, {"name": "b", "run": "b", "depends_on": ["a"]},
                     {"name": "c", "run": "c", "depends_on": ["a"]},
                     {"name": "d", "run": "d", "depends_on": ["b", "c"]}]}


def _work(coord: Coordinator, node: str, known: list[str] | None = None) -> dict[str, str]:
    """Task name -> execution id of what was just handed to the node."""
    coord.schedule_once()
    work, _ = coord.poll(node, known or [])
    return {w["task_name"]: w["execution_id"] for w in work}


def _states(coord: Coordinator, job_id: str) -> tuple[str, dict[str, str]]:
    j, tasks, _ = coord.get_job(job_id)
    return j["state"], {t["name"]: t["state"] for t in tasks}


def test_a_diamond_runs_b_and_c_together_and_d_after_both(coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate(DIAMOND))
    first = _work(coord, node)
    assert list(first) == ["a"]
    _report(coord, node, first["a"], "completed", 0)
    both = _work(coord, node, list(first.values()))
    assert sorted(both) == ["b", "c"]  # scheduled together, in one pass
    for ex in both.values():
        _report(coord, node, ex, "running")
    assert _states(coord, job["id"]) == ("running", {"a": "completed", "b": "running", "c": "running",
                                                     "d": "pending"})
    _report(coord, node, both["b"], "completed", 0)
    assert _work(coord, node, list(both.values())) == {}  # d still waits for c
    _report(coord, node, both["c"], "completed", 0)
    last = _work(coord, node)
    assert list(last) == ["d"]
    _report(coord, node, last["d"], "completed", 0)
    assert _states(coord, job["id"])[0] == "completed"


def test_a_failure_in_a_diamond_cancels_the_rest_and_a_restart_reruns_what_did_not_complete(
        coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate(DIAMOND))
    a = _work(coord, node)["a"]
    _report(coord, node, a, "completed", 0)
    both = _work(coord, node, [a])
    _report(coord, node, both["c"], "running")
    _report(coord, node, both["b"], "failed", 3)
    state, tasks = _states(coord, job["id"])
    assert state == "failed"
    assert tasks == {"a": "completed", "b": "failed", "c": "cancelled", "d": "cancelled"}
    assert coord.heartbeat(node, [both["c"]]) == [both["c"]]  # the node is told to stop c
    _report(coord, node, both["c"], "completed", 0)  # a late completion changes nothing
    assert _states(coord, job["id"])[1]["c"] == "cancelled"

    coord.restart(job["id"])
    again = _work(coord, node)
    assert sorted(again) == ["b", "c"]  # not a: it completed
    for ex in again.values():
        _report(coord, node, ex, "completed", 0)
    d = _work(coord, node, list(again.values()))
    assert list(d) == ["d"]
    _report(coord, node, d["d"], "completed", 0)
    state, tasks = _states(coord, job["id"])
    assert state == "completed" and set(tasks.values()) == {"completed"}
    _, _, execs = coord.get_job(job["id"])
    assert sum(1 for e in execs if e["task_id"] == coord.get_job(job["id"])[1][0]["id"]) == 1


def test_tasks_without_depends_on_in_a_graph_job_start_at_once(coord: Coordinator) -> None:
    node = _node(coord)
    job = coord.submit(JobSpec.model_validate({"tasks": [{"name": "x", "run": "x"}, {"name": "y", "run": "y"},
                                                         {"name": "z", "run": "z", "depends_on": ["x"]}]}))
    first = _work(coord, node)
    assert sorted(first) == ["x", "y"]
    _report(coord, node, first["x"], "completed", 0)
    assert _states(coord, job["id"])[0] != "completed"  # y has not finished
    z = _work(coord, node, list(first.values()))
    assert list(z) == ["z"]
    _report(coord, node, z["z"], "completed", 0)
    assert _states(coord, job["id"])[0] != "completed"
    _report(coord, node, first["y"], "completed", 0)
    assert _states(coord, job["id"])[0] == "completed"


def test_a_tail_is_bounded_by_lines_and_by_bytes_and_comes_oldest_first(coord: Coordinator) -> None:
    job = coord.submit(JobSpec.model_validate({"tasks": [{"run": "true"}]}))
    node = _node(coord)
    ex = _assigned(coord, node)[0]
    coord.report(node, [Update(ex, "running", time.time())], [])
    wide = "x" * 999  # 1,000 bytes a line with its newline (2.5 MB in all: under the stored log cap)
    lines = [LogLine(ex, "stdout", f"{i:05d}{wide[5:]}", time.time()) for i in range(2_500)]
    for i in range(0, len(lines), 500):
        coord.report(node, [], lines[i:i + 500])
    with coord.store.read() as tx:
        # Read backwards in chunks smaller than the tail: the chunk edges lose and repeat nothing.
        got = tx.tail_logs(job["id"], 2_200, max_bytes=10**9, chunk=300)
        assert [r["line"][:5] for r in got] == [f"{i:05d}" for i in range(300, 2_500)]
        # 2,500 bytes hold two whole lines of 1,000: the newest two, and never less than one line.
        assert [r["line"][:5] for r in tx.tail_logs(job["id"], 2_200, max_bytes=2_500)] == ["02498", "02499"]
        assert len(tx.tail_logs(job["id"], 5, max_bytes=1)) == 1
        before = got[10]["seq"]
        assert tx.tail_logs(job["id"], 3, max_bytes=10**9, after_seq=before)[0]["line"][:5] == "02497"
