"""Helpers shared by the benchmarks: start a real `corral up`, wait for jobs."""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def corral_up(*extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real standalone Corral in a fresh data dir; yields (url, process). Without the access token
    (--no-token): the benchmarks' clients measure the work, not the login."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([sys.executable, "-m", "corral", "up", "--port", str(port), "--data-dir", data,
                                 "--log-level", "warning", "--no-token", *extra],
                                stdout=sys.stderr, start_new_session=True)  # stdout is for the JSON figures
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + float(os.environ.get("CORRAL_BENCH_START_S", "30"))  # a loaded machine: more
            while True:
                try:
                    if httpx.get(url + "/v1/nodes").json()["items"]:
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("corral up did not start")
                time.sleep(0.05)
            yield url, proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


def metrics_job_count(text: str, states: str | None) -> int:
    """The jobs in ``states`` (comma-separated; None: all) from /metrics' corral_jobs gauge."""
    want = set(states.split(",")) if states else None
    n = 0
    for line in text.splitlines():
        if line.startswith("corral_jobs{"):
            state = line.split('state="', 1)[1].split('"', 1)[0]
            if want is None or state in want:
                n += int(float(line.rsplit(" ", 1)[1]))
    return n


def count_jobs(client: httpx.Client, states: str | None = None) -> int:
    """How many jobs are in ``states`` (None: all), in one cheap request: GET /v1/jobs counts up to 1,000;
    past that, the exact figure comes from /metrics."""
    body = client.get("/v1/jobs", params={"limit": 1, **({"state": states} if states else {})}).json()
    if body.get("total_exact", True):
        return int(body["total"])
    return metrics_job_count(client.get("/metrics").text, states)


def count_state(client: httpx.Client, state: str) -> int:
    return count_jobs(client, state)


def count_finished(client: httpx.Client) -> int:
    """Jobs that completed or failed, in one request (polling must cost the server little: it shares the CPUs)."""
    return count_jobs(client, "completed,failed")


def ts(text: str) -> float:
    """UNIX seconds from the API's RFC 3339 times."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def summary(xs: Sequence[float], digits: int = 2) -> dict[str, float]:
    """n, p50, p90, p99, min and max of some durations."""
    if not xs:
        return {}
    return {"n": len(xs), "p50": round(statistics.median(xs), digits), "p90": round(percentile(xs, 90), digits),
            "p99": round(percentile(xs, 99), digits), "min": round(min(xs), digits),
            "max": round(max(xs), digits)}
