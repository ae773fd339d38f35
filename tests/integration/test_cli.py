"""The `corral` client commands, run as real subprocesses against a real standalone server."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner, Result

from corral.cli.main import build
from tests.harness import Cluster, free_port, token_env, wait_until
from tests.support import corral

COMMANDS = build()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def standalone(module_standalone: Cluster) -> Cluster:
    """One `corral up` for the module (tests/conftest.py): each test looks only at its own jobs (the two that
    look at every job have a server of their own)."""
    return module_standalone


def running(cluster: Cluster, job_id: str) -> dict[str, object]:
    return cluster.wait_job(job_id, {"running"}, timeout=15)


def test_run_host_process_streams_both_streams_and_exits_with_the_task_code(standalone: Cluster) -> None:
    r = corral("run", "--", "sh", "-c", "echo out; echo err >&2; exit 3", server=standalone.url)
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["out"]
    assert "err" in r.stderr.splitlines()
    # The job is a real one-task job with the argv as its command.
    job = standalone.client.get("/v1/jobs").json()["items"][0]
    task = standalone.job(job["id"])["tasks"][0]
    assert task["command"] == ["sh", "-c", "echo out; echo err >&2; exit 3"] and task["image"] is None


@pytest.mark.docker
def test_run_of_a_missing_command_in_an_image_exits_127(standalone: Cluster, busybox_image: str) -> None:
    r = corral("run", "--image", busybox_image, "--", "no-such-program-here", server=standalone.url)
    assert r.returncode == 127 and "no-such-program-here" in r.stderr, r.stderr
    job = standalone.client.get("/v1/jobs").json()["items"][0]
    assert standalone.job(job["id"])["tasks"][0]["exit_code"] == 127


@pytest.mark.docker
def test_run_with_an_image_prints_the_container_output(standalone: Cluster, busybox_image: str) -> None:
    r = corral("run", "--image", busybox_image, "-e", "GREETING=hello", "--name", "greet", "--",
               "sh", "-c", "echo $GREETING from the container", server=standalone.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from the container"
    job = standalone.client.get("/v1/jobs", params={"q": "greet"}).json()["items"][0]
    assert standalone.job(job["id"])["tasks"][0]["runtime"] == "docker"


def test_run_exits_as_the_shell_would(standalone: Cluster) -> None:
    """A timeout exits 124 (as `timeout`), a command that is not there 127 (as a shell and `docker run`), each
    with the error said on stderr; a bad option 2."""
    r = corral("run", "--timeout", "0.5s", "--", "sleep", "10", server=standalone.url)
    assert r.returncode == 124
    assert "error:" in r.stderr and "timed out" in r.stderr
    missing = corral("run", "--", "no-such-program-here", server=standalone.url)
    assert missing.returncode == 127 and "no-such-program-here" in missing.stderr, missing.stderr
    bad = corral("run", "--memory", "lots", "--", "true", server=standalone.url)
    assert bad.returncode == 2 and "--memory" in bad.stderr


def test_the_short_ids_tables_show_are_accepted(standalone: Cluster) -> None:
    jobs = [standalone.submit({"name": f"short-{i}", "tasks": [{"run": "echo hi"}]}) for i in range(3)]
    job = jobs[0]
    standalone.wait_job(job["id"])
    short = job["id"][:12]
    got = corral("jobs", "get", short, "-o", "json", server=standalone.url)
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == job["id"], got.stderr
    logs = corral("jobs", "logs", short, server=standalone.url)
    assert logs.returncode == 0 and logs.stdout.splitlines() == ["hi"]
    # The API's filter behind it: every job whose id starts so, and only those.
    first = job["id"][0]
    listed = standalone.client.get("/v1/jobs", params={"id_prefix": first, "limit": 1000}).json()["items"]
    assert job["id"] in {j["id"] for j in listed} and all(j["id"].startswith(first) for j in listed)
    assert standalone.client.get("/v1/jobs", params={"id_prefix": "XYZ"}).status_code == 400
    unknown = next(p for p in ("ffff0000", "0000ffff", "abcd0123") if not any(j["id"].startswith(p) for j in jobs))
    missing = corral("jobs", "get", unknown, server=standalone.url)
    assert missing.returncode == 1 and f"starts with '{unknown}'" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1


def test_a_long_message_on_a_piped_stderr_stays_on_one_line(standalone: Cluster, tmp_path: Path) -> None:
    """CI logs: a failure's last line is not cut at 80 columns when stderr is not a terminal."""
    name = "a-task-with-a-rather-long-name-" + "x" * 60
    job_file = tmp_path / "long.yaml"
    job_file.write_text(f"name: long\ntasks:\n  - name: {name}\n    run: exit 3\n")
    r = corral("submit", str(job_file), "--wait", server=standalone.url, env={"COLUMNS": ""})
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("job ") and "failed" in last and name in last, r.stderr


