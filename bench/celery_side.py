"""Throughput of Celery 5.x with Redis and two prefork workers, running `sh -c 'echo hi'` through subprocess.

The reference the issue compares Corral with. A private redis-server (no persistence) on a free loopback
port is the broker and the result backend; one `celery worker --pool prefork --concurrency 2` runs
bench/celery_app.py. N tasks are sent with .delay(), then every result is awaited; the figure is first
submit -> last result, in tasks per second, with the CPU time of the worker processes and of Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the process group (the prefork children too), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private, non-persistent redis-server on a free loopback port; yields (url, process)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        client.close()
        yield url, proc
    finally:
        _stop(proc)


@contextmanager
def celery_worker(url: str, concurrency: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "BENCH_REDIS_URL": url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
                             "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "warning",
                             "--hostname", f"bench{os.getpid()}@%h"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc)


def run_celery(n: int) -> dict[str, object]:
    """Send n `echo hi` tasks to Celery (Redis, two prefork workers) and wait for every result."""
    import celery

    from bench import celery_app

    with redis_server() as (url, redis_proc), celery_worker(url) as worker:
        app = celery_app.app
        app.conf.update(broker_url=url, result_backend=url)
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the celery worker did not start")
        # Warm the connections (and the worker's first fork) so that they are not in the measurement.
        if celery_app.echo.delay().get(timeout=30) != "hi\n":
            raise RuntimeError("the celery task did not answer hi")
        wproc = psutil.Process(worker.pid)
        procs = [wproc, *wproc.children(recursive=True), psutil.Process(redis_proc.pid)]
        cpu0 = _cpu(procs)
        t0 = time.monotonic()
        results = [celery_app.echo.delay() for _ in range(n)]
        t_submitted = time.monotonic() - t0
        values = celery.result.ResultSet(results).get(timeout=600)
        elapsed = time.monotonic() - t0
        procs = [wproc, *wproc.children(recursive=True), psutil.Process(redis_proc.pid)]
        cpu = _cpu(procs) - cpu0
        ok = sum(1 for v in values if v == "hi\n")
        return {"tasks": n, "completed": ok, "failed": n - ok, "submit_s": round(t_submitted, 3),
                "elapsed_s": round(elapsed, 3), "tasks_per_s": round(n / elapsed, 1),
                "worker_and_redis_cpu_s": round(cpu, 2), "cores_busy": round(cpu / elapsed, 2),
                "celery": celery.__version__, "pool": "prefork", "concurrency": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="number of tasks (default 5000)")
    args = ap.parse_args()
    print(json.dumps({"celery": run_celery(args.n)}, indent=2))


if __name__ == "__main__":
    main()
