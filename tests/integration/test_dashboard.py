"""The web dashboard in a real browser: Debian's Chromium driven by Playwright against a real `corral up`
(host processes, and a container for the cancel of one) with real jobs. One server and one browser for the module.

Skips without Chromium or Playwright, except under CI (CI=true), where that is a failure. Screenshots go to
the test's temporary directory, or to $CORRAL_DASHBOARD_SCREENSHOTS when it is set (docs/img/ is made so).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import _unavailable
from tests.harness import Cluster, wait_until

CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 15000  # waits on evidence: only a failure takes this long (the shared CI machine is slow)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard"))
    c.up(env={"CORRAL_RATE_LIMIT": "off"})  # host processes, and containers when an engine answers
    yield c
    c.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("PLAYWRIGHT IS NOT INSTALLED: pip install -e '.[dev]'")
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        _unavailable(f"NO CHROMIUM AT {CHROMIUM}: apt-get install chromium (or set CORRAL_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("CORRAL_DASHBOARD_SCREENSHOTS")
    return Path(where) if where else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(up: Cluster, browser: Any) -> Iterator[Any]:
    """A signed-in page: the login link sets the session cookie and lands on the dashboard."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    p.goto(f"{up.url}/login?token={up.token}")
    p.wait_for_url(f"{up.url}/ui/")
    yield p
    ctx.close()


def until_file(path: Path) -> str:
    """A shell loop that waits for ``path`` to exist (the test's way to end a task when it chooses)."""
    return f"while [ ! -e {path} ]; do sleep 0.05; done"


def test_a_browser_without_a_session_is_sent_to_sign_in(up: Cluster, browser: Any) -> None:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    p.goto(f"{up.url}/")
    p.wait_for_url(f"{up.url}/ui/login")
    p.fill("input[name=token]", "not-the-token")
    p.click("button[type=submit]")
    p.wait_for_selector("#login-error:has-text('wrong')")
    p.fill("input[name=token]", str(up.token))
    p.click("button[type=submit]")
    p.wait_for_url(f"{up.url}/ui/")
    assert p.locator("h1").inner_text() == "Overview"
    ctx.close()


def test_the_jobs_list_updates_live_when_a_job_finishes(up: Cluster, page: Any, tmp_path: Path, shots: Path) -> None:
    gate = tmp_path / "go"
    job = up.submit({"name": "live-list", "tags": ["dash"], "tasks": [{"name": "wait", "run": until_file(gate)}]})
    page.goto(f"{up.url}/ui/jobs")
    row = page.locator(f"tr[data-job='{job['id']}'] .badge")
    row.wait_for()
    wait_until(lambda: row.inner_text() == "running", 10, what="the row to show the job running")
    gate.touch()
    changed = time.monotonic()
    page.wait_for_selector(f"tr[data-job='{job['id']}'] .badge:has-text('completed')")
    assert time.monotonic() - changed < 5
    # A job submitted meanwhile appears without a reload.
    other = up.submit({"name": "live-new", "tasks": [{"run": "true"}]})
    page.wait_for_selector(f"tr[data-job='{other['id']}']")
    page.screenshot(path=str(shots / "dashboard-jobs.png"))
    # The filters are the API's: a state filter shows only its jobs.
    page.goto(f"{up.url}/ui/jobs?state=failed")
    assert page.locator(f"tr[data-job='{job['id']}']").count() == 0


def test_a_workflow_graph_shows_its_failed_branch_in_the_failed_colour(up: Cluster, page: Any, shots: Path) -> None:
    job = up.submit({"name": "fan-out", "tasks": [
        {"name": "prepare", "run": "echo ready"},
        {"name": "fan", "parallel": {"tasks": [{"name": "good", "run": "true"},
                                               {"name": "bad", "run": "echo broken >&2; exit 3"}]}}]})
    assert up.wait_job(job["id"], {"failed"})["state"] == "failed"
    page.goto(f"{up.url}/ui/jobs/{job['id']}")
    bad = page.locator("svg.graph g.node[data-task='bad'] rect")
    good = page.locator("svg.graph g.node[data-task='good'] rect")
    # Once the page has its styles (a loaded machine can paint the graph before the sheet applies).
    bad.wait_for()
    page.wait_for_function("() => getComputedStyle(document.documentElement).getPropertyValue('--failed').trim()"
                           " && getComputedStyle(document.querySelector("
                           "\"svg.graph g.node[data-task='bad'] rect\")).fill")
    failed_colour = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--failed').trim()")
    fill = bad.evaluate("e => getComputedStyle(e).fill")
    assert _rgb(fill) == _rgb(failed_colour)
    assert _rgb(good.evaluate("e => getComputedStyle(e).fill")) != _rgb(failed_colour)
    # The graph draws the chain's edge and the parallel's frame; the task table has the exit code.
    assert page.locator("svg.graph path.edge").count() >= 1
    assert page.locator("svg.graph g.frame[data-task='fan']").count() == 1
    assert page.locator("tr[data-task='bad'] td.num").inner_text() == "3"
    page.screenshot(path=str(shots / "dashboard-workflow.png"), full_page=True)