def test_submit_wait_then_ls_get_and_logs(standalone: Cluster, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "name: pipeline\n"
        "tags: [cli-test]\n"
        "tasks:\n"
        "  - name: first\n"
        "    run: echo one; echo two\n"
        "  - name: second\n"
        "    command: [sh, -c, 'echo three; echo four']\n"
    )
    r = corral("submit", str(job_file), "--wait", server=standalone.url)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert len(job_id) == 32
    assert "completed" in r.stderr

    listing = corral("jobs", "ls", "-o", "json", "--tag", "cli-test", server=standalone.url)
    assert listing.returncode == 0, listing.stderr
    items = json.loads(listing.stdout)["items"]
    assert [(j["id"], j["state"], j["task_count"]) for j in items] == [(job_id, "completed", 2)]

    table = corral("jobs", "ls", server=standalone.url)
    assert job_id[:12] in table.stdout and "pipeline" in table.stdout and "completed" in table.stdout

    get = corral("jobs", "get", job_id, server=standalone.url)
    assert get.returncode == 0, get.stderr
    for text in (job_id, "pipeline", "first", "second", "local"):
        assert text in get.stdout
    raw = corral("jobs", "get", job_id, "-o", "json", server=standalone.url)
    assert json.loads(raw.stdout)["id"] == job_id

    logs = corral("jobs", "logs", job_id, server=standalone.url)
    assert logs.stdout.splitlines() == ["one", "two", "three", "four"]
    tail = corral("jobs", "logs", job_id, "--tail", "1", server=standalone.url)
    assert tail.returncode == 0 and tail.stdout.splitlines() == ["four"]


def test_submit_follow_streams_output_and_fails_like_wait(standalone: Cluster) -> None:
    job = json.dumps({"name": "follow", "tasks": [{"run": "echo before; echo oops >&2; exit 4"}]})
    r = corral("submit", "-", "--follow", stdin=job, server=standalone.url)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert len(lines[0]) == 32 and lines[1:] == ["before"]
    assert "oops" in r.stderr and "failed" in r.stderr


def test_cancel_restart_and_rm(standalone: Cluster) -> None:
    r = corral("run", "--detach", "--", "sh", "-c", "echo started; sleep 30", server=standalone.url)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    running(standalone, job_id)

    busy = corral("jobs", "rm", job_id, server=standalone.url)
    assert busy.returncode == 1 and "cancel it" in busy.stderr

    cancel = corral("jobs", "cancel", job_id, server=standalone.url)
    assert cancel.returncode == 0, cancel.stderr
    assert standalone.wait_job(job_id, timeout=15)["state"] == "cancelled"
    again = corral("jobs", "cancel", job_id, server=standalone.url)
    assert again.returncode == 1 and "already cancelled" in again.stderr

    restart = corral("jobs", "restart", job_id, server=standalone.url)
    assert restart.returncode == 0, restart.stderr
    running(standalone, job_id)
    corral("jobs", "cancel", job_id, server=standalone.url)
    standalone.wait_job(job_id, timeout=15)

    rm = corral("jobs", "rm", job_id, server=standalone.url)
    assert rm.returncode == 0, rm.stderr
    gone = corral("jobs", "get", job_id, server=standalone.url)
    assert gone.returncode == 1 and f"no job with id '{job_id}'" in gone.stderr


