"""DockerRuntime against the real Docker Engine, with the local busybox test image."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from corral.runtime.base import RunRequest, RunResult
from corral.runtime.docker import DockerRuntime
from tests.support import Recorder, remove_containers

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]

NODE = f"pytest-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", autouse=True)
def _sweep(docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    remove_containers(docker_client, f"corral.node={NODE}")


@pytest.fixture
def rt(docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(docker_client)


def req(image: str, argv: list[str], **kw: Any) -> RunRequest:
    return RunRequest(execution_id=f"ex-{uuid.uuid4().hex[:12]}", job_id="job-1", task_id="task-1",
                      task_name="t", node_id=NODE, argv=argv, image=image, **kw)


def run(rt: DockerRuntime, r: RunRequest) -> tuple[RunResult, Recorder]:
    rec = Recorder()

    async def go() -> RunResult:
        result = await rt.run(r, rec.output, rec.on_started)
        assert rec.threads <= {threading.get_ident()}, "callbacks must run on the event-loop thread"
        return result

    return asyncio.run(go()), rec


def gone(client: docker.DockerClient, r: RunRequest) -> bool:
    try:
        client.containers.get(f"corral-{r.execution_id}")
    except docker.errors.NotFound:
        return True
    return False


def test_available() -> None:
    assert DockerRuntime.available() is True


def test_output_streams_and_exit_code(rt: DockerRuntime, busybox_image: str,
                                      docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["sh", "-c", "echo hi; echo oops >&2; echo two; printf 'no newline'"])
    result, rec = run(rt, r)
    assert result == RunResult(0)
    assert rec.lines("stdout") == ["hi", "two", "no newline"]
    assert rec.lines("stderr") == ["oops"]
    assert rec.events[0][0] == "started" and len(rec.events[0][1] or "") == 64  # before any output
    assert gone(docker_client, r)


def test_instant_exit_loses_nothing(rt: DockerRuntime, busybox_image: str) -> None:
    for _ in range(5):
        result, rec = run(rt, req(busybox_image, ["echo", "hi"]))
        assert result == RunResult(0) and rec.lines("stdout") == ["hi"]


def test_quick_containers_side_by_side_say_each_line_once(rt: DockerRuntime, busybox_image: str) -> None:
    """Many short containers at once, as a busy node runs them: each line comes exactly once (an attach that
    replayed the log file as well as streaming live output gave a line twice when the Engine was busy)."""
    async def go() -> list[tuple[RunResult, Recorder]]:
        recs = [Recorder() for _ in range(12)]
        results = await asyncio.gather(*(rt.run(req(busybox_image, ["sh", "-c", "echo one; echo two"]),
                                                rec.output, rec.on_started) for rec in recs))
        return list(zip(results, recs, strict=True))

    for result, rec in asyncio.run(go()):
        assert result == RunResult(0) and rec.lines("stdout") == ["one", "two"]


def test_many_lines_in_order(rt: DockerRuntime, busybox_image: str) -> None:
    result, rec = run(rt, req(busybox_image, ["seq", "1", "20000"]))
    assert result == RunResult(0)
    assert rec.lines("stdout") == [str(i) for i in range(1, 20001)]


def test_nonzero_exit(rt: DockerRuntime, busybox_image: str) -> None:
    result, _ = run(rt, req(busybox_image, ["sh", "-c", "exit 3"]))
    assert result == RunResult(3)


def test_env_workdir_and_entrypoint(rt: DockerRuntime, busybox_image: str) -> None:
    r = req(busybox_image, ["echo $GREETING; pwd"], entrypoint=["sh", "-c"],
            env={"GREETING": "hello there"}, workdir="/tmp")
    result, rec = run(rt, r)
    assert result == RunResult(0)
    assert rec.lines("stdout") == ["hello there", "/tmp"]


def test_missing_image_is_a_clear_error(rt: DockerRuntime, docker_client: docker.DockerClient) -> None:
    result, rec = run(rt, req("corral-test/does-not-exist:1", ["true"]))
    assert result.exit_code is None
    assert result.error is not None
    assert result.error.startswith("image 'corral-test/does-not-exist:1' could not be pulled: ")
    assert rec.events == []
    result, _ = run(DockerRuntime(docker_client, pull=False), req("corral-test/does-not-exist:1", ["true"]))
    assert result.exit_code is None and "not present" in (result.error or "")


def test_missing_executable_is_a_clear_error(rt: DockerRuntime, busybox_image: str,
                                             docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["no-such-program"])
    result, rec = run(rt, r)
    assert result.exit_code == 127  # as `docker run` exits
    assert result.error is not None and result.error.startswith("could not start container: ")
    assert "no-such-program" in result.error
    assert gone(docker_client, r)


def test_leftover_with_the_same_name_is_replaced(rt: DockerRuntime, busybox_image: str,
                                                 docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["echo", "fresh"])
    docker_client.containers.create(busybox_image, ["sleep", "30"], name=f"corral-{r.execution_id}")
    result, rec = run(rt, r)
    assert result == RunResult(0) and rec.lines("stdout") == ["fresh"]
    assert gone(docker_client, r)


def test_cancel_kills_and_removes(rt: DockerRuntime, busybox_image: str,
                                  docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["sh", "-c", "echo up; sleep 30"])
    rec = Recorder()

    async def go() -> None:
        task = asyncio.create_task(rt.run(r, rec.output, rec.on_started))
        await asyncio.wait_for(rec.started.wait(), 20)
        assert not gone(docker_client, r)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 10

    asyncio.run(go())
    assert gone(docker_client, r)


def test_limits_and_hardening_applied(rt: DockerRuntime, busybox_image: str,
                                      docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["sleep", "5"], memory_limit=64 * 1024 * 1024, cpu_limit=0.5)
    rec = Recorder()
    seen: dict[str, Any] = {}

    async def go() -> None:
        task = asyncio.create_task(rt.run(r, rec.output, rec.on_started))
        await asyncio.wait_for(rec.started.wait(), 20)
        c = docker_client.containers.get(f"corral-{r.execution_id}")
        seen.update(host=c.attrs["HostConfig"], labels=c.labels, state=c.attrs["State"]["Status"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    host = seen["host"]
    assert seen["state"] == "running"
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 512
    expected = {"corral.execution": r.execution_id, "corral.job": "job-1",
                "corral.task": "task-1", "corral.node": NODE, "corral.task_name": "t"}
    assert expected.items() <= seen["labels"].items()
    assert gone(docker_client, r)


def test_timeout_removes_the_container(rt: DockerRuntime, busybox_image: str,
                                       docker_client: docker.DockerClient) -> None:
    r = req(busybox_image, ["sleep", "30"])

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rt.run(r, lambda s, line: None, lambda cid: None), 2)

    asyncio.run(go())
    assert gone(docker_client, r)


def test_reap_removes_leftovers_but_keeps_the_kept(rt: DockerRuntime, busybox_image: str,
                                                   docker_client: docker.DockerClient) -> None:
    node = f"{NODE}-reap"
    made = []
    for ex in ("ex-left", "ex-kept"):
        c = docker_client.containers.run(
            busybox_image, ["sleep", "30"], detach=True, name=f"corral-{node}-{ex}",
            labels={"corral.node": node, "corral.execution": ex})
        made.append(c)
    try:
        removed = asyncio.run(rt.reap(node, keep={"ex-kept"}))
        assert removed == ["ex-left"]
        left = docker_client.containers.list(all=True, filters={"label": f"corral.node={node}"})
        names = {c.name for c in left}
        assert names == {f"corral-{node}-ex-kept"}
    finally:
        for c in made:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


@pytest.mark.gpu
def test_a_gpu_task_asks_the_engine_for_exactly_its_gpus(rt: DockerRuntime, busybox_image: str,
                                                       docker_client: docker.DockerClient) -> None:
    """What the engine is asked for, read where it is asked (the create call): a device request for the GPUs
    the coordinator assigned, by index, and no other. Without NVIDIA support in the engine the task fails
    with the engine's reason and leaves no container (with it, that last part is skipped, saying so)."""
    asked: list[dict[str, Any]] = []
    create = rt.client.api.create_container

    def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("host_config") or {})
        return create(*args, **kwargs)

    rt.client.api.create_container = spy  # type: ignore[method-assign]
    r = req(busybox_image, ["true"], gpus=(1, 3))
    result, _ = run(rt, r)
    assert asked and asked[0].get("DeviceRequests") == [
        {"Driver": "", "Count": 0, "DeviceIDs": ["1", "3"], "Capabilities": [["gpu"]], "Options": {}}]
    plain, _ = run(rt, req(busybox_image, ["true"]))
    assert plain == RunResult(0) and asked[-1].get("DeviceRequests") is None  # no GPU asked: none requested
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has NVIDIA support: a run inside a GPU container is not checked here")
    assert result.exit_code is None and "capabilities: [[gpu]]" in (result.error or ""), result
    assert gone(docker_client, r)
