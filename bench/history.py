"""History at scale: a store holding a million finished jobs, and what its readers and writers cost.

    .venv/bin/python -m bench.history --pg postgresql://corral:corral@127.0.0.1:5432/corral_test
    .venv/bin/python -m bench.history --jobs 100000 --stores sqlite --requests 100   # a quick run

For each store (PostgreSQL in a fresh database next to the one --pg names, dropped after; SQLite in a
temporary file), the store's schema is made by its migrations, then --jobs finished jobs are written in bulk
SQL (INSERT ... SELECT over a generated series, cloning one job made through the real submit code, so the
specs are the store's own): each with one task and one execution, one job in ten with three log lines; most
completed, one in ten failed, one in a hundred cancelled; five queues, twenty team tags, over 60 days; one
job in 10,007 has 'needle' in its name (a selective text search). Then a real `corral server` on that store
answers, one request at a time, --requests requests of each kind (client-side latency p50/p99, ms):
``GET /v1/jobs`` unfiltered and with each filter (state, queue, tag, time range), ``q`` (common and
selective), a deep cursor page, Tork's ``GET /jobs?q=``, nomad-lite's filtered ``GET /api/jobs``, and
``GET /v1/jobs/{id}``; then the submit rate (one-job ``POST /v1/jobs`` to a queue no worker serves, from
--clients threads) against the full store and an empty one, interleaved (empty, full, empty, full); and the
server's RSS after all of it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import summary
from bench.scale import database, server
from corral.coordinator.flow import job_rows
from corral.domain.spec import JobSpec
from corral.store.sql import Store

DAY = 86400.0
WORDS = "alpha bravo delta gamma kappa omega sigma theta "  # 6 characters each (with the space)
CHUNK = 100_000


def _series(dialect: str, lo: int, hi: int) -> str:
    """A FROM item ``g(x)`` of the integers lo..hi."""
    if dialect == "postgresql":
        return f"generate_series({lo}, {hi}) AS g(x)"
    return f"(WITH RECURSIVE s(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM s WHERE x < {hi}) SELECT x FROM s) AS g"


def _hex_id(dialect: str, kind: int, x: str) -> str:
    """A 32-hex-digit id made from x (unique per kind), scattered at the front like a random one."""
    if dialect == "postgresql":
        return (f"lpad(to_hex(({x} * 2654435761 + {kind}) % 4294967296), 8, '0') || '{kind:02x}' || "
                f"lpad(to_hex({x}), 22, '0')")
    return f"printf('%08x%02x%022x', ({x} * 2654435761 + {kind}) % 4294967296, {kind}, {x})"


FILLED = ("jobs", "tasks", "executions", "logs")


def _secondary_indexes(c: sa.Connection) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the filled tables' indexes that no constraint owns: dropped for the fill
    and made again after it, as the migrations made them (building an index once is cheaper than keeping it
    up to date row by row)."""
    names = ", ".join(f"'{t}'" for t in FILLED)
    if c.dialect.name == "postgresql":
        q = (f"SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename IN "
             f"({names}) AND indexname NOT IN (SELECT conname FROM pg_constraint)")
    else:
        q = f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({names}) AND sql IS NOT NULL"
    return [(str(a), str(b)) for a, b in c.execute(sa.text(q))]


