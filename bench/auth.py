"""The cost of identities on the hot path: submit throughput with a bearer API key against without.

Two real `corral server` processes on SQLite, one open (loopback, no --auth) and one with --auth whose
client sends the first admin's key as `Authorization: Bearer`; no worker (the jobs wait: what is measured
is the submit path, where auth is per request). Each round submits N one-task jobs, one per request, from
C client threads, to each server in turn (open, auth, open, auth, ...) so that the machine's noise falls on
both alike (the order alternates each round: A B, B A, ...). Prints requests per second for each, auth's
slowdown (the issue's target: at most 10 %) and the load average before and after (the machine's noise).

    .venv/bin/python -m bench.auth -n 2000 -c 4 --rounds 3
    .venv/bin/python -m bench.auth --micro -n 100000   # the auth step alone, in-process
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench.common import free_port

JOB = {"name": "bench", "tasks": [{"name": "a", "run": "true"}]}


@contextmanager
def corral_server(auth: bool) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        log = open(os.path.join(data, "server.log"), "w+b")  # noqa: SIM115 (read while it is written)
        args = [sys.executable, "-m", "corral", "server", "--port", str(port), "--database-url",
                f"sqlite:///{data}/corral.db", "--log-level", "warning", "--max-pending", "10000000"]
        proc = subprocess.Popen([*args, *(["--auth"] if auth else [])], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "CORRAL_RATE_LIMIT": "off"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("corral server did not start")
                time.sleep(0.05)
            headers: dict[str, str] = {}
            if auth:
                log.seek(0)
                m = re.search(rb"crl_[0-9a-f]{16}_[A-Za-z0-9_-]+", log.read())
                assert m, "no first admin key printed"
                headers["Authorization"] = f"Bearer {m.group(0).decode()}"
                assert httpx.get(url + "/v1/whoami", headers=headers).status_code == 200
            yield url, headers
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
            log.close()


def submit_rate(url: str, headers: dict[str, str], n: int, clients: int) -> float:
    """Submits per second: n POST /v1/jobs from ``clients`` threads, each with its own connection."""
    per = n // clients
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            for _ in range(per):
                r = c.post("/v1/jobs", json=JOB)
                if r.status_code != 201:
                    errors.append(r.text[:200])
                    return

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError(errors[0])
    return per * clients / elapsed


def micro(n: int) -> dict[str, float]:
    """What the edge adds to one request with a bearer key once the key is in the cache, in microseconds:
    the credential read and checked, the route's rule found, the caller bound (no server, no I/O)."""
    import asyncio

    from starlette.datastructures import Headers

    from corral.auth.middleware import authorize
    from corral.auth.rules import RuleTable
    from corral.auth.service import Auth
    from corral.store.sql import Store

    with tempfile.TemporaryDirectory() as data:
        store = Store(f"sqlite:///{data}/corral.db")
        auth = Auth(store, enabled=True)
        key = auth.bootstrap(first_admin=True)
        assert key
        table = RuleTable()
        raw = [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]

        async def run() -> float:
            scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": raw, "query_string": b"",
                     "client": ("127.0.0.1", 1)}
            assert await authorize(auth, table, scope, Headers(scope=scope), "c", (), "") is None
            t0 = time.perf_counter()
            for _ in range(n):
                scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": raw, "query_string": b"",
                         "client": ("127.0.0.1", 1)}
                await authorize(auth, table, scope, Headers(scope=scope), "c", (), "")
            return (time.perf_counter() - t0) / n * 1e6

        per = asyncio.run(run())
        store.close()
    return {"requests": n, "us_per_request": round(per, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="submits per round and server")
    ap.add_argument("-c", "--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--micro", action="store_true", help="only the in-process cost of the auth step")
    args = ap.parse_args()
    if args.micro:
        print(json.dumps(micro(args.n), indent=2))
        return
    rates: dict[str, list[float]] = {"open": [], "bearer_key": []}
    with corral_server(False) as (open_url, open_h), corral_server(True) as (auth_url, auth_h):
        submit_rate(open_url, open_h, 200, args.clients)  # warm both up (imports, caches, the key cache)
        submit_rate(auth_url, auth_h, 200, args.clients)
        load_before = os.getloadavg()
        sides = [("open", open_url, open_h), ("bearer_key", auth_url, auth_h)]
        for i in range(args.rounds):
            # A, B then B, A: neither side always goes first (a machine warming or cooling falls on both).
            for name, url, headers in (sides if i % 2 == 0 else sides[::-1]):
                rates[name].append(submit_rate(url, headers, args.n, args.clients))
        load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"submits_per_round": args.n, "clients": args.clients,
                      "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                              "after": [round(x, 2) for x in load_after]},
                      "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                      "median_per_s": {k: round(v, 1) for k, v in med.items()},
                      "auth_slowdown_pct": round(100 * (1 - med["bearer_key"] / med["open"]), 1)}, indent=2))


if __name__ == "__main__":
    main()
