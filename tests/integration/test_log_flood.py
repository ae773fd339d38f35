"""Log floods and log paging against a real `corral up`: a task that writes as fast as it can must not
take the server down, and a long log comes back whole, a page at a time."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from corral.agent.worker import Agent, AgentConfig
from corral.runtime.process import ProcessRuntime
from tests.harness import Cluster, wait_until
from tests.support import RecordingTransport, corral

pytestmark = pytest.mark.timeout(120)

CAP = 1_000_000  # --max-log-bytes in these tests
RSS_BOUND = 600 * 1024 * 1024
LINE = "0123456789" * 10
# Output without end: the timeout or the cancel ends it, never the output (a bounded flood, even 1 GB, can
# finish before a 5 s timeout on a fast machine once the stored log is full and the worker reads at full speed).
FLOOD = f"yes {LINE}"


def _all_lines(c: Cluster, job_id: str, **params: object) -> tuple[list[str], int]:
    """Every line of the job's log through the API, page after page; and how many pages it took."""
    lines: list[str] = []
    after, pages = 0, 0
    while True:
        r = c.client.get(f"/v1/jobs/{job_id}/logs", params={"after": after, **params})
        assert r.status_code == 200, r.text
        pages += 1
        lines += r.text.splitlines()
        if "X-Next-After" not in r.headers:
            assert int(r.headers["X-Last-Seq"]) >= after
            return lines, pages
        assert r.headers["Link"].endswith('rel="next"') and f"after={r.headers['X-Next-After']}" in r.headers["Link"]
        after = int(r.headers["X-Next-After"])


def _watch(c: Cluster, rss: list[int], probes: list[float]) -> None:
    """One round of what a user would check during an attack: the server's memory, its health check
    within 1 s, and its own node still ready."""
    assert c.server is not None and c.server.popen is not None
    rss.append(psutil.Process(c.server.popen.pid).memory_info().rss)
    t = time.monotonic()
    r = c.client.get("/healthz", timeout=5)
    probes.append(time.monotonic() - t)
    assert r.status_code == 200
    assert probes[-1] < 1.0, f"/healthz took {probes[-1]:.2f}s during the flood"
    assert [n["state"] for n in c.nodes()] == ["ready"]


def _watch_until_done(c: Cluster, job_id: str, timeout: float) -> tuple[list[int], list[float]]:
    """_watch every 0.2 s until the job has ended (within ``timeout``); the server's RSS and the
    /healthz times seen meanwhile."""
    rss: list[int] = []
    probes: list[float] = []
    deadline = time.monotonic() + timeout
    while c.job(job_id)["state"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, c.job(job_id)
        _watch(c, rss, probes)
        time.sleep(0.2)
    return rss, probes


def test_a_flood_is_bounded_and_the_server_stays_up(cluster: Cluster) -> None:
    c = cluster.up("--max-log-bytes", str(CAP), "--runtime", "process")
    job = c.submit({"name": "flood", "tasks": [{"name": "flood", "run": FLOOD, "timeout": "5s"}]})
    c.wait_job(job["id"], {"running"}, timeout=15)
    rss: list[int] = []
    probes: list[float] = []
    other: dict[str, object] | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _watch(c, rss, probes)
        if other is None and len(probes) >= 5:
            other = c.submit({"name": "meanwhile", "tasks": [{"run": "echo still here"}]})
        if c.job(job["id"])["state"] not in ("pending", "scheduled", "running"):
            break
        time.sleep(0.2)
    done = c.job(job["id"])
    task = done["tasks"][0]
    assert done["state"] == "failed" and "timed out after 5s" in task["error"], done
    took = (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])).total_seconds()
    assert 4.5 <= took < 9, f"the 5s timeout ended the task after {took:.1f}s"
    assert other is not None
    assert c.wait_job(str(other["id"]), timeout=20)["state"] == "completed"
    assert c.logs(str(other["id"])) == "still here\n"
    # The stored log: about the cap, ending with the marker that says why.
    lines, _ = _all_lines(c, job["id"])
    assert lines[0] == LINE
    # Between the lines: markers where the worker had to drop some (it could not ship them as fast).
    assert all(ln == LINE or (ln.startswith("[corral: ") and "dropped" in ln) for ln in lines[:-1])
    assert lines[-1].startswith("[corral: log truncated") and f"{CAP} bytes" in lines[-1]
    stored = sum(len(ln) + 1 for ln in lines[:-1])
    assert CAP - 200 < stored <= CAP
    print(f"flood: peak RSS {max(rss) / 2**20:.0f} MiB over {len(rss)} samples; /healthz worst "
          f"{max(probes) * 1000:.0f} ms; task ended {took:.1f}s after it started; {len(lines)} lines stored, "
          f"{sum(ln.endswith('could be shipped]') for ln in lines)} drop markers")
    assert max(rss) < RSS_BOUND, f"the server reached {max(rss) / 2**20:.0f} MiB"