def fill(url: str, n: int, now: float) -> None:
    """n finished jobs (with tasks, executions and some logs), written in bulk SQL in one transaction, with
    the secondary indexes built after it (and, on SQLite, without syncing each write)."""
    store = Store(url)
    d = store.engine.dialect.name
    json_cast = "CAST({} AS json)" if d == "postgresql" else "{}"
    text_of = "CAST({} AS text)" if d == "postgresql" else "{}"
    run = "echo hello from the history benchmark"
    spec = JobSpec.model_validate({"name": "template", "queue": "q0", "tasks": [
        {"name": "say", "image": "busybox", "run": run}]})
    job, tasks = job_rows(spec, now)
    with store.transaction() as tx:
        tx.insert_jobs([(job, tasks)])
    store.engine.dispose()
    start = now - 60 * DAY
    step = 60 * DAY / n
    word = f"trim(substr('{WORDS}', (x % 8) * 6 + 1, 6))"
    needle = "x % 10007 = 0"  # one job in 10,007: 'needle' in its name and at the end of its command
    name = f"'job-' || x || ' ' || {word} || (CASE WHEN {needle} THEN ' needle' ELSE '' END)"
    command = f"'{run}' || (CASE WHEN {needle} THEN ' needle' ELSE '' END)"
    state = "(CASE WHEN x % 100 = 1 THEN 'cancelled' WHEN x % 10 = 0 THEN 'failed' ELSE 'completed' END)"
    created = f"({start} + x * {step})"
    node = "e" * 32
    engine = sa.create_engine(url)
    t_all = time.monotonic()
    with engine.begin() as c:
        if d == "postgresql":
            c.execute(sa.text("SET LOCAL synchronous_commit = off"))
            c.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
        else:
            c.execute(sa.text("PRAGMA synchronous = OFF"))
            c.execute(sa.text("PRAGMA cache_size = -262144"))
        c.execute(sa.text("UPDATE jobs SET state = 'completed', finished_at = :t WHERE id = :id"),
                  {"t": now, "id": job["id"]})
        indexes = _secondary_indexes(c)
        for ix, _ in indexes:
            c.execute(sa.text(f"DROP INDEX {ix}"))
        text_index = getattr(store, "text_index", False)  # SQLite's jobs_fts (0021): filled after, like an index
        if text_index:
            from corral.store import textsearch
            textsearch.drop(c)
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            t0 = time.monotonic()
            before = c.execute(sa.text("SELECT max(seq) FROM jobs")).scalar_one()
            # the chunk's tasks are those after this one: a range of the primary key (job_seq has no index
            # during the fill, and a scan of all tasks a chunk made SQLite's fill slow down as it grew)
            tasks_before = c.execute(sa.text("SELECT max(seq) FROM tasks")).scalar_one()
            c.execute(sa.text(
                "INSERT INTO jobs (id, name, queue, priority, tags, search, spec, state, error, task_count, "
                "created_at, started_at, finished_at, namespace, created_by, command_search) "
                f"SELECT {_hex_id(d, 1, 'x')}, {name}, 'q' || (x % 5), 0, "
                + json_cast.format("'[\"team-' || (x % 20) || '\", \"env-' || (CASE WHEN x % 3 = 0 THEN 'prod' "
                                   "ELSE 'dev' END) || '\"]'")
                + f", lower({name}) || :rs || 'team-' || (x % 20) || :us || 'env-' || "
                "(CASE WHEN x % 3 = 0 THEN 'prod' ELSE 'dev' END) || :us, t.spec, "
                f"{state}, (CASE WHEN x % 10 = 0 THEN 'exit status 1' END), 1, {created}, {created} + 1, "
                f"{created} + 2, 'default', NULL, {command} FROM jobs t, {_series(d, lo, hi)} WHERE t.id = :tid "
                "ORDER BY x"), {"rs": "\x1e\x1f", "us": "\x1f", "tid": job["id"]})
            # tasks, executions and logs from the jobs just written (their seq gives job_seq); a needle job's
            # task runs the command its command_search says
            jx = f"(j.seq - {before} + {lo - 1})"
            task_spec = ("(CASE WHEN j.name LIKE '% needle' THEN "
                         + json_cast.format(f"replace({text_of.format('t.spec')}, '{run}', '{run} needle')")
                         + " ELSE t.spec END)")
            c.execute(sa.text(
                "INSERT INTO tasks (id, job_id, job_seq, position, name, spec, queue, priority, runtime, cpu, "
                "memory, disk, gpu, node_selector, state, attempts, lost_count, node_id, execution_id, exit_code, "
                "created_at, started_at, finished_at, kind) "
                f"SELECT {_hex_id(d, 2, jx)}, j.id, j.seq, 0, t.name, {task_spec}, j.queue, 0, t.runtime, t.cpu, "
                f"t.memory, t.disk, 0, t.node_selector, j.state, 1, 0, '{node}', {_hex_id(d, 3, jx)}, "
                "(CASE WHEN j.state = 'failed' THEN 1 ELSE 0 END), j.created_at, j.started_at, j.finished_at, "
                "'run' FROM jobs j, tasks t WHERE j.seq > :before AND t.id = :task"),
                {"before": before, "task": tasks[0]["id"]})
            c.execute(sa.text(
                "INSERT INTO executions (id, task_id, job_id, attempt, node_id, state, cpu, memory, disk, gpu, "
                "gpus, exit_code, scheduled_at, started_at, finished_at, log_bytes) "
                "SELECT t.execution_id, t.id, t.job_id, 1, t.node_id, t.state, t.cpu, t.memory, t.disk, 0, "
                + json_cast.format("'[]'") + ", t.exit_code, t.created_at, t.started_at, t.finished_at, 0 "
                "FROM tasks t WHERE t.seq > :tb"), {"tb": tasks_before})
            c.execute(sa.text(
                "INSERT INTO logs (job_id, task_id, execution_id, stream, line, ts) "
                "SELECT t.job_id, t.id, t.execution_id, 'stdout', 'line ' || k.n || ' of ' || t.job_id, "
                "t.started_at + k.n FROM tasks t, (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3) k "
                "WHERE t.seq > :tb AND t.job_seq % 10 = 0 ORDER BY t.job_seq, k.n"), {"tb": tasks_before})
            print(f"  {d}: jobs {lo:,}-{hi:,} in {time.monotonic() - t0:.1f} s", flush=True)
        t0 = time.monotonic()
        for _, ddl in indexes:
            c.execute(sa.text(ddl))
        print(f"  {d}: {len(indexes)} indexes in {time.monotonic() - t0:.1f} s", flush=True)
        if text_index:
            t0 = time.monotonic()
            textsearch.rebuild(c)
            print(f"  {d}: jobs_fts in {time.monotonic() - t0:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE" if d == "postgresql" else "ANALYZE"))
    engine.dispose()
    print(f"  {d}: {n:,} jobs in {time.monotonic() - t_all:.1f} s", flush=True)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq}).encode()).decode().rstrip("=")


