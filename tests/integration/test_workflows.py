"""Workflows end to end through the native API against a real `corral up` (host-process tasks): parallel,
each, pre/post, if, outputs between tasks, subjobs, inputs, secrets, defaults, cancel and restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, wait_until
from tests.support import wait_processes_gone


@pytest.fixture
def standalone(module_standalone: Cluster) -> Cluster:
    """One `corral up` for the module (tests/conftest.py): each test looks only at its own jobs."""
    return module_standalone


def _intervals(tasks: list[dict[str, Any]]) -> list[tuple[float, float]]:
    from datetime import datetime

    def ts(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    return [(ts(t["started_at"]), ts(t["finished_at"])) for t in tasks]


def _max_overlap(iv: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in iv] + [(b, -1) for _, b in iv])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _children(job: dict[str, Any], parent: str) -> list[dict[str, Any]]:
    pid = next(t["id"] for t in job["tasks"] if t["name"] == parent)
    return sorted((t for t in job["tasks"] if t["parent_id"] == pid), key=lambda t: t["position"])


def test_parallel_tasks_overlap_and_the_job_goes_on_after_them(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [
        {"name": "fan", "parallel": {"tasks": [{"run": "sleep 0.6; echo a"}, {"run": "sleep 0.6; echo b"},
                                                {"run": "sleep 0.6; echo c"}]}},
        {"name": "after", "run": "echo after"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    kids = _children(done, "fan")
    assert [k["state"] for k in kids] == ["completed"] * 3
    assert _max_overlap(_intervals(kids)) == 3
    fan = next(t for t in done["tasks"] if t["name"] == "fan")
    assert fan["kind"] == "parallel" and fan["state"] == "completed"
    logs = standalone.logs(job["id"]).splitlines()
    assert sorted(logs[:3]) == ["a", "b", "c"] and logs[3] == "after"


def test_each_runs_every_item_with_at_most_concurrency_at_once(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"name": "fan", "each": {
        "list": "{{ sequence(0, 6) }}", "var": "n", "concurrency": 2,
        "task": {"run": "sleep 0.3; echo item {{ n.value }} at {{ n.index }}"}}}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    kids = _children(done, "fan")
    assert len(kids) == 6 and all(k["state"] == "completed" for k in kids)
    assert _max_overlap(_intervals(kids)) <= 2
    assert sorted(standalone.logs(job["id"]).splitlines()) == [f"item {i} at {i}" for i in range(6)]


def test_each_over_json_from_inputs_and_an_empty_list(standalone: Cluster) -> None:
    job = standalone.submit({"inputs": {"fruits": '["apple", "pear"]', "none": "[]"}, "tasks": [
        {"name": "fruits", "each": {"list": "{{ fromJSON(inputs.fruits) }}", "task": {"run": "echo {{ item.value }}"}}},
        {"name": "nothing", "each": {"list": "{{ fromJSON(inputs.none) }}", "task": {"run": "echo never"}}},
        {"name": "end", "run": "echo end"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    logs = standalone.logs(job["id"]).splitlines()
    assert sorted(logs[:2]) == ["apple", "pear"] and logs[2:] == ["end"]


def test_pre_and_post_run_around_the_task(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"name": "main", "run": "echo main",
                                        "pre": [{"run": "echo pre"}], "post": [{"run": "echo post"}]}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert standalone.logs(job["id"]).splitlines() == ["pre", "main", "post"]


def test_if_skips_a_task_and_inputs_reach_run(standalone: Cluster) -> None:
    job = standalone.submit({"inputs": {"mode": "fast", "who": "world"}, "tasks": [
        {"name": "slow", "if": "{{ inputs.mode == 'slow' }}", "run": "echo slow"},
        {"name": "fast", "if": "{{ inputs.mode == 'fast' }}", "run": "echo hello {{ inputs.who }}"},
        {"name": "never", "if": "false", "parallel": {"tasks": [{"run": "echo nope"}]}}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert [t["state"] for t in done["tasks"]] == ["skipped", "completed", "skipped"]
    assert standalone.logs(job["id"]) == "hello world\n"
    fast = done["tasks"][1]
    assert fast["run"] == "echo hello world"  # what ran, evaluated


def test_outputs_flow_between_tasks_and_into_the_job_output(standalone: Cluster) -> None:
    job = standalone.submit({"output": "{{ tasks.total }}", "tasks": [
        {"name": "a", "var": "a", "run": "printf 20 > $TORK_OUTPUT"},
        {"name": "b", "var": "b", "run": "printf 22 > $CORRAL_OUTPUT"},
        {"name": "sum", "var": "total", "run": "echo $(({{ tasks.a }} + {{ tasks.b }})) > $TORK_OUTPUT"},
        {"name": "show", "if": "{{ tasks.total | trim | int > 40 }}", "run": "echo big {{ tasks.total | trim }}"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert [t["output"] for t in done["tasks"][:3]] == ["20", "22", "42\n"]
    assert done["output"] == "42\n"
    assert standalone.logs(job["id"]) == "big 42\n"


def test_progress_is_reported_while_a_task_runs(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"run": "echo 40 > $TORK_PROGRESS; sleep 3"}]})
    wait_until(lambda: standalone.job(job["id"])["tasks"][0]["progress"] == 40.0, timeout=10, what="progress 40")
    assert standalone.wait_job(job["id"])["tasks"][0]["progress"] == 100.0


def test_subjob_runs_as_its_own_job_and_completes_its_task(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [
        {"name": "inner", "var": "inner", "subjob": {"name": "child", "inputs": {"x": "7"},
                                                     "output": "{{ inputs.x }}",
                                                     "tasks": [{"run": "echo in child {{ inputs.x }}"}]}},
        {"name": "after", "run": "echo parent got {{ tasks.inner }}"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    inner = done["tasks"][0]
    sub = standalone.job(inner["subjob_id"])
    assert sub["state"] == "completed" and sub["parent_task_id"] == inner["id"] and sub["output"] == "7"
    assert standalone.logs(sub["id"]) == "in child 7\n"
    assert standalone.logs(job["id"]) == "parent got 7\n"


def test_a_failing_subjob_fails_its_parent_and_a_detached_one_does_not(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"name": "inner", "subjob": {"tasks": [{"run": "exit 3"}]}},
                                       {"run": "echo never"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed" and "subjob" in done["error"], done
    assert done["tasks"][0]["state"] == "failed" and done["tasks"][1]["state"] == "cancelled"
    job = standalone.submit({"tasks": [{"name": "bg", "subjob": {"detached": True, "tasks": [
        {"run": "sleep 0.5; exit 3"}]}}, {"run": "echo parent done"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert standalone.wait_job(done["tasks"][0]["subjob_id"])["state"] == "failed"


def test_secrets_reach_the_task_but_never_the_api_or_logs(standalone: Cluster) -> None:
    secret, inner = "s3cr3t-value-xyz", "inner-s3cr3t-abc"
    job = standalone.submit({"secrets": {"pw": secret}, "tasks": [
        {"name": "use", "env": {"PW": "{{ secrets.pw }}"}, "run": "echo pw=$PW; test \"$PW\" = " + secret},
        # A subjob's own secrets, and its output that holds one, are hidden in the parent's views and logs.
        {"name": "sub", "var": "sub", "subjob": {"secrets": {"k": inner}, "output": "{{ secrets.k }}",
                                                 "tasks": [{"run": "true"}]}},
        {"name": "after", "run": "echo got {{ tasks.sub }}"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert secret not in json.dumps(done) and done["secrets"] == {"pw": "[REDACTED]"}
    assert inner not in json.dumps(done) and done["tasks"][1]["subjob"]["secrets"] == {"k": "[REDACTED]"}
    assert done["tasks"][0]["env"]["PW"] == "[REDACTED]"
    assert standalone.logs(job["id"]) == "pw=[REDACTED]\ngot [REDACTED]\n"
    listing = standalone.client.get("/v1/jobs").text
    assert secret not in listing and inner not in listing


def test_an_expression_that_fails_when_evaluated_fails_the_task_with_the_reason(standalone: Cluster) -> None:
    job = standalone.submit({"tasks": [{"name": "bad", "run": "echo {{ inputs.missing }}"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed", done
    assert "bad.run" in done["tasks"][0]["error"] and "missing" in done["tasks"][0]["error"]


def test_defaults_fill_what_tasks_leave_out(standalone: Cluster) -> None:
    job = standalone.submit({"defaults": {"retry": {"limit": 1, "backoff": "0.1s"}, "timeout": "1s"}, "tasks": [
        {"name": "flaky", "run": "exit 1"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed" and done["tasks"][0]["attempts"] == 2, done
    job = standalone.submit({"defaults": {"timeout": "1s"}, "tasks": [{"name": "slow", "run": "sleep 5"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "failed" and "timed out" in done["tasks"][0]["error"], done


def test_cancel_stops_every_running_task_of_a_parallel_and_each(standalone: Cluster, tmp_path: Path) -> None:
    mark = tmp_path / "marks"
    mark.mkdir()
    pids = tmp_path / "pids"
    job = standalone.submit({"tasks": [{"name": "fan", "parallel": {"tasks": [
        {"run": f"echo $$ >> {pids}; sleep 5; touch {mark}/p1"},
        {"run": f"echo $$ >> {pids}; sleep 5; touch {mark}/p2"},
        {"name": "loop", "each": {"list": "{{ sequence(0, 3) }}",
                                  "task": {"run": f"echo $$ >> {pids}; sleep 5; touch {mark}/e"}}}]}}]})
    wait_until(lambda: sum(t["state"] == "running" for t in standalone.job(job["id"])["tasks"]) >= 5,
               what="the parallel and each children running")
    r = standalone.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    done = standalone.wait_job(job["id"])
    assert done["state"] == "cancelled"
    assert all(t["state"] in ("cancelled",) for t in done["tasks"]), [t["state"] for t in done["tasks"]]
    wait_processes_gone(pids, 5)
    assert list(mark.iterdir()) == []  # the processes were killed, not left to finish


def test_restart_runs_a_failed_each_again(standalone: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    job = standalone.submit({"tasks": [
        {"name": "first", "run": "echo first"},
        {"name": "fan", "each": {"list": "{{ sequence(0, 3) }}", "task": {"run": f"test -e {flag}"}}}]})
    assert standalone.wait_job(job["id"])["state"] == "failed"
    flag.write_text("")
    r = standalone.client.post(f"/v1/jobs/{job['id']}/restart")
    assert r.status_code == 200, r.text
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert len(_children(done, "fan")) == 3
    assert standalone.logs(job["id"]) == "first\n"  # the completed first task did not run again


def test_workflow_input_errors_are_400s_that_name_the_field(standalone: Cluster) -> None:
    cases = [
        ({"tasks": [{"run": "echo {{ a + }}"}]}, "does not parse"),
        ({"tasks": [{"parallel": {"tasks": [{"run": "x", "depends_on": []}]}}]}, "depends_on"),
        ({"tasks": [{"run": "x", "parallel": {"tasks": [{"run": "y"}]}}]}, "takes no run"),
        ({"tasks": [{"image": "busybox", "run": "x", "mounts": [{"type": "tmpfs", "target": "/a/../etc"}]}]}, ".."),
        ({"tasks": [{"image": "busybox", "run": "x", "mounts": [{"type": "bind", "source": "/etc",
                                                                  "target": "/data"}]}]}, "bind mounts"),
        ({"tasks": [{"run": "x", "files": {"../evil": "x"}}]}, "plain name"),
        ({"tasks": [{"run": "x", "mounts": [{"type": "tmpfs", "target": "/t"}]}]}, "need an image"),
    ]
    for body, words in cases:
        r = standalone.client.post("/v1/jobs", json=body)
        assert r.status_code == 400, (body, r.text)
        assert words in r.text, (words, r.text)


def test_workflows_on_a_server_and_two_workers(cluster: Cluster, database_url: str) -> None:
    """The same engine on `corral server` (SQLite and PostgreSQL) with two remote workers: composites,
    outputs, conditions and a subjob in one job, then a cancel that reaches both workers."""
    cluster.start_server(database_url=database_url)
    cluster.add_worker("w1", "--runtime", "process")
    cluster.add_worker("w2", "--runtime", "process")
    job = cluster.submit({"output": "{{ tasks.n }}-{{ tasks.sub }}", "inputs": {"k": "3"}, "tasks": [
        {"name": "n", "var": "n", "run": "printf {{ inputs.k }} > $CORRAL_OUTPUT"},
        {"name": "fan", "parallel": {"tasks": [
            {"name": "each", "each": {"list": "{{ sequence(0, tasks.n | int) }}", "concurrency": 2,
                                      "task": {"run": "echo e{{ item.value }}"}}},
            {"name": "skip", "if": "{{ tasks.n == '0' }}", "run": "echo never"}]}},
        {"name": "sub", "var": "sub", "subjob": {"output": "done", "tasks": [{"run": "echo in sub"}]}}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed" and done["output"] == "3-done", done
    assert sorted(cluster.logs(job["id"]).splitlines()) == ["e0", "e1", "e2"]
    assert next(t for t in done["tasks"] if t["name"] == "skip")["state"] == "skipped"

    job = cluster.submit({"tasks": [{"name": "fan", "parallel": {"tasks": [{"run": "sleep 30"}] * 4}}]})
    wait_until(lambda: len({t["node_id"] for t in cluster.job(job["id"])["tasks"]
                            if t["state"] == "running" and t["node_id"]}) == 2, what="both workers busy")
    assert cluster.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    wait_until(lambda: all(e["state"] == "cancelled" for t in cluster.job(job["id"])["tasks"]
                           for e in t["executions"]), what="every attempt stopped")


def test_bind_mounts_only_under_the_directories_the_server_allows(cluster: Cluster, tmp_path: Path,
                                                                  busybox_image: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("from the host\n")
    cluster.up("--allow-bind-mount", str(shared))
    job = cluster.submit({"tasks": [{"image": busybox_image, "run": "cat /in/data.txt",
                                     "mounts": [{"type": "bind", "source": str(shared), "target": "/in",
                                                 "readonly": True}]}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert cluster.logs(job["id"]) == "from the host\n"
    r = cluster.client.post("/v1/jobs", json={"tasks": [{"image": busybox_image, "run": "true", "mounts": [
        {"type": "bind", "source": str(tmp_path), "target": "/in"}]}]})
    assert r.status_code == 400 and "outside the allowed directories" in r.text, r.text


def test_the_readme_workflow_runs_as_shown(standalone: Cluster) -> None:
    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("name: render frames"):]
    job = standalone.submit(yaml.safe_load(block[:block.index("```")]))
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed" and done["output"] == "done", done
    lines = standalone.logs(job["id"]).splitlines()
    assert sorted(x for x in lines if x.startswith("rendering")) == [f"rendering scene-42 frame {i}" for i in range(8)]
    assert "upload with token [REDACTED]" in lines and "test" in lines and "lint" in lines


def test_cancel_reaches_an_attached_subjob_and_restart_opens_it_again(standalone: Cluster, tmp_path: Path) -> None:
    mark = tmp_path / "sub-ran"
    pids = tmp_path / "pids"
    job = standalone.submit({"tasks": [{"name": "inner", "subjob": {"name": "child", "tasks": [
        {"run": f"echo $$ >> {pids}; sleep 3; touch {mark}"}]}}]})
    inner = wait_until(lambda: next((t for t in standalone.job(job["id"])["tasks"] if t.get("subjob_id")), None),
                       what="the subjob")
    sub_id = inner["subjob_id"]
    wait_until(lambda: standalone.job(sub_id)["tasks"][0]["state"] == "running", what="the subjob's task running")
    assert standalone.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert standalone.wait_job(sub_id)["state"] == "cancelled"
    wait_processes_gone(pids, 1)
    assert not mark.exists()  # its process was killed with it
    assert standalone.client.post(f"/v1/jobs/{job['id']}/restart").status_code == 200
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert done["tasks"][0]["subjob_id"] != sub_id and mark.exists()  # a new subjob ran


def test_a_sidecar_serves_the_task_on_localhost(standalone: Cluster, busybox_image: str) -> None:
    job = standalone.submit({"tasks": [{
        "name": "client", "image": busybox_image,
        "run": "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/hello.txt && exit 0; "
               "sleep 0.3; done; exit 1",
        "sidecars": [{"name": "web", "image": busybox_image,
                      "run": "mkdir -p /www && echo served by the sidecar > /www/hello.txt && "
                             "httpd -f -p 8080 -h /www"}]}]})
    done = standalone.wait_job(job["id"], timeout=60)
    assert done["state"] == "completed", done
    assert "served by the sidecar" in standalone.logs(job["id"])


def test_a_failure_stops_waiting_siblings_from_starting_later(cluster: Cluster, tmp_path: Path) -> None:
    """Children ready but waiting for capacity when a sibling fails are not placed afterwards; a restart
    runs them. The node offers 2 cores, whatever this machine has: five 1-core children cannot all start."""
    cluster.start_server()
    cluster.add_worker("two-cores", "--runtime", "process", "--cpus", "2")
    flag = tmp_path / "ok"
    kids = [{"name": "bad", "run": f"test -e {flag}", "resources": {"cpu": 1}}]
    kids += [{"name": f"k{i}", "run": "sleep 1", "resources": {"cpu": 1}} for i in range(4)]
    job = cluster.submit({"tasks": [{"name": "fan", "parallel": {"tasks": kids}}]})
    done = cluster.wait_job(job["id"])
    assert done["state"] == "failed", done
    # Evidence that the scheduler ran after the failure, with room on the node: another job placed and done.
    later = cluster.submit({"tasks": [{"run": "true", "resources": {"cpu": 1}}]})
    assert cluster.wait_job(later["id"])["state"] == "completed"
    after = cluster.job(job["id"])
    assert after["state"] == "failed"
    kids_after = {t["name"]: t for t in _children(after, "fan")}
    started = [t for t in kids_after.values() if t["executions"]]
    assert kids_after["bad"]["executions"] and len(started) < 5, [t["name"] for t in started]
    failed_at = kids_after["bad"]["finished_at"]  # RFC 3339 in UTC: they compare as strings
    late = [t["name"] for t in started if t["started_at"] > failed_at]
    assert not late, f"{late} started after the failure"
    assert all(t["state"] != "running" for t in after["tasks"]), [t["state"] for t in after["tasks"]]
    flag.write_text("")
    assert cluster.client.post(f"/v1/jobs/{job['id']}/restart").status_code == 200
    assert cluster.wait_job(job["id"])["state"] == "completed"


def test_an_output_that_cannot_be_evaluated_leaves_the_job_completed_and_says_why(standalone: Cluster) -> None:
    job = standalone.submit({"output": "{{ tasks.nothing }}", "tasks": [{"run": "true"}]})
    done = standalone.wait_job(job["id"])
    assert done["state"] == "completed" and done["output"] is None, done
    assert "output could not be evaluated" in done["error"] and "nothing" in done["error"]