def test_a_restart_during_a_flood_comes_back(cluster: Cluster) -> None:
    c = cluster.up("--max-log-bytes", str(CAP), "--runtime", "process", "--node-ttl", "3")
    # Endless: past the cap the worker reads at full speed, and a bounded flood may end before its timeout.
    job = c.submit({"name": "flood", "tasks": [{"run": f"yes {LINE}", "timeout": "5s"}]})
    c.wait_job(job["id"], {"running"}, timeout=15)
    assert c.server is not None
    wait_until(lambda: int(c.client.get(f"/v1/jobs/{job['id']}/logs", params={"limit": 1}).headers["X-Last-Seq"]),
               10, what="the flood's first lines")
    c.server.kill9()
    t = time.monotonic()
    c.server.start()
    wait_until(lambda: _answers(c), 30, what="the server to come back")
    print(f"restart: answering {time.monotonic() - t:.1f}s after the restart")
    # The restarted local worker adopts the attempt (its flood waited in its pipe) within what is left of its
    # timeout, or, lost, it runs again and floods again: still bounded. An adopted one may end at once.
    rss, probes = _watch_until_done(c, job["id"], 40)
    _watch(c, rss, probes)
    task = c.job(job["id"])["tasks"][0]
    assert task["state"] == "failed" and "timed out" in task["error"]
    assert max(rss) < RSS_BOUND


def _answers(c: Cluster) -> bool:
    try:
        return c.client.get("/healthz", timeout=1).status_code == 200 and bool(c.nodes())
    except httpx.HTTPError:
        return False


def test_a_cancel_during_a_flood_ends_it(cluster: Cluster) -> None:
    c = cluster.up("--max-log-bytes", str(CAP), "--runtime", "process")
    job = c.submit({"tasks": [{"run": FLOOD}]})
    c.wait_job(job["id"], {"running"}, timeout=15)
    wait_until(lambda: int(c.client.get(f"/v1/jobs/{job['id']}/logs", params={"limit": 1}).headers["X-Last-Seq"]),
               10, what="the flood's first lines")
    t = time.monotonic()
    assert c.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = c.wait_job(job["id"], timeout=10)
    assert done["state"] == "cancelled"
    wait_until(lambda: c.job(job["id"])["tasks"][0]["state"] == "cancelled", 5, what="the task to end")
    assert time.monotonic() - t < 5


def test_past_the_cap_a_task_runs_on_at_full_speed(cluster: Cluster) -> None:
    """Once its stored log is full, the worker is told so and stops shipping (and slowing) the task."""
    c = cluster.up("--max-log-bytes", str(CAP), "--runtime", "process")
    # 40 MB: at the rate output is shipped (a few MB/s here) this would take well over 10 s.
    job = c.submit({"tasks": [{"run": f"yes {LINE} | head -c 40000000; echo done", "timeout": "20s"}]})
    done = c.wait_job(job["id"], timeout=40)
    task = done["tasks"][0]
    assert done["state"] == "completed", done
    took = (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])).total_seconds()
    print(f"40 MB past a 1 MB cap: {took:.1f}s")
    assert took < 10
    lines, _ = _all_lines(c, job["id"])
    assert lines[-1].startswith("[corral: log truncated") and "done" not in lines


def test_a_flood_from_a_remote_worker_is_capped(cluster: Cluster, pg_url: str) -> None:
    """Over HTTP, on PostgreSQL (the tests above use SQLite): the cap holds, the worker stays ready."""
    c = cluster.start_server("--max-log-bytes", str(CAP), database_url=pg_url)
    c.add_worker("w1", "--runtime", "process")
    job = c.submit({"tasks": [{"run": FLOOD, "timeout": "4s"}]})
    c.wait_job(job["id"], {"running"}, timeout=15)
    rss, _ = _watch_until_done(c, job["id"], 30)
    task = c.job(job["id"])["tasks"][0]
    assert task["state"] == "failed" and "timed out after 4s" in task["error"]
    lines, _ = _all_lines(c, job["id"])
    assert lines[0] == LINE and lines[-1].startswith("[corral: log truncated")
    assert CAP - 200 < sum(len(ln) + 1 for ln in lines[:-1]) <= CAP
    assert max(rss) < RSS_BOUND