def test_logs_stream_while_a_task_prints_and_stay_after(up: Cluster, page: Any, tmp_path: Path) -> None:
    gate = tmp_path / "stop"
    script = f"i=0; while [ ! -e {gate} ]; do i=$((i+1)); echo tick-$i; sleep 0.1; done; echo the-end"
    job = up.submit({"name": "printer", "tasks": [{"name": "print", "run": script}]})
    up.wait_job(job["id"], {"running"})
    page.goto(f"{up.url}/ui/jobs/{job['id']}")
    log = page.locator("#log")
    first = int(log.locator(".ln").count())
    # Lines arrive while the page stays open (no reload): more than the page was rendered with.
    page.wait_for_function("n => document.querySelectorAll('#log .ln').length > n + 5", arg=first)
    gate.touch()
    page.wait_for_selector("#log .ln:has-text('the-end')")
    page.wait_for_selector("#job-state:has-text('completed')")
    lines = log.locator(".ln").all_inner_texts()
    ticks = [int(x.split("-")[1]) for x in lines if x.startswith("tick-")]
    assert ticks == list(range(1, len(ticks) + 1))  # each line once, in order
    page.reload()
    assert page.locator("#log .ln").count() == len(lines)


def test_cancel_from_the_page_stops_the_task(up: Cluster, page: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job = up.submit({"name": "to-cancel", "tasks": [{"name": "spin",
                                                     "run": f"echo $$ > {pid_file}; while true; do sleep 0.1; done"}]})
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 15, what="the task to start")
    pid = int(pid_file.read_text())
    assert psutil.pid_exists(pid)
    page.goto(f"{up.url}/ui/jobs/{job['id']}")
    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click("button:has-text('Cancel')")
    page.wait_for_selector("#job-state:has-text('cancelled')")
    assert dialogs and "Cancel this job" in dialogs[0]
    wait_until(lambda: not _alive(pid), 10, what="the task's process to end")
    assert up.job(job["id"])["state"] == "cancelled"


def test_cancel_from_the_page_stops_the_container(up: Cluster, page: Any, docker_client: Any,
                                                  busybox_image: str) -> None:
    job = up.submit({"name": "container-to-cancel", "tasks": [
        {"name": "spin", "image": busybox_image, "run": "while true; do sleep 0.1; done"}]})

    def running() -> bool:
        found = docker_client.containers.list(filters={"label": f"corral.job={job['id']}", "status": "running"})
        return bool(found)

    wait_until(running, 30, what="the task's container to run")
    page.goto(f"{up.url}/ui/jobs/{job['id']}")
    page.once("dialog", lambda d: d.accept())
    page.click("button:has-text('Cancel')")
    page.wait_for_selector("#job-state:has-text('cancelled')")
    wait_until(lambda: not running(), 20, what="the container to stop")


def test_a_yaml_error_is_shown_on_its_line_and_a_valid_job_is_submitted(up: Cluster, page: Any,
                                                                          shots: Path) -> None:
    page.goto(f"{up.url}/ui/submit")
    page.fill("#yaml", "name: typo\ntasks:\n  - name: one\n    rnu: echo hi\n")
    page.wait_for_selector("#gutter .bad[data-line='4']")
    problem = page.locator("#problems li.bad").first.inner_text()
    assert problem.startswith("line 4:") and "rnu" in problem
    page.screenshot(path=str(shots / "dashboard-submit.png"))
    page.fill("#yaml", "name: fixed\ntasks:\n  - name: one\n    run: echo submitted-from-the-page\n")
    page.wait_for_selector("#problems li.ok")
    assert page.locator("#gutter .bad").count() == 0
    page.click("#submit-btn")
    page.wait_for_url(f"{up.url}/ui/jobs/*")
    page.wait_for_selector("#log .ln:has-text('submitted-from-the-page')")


def test_the_overview_and_nodes_pages_and_a_drain_from_the_page(up: Cluster, page: Any, shots: Path) -> None:
    done = up.submit({"name": "for-the-overview", "tasks": [{"run": "true"}]})
    up.wait_job(done["id"], {"completed"})
    page.goto(f"{up.url}/ui/")
    assert int(page.locator("a.card.st-completed .n").inner_text()) >= 1
    assert page.locator("svg.chart rect").count() >= 1
    page.screenshot(path=str(shots / "dashboard-overview.png"))
    page.goto(f"{up.url}/ui/nodes")
    node = up.nodes()[0]
    card = page.locator(f"article[data-node='{node['id']}']")
    assert card.locator(".bar").count() == 3
    page.on("dialog", lambda d: d.accept())
    card.locator("button:has-text('Drain')").click()
    page.wait_for_selector(f"article[data-node='{node['id']}'] .pill:has-text('draining')")
    assert up.get(f"/v1/nodes/{node['id']}")["drain"] is not None
    card.locator("button:has-text('Undrain')").click()
    page.wait_for_selector(f"article[data-node='{node['id']}'] button:has-text('Drain')")
    assert up.get(f"/v1/nodes/{node['id']}")["drain"] is None
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots / "dashboard-nodes-dark.png"))
    page.emulate_media(color_scheme="light")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _rgb(colour: str) -> tuple[int, ...]:
    """``#rrggbb`` or ``rgb(r, g, b)`` as a tuple."""
    colour = colour.strip()
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(x)) for x in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3])
