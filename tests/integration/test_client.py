"""corral.client against a real `corral up --runtime process`: the examples of docs/client.md (run as the
scripts a user would write), and what they do not show: every page of a listing, logs that follow a running
task, errors, the async client, pods. (The CLI speaks through the same client: tests/integration/test_cli.py.)"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client import AsyncClient, Client, Conflict, NotFound, Unauthorized, WaitTimeout
from tests.harness import Cluster

pytestmark = pytest.mark.timeout(90)
DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("client"))
    try:
        yield c.up("--runtime", "process")
    finally:  # a server that did not get ready in time is stopped too
        c.close()


@pytest.fixture
def client(server: Cluster) -> Iterator[Client]:
    with Client(server.url, token=server.token) as c:
        yield c


def doc_examples() -> list[str]:
    """The ```python blocks of docs/client.md (not those marked ```python norun)."""
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_examples_of_docs_client_md_run(server: Cluster, tmp_path: Path) -> None:
    blocks = doc_examples()
    assert len(blocks) >= 6
    env = {**os.environ, "CORRAL_SERVER": server.url, "CORRAL_API_TOKEN": server.token or ""}
    scripts = []
    for i, code in enumerate(blocks):
        scripts.append(tmp_path / f"example_{i}.py")  # a file: @corral.task reads the function's source from it
        scripts[-1].write_text(code)
    # One interpreter runs them one after the other, each as its own __main__ (python example_N.py).
    run_all = "import runpy, sys\nfor p in sys.argv[1:]:\n    print('--', p, flush=True)\n    " \
              "runpy.run_path(p, run_name='__main__')"
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", run_all, *map(str, scripts)], capture_output=True, text=True,
                       env=env, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, f"an example of docs/client.md failed (the last one started):\n{r.stdout}\n{r.stderr}"
    assert r.stdout.count("-- ") == len(blocks)
    assert time.monotonic() - started < 30


def test_list_iterates_every_page_and_filters(client: Client) -> None:
    tag = f"pages-{time.monotonic_ns()}"
    ids = {client.submit({"name": "p", "tags": [tag], "tasks": [{"run": "true"}]})["id"] for _ in range(7)}
    assert {j["id"] for j in client.list(tag=tag, page_size=3)} == ids  # three pages
    assert [j["id"] for j in client.list(tag=tag, q="no-such-name")] == []
    short = next(iter(ids))[:12]
    assert client.get(short)["id"].startswith(short)  # the short ids tables show


def test_logs_follow_a_running_task_and_wait_times_out(client: Client) -> None:
    job = client.submit({"name": "follow", "tasks": [
        {"name": "a", "run": "echo first; sleep 1; echo second"}, {"name": "b", "run": "echo other"}]})
    with pytest.raises(WaitTimeout) as e:
        client.wait(job["id"], timeout=0.2)
    assert e.value.job["state"] in {"pending", "scheduled", "running"}
    seen: list[tuple[str, float]] = []
    for line in client.logs(job["id"], task="a"):
        seen.append((line["line"], time.monotonic()))
    assert [x for x, _ in seen] == ["first", "second"]
    assert seen[1][1] - seen[0][1] > 0.5  # streamed as printed, not read once at the end
    assert client.get(job["id"])["state"] == "completed"  # following ended with the job


def test_errors_carry_the_problem_and_the_token_is_needed(server: Cluster, client: Client) -> None:
    job = client.submit({"tasks": [{"run": "sleep 30"}]})
    with pytest.raises(Conflict):
        client.delete(job["id"])  # still running
    assert client.cancel(job["id"])["state"] in {"cancelled", "cancelling"}
    done = client.wait(job["id"], timeout=20)
    assert done["state"] == "cancelled"
    assert client.restart(job["id"])["state"] in {"pending", "scheduled", "running"}
    client.cancel(job["id"])
    client.wait(job["id"], timeout=20)
    client.delete(job["id"])
    with pytest.raises(NotFound) as e:
        client.get(job["id"])
    assert e.value.status == 404 and job["id"] in e.value.detail
    with Client(server.url, token="wrong") as bad, pytest.raises(Unauthorized):
        bad.nodes()


def test_the_async_client(server: Cluster) -> None:
    async def main() -> tuple[list[str], list[str]]:
        async with AsyncClient(server.url, token=server.token) as c:
            job = await c.submit("tasks: [{name: t, run: 'echo a; echo b'}]")
            await c.wait(job["id"], timeout=30)
            lines = [x["line"] async for x in c.logs(job["id"])]
            ids = [j["id"] async for j in c.list(id_prefix=job["id"][:8])]
            return lines, ids

    lines, ids = asyncio.run(main())
    assert lines == ["a", "b"] and len(ids) == 1


def test_pods_through_the_client(client: Client) -> None:
    pod = client.pods.create({"name": f"web-{time.monotonic_ns()}", "containers": [
        {"name": "main", "command": ["sh", "-c", "echo up; sleep 30"]}]})
    assert client.pods.get(pod["id"])["id"] == pod["id"]
    assert pod["id"] in {p["id"] for p in client.pods.list()}
    stopped = client.pods.delete(pod["id"], grace=1)
    assert stopped["id"] == pod["id"]