def probes(n: int, now: float, ids: list[str]) -> dict[str, Callable[[random.Random], tuple[str, dict[str, Any]]]]:
    """What to ask: name -> (random) -> (path, query)."""
    start = now - 60 * DAY

    def window(r: random.Random) -> dict[str, Any]:
        a = start + r.random() * 59 * DAY
        return {"created_after": a, "created_before": a + DAY}

    def window_ms(w: dict[str, Any]) -> dict[str, Any]:  # the same one-day window, as nomad-lite spells it
        return {"created_after_ms": int(w["created_after"] * 1000),
                "created_before_ms": int(w["created_before"] * 1000), "page_size": 50}

    return {
        "list": lambda r: ("/v1/jobs", {}),
        "list state=failed": lambda r: ("/v1/jobs", {"state": "failed"}),
        "list state=cancelled": lambda r: ("/v1/jobs", {"state": "cancelled"}),
        "list state=pending (none)": lambda r: ("/v1/jobs", {"state": "pending"}),
        "list queue": lambda r: ("/v1/jobs", {"queue": f"q{r.randrange(5)}"}),
        "list tag": lambda r: ("/v1/jobs", {"tag": f"team-{r.randrange(20)}"}),
        "list time range (1 day)": lambda r: ("/v1/jobs", window(r)),
        # the last 1 to 30 days (read along the newest jobs), and 30 days that ended a month ago (sorted whole)
        "list last days": lambda r: ("/v1/jobs", {"created_after": now - r.randint(1, 30) * DAY}),
        "list 30 days, a month back": lambda r: ("/v1/jobs", {"created_after": now - 60 * DAY,
                                                              "created_before": now - 30 * DAY}),
        "list q common": lambda r: ("/v1/jobs", {"q": r.choice(WORDS.split())}),
        "list q selective": lambda r: ("/v1/jobs", {"q": "needle"}),
        "list q + state": lambda r: ("/v1/jobs", {"q": "kappa", "state": "failed"}),
        "list deep cursor": lambda r: ("/v1/jobs", {"cursor": _cursor(r.randrange(2, n))}),
        "tork q": lambda r: ("/jobs", {"q": r.choice(WORDS.split())}),
        "tork q tag": lambda r: ("/jobs", {"q": f"tag:team-{r.randrange(20)}"}),
        "tork page 50": lambda r: ("/jobs", {"page": 50}),
        "nomad-lite status": lambda r: ("/api/jobs", {"status": "failed", "page_size": 50}),
        "nomad-lite time range": lambda r: ("/api/jobs", window_ms(window(r))),
        "nomad-lite command": lambda r: ("/api/jobs", {"command": "hello", "page_size": 50}),
        "nomad-lite command selective": lambda r: ("/api/jobs", {"command": "needle", "page_size": 50}),
        "get job": lambda r: (f"/v1/jobs/{r.choice(ids)}", {}),
    }