def test_run_reports_a_cancelled_job_with_130(cluster: Cluster) -> None:
    standalone = cluster.up()  # the only job that runs is the one `corral run` submits
    proc = subprocess.Popen([sys.executable, "-m", "corral", "run", "--server", standalone.url, "--",
                             "sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **token_env(standalone.url)})
    try:
        job_id = wait_until(lambda: [j["id"] for j in standalone.client.get("/v1/jobs").json()["items"]
                                     if j["state"] == "running"], 15, what="the job to run")[0]
        assert standalone.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "cancelled" in err


def test_nodes_and_queues(standalone: Cluster) -> None:
    nodes = corral("nodes", server=standalone.url)
    assert nodes.returncode == 0, nodes.stderr
    assert "local" in nodes.stdout and "ready" in nodes.stdout
    raw = json.loads(corral("nodes", "-o", "json", server=standalone.url).stdout)
    assert raw["items"][0]["name"] == "local"

    queues = corral("queues", server=standalone.url)
    assert queues.returncode == 0 and "default" in queues.stdout
    raw = json.loads(corral("queues", "-o", "json", server=standalone.url).stdout)
    assert raw["items"][0]["workers"] == 1


def test_server_flag_wins_over_the_environment(standalone: Cluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    token = token_env(standalone.url)
    r = corral("jobs", "ls", "--server", standalone.url, server=dead, env=token)
    assert r.returncode == 0, r.stderr
    r = corral("run", "--server", standalone.url, "--", "echo", "flag", server=dead, env=token)
    assert r.returncode == 0 and r.stdout.strip() == "flag"


def test_a_bad_job_file_exits_2_naming_the_bad_field(cluster: Cluster, tmp_path: Path) -> None:
    standalone = cluster.up()  # an empty server: no job may be made
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - run: echo hi\n    resources: {memory: lots}\n    colour: red\n")
    r = corral("submit", str(bad), server=standalone.url)
    assert r.returncode == 2
    assert "not a valid job" in r.stderr
    assert "tasks.0.resources.memory" in r.stderr and "tasks.0.colour: unknown field" in r.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    r = corral("submit", str(broken), server=standalone.url)
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "line 2" in r.stderr

    r = corral("jobs", "ls", "--state", "sleeping", server=standalone.url)
    assert r.returncode == 2 and "unknown state 'sleeping'" in r.stderr
    assert standalone.client.get("/v1/jobs").json()["total"] == 0


def test_an_unreachable_server_gives_a_clear_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs", "ls"], ["nodes"], ["run", "--", "true"], ["jobs", "logs", "x", "-f"]):
        r = corral(*args, server=dead)
        assert r.returncode == 1, (args, r.stderr)
        assert f"cannot reach the Corral server at {dead}" in r.stderr
        assert "corral up" in r.stderr


def test_jobs_logs_follow_streams_a_live_job_until_it_ends(standalone: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = standalone.submit({"tasks": [{"run": f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; "
                                               "echo second; echo problem >&2"}]})
    wait_until(lambda: standalone.logs(job["id"]) == "first\n", 15, what="the first line")
    proc = subprocess.Popen([sys.executable, "-m", "corral", "jobs", "logs", "-f", job["id"], "--server",
                             standalone.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **token_env(standalone.url)})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no line from `jobs logs -f` within 20 s"
        assert proc.stdout.readline() == "first\n"
        assert proc.poll() is None and standalone.job(job["id"])["state"] == "running"  # still following
        go.touch()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "second\n", (out, err)  # stdout to stdout, stderr to stderr, each line once
    assert "problem" in err.splitlines() and "first" not in err, err


# -- one `corral up --label arch=amd64 --queue default --queue cli-q` for the tests below; the commands run
# in-process (click's CliRunner: the same code path as `corral`, without a process start each).


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cli-labelled"))
    c.up("--label", "arch=amd64", "--queue", "default", "--queue", "cli-q")
    yield c
    c.close()


def invoke(c: Cluster, *args: str) -> Result:
    env = {"CORRAL_SERVER": c.url, "COLUMNS": "", **token_env(c.url)}
    return CliRunner().invoke(COMMANDS, list(args), env=env, prog_name="corral", catch_exceptions=False)


def test_up_takes_labels_and_queues_and_nodes_get_shows_them(labelled: Cluster) -> None:
    got = invoke(labelled, "nodes", "get", "local")
    assert got.exit_code == 0, got.output
    assert "arch=amd64" in got.output and "cli-q" in got.output and "ready" in got.output
    node_id = labelled.client.get("/v1/nodes").json()["items"][0]["id"]
    assert "arch=amd64" in invoke(labelled, "nodes", "get", node_id[:8]).output  # an id prefix too
    # The README's job example (node_selector: {arch: amd64}) runs on such a `corral up`.
    job = labelled.submit({"tasks": [{"run": "echo placed", "node_selector": {"arch": "amd64"},
                                      "queue": "cli-q"}]})
    assert labelled.wait_job(job["id"])["state"] == "completed"
    unknown = invoke(labelled, "nodes", "get", "no-such-node")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1 and "no-such-node" in unknown.output


def test_submit_follow_says_why_a_task_waits(labelled: Cluster, tmp_path: Path) -> None:
    job_file = tmp_path / "arm.yaml"
    job_file.write_text("name: arm\ntasks:\n  - name: build\n    run: echo never\n"
                        "    node_selector: {arch: arm64}\n")
    proc = subprocess.Popen([sys.executable, "-m", "corral", "submit", str(job_file), "--follow", "--server",
                             labelled.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **token_env(labelled.url)})
    try:
        assert proc.stdout is not None and proc.stderr is not None
        job_id = proc.stdout.readline().strip()
        seen = []
        while not any("pending: no node matches node_selector arch=arm64" in line for line in seen):
            ready, _, _ = select.select([proc.stderr], [], [], 20)
            assert ready, f"no reason shown within 20 s: {seen}"
            seen.append(proc.stderr.readline())
        assert labelled.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "cancelled" in err, err


def test_short_ids_of_schedules_and_a_workflow_tree(labelled: Cluster, tmp_path: Path) -> None:
    sch = labelled.client.post("/v1/schedules", json={"cron": "@yearly", "job": {"tasks": [{"run": "true"}]}})
    assert sch.status_code == 201, sch.text
    sid = sch.json()["id"]
    got = invoke(labelled, "schedules", "get", sid[:12], "-o", "json")
    assert got.exit_code == 0 and json.loads(got.output)["id"] == sid, got.output
    job = labelled.submit({"name": "flow", "tasks": [
        {"name": "prepare", "run": "echo prepared"},
        {"name": "checks", "parallel": {"tasks": [{"name": "check", "run": "echo one"},
                                                   {"name": "check", "run": "echo two; exit 3"}]}}]})
    labelled.wait_job(job["id"])
    tree = invoke(labelled, "jobs", "get", job["id"][:12])
    assert tree.exit_code == 0, tree.output
    assert "checks (parallel)" in tree.output and "├─ check" in tree.output and "└─ check#2" in tree.output
    assert "local" in tree.output  # where each step ran
    logs = invoke(labelled, "jobs", "logs", job["id"][:12], "--task", "prepare", "--timestamps", "--since", "1h")
    assert logs.exit_code == 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT\S+ prepared\n", logs.output), logs.output
    prefixed = invoke(labelled, "jobs", "logs", job["id"], "--prefix")
    assert "prepare | prepared" in prefixed.output, prefixed.output
    none = invoke(labelled, "jobs", "logs", job["id"], "--task", "nope")
    assert none.exit_code == 1 and "has no task 'nope'" in none.output


def test_top_watch_and_completion_of_ids(labelled: Cluster) -> None:
    top = invoke(labelled, "top", "--count", "1")
    assert top.exit_code == 0 and "NODES" in top.output and "local" in top.output and "cli-q" in top.output
    job = labelled.submit({"name": "watched", "tasks": [{"run": "true"}]})
    watched = invoke(labelled, "jobs", "ls", "--watch", "--count", "1", "-q", "watched")
    assert watched.exit_code == 0 and job["id"][:12] in watched.output, watched.output
    os.environ.update(token_env(labelled.url))  # completion runs inside the shell's `corral`, with its env
    try:
        items = ShellComplete(COMMANDS, {}, "corral", "_CORRAL_COMPLETE").get_completions(
            ["jobs", "get", "--server", labelled.url], job["id"][:6])
    finally:
        os.environ.pop("CORRAL_API_TOKEN", None)
    assert job["id"] in [i.value for i in items]
