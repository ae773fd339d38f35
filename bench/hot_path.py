"""The app's own CPU per request on the hot routes, with the hot path (corral.api.hot) and without it.

No HTTP server and no load generator: the ASGI app (``create_app``, a fresh SQLite store, no local worker)
is called directly by 16 concurrent in-process clients, so what is measured is the app alone: the
middlewares, the router or the hot path, the handler, the store and the background loops that run
meanwhile (process CPU time per request). The two configurations run interleaved (off, on, off, on), each on
a store of its own. Cases as in ``bench.one_job``: ``healthz``, ``accept`` (one-job ``POST /v1/jobs`` to a
queue no worker serves), ``get_job``, ``tork``, ``nomadlite``, ``cloudai``.

    .venv/bin/python -m bench.hot_path -n 1600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

from corral.api.app import ServerConfig, create_app
from corral.api.edge import EdgeConfig

CASES = ("healthz", "accept", "get_job", "tork", "nomadlite", "cloudai")
JOB = {"name": "w", "queue": "nobody", "tasks": [{"name": "t", "run": "echo hi"}]}
POSTS: dict[str, tuple[str, dict[str, Any]]] = {
    "accept": ("/v1/jobs", JOB),
    "tork": ("/jobs", {"name": "w", "tasks": [{"name": "t", "run": "echo hi", "image": "busybox", "queue": "nobody"}]}),
    "nomadlite": ("/api/jobs", {"command": "echo hi"}),
    "cloudai": ("/api/tasks", {"command": "echo hi", "docker_image": "busybox", "user_id": "u1"}),
}


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000), "state": {}}
    sent = False
    status = 0
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays: no disconnect
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(parts)


async def measure(app: Any, n: int, cases: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        status, answer = await call(app, "POST", "/v1/jobs", json.dumps(JOB).encode())
        one = json.loads(answer)["id"]
        for case in cases:
            if case in POSTS:
                method, path, body = "POST", POSTS[case][0], json.dumps(POSTS[case][1]).encode()
            else:
                method, path, body = "GET", {"healthz": "/healthz", "get_job": f"/v1/jobs/{one}"}[case], b""

            async def client(k: int, method: str = method, path: str = path, body: bytes = body) -> None:
                for _ in range(k):
                    status, answer = await call(app, method, path, body)
                    assert status < 300, answer

            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(client(n // 16) for _ in range(16)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[case] = {"cpu_ms_per_request": round(1000 * cpu / n, 3), "rate": round(n / wall, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1600, help="requests per case (default 1600)")
    ap.add_argument("--runs", type=int, default=2, help="pairs of runs, off then on (default 2)")
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    os.environ.setdefault("CORRAL_RATE_LIMIT_SUBMIT", "100000000/minute")  # CloudAI's limiter, measured
    os.environ.setdefault("CORRAL_NOMADLITE_IMAGE", "busybox")
    results: dict[str, Any] = {"load_before": os.getloadavg()[0], "runs": []}
    for i in range(args.runs):
        for mode in ("off", "on"):
            os.environ["CORRAL_HOT_PATH"] = mode  # read by create_app
            with tempfile.TemporaryDirectory() as data:
                app = create_app(ServerConfig(database_url=f"sqlite:///{data}/corral.db",
                                              edge=EdgeConfig.for_bind("127.0.0.1")))
                figures = asyncio.run(measure(app, args.n, args.cases.split(",")))
            results["runs"].append({"run": i + 1, "hot_path": mode, "load": os.getloadavg()[0], **figures})
            print(results["runs"][-1], file=sys.stderr)
    results["load_after"] = os.getloadavg()[0]
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
