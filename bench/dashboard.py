"""The web dashboard in Debian's Chromium (Playwright), against a real `corral up --runtime process`.

1. First paint of the jobs page with ``--jobs`` (100,000) jobs stored: the store is filled before the
   server starts (one job submitted through the coordinator, its row copied with new ids and times, most
   of them completed); the figure is the browser's first-contentful-paint of /ui/jobs, from the start of
   the navigation (Navigation Timing), over ``--paints`` fresh loads.
2. Live update latency: with /ui/jobs open, a job is let finish; the delay is from its ``finished_at`` as
   the store recorded it to the moment the page's row shows ``completed`` (a MutationObserver's
   ``Date.now()``: the same machine's clock), over ``--updates`` jobs.
3. Idle cost: the server process's CPU (user + system, its children excluded) over ``--idle`` seconds with
   no dashboard open and with ``--pages`` dashboards open, interleaved A, B, A, B; B minus A is their cost.
   An idle page costs the server only its SSE stream (it fetches nothing until an event), so the pages
   are ``--pages`` clients holding /ui/events open as the page's EventSource does (50 browser contexts
   would measure the browser's load on the shared CPUs more than the server).

    python -m bench.dashboard [--jobs 100000] [--pages 50] [--idle 20]

Prints one JSON object. Needs Chromium at /usr/bin/chromium (or $CORRAL_CHROMIUM) and playwright.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import free_port, summary, ts

CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")


def say(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def seed(db: Path, n: int) -> None:
    """``n`` jobs in a fresh store: one submitted, its row copied (new id, name, time; 9 in 10 completed)."""
    import sqlalchemy as sa

    from corral.coordinator.service import Coordinator, Settings
    from corral.domain.spec import JobSpec
    from corral.store import schema as s
    from corral.store.sql import Store

    store = Store(f"sqlite:///{db}")
    coord = Coordinator(store, Settings())
    first = coord.submit(JobSpec.model_validate({"name": "seed", "tags": ["bench"], "tasks": [{"run": "true"}]}))
    cols = [c.name for c in s.jobs.c if c.name not in ("seq", "id", "name", "state", "created_at", "started_at",
                                                         "finished_at")]
    now = time.time()
    # One statement: SQLite makes the rows (a recursive count), copying the submitted job's other columns.
    with store.transaction() as tx:
        tx.c.execute(sa.text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) "
            f"INSERT INTO jobs (id, name, state, created_at, started_at, finished_at, {', '.join(cols)}) "
            "SELECT lower(hex(randomblob(16))), 'seed-' || i, "
            "CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END, :t0 + i * :step, :t0 + i * :step + 0.1, "
            f":t0 + i * :step + 1.0, {', '.join('j.' + c for c in cols)} "
            "FROM n, (SELECT * FROM jobs WHERE id = :id) AS j"),
            {"n": n - 1, "t0": now - 7 * 86400, "step": 7 * 86400 / n, "id": first["id"]})
    store.close()


def start(data: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "corral", "up", "--port", str(port), "--data-dir", str(data),
                             "--log-level", "warning", "--no-token", "--runtime", "process", "--grpc-port", "0"],
                            stdout=sys.stderr, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v1/nodes").json()["items"]:
                return url, proc
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("corral up did not start")
        time.sleep(0.1)


def first_paints(browser: Any, url: str, n: int, warm: bool) -> tuple[list[float], list[float]]:
    """First-contentful-paint and the response's end (the server's part), in ms from the navigation's start;
    one load before them is not counted (the browser's first renderer process). ``warm``: every load in one
    open tab (a returning user: the renderer runs, the CSS and scripts are cached); else each in a new
    browser context (a new renderer process, nothing cached)."""
    out, served = [], []
    shared = browser.new_context() if warm else None
    tab = shared.new_page() if shared is not None else None
    for i in range(n + 1):
        ctx = shared or browser.new_context()
        page = tab or ctx.new_page()
        page.goto(url + "/ui/jobs", wait_until="load")
        fcp = page.evaluate("""() => new Promise(done => {
            const get = () => performance.getEntriesByName('first-contentful-paint')[0];
            if (get()) return done(get().startTime);
            new PerformanceObserver(() => get() && done(get().startTime)).observe({type: 'paint', buffered: true});
        })""")
        end = page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd")
        if i:
            out.append(float(fcp))
            served.append(float(end))
        if shared is None:
            ctx.close()
    if shared is not None:
        shared.close()
    return out, served


def live_updates(browser: Any, url: str, n: int, tmp: Path) -> list[float]:
    client = httpx.Client(base_url=url, timeout=30)
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url + "/ui/jobs", wait_until="load")
    page.wait_for_function("() => window.htmx !== undefined")
    page.wait_for_timeout(1000)  # the SSE stream is open
    out = []
    for i in range(n):
        gate = tmp / f"gate-{i}"
        job = client.post("/v1/jobs", json={"name": f"live-{i}", "tasks": [
            {"run": f"while [ ! -e {gate} ]; do sleep 0.02; done"}]}).json()
        page.wait_for_selector(f"tr[data-job='{job['id']}'] .badge:has-text('running')", timeout=30000)
        page.evaluate("""id => { window.__seen = null; new MutationObserver((_, o) => {
            const b = document.querySelector(`tr[data-job='${id}'] .badge`);
            if (b && b.textContent === 'completed') { window.__seen = Date.now() / 1000; o.disconnect(); }
        }).observe(document.getElementById('jobs-table'), {subtree: true, childList: true, characterData: true}); }""",
                      job["id"])
        gate.touch()
        page.wait_for_function("() => window.__seen !== null", timeout=30000)
        seen = float(page.evaluate("() => window.__seen"))
        finished = ts(client.get(f"/v1/jobs/{job['id']}").json()["finished_at"])
        out.append((seen - finished) * 1000)
    ctx.close()
    client.close()
    return out


def cpu_percent(pid: int, seconds: float) -> float:
    p = psutil.Process(pid)
    a, t0 = p.cpu_times(), time.monotonic()
    time.sleep(seconds)
    b, t1 = p.cpu_times(), time.monotonic()
    return round(100 * ((b.user - a.user) + (b.system - a.system)) / (t1 - t0), 2)


def idle_cost(url: str, pid: int, pages: int, seconds: float, rounds: int) -> dict[str, Any]:
    """An idle open page costs the server its SSE stream (it fetches nothing until an event comes): ``pages``
    streams held open by clients as the page's EventSource holds it, against none, interleaved."""
    none, open_ = [], []
    for _ in range(rounds):
        none.append(cpu_percent(pid, seconds))
        say(f"no dashboard: {none[-1]} % of a core; load {os.getloadavg()}")
        stop = threading.Event()
        opened = threading.Semaphore(0)

        def hold(stop: threading.Event, opened: threading.Semaphore) -> None:
            try:
                with httpx.Client(base_url=url, timeout=None) as c, \
                        c.stream("GET", "/ui/events", params={"since": time.time()}) as r:
                    assert r.status_code == 200, r.status_code
                    opened.release()
                    for _ in r.iter_bytes():
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                return  # the server stopped at the end of the run

        threads = [threading.Thread(target=hold, args=(stop, opened), daemon=True) for _ in range(pages)]
        for t in threads:
            t.start()
        for _ in range(pages):
            if not opened.acquire(timeout=60):
                raise RuntimeError("a stream did not open")
        time.sleep(2)
        open_.append(cpu_percent(pid, seconds))
        say(f"{pages} dashboards: {open_[-1]} % of a core; load {os.getloadavg()}")
        stop.set()  # each ends at its next keep-alive (15 s) or with the process
    return {"cpu_percent_no_dashboard": none, "cpu_percent_dashboards_open": open_,
            "dashboards_cost_percent_of_a_core": round(statistics.mean(open_) - statistics.mean(none), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--paints", type=int, default=5)
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only-paint", action="store_true", help="measure the first paints only")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"jobs_stored": args.jobs, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data"
        data.mkdir()
        t = time.monotonic()
        say(f"seeding {args.jobs} jobs")
        seed(data / "corral.db", args.jobs)
        say("starting corral up")
        out["seed_s"] = round(time.monotonic() - t, 1)
        url, proc = start(data)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                say("first paints")
                for kind in ("cold", "warm", "cold", "warm"):  # interleaved
                    fcp, served = first_paints(browser, url, args.paints, kind == "warm")
                    out.setdefault(f"first_contentful_paint_ms_{kind}", []).append(summary(fcp, 1))
                    out.setdefault(f"jobs_page_response_end_ms_{kind}", []).append(summary(served, 1))
                    say(f"first paint ({kind}): {summary(fcp, 1)}, served: {summary(served, 1)}")
                if not args.only_paint:
                    say("live updates")
                    out["live_update_ms"] = summary(live_updates(browser, url, args.updates, Path(d)), 1)
                    say(f"live updates: {out['live_update_ms']}")
                    say("idle cost")
                    out["idle"] = {"pages": args.pages, "seconds": args.idle,
                                   **idle_cost(url, proc.pid, args.pages, args.idle, args.rounds)}
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
