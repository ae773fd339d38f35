"""Job webhooks and autoDelete, end to end: real `corral up` / `corral server` + `corral worker` processes,
and a real HTTP receiver on 127.0.0.1 in the test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, wait_until

# The receiver is on 127.0.0.1, which webhooks may reach only when the operator allows it.
ALLOW = ("--allow-webhook-host", "127.0.0.1")
ORDER = ["PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class Receiver:
    """Records every POST; answers each path with the statuses planned for it, in turn, then 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.plan: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with rec.lock:
                    planned = rec.plan.get(self.path) or []
                    status = planned.pop(0) if planned else 200
                    rec.calls.append({"path": self.path, "headers": dict(self.headers), "raw": raw.decode(),
                                      "body": json.loads(raw), "status": status})
                self.send_response(status)
                self.send_header("content-length", "0")
                if 300 <= status < 400:  # a redirect names a path of this receiver: it must not be followed
                    self.send_header("location", rec.url("/redirected"))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def states(self, path: str, task: str | None = None) -> list[str]:
        return [c["body"]["state"] for c in self.at(path) if task is None or c["body"].get("name") == task]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`corral up` whose webhooks may reach the receiver on 127.0.0.1, shared by the module's tests: each has
    a receiver of its own (its own port), so it sees only the hooks of its own jobs."""
    c = Cluster(tmp_path_factory.mktemp("webhooks"))
    try:
        yield c.up(*ALLOW)
    finally:
        c.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _in_order(states: list[str]) -> bool:
    """Each state once, in the order a job goes through them (some may be coalesced away)."""
    return states == sorted(set(states), key=ORDER.index)


def _later_delivery(c: Cluster, receiver: Receiver) -> None:
    """Evidence that the webhook loop went on delivering: a job submitted now, with a hook of its own,
    completes and its COMPLETED arrives. A negative check made after this ("nothing more came") has
    seen later passes of the loop, however loaded the machine."""
    path = f"/later-{len(receiver.calls)}"
    job = c.submit({"tasks": [{"run": "true"}], "webhooks": [
        {"url": receiver.url(path), "if": "{{ job.state == 'COMPLETED' }}"}]})
    c.wait_job(job["id"])
    wait_until(lambda: receiver.states(path) == ["COMPLETED"], 15, what="a later job's webhook")


def test_job_hook_gets_each_state_in_order_ending_completed(database_url: str, cluster: Cluster,
                                                            receiver: Receiver) -> None:
    # database_url first: its database is dropped after the cluster stops, not under it
    cluster.start_server(*ALLOW, database_url=database_url)
    cluster.add_worker("w1", "--runtime", "process")
    job = cluster.submit({"name": "hooked", "tasks": [{"run": "sleep 0.6; echo hi"}],
                          "webhooks": [{"url": receiver.url("/job"), "event": "job.StateChange"}]})
    cluster.wait_job(job["id"])
    wait_until(lambda: receiver.states("/job")[-1:] == ["COMPLETED"], 15, what="COMPLETED to arrive")
    _later_delivery(cluster, receiver)  # evidence that delivery went on: nothing more came for this job
    states = receiver.states("/job")
    assert _in_order(states), states
    assert "RUNNING" in states  # the task ran for longer than a few polls
    final = receiver.at("/job")[-1]
    assert final["headers"]["Content-Type"] == "application/json"
    body = final["body"]
    assert body["id"] == job["id"] and body["name"] == "hooked" and body["taskCount"] == 1
    assert body["createdAt"] and body["startedAt"] and body["completedAt"] and "failedAt" not in body


def test_if_expression_sends_only_the_final_state(standalone: Cluster, receiver: Receiver) -> None:
    job = standalone.submit({"tasks": [{"run": "sleep 0.5"}], "webhooks": [
        {"url": receiver.url("/final"), "if": "{{ job.state == 'COMPLETED' }}"},
        {"url": receiver.url("/all")}]})
    standalone.wait_job(job["id"])
    wait_until(lambda: receiver.states("/all")[-1:] == ["COMPLETED"], 15, what="COMPLETED to arrive")
    # A change goes to the hooks in their order: /final had its turn at every change before /all's COMPLETED.
    assert receiver.states("/final") == ["COMPLETED"]
    assert len(receiver.states("/all")) >= 2


def test_failed_job_reports_failed_at(standalone: Cluster, receiver: Receiver) -> None:
    job = standalone.submit({"tasks": [{"run": "exit 3"}], "webhooks": [
        {"url": receiver.url("/f"), "if": "{{ job.state == 'FAILED' }}"}]})
    standalone.wait_job(job["id"])
    wait_until(lambda: receiver.at("/f"), 15, what="FAILED to arrive")
    body = receiver.at("/f")[0]["body"]
    assert body["state"] == "FAILED" and body["failedAt"] and "exit code 3" in body["error"]


def test_task_hook_gets_each_task_change(standalone: Cluster, receiver: Receiver) -> None:
    job = standalone.submit({"tasks": [{"name": "first", "run": "sleep 0.5"}, {"name": "second", "run": "echo 2"}],
                             "webhooks": [{"url": receiver.url("/task"), "event": "task.StateChange"}]})
    standalone.wait_job(job["id"])
    wait_until(lambda: receiver.states("/task", "second")[-1:] == ["COMPLETED"], 15, what="second's COMPLETED")
    _later_delivery(standalone, receiver)  # evidence that delivery went on past this job's last change
    first, second = receiver.states("/task", "first"), receiver.states("/task", "second")
    assert _in_order(first) and first[-1] == "COMPLETED" and "RUNNING" in first, first
    assert _in_order(second) and second[-1] == "COMPLETED", second
    bodies = [c["body"] for c in receiver.at("/task")]
    assert all(b["jobId"] == job["id"] and "taskCount" not in b for b in bodies)  # tasks, never the job
    # The first task's COMPLETED went out before anything of the second after its pending state.
    names = [(b["name"], b["state"]) for b in bodies]
    assert names.index(("first", "COMPLETED")) < names.index(("second", "COMPLETED"))
    done = [b for b in bodies if b["state"] == "COMPLETED"]
    assert {b["name"]: b["position"] for b in done} == {"first": 1, "second": 2}


def test_secret_header_is_rendered_and_the_secret_shown_nowhere(standalone: Cluster, receiver: Receiver) -> None:
    secret = "s3cr3t-4f9a7c"
    job = standalone.submit({
        "name": "with secrets", "secrets": {"token": secret}, "inputs": {"who": f"user {secret}"},
        "tasks": [{"run": "echo hi"}],
        "webhooks": [{"url": receiver.url("/s"), "if": "{{ job.state == 'COMPLETED' }}",
                      "headers": {"Authorization": "Bearer {{ secrets.token }}", "X-Job": "{{ job.name }}",
                                  "X-Who": "{{ inputs.who | length }}"}}]})
    standalone.wait_job(job["id"])
    wait_until(lambda: receiver.at("/s"), 15, what="the webhook")
    call = receiver.at("/s")[0]
    assert call["headers"]["Authorization"] == f"Bearer {secret}"
    assert call["headers"]["X-Job"] == "with secrets" and call["headers"]["X-Who"] == str(len(f"user {secret}"))
    assert secret not in call["raw"]
    assert call["body"]["inputs"] == {"who": "user [REDACTED]"}
    assert secret not in standalone.client.get(f"/v1/jobs/{job['id']}").text
    assert secret not in standalone.client.get("/v1/jobs").text
    assert standalone.server is not None and secret not in standalone.server.output()


def test_receiver_errors_are_retried_and_4xx_is_not(standalone: Cluster, receiver: Receiver) -> None:
    receiver.plan["/flaky"] = [500, 500]
    receiver.plan["/gone"] = [404] * 10
    final = "{{ job.state == 'COMPLETED' }}"
    job = standalone.submit({"tasks": [{"run": "echo hi"}], "webhooks": [
        {"url": receiver.url("/flaky"), "if": final}, {"url": receiver.url("/gone"), "if": final},
        {"url": receiver.url("/after"), "if": final}]})
    standalone.wait_job(job["id"])
    # Hooks are called in order, each with its retries done first: /after is called once /gone is over.
    wait_until(lambda: receiver.at("/after"), 30, what="the third hook, after the first's retries")
    flaky = receiver.at("/flaky")
    assert [c["status"] for c in flaky] == [500, 500, 200]
    assert [c["body"]["state"] for c in flaky] == ["COMPLETED"] * 3
    assert [c["status"] for c in receiver.at("/gone")] == [404]  # a 404 is final: no second attempt
    assert len(receiver.at("/after")) == 1


@pytest.mark.slow
def test_429_is_retried_a_redirect_not_followed_and_delivery_gives_up_after_five_attempts(
        standalone: Cluster, receiver: Receiver) -> None:
    receiver.plan["/busy"] = [429]
    receiver.plan["/moved"] = [302]
    receiver.plan["/down"] = [503] * 10
    final = "{{ job.state == 'COMPLETED' }}"
    job = standalone.submit({"tasks": [{"run": "true"}], "webhooks": [
        {"url": receiver.url(path), "if": final} for path in ("/busy", "/moved", "/down", "/after")]})
    standalone.wait_job(job["id"])
    # Hooks are called in order, each with its retries first: /after is called once /down was given up.
    wait_until(lambda: receiver.at("/after"), 40, what="the hook after the one that is given up")
    assert [c["status"] for c in receiver.at("/busy")] == [429, 200]  # 429: tried again
    assert [c["status"] for c in receiver.at("/moved")] == [302] and receiver.at("/redirected") == []
    assert [c["status"] for c in receiver.at("/down")] == [503] * 5  # five attempts, then given up
    assert len(receiver.at("/after")) == 1


@pytest.mark.slow
def test_killed_coordinator_sends_the_undelivered_change_after_restart(cluster: Cluster,
                                                                     receiver: Receiver) -> None:
    cluster.up(*ALLOW)
    receiver.plan["/down"] = [503] * 100
    job = cluster.submit({"tasks": [{"run": "echo hi"}], "webhooks": [
        {"url": receiver.url("/down"), "if": "{{ job.state == 'COMPLETED' }}"}]})
    cluster.wait_job(job["id"])
    wait_until(lambda: receiver.at("/down"), 15, what="a first attempt")
    assert cluster.server is not None
    cluster.server.kill9()
    with receiver.lock:
        receiver.plan["/down"] = []
    cluster.up(*ALLOW)
    wait_until(lambda: any(c["status"] == 200 for c in receiver.at("/down")), 20, what="delivery after restart")
    _later_delivery(cluster, receiver)  # evidence that delivery went on: the change was not sent twice
    assert [c["status"] for c in receiver.at("/down")].count(200) == 1


def test_auto_delete_removes_the_job_after_its_hooks(standalone: Cluster, receiver: Receiver) -> None:
    gone = standalone.submit({"tasks": [{"run": "echo bye"}], "autoDelete": {"after": "1s"},
                              "webhooks": [{"url": receiver.url("/ad"), "if": "{{ job.state == 'COMPLETED' }}"}]})
    kept = standalone.submit({"tasks": [{"run": "echo stay"}]})
    standalone.wait_job(gone["id"])
    standalone.wait_job(kept["id"])
    start = time.monotonic()
    wait_until(lambda: standalone.client.get(f"/v1/jobs/{gone['id']}").status_code == 404, 8,
               what="the job to be deleted")
    assert time.monotonic() - start < 6
    assert receiver.states("/ad") == ["COMPLETED"]  # its final change went out before it went
    assert standalone.client.get(f"/v1/jobs/{gone['id']}/logs").status_code == 404
    assert standalone.client.get(f"/v1/jobs/{kept['id']}").status_code == 200


def test_restarted_job_sends_its_changes_again(standalone: Cluster, receiver: Receiver, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = standalone.submit({"tasks": [{"run": f"if [ -e {marker} ]; then sleep 1.5; else touch {marker}; exit 1; fi"}],
                             "webhooks": [{"url": receiver.url("/r")}]})
    standalone.wait_job(job["id"])
    wait_until(lambda: receiver.states("/r")[-1:] == ["FAILED"], 15, what="FAILED to arrive")
    first = len(receiver.states("/r"))
    assert standalone.client.post(f"/v1/jobs/{job['id']}/restart").status_code == 200
    assert standalone.wait_job(job["id"])["state"] == "completed"
    wait_until(lambda: receiver.states("/r")[-1:] == ["COMPLETED"], 15, what="COMPLETED to arrive")
    again = receiver.states("/r")[first:]
    assert _in_order(again) and "RUNNING" in again, again