def test_a_long_log_comes_back_whole_through_pages_and_the_cli(standalone: Cluster) -> None:
    c = standalone
    n = 30_000
    job = c.submit({"name": "long", "tasks": [{"run": f"seq 1 {n}"}]})
    assert c.wait_job(job["id"])["state"] == "completed"
    want = [str(i) for i in range(1, n + 1)]
    lines, pages = _all_lines(c, job["id"])
    assert lines == want and pages == 3
    lines, pages = _all_lines(c, job["id"], limit=7000, format="ndjson")
    assert len(lines) == n and pages == 5 and '"line": "30000"' in lines[-1]
    first = c.client.get(f"/v1/jobs/{job['id']}/logs")  # no limit given: a bounded page, with a cursor
    assert len(first.text.splitlines()) == 10_000 and first.headers["X-Next-After"]
    out = corral("jobs", "logs", job["id"], server=c.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == want
    follow = corral("jobs", "logs", "-f", job["id"], server=c.url)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == want
    run = corral("run", "--", "seq", "1", str(n), server=c.url)  # follows the job as it runs
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == want
    for bad in ({"limit": 0}, {"limit": 10_001}, {"after": 2**64}):
        assert c.client.get(f"/v1/jobs/{job['id']}/logs", params=bad).status_code in (400, 422), bad
    # Tork's log pages reach every line too, newest first, a page read at a time.
    tork = c.get(f"/jobs/{job['id']}/log?size=100")
    assert tork["totalItems"] == n and tork["totalPages"] == n // 100
    assert [p["contents"] for p in tork["items"][:2]] == ["30000\n", "29999\n"] and tork["items"][0]["number"] == n
    last = c.get(f"/jobs/{job['id']}/log?size=100&page={n // 100}")
    assert last["items"][-1] == {**last["items"][-1], "number": 1, "contents": "1\n"}
    task_id = c.job(job["id"])["tasks"][0]["id"]
    assert c.get(f"/tasks/{task_id}/log?size=1&page={n}")["items"][0]["contents"] == "1\n"


@pytest.mark.docker
def test_a_container_flood_is_bounded_too(cluster: Cluster, busybox_image: str) -> None:
    c = cluster.up("--max-log-bytes", str(CAP), "--runtime", "docker")
    job = c.submit({"tasks": [{"image": busybox_image, "command": ["sh", "-c", FLOOD], "timeout": "5s"}]})
    c.wait_job(job["id"], {"running"}, timeout=30)
    rss, probes = _watch_until_done(c, job["id"], 30)
    task = c.job(job["id"])["tasks"][0]
    assert task["state"] == "failed" and "timed out after 5s" in task["error"]
    lines, _ = _all_lines(c, job["id"])
    assert lines[0] == LINE and lines[-1].startswith("[corral: log truncated")
    print(f"container flood: peak RSS {max(rss) / 2**20:.0f} MiB; /healthz worst {max(probes) * 1000:.0f} ms")
    assert max(rss) < RSS_BOUND


def test_the_agent_ships_bounded_batches_in_order_and_the_end_last(tmp_path: Path) -> None:
    n = 20_000
    wide = "é" * 2000  # 2,000 characters, 12,000 bytes in JSON: batches are bounded by bytes too
    script = f"seq 1 {n}; for i in 1 2 3 4 5 6 7 8 9 10; do printf '{wide}\\n%.0s' $(seq 1 50); done"
    work = [{"execution_id": "x1", "job_id": "j", "task_id": "t", "task_name": "t", "attempt": 1,
             "argv": ["sh", "-c", script], "env": {}, "workdir": None, "timeout": None, "cpu_limit": None,
             "memory_limit": None, "gpus": []}]
    transport = RecordingTransport(work, delay=0.01)

    async def go() -> None:
        agent = Agent(AgentConfig(data_dir=str(tmp_path / "worker"), gpus=[], poll_wait=0.2), transport,
                      {"process": ProcessRuntime()})
        await agent.start()
        try:
            deadline = time.monotonic() + 60
            while not any(u["state"] != "running" for r in transport.reports for u in r[0]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await agent.stop()

    asyncio.run(go())
    lines = [ln["line"] for _, logs, _ in transport.reports for ln in logs]
    assert lines == [str(i) for i in range(1, n + 1)] + [wide] * 500  # none dropped: the task waited
    assert all(len(logs) <= 2000 and size < 2.5 * 2**20 for _, logs, size in transport.reports)
    assert max(size for _, _, size in transport.reports) > 2**20  # the byte bound was what cut some
    end = next(i for i, (ups, _, _) in enumerate(transport.reports) if any(u["state"] != "running" for u in ups))
    assert end == len(transport.reports) - 1 and transport.reports[end][0][-1]["state"] == "completed"