def latencies(client: httpx.Client, probe: Callable[[random.Random], tuple[str, dict[str, Any]]],
              count: int) -> dict[str, float]:
    r = random.Random(7)
    path, params = probe(r)
    client.get(path, params=params).raise_for_status()  # warm
    out = []
    for _ in range(count):
        path, params = probe(r)
        t0 = time.perf_counter()
        resp = client.get(path, params=params)
        out.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{path} {params}: {resp.status_code} {resp.text[:300]}")
    return summary(out)


def submit_rate(url: str, clients: int, total: int) -> float:
    """One-job submissions per second from ``clients`` threads (a queue no worker serves)."""
    body = {"name": "submit", "queue": "nobody", "tasks": [{"name": "t", "image": "busybox", "run": "true"}]}
    each = total // clients
    errors: list[str] = []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(each):
                resp = c.post("/v1/jobs", json=body)
                if resp.status_code != 201:
                    errors.append(resp.text[:200])

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed: {errors[0]}")
    return each * clients / (time.perf_counter() - t0)


def healthz_while(client: httpx.Client, done: Callable[[], bool], seconds: float) -> dict[str, float]:
    """GET /healthz one after another (client-side ms) until ``done()`` or ``seconds`` have passed."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not done():
        t0 = time.perf_counter()
        client.get("/healthz").raise_for_status()
        out.append((time.perf_counter() - t0) * 1000)
    return summary(out)


def retention_phase(url: str, now: float, n: int, old: int) -> dict[str, Any]:
    """A server with --retain set so that the ``old`` oldest jobs are past it: how long deleting them takes,
    and GET /healthz meanwhile."""
    start = now - 60 * DAY
    retain = time.time() - (start + old * 60 * DAY / n + 2) + 0.5
    engine = sa.create_engine(url)

    def left() -> int:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())

    before = left()
    checked = [time.monotonic()]
    state = {"left": before}

    def gone() -> bool:  # looked at twice a second
        if time.monotonic() - checked[0] > 0.5:
            checked[0] = time.monotonic()
            state["left"] = left()
        return before - state["left"] >= old

    with server(url, "--retain", f"{retain:.1f}") as (base, _), httpx.Client(base_url=base, timeout=60) as client:
        t0 = time.monotonic()
        h = healthz_while(client, gone, 900)
        took = time.monotonic() - t0
    engine.dispose()
    deleted = before - state["left"]
    return {"deleted": deleted, "seconds": round(took, 1), "jobs_per_s": round(deleted / took),
            "healthz_ms_meanwhile": h}


def job_ids(url: str, count: int) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT max(seq) FROM jobs")).scalar_one()
        seqs = random.Random(3).sample(range(2, n + 1), count)
        ids = [r[0] for r in c.execute(sa.text("SELECT id FROM jobs WHERE seq IN (" + ",".join(map(str, seqs))
                                                + ")"))]
    engine.dispose()
    return ids


@contextmanager
def stores(kind: str, pg: str) -> Iterator[str]:
    if kind == "postgresql":
        with database(pg) as url:
            yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{os.path.join(tmp, 'corral.db')}"


@contextmanager
def filled(kind: str, args: argparse.Namespace, out: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """A full store (made now, or --store-url's), the 'now' its jobs were made at, and how many it holds."""
    if args.store_url:
        engine = sa.create_engine(args.store_url)
        with engine.connect() as c:
            last, n = c.execute(sa.text("SELECT max(created_at), count(*) FROM jobs")).one()
        engine.dispose()
        Store(args.store_url).engine.dispose()  # migrated to this version
        out["jobs"] = n
        yield args.store_url, float(last) + 1, int(n)
        return
    with stores(kind, args.pg) as url:
        now = time.time()
        t0 = time.monotonic()
        fill(url, args.jobs, now)
        out["fill_s"] = round(time.monotonic() - t0, 1)
        yield url, now, args.jobs


def bench_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"store": kind, "jobs": args.jobs}
    with filled(kind, args, out) as (full_url, now, n), stores(kind, args.pg) as empty_url:
        Store(empty_url).engine.dispose()
        ids = job_ids(full_url, 500)
        with server(full_url) as (url, proc), httpx.Client(base_url=url, timeout=60) as client:
            out["latency_ms"] = {}
            for name, probe in probes(n, now, ids).items():
                if args.only and not any(part in name for part in args.only.split(",")):
                    continue
                out["latency_ms"][name] = s = latencies(client, probe, args.requests)
                print(f"  {kind} {name}: p50 {s['p50']} ms, p99 {s['p99']} ms", flush=True)
            out["rss_mb_after_reads"] = round(proc.memory_info().rss / 2**20, 1)
            if args.retain_jobs:
                out["healthz_ms_before_retention"] = healthz_while(client, lambda: False, 3.0)
        if args.retain_jobs and not args.store_url:
            out["retention"] = retention_phase(full_url, now, n, args.retain_jobs)
        rates: dict[str, list[float]] = {"empty": [], "full": []}
        if args.submits:
            for _ in range(2):
                for which, db in (("empty", empty_url), ("full", full_url)):
                    with server(db) as (url, proc):
                        submit_rate(url, args.clients, 200)  # warm
                        rates[which].append(round(submit_rate(url, args.clients, args.submits), 1))
                        if which == "full":
                            out["rss_mb_after_submits"] = round(proc.memory_info().rss / 2**20, 1)
                    print(f"  {kind} submit/s {which}: {rates[which][-1]}", flush=True)
            out["submit_per_s"] = rates
            e, f = statistics.mean(rates["empty"]), statistics.mean(rates["full"])
            out["submit_full_vs_empty"] = round(f / e, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--stores", default="postgresql,sqlite", help="postgresql, sqlite or both (comma-separated)")
    ap.add_argument("--pg", default="postgresql://corral:corral@127.0.0.1:5432/corral_test",
                    help="a PostgreSQL database whose user may CREATE DATABASE")
    ap.add_argument("--requests", type=int, default=200, help="requests of each kind")
    ap.add_argument("--only", default="", help="only the probes whose name contains this (or one of "
                    "these, comma-separated)")
    ap.add_argument("--submits", type=int, default=2000, help="one-job submissions per measure (0: skip)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--retain-jobs", type=int, default=0, help="then start a server whose --retain makes this "
                    "many of the oldest jobs go, and measure GET /healthz while it deletes them")
    ap.add_argument("--store-url", default="", help="measure this store, filled before (by fill()), instead of "
                    "filling one; with one kind in --stores")
    args = ap.parse_args()
    results = [bench_store(kind.strip(), args) for kind in args.stores.split(",") if kind.strip()]
    print(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
