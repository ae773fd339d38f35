"""Workflow features on the worker side, with real processes and a real Docker Engine: a task's output and
progress files, files written into its working directory, mounts, sidecars, and that nothing is left
behind. The runtimes are driven directly, and the Agent through a transport that only records."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from corral.agent.worker import Agent, AgentConfig
from corral.runtime import scratch
from corral.runtime.base import Mount, RunRequest, RunResult, Runtime, Sidecar
from corral.runtime.docker import DockerRuntime
from corral.runtime.process import ProcessRuntime
from tests.support import Recorder, RecordingTransport, remove_containers

pytestmark = pytest.mark.timeout(60)

NODE = f"pytest-{uuid.uuid4().hex[:8]}"
WEB = Sidecar(name="web", image="", argv=[
    "sh", "-c", "mkdir -p /tmp/www && echo hello from the sidecar > /tmp/www/index.html && echo serving"
                " && exec httpd -f -p 8080 -h /tmp/www"])
# Retries, as any client of a sidecar should: it may not listen yet when the main container starts.
FETCH = "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; exit 1"


@pytest.fixture(scope="module")
def _sweep(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    remove_containers(docker_client, f"corral.node={NODE}")


@pytest.fixture
def drt(docker_client: docker.DockerClient, _sweep: None) -> DockerRuntime:
    return DockerRuntime(docker_client)


def request(tmp: Path, argv: list[str], own_dir: bool = True, **kw: Any) -> RunRequest:
    """A request with its scratch made as the Agent makes it: a directory of its own, or files in a shared one."""
    ex = f"ex-{uuid.uuid4().hex[:12]}"
    base = tmp / "executions"
    base.mkdir(exist_ok=True)
    return RunRequest(execution_id=ex, job_id="job-1", task_id="task-1", task_name="t", node_id=NODE, argv=argv,
                      scratch=scratch.make(str(base), ex, own_dir), **kw)


def output(req: RunRequest) -> str | None:
    assert req.scratch is not None
    return scratch.read_output(req.scratch.output)


def run(rt: Runtime, req: RunRequest, rec: Recorder | None = None) -> tuple[RunResult, Recorder]:
    rec = rec or Recorder()
    return asyncio.run(rt.run(req, rec.output, rec.on_started)), rec


def containers_of(client: docker.DockerClient, req: RunRequest) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"corral.execution={req.execution_id}"}))


# -- host processes -------------------------------------------------------------------------------
def test_process_output_and_files_in_scratch_work(tmp_path: Path) -> None:
    req = request(tmp_path, ["sh", "-c", "cat hello.txt; pwd; echo -n 42 > $TORK_OUTPUT; test \"$CORRAL_OUTPUT\""
                             " = \"$TORK_OUTPUT\" && echo 50 > $CORRAL_PROGRESS"],
                  files={"hello.txt": "hi there\n"})
    assert req.scratch is not None and req.scratch.dir is not None
    result, rec = run(ProcessRuntime(), req)
    assert result == RunResult(0)
    assert rec.stdout() == ["hi there", os.path.join(req.scratch.dir, "work")]
    assert output(req) == "42"
    assert scratch.read_progress(req.scratch.progress) == 50.0
    scratch.remove(req.scratch)
    assert not os.path.exists(req.scratch.dir)


def test_process_output_without_a_directory_of_its_own(tmp_path: Path) -> None:
    req = request(tmp_path, ["sh", "-c", "printf 'two\\nlines\\n' > $CORRAL_OUTPUT; echo 9 > $TORK_PROGRESS"],
                  own_dir=False)
    assert req.scratch is not None and req.scratch.dir is None
    result, _ = run(ProcessRuntime(), req)
    assert result == RunResult(0) and output(req) == "two\nlines\n"
    assert scratch.read_progress(req.scratch.progress) == 9.0
    base = str(tmp_path / "executions")
    assert scratch.sweep(base, {req.execution_id}) == 0  # still running: kept
    assert scratch.sweep(base, set()) == 2 and os.listdir(base) == []


def test_process_files_go_to_the_given_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "made" / "here"
    req = request(tmp_path, ["sh", "-c", "pwd; cat a.txt b.txt"], files={"a.txt": "one\n", "b.txt": "two"},
                  workdir=str(workdir))
    result, rec = run(ProcessRuntime(), req)
    assert result == RunResult(0)
    assert rec.stdout() == [str(workdir), "one", "two"]
    assert output(req) is None  # nothing written


def test_process_task_refuses_mounts(tmp_path: Path) -> None:
    result, _ = run(ProcessRuntime(), request(tmp_path, ["true"], mounts=(Mount("tmpfs", "/x"),)))
    assert result.exit_code is None and "container" in (result.error or "")


def test_progress_junk_is_ignored(tmp_path: Path) -> None:
    for text, want in [("42.5\n", 42.5), ("100", 100.0), ("101", None), ("-1", None), ("nan", None),
                       ("half", None), ("", None), ("7" * 100, None)]:
        (tmp_path / "progress").write_text(text)
        assert scratch.read_progress(str(tmp_path / "progress")) == want, text


# -- containers -------------------------------------------------------------------------------------
@pytest.mark.docker
def test_container_output_and_files(drt: DockerRuntime, busybox_image: str, tmp_path: Path,
                                    docker_client: docker.DockerClient) -> None:
    req = request(tmp_path, ["sh", "-c", "cat hello.txt; pwd; echo -n 42 > $TORK_OUTPUT; echo 7 > $TORK_PROGRESS"],
                  image=busybox_image, files={"hello.txt": "hi from a file\n"})
    assert req.scratch is not None
    result, rec = run(drt, req)
    assert result == RunResult(0)
    assert rec.stdout() == ["hi from a file", "/corral/work"]
    assert output(req) == "42"
    assert scratch.read_progress(req.scratch.progress) == 7.0
    assert containers_of(docker_client, req) == []
    # With a workdir of its own, the files are there.
    req = request(tmp_path, ["sh", "-c", "pwd; cat hello.txt; echo -n done > $CORRAL_OUTPUT"], image=busybox_image,
                  files={"hello.txt": "hi again\n"}, workdir="/data/in")
    result, rec = run(drt, req)
    assert result == RunResult(0) and rec.stdout() == ["/data/in", "hi again"]
    assert output(req) == "done"


@pytest.mark.docker
def test_mounts(drt: DockerRuntime, busybox_image: str, tmp_path: Path,
                docker_client: docker.DockerClient) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "hello.txt").write_text("from the host")
    script = ("echo a > /t/f && cat /t/f && echo b > /vol/f && cat /vol/f && cat /host/hello.txt"
              " && if echo no > /host/x; then echo WROTE; fi")
    req = request(tmp_path, ["sh", "-c", script], image=busybox_image,
                  mounts=(Mount("tmpfs", "/t"), Mount("volume", "/vol"), Mount("bind", "/host", str(host), True)),
                  bind_roots=(str(tmp_path),))
    rec = Recorder()

    def volumes(cid: str | None) -> list[str]:
        mounts = docker_client.api.inspect_container(cid)["Mounts"]
        return [m["Name"] for m in mounts if m["Type"] == "volume"]

    rec.on_start = volumes
    result, rec = run(drt, req, rec)
    assert result == RunResult(0), rec.events
    assert rec.stdout() == ["a", "b", "from the host"]
    assert not (host / "x").exists()
    assert len(rec.at_start) == 1
    with pytest.raises(docker.errors.NotFound):  # the anonymous volume went with the container
        docker_client.volumes.get(rec.at_start[0])


@pytest.mark.docker
def test_sidecar_is_reachable_and_removed(drt: DockerRuntime, busybox_image: str, tmp_path: Path,
                                          docker_client: docker.DockerClient) -> None:
    req = request(tmp_path, ["sh", "-c", FETCH], image=busybox_image,
                  sidecars=(Sidecar(WEB.name, busybox_image, WEB.argv),))
    rec = Recorder()
    rec.on_start = lambda cid: len(containers_of(docker_client, req))
    result, rec = run(drt, req, rec)
    assert result == RunResult(0), rec.events
    assert "hello from the sidecar" in rec.stdout()
    assert ("stdout", "[sidecar web] serving") in rec.events
    assert rec.at_start == 2  # the sidecar and the main container
    assert containers_of(docker_client, req) == []


@pytest.mark.docker
def test_missing_sidecar_image_fails_the_attempt(tmp_path: Path, busybox_image: str,
                                                 docker_client: docker.DockerClient, _sweep: None) -> None:
    req = request(tmp_path, ["true"], image=busybox_image,
                  sidecars=(Sidecar("db", "corral-test/does-not-exist:1", ["true"]),))
    result, _ = run(DockerRuntime(docker_client, pull=False), req)
    assert result.exit_code is None and "sidecar 'db'" in (result.error or "")
    assert containers_of(docker_client, req) == []


@pytest.mark.docker
def test_cancel_and_reap_remove_main_and_sidecars(drt: DockerRuntime, busybox_image: str, tmp_path: Path,
                                                  docker_client: docker.DockerClient) -> None:
    sidecars = (Sidecar("a", busybox_image, ["sleep", "60"]), Sidecar("b", busybox_image, ["sleep", "60"]))

    async def go() -> None:
        # A cancel (a timeout, or the coordinator's stop) removes the main container and its sidecars.
        req = request(tmp_path, ["sleep", "60"], image=busybox_image, sidecars=sidecars,
                      mounts=(Mount("volume", "/vol"),))
        rec = Recorder()
        task = asyncio.create_task(drt.run(req, rec.output, rec.on_started))
        await asyncio.wait_for(rec.started.wait(), 20)
        assert len(containers_of(docker_client, req)) == 3
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 10
        assert containers_of(docker_client, req) == []
        # What a crashed worker left, sidecars included, goes with reap(); the kept execution stays.
        left, kept = f"ex-{uuid.uuid4().hex[:12]}", f"ex-{uuid.uuid4().hex[:12]}"
        for ex, sidecar in [(left, None), (left, "a"), (left, "b"), (kept, None), (kept, "a")]:
            labels = {"corral.node": NODE, "corral.execution": ex, **({"corral.sidecar": sidecar} if sidecar else {})}
            docker_client.containers.run(busybox_image, ["sleep", "60"], labels=labels, detach=True,
                                         volumes=["/vol"])
        by_ex = {"label": f"corral.node={NODE}"}
        assert await drt.reap(NODE, {kept}) == [left]
        assert sorted(c.labels.get("corral.sidecar", "") for c in docker_client.containers.list(
            all=True, filters=by_ex)) == ["", "a"]
        assert await drt.reap(NODE, set()) == [kept]
        assert docker_client.containers.list(all=True, filters=by_ex) == []

    asyncio.run(go())


# -- through the Agent ----------------------------------------------------------------------------------
def assignment(ex: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    return {"execution_id": ex, "job_id": "job-1", "task_id": f"task-{ex}", "task_name": "t", "attempt": 1,
            "argv": argv, "env": {}, "workdir": None, "timeout": None, "cpu_limit": None, "memory_limit": None,
            "gpus": [], **kw}


def run_agent(tmp: Path, work: list[dict[str, Any]], runtimes: dict[str, Runtime]) -> RecordingTransport:
    transport = RecordingTransport(work, node_id=NODE)

    async def go() -> None:
        agent = Agent(AgentConfig(data_dir=str(tmp / "worker"), gpus=[], poll_wait=0.2), transport, runtimes)
        await agent.start()
        try:
            deadline = time.monotonic() + 30
            while any(transport.final(w["execution_id"]) is None for w in work) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 3  # a progress file goes with the next sweep, within a second
            while os.listdir(agent.scratch_base) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert os.listdir(agent.scratch_base) == []  # every scratch file and directory removed
        finally:
            await agent.stop()

    asyncio.run(go())
    return transport


def test_agent_sends_output_and_progress(tmp_path: Path) -> None:
    leftover = tmp_path / "worker" / "executions" / "old"  # a crashed worker's: gone at start
    leftover.mkdir(parents=True)
    (leftover / "output").write_text("stale")
    work = [
        assignment("slow", ["sh", "-c", "echo 30 > $TORK_PROGRESS; sleep 1.6; echo junk > $CORRAL_PROGRESS; sleep 1;"
                            " echo 62.5 > $CORRAL_PROGRESS; sleep 1.8; printf 'done\\n' > $TORK_OUTPUT"]),
        assignment("files", ["sh", "-c", "cat hello.txt > $CORRAL_OUTPUT"], files={"hello.txt": "hello"}),
        assignment("quiet", ["true"]),
        assignment("fails", ["sh", "-c", "echo -n partial > $TORK_OUTPUT; exit 3"]),
    ]
    t = run_agent(tmp_path, work, {"process": ProcessRuntime()})
    progress = [u["progress"] for u in t.updates if u["execution_id"] == "slow" and u.get("progress") is not None]
    assert progress == [30.0, 62.5]
    assert all(u["state"] == "running" for u in t.updates if u.get("progress") is not None)
    assert t.final("slow") == {**(t.final("slow") or {}), "state": "completed", "output": "done\n"}
    assert (t.final("files") or {}).get("output") == "hello"
    assert "output" not in (t.final("quiet") or {"output": 1})
    assert t.final("fails") == {**(t.final("fails") or {}), "state": "failed", "exit_code": 3, "output": "partial"}
    assert not leftover.exists()


@pytest.mark.docker
def test_agent_container_task(tmp_path: Path, drt: DockerRuntime, busybox_image: str,
                              docker_client: docker.DockerClient) -> None:
    script = f"({FETCH}) > /dev/null && cat in.txt > $TORK_OUTPUT"
    work = [assignment("box-" + uuid.uuid4().hex[:8], ["sh", "-c", script],
                       image=busybox_image, files={"in.txt": "42"}, mounts=[
                           {"type": "tmpfs", "target": "/t", "source": None, "readonly": False}],
                       sidecars=[{"name": "web", "image": busybox_image, "argv": WEB.argv, "entrypoint": None,
                                  "env": {}}])]
    t = run_agent(tmp_path, work, {"docker": drt})
    final = t.final(work[0]["execution_id"]) or {}
    assert final.get("state") == "completed" and final.get("output") == "42", (final, t.logs)
    assert any(ln["line"] == "[sidecar web] serving" for ln in t.logs)
    assert docker_client.containers.list(all=True, filters={"label": f"corral.execution={work[0]['execution_id']}"}) \
        == []
