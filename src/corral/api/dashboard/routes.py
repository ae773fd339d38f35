"""The dashboard's pages: server-rendered Jinja2 templates (autoescaped), htmx for the parts that change,
one SSE stream per page (corral.api.dashboard.live) telling them when.

Each page is a route under /ui/ and each live part a fragment route beside it (``.../table``, ``.../body``)
that the page re-fetches on its event. Pages read through the coordinator and the store with the caller
bound (corral.auth.context), as the API does, so a caller sees only its namespaces. The buttons (cancel,
restart, delete, drain) call the native API with ``fetch`` (JSON, same origin, the session cookie), so the
API's own rules and the edge's Origin and content-type checks protect them.
"""

from __future__ import annotations

import hmac
import math
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from corral.api import timefmt
from corral.api.deps import Services, services
from corral.api.errors import BadInput
from corral.api.native import cluster
from corral.api.native.views import job_view
from corral.api.timefmt import parse_time
from corral.auth.middleware import identity_of
from corral.coordinator.errors import NotFound, Overloaded
from corral.domain.resources import format_size
from corral.domain.states import JobState
from corral.store import dashboard as queries
from corral.store.sql import decode_cursor, encode_cursor

from . import graph as graphs
from . import validate
from .live import Live, TooManyStreams, log_html

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
Svc = Annotated[Services, Depends(services)]
STATES = [s.value for s in JobState]
PAGE = 50  # jobs a page of the list shows
SINCE = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
LOG_TAIL = 1000  # lines a job page starts with
TASKS_SHOWN = 200
STATE_COLOURS = ("pending", "scheduled", "running", "completed", "failed", "cancelled")


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    d = max(time.time() - float(ts), 0)
    if d < 60:
        return f"{int(d)} s ago"
    if d < 3600:
        return f"{int(d // 60)} min ago"
    if d < 86400:
        return f"{int(d // 3600)} h ago"
    return f"{int(d // 86400)} d ago"


def _duration(a: Any, b: Any) -> str:
    if not a:
        return ""
    s = max((float(b) if b else time.time()) - float(a), 0)
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {int(s % 60)} s" if s < 3600 else f"{s / 3600:.1f} h"


templates.env.filters["ago"] = _ago
templates.env.filters["size"] = lambda n: format_size(int(n or 0))
templates.env.filters["short"] = lambda v: str(v or "")[:12]
templates.env.globals["duration"] = _duration
templates.env.globals["rfc3339"] = timefmt.rfc3339


def live(request: Request) -> Live:
    hub: Live = request.app.state.dashboard_live
    return hub


def _page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    ident = identity_of(request.scope)
    ctx.setdefault("rendered_at", time.time())
    return templates.TemplateResponse(request, name, {
        "who": ident, "auth": request.app.state.auth.enabled, "path": request.url.path, **ctx},
        headers={"Cache-Control": "no-store"})


# -- the overview ----------------------------------------------------------------------------------
@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


def _overview(svc: Services) -> dict[str, Any]:
    now = time.time()
    bucket, buckets = 300, 12
    start = now - bucket * buckets
    with svc.coord.store.read() as tx:
        by_state = queries.jobs_by_state(tx)
        hour = queries.jobs_created_since(tx, start, bucket)
        finished = queries.jobs_finished_since(tx, now - 3600, now - 86400)
        reasons = queries.pending_reasons(tx)
        nodes = tx.nodes()
    series: list[dict[str, int]] = [{} for _ in range(buckets)]
    for i, st, count in hour:
        if 0 <= i < buckets:
            series[i][st] = series[i].get(st, 0) + count
    top = max([sum(b.values()) for b in series] + [1])
    node_states: dict[str, int] = {}
    for n in nodes:
        st = "draining" if n.get("drain_requested_at") is not None and n["state"] == "ready" else n["state"]
        node_states[st] = node_states.get(st, 0) + 1
    return {"by_state": by_state, "total": sum(by_state.values()), "series": series, "top": top,
            "bucket_min": bucket // 60, "finished_hour": finished, "per_min": round(finished / 60, 2),
            "reasons": reasons, "node_states": node_states, "queues": cluster.list_queues(svc)["items"],
            "states": STATE_COLOURS}


@router.get("/ui/")
def overview(request: Request, svc: Svc) -> HTMLResponse:
    return _page(request, "overview.html", o=_overview(svc), title="Overview")


@router.get("/ui/overview")
def overview_part(request: Request, svc: Svc) -> HTMLResponse:
    return _page(request, "_overview.html", o=_overview(svc))


# -- jobs --------------------------------------------------------------------------------------------
class JobFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: str = Field("", max_length=200)
    queue: str = Field("", max_length=200)
    tag: str = Field("", max_length=200)
    q: str = Field("", max_length=200)
    since: str = Field("", max_length=10)
    after: str = Field("", max_length=40)
    before: str = Field("", max_length=40)
    cursor: str = Field("", max_length=200)

    def query(self, **changes: str) -> str:
        d = {**self.model_dump(), **changes}
        return urlencode({k: v for k, v in d.items() if v})


def _filters(state: Annotated[str, Query(max_length=200)] = "", queue: Annotated[str, Query(max_length=200)] = "",
             tag: Annotated[str, Query(max_length=200)] = "", q: Annotated[str, Query(max_length=200)] = "",
             since: Annotated[str, Query(max_length=10)] = "", after: Annotated[str, Query(max_length=40)] = "",
             before: Annotated[str, Query(max_length=40)] = "",
             cursor: Annotated[str, Query(max_length=200)] = "") -> JobFilters:
    return JobFilters(state=state, queue=queue, tag=tag, q=q, since=since, after=after, before=before, cursor=cursor)


Filters = Annotated[JobFilters, Depends(_filters)]


def _jobs(svc: Services, f: JobFilters) -> dict[str, Any]:
    bad = [s for s in f.state.split(",") if s and s not in STATES]
    if bad:
        raise BadInput(f"unknown state '{bad[0]}': one of " + ", ".join(STATES))
    if f.since and f.since not in SINCE:
        raise BadInput(f"since is one of {', '.join(SINCE)}")
    try:
        after = parse_time(f.after) if f.after else None
        before = parse_time(f.before) if f.before else None
        before_seq = decode_cursor(f.cursor) if f.cursor else None
    except ValueError as e:
        raise BadInput(str(e)) from e
    if f.since:
        after = max(after or 0, time.time() - SINCE[f.since])
    with svc.coord.store.read() as tx:
        rows, total = tx.list_jobs(state=f.state or None, queue=f.queue or None, tag=f.tag or None, q=f.q or None,
                                   created_after=after, created_before=before, before_seq=before_seq,
                                   limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    nxt = f.query(cursor=encode_cursor(rows[-1]["seq"])) if more else None
    return {"jobs": [{**job_view(r), "_created": r["created_at"], "_started": r["started_at"],
                      "_finished": r["finished_at"]} for r in rows],
            "total": total, "next": nxt, "first": f.query(cursor="") if f.cursor else None, "f": f,
            "query": f.query(), "states": STATES, "sinces": list(SINCE)}


@router.get("/ui/jobs")
def jobs_page(request: Request, svc: Svc, f: Filters) -> HTMLResponse:
    return _page(request, "jobs.html", title="Jobs", **_jobs(svc, f))


@router.get("/ui/jobs/table")
def jobs_table(request: Request, svc: Svc, f: Filters) -> HTMLResponse:
    return _page(request, "_jobs_table.html", **_jobs(svc, f))


def _job(svc: Services, job_id: str) -> dict[str, Any]:
    if len(job_id) > 64:
        raise NotFound("no job with this id")
    job, tasks, execs, summary, more = svc.coord.get_job_page(job_id, TASKS_SHOWN)
    view = job_view(job, tasks, execs)
    raw = {t["id"]: t for t in tasks}
    t0 = float(job["created_at"])
    t1 = float(job["finished_at"] or time.time())
    span = max(t1 - t0, 0.001)
    timeline = []
    for t in view["tasks"]:
        r = raw[t["id"]]
        if r["kind"] != "run" and not r["started_at"]:
            continue
        start = float(r["started_at"] or 0)
        end = float(r["finished_at"] or (time.time() if start else 0))
        timeline.append({"task": t, "left": max((start - t0) / span * 100, 0) if start else 0,
                         "width": max((end - start) / span * 100, 0.8) if start else 0})
    g = graphs.layout(view["tasks"])
    workflow = any(t["kind"] != "run" or t.get("depends_on") for t in view["tasks"])
    return {"job": view, "raw": job, "summary": summary, "more_tasks": more, "timeline": timeline, "graph": g,
            "workflow": workflow, "span": _duration(t0, t1), "terminal": job["state"] in
            ("completed", "failed", "cancelled"), "restartable": job["state"] in ("failed", "cancelled")}


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, svc: Svc, job_id: str) -> HTMLResponse:
    try:
        ctx = _job(svc, job_id)
    except NotFound as e:  # deleted, mistyped, or another namespace's: a page that says so
        response = _page(request, "error.html", title="No such job", message=str(e))
        response.status_code = 404
        return response
    with svc.coord.store.read() as tx:
        lines = tx.tail_logs(job_id, LOG_TAIL, 2 * 1024 * 1024)
    names = {t["id"]: t["name"] for t in ctx["job"]["tasks"]}
    ctx["log_html"] = log_html(lines, names, len(set(names.values())) > 1)
    ctx["log_after"] = int(lines[-1]["seq"]) if lines else 0
    ctx["log_cut"] = len(lines) >= LOG_TAIL
    return _page(request, "job.html", title=f"Job {ctx['job']['name'] or job_id[:12]}", **ctx)


@router.get("/ui/jobs/{job_id}/body")
def job_body(request: Request, svc: Svc, job_id: str) -> HTMLResponse:
    return _page(request, "_job_body.html", **_job(svc, job_id))


# -- nodes -----------------------------------------------------------------------------------------------
def _nodes(svc: Services) -> dict[str, Any]:
    items = cluster.list_nodes(svc)["items"]
    with svc.coord.store.read() as tx:
        running = tx.active_executions()
        tasks = {t["id"]: t for t in tx.tasks_by_ids([e["task_id"] for e in running])} if running else {}
        seen = {j["id"] for j in tx.jobs_by_ids({t["job_id"] for t in tasks.values()})}  # the caller's namespaces
    work: dict[str, list[dict[str, Any]]] = {}
    for e in running:
        t = tasks.get(e["task_id"])
        if t is not None and t["job_id"] in seen:
            work.setdefault(e["node_id"], []).append({"job_id": t["job_id"], "task": t["name"], "state": e["state"],
                                                      "gpus": e.get("gpus")})
    for n in items:
        cap, alloc = n["capacity"], n["allocated"]
        n["bars"] = [
            {"name": "CPU", "used": alloc["cpu"], "cap": cap["cpu"],
             "text": f"{alloc['cpu']:g} / {cap['cpu']:g} cores"},
            {"name": "Memory", "used": alloc["memory"], "cap": cap["memory"],
             "text": f"{format_size(alloc['memory'])} / {format_size(cap['memory'])}"},
            {"name": "Disk", "used": alloc["disk"], "cap": cap["disk"],
             "text": f"{format_size(alloc['disk'])} / {format_size(cap['disk'])}"}]
        for b in n["bars"]:
            b["pct"] = min(round(100 * float(b["used"]) / float(b["cap"]), 1), 100) if b["cap"] else 0
        used_gpus = {int(g) for w in work.get(n["id"], []) for g in (w.get("gpus") or []) if str(g).isdigit()}
        n["gpu_slots"] = [{"index": i, "used": i in used_gpus} for i in range(cap["gpu"])]
        n["work"] = work.get(n["id"], [])[:50]
        n["draining"] = n["drain"] is not None or n["state"] == "draining"
        n["heartbeat_ts"] = parse_time(n["last_heartbeat"]) if n["last_heartbeat"] else None
    return {"nodes": items}


@router.get("/ui/nodes")
def nodes_page(request: Request, svc: Svc) -> HTMLResponse:
    return _page(request, "nodes.html", title="Nodes", **_nodes(svc))


@router.get("/ui/nodes/table")
def nodes_table(request: Request, svc: Svc) -> HTMLResponse:
    return _page(request, "_nodes_table.html", **_nodes(svc))


# -- pods, services --------------------------------------------------------------------------------------
@router.get("/ui/pods")
def pods_page(request: Request, svc: Svc,
              origin: Annotated[str | None, Query(pattern="^(native|podling|stacks)$")] = None) -> HTMLResponse:
    from corral.api.native import pods

    items = pods.list_pods(svc, None, None, origin, 200, None)["items"]
    return _page(request, "pods.html", title="Stacks" if origin == "stacks" else "Pods", pods=items, origin=origin)


@router.get("/ui/services")
def services_page(request: Request, svc: Svc) -> HTMLResponse:
    from corral.api.native import services as services_api

    items = services_api.list_services(svc, None, 200, None)["items"]
    return _page(request, "services.html", title="Services", services=items)


# -- submit --------------------------------------------------------------------------------------------
@router.get("/ui/submit")
def submit_page(request: Request) -> HTMLResponse:
    return _page(request, "submit.html", title="Submit", formats=validate.FORMATS)


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=validate.MAX_TEXT)
    format: str = Field("auto", pattern="^(auto|native|tork)$")


@router.post("/ui/validate")
async def check(body: CheckIn) -> JSONResponse:
    """The text's problems, each with its line: what POST /v1/jobs (or Tork's /jobs) would answer."""
    import asyncio

    r = await asyncio.to_thread(validate.check, body.text, body.format)
    return JSONResponse({"ok": r.ok, "format": r.format, "tasks": r.tasks,
                         "problems": [{"line": p.line, "field": p.field, "message": p.message} for p in r.problems]})


# -- live updates ----------------------------------------------------------------------------------------
@router.get("/ui/events")
async def events(request: Request, svc: Svc, hub: Annotated[Live, Depends(live)],
           job: Annotated[str | None, Query(max_length=64, pattern="^[0-9a-f]+$")] = None,
           log_after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
           since: Annotated[float | None, Query(ge=0, le=1e11)] = None) -> StreamingResponse:
    import asyncio

    def task_names(job_id: str) -> dict[str, str]:
        with svc.coord.store.read() as tx:  # the caller's namespaces: another's job is not found
            if tx.job(job_id) is None:
                raise NotFound(f"no job with id '{job_id}'")
            return {t["id"]: t["name"] for t in tx.tasks_of(job_id)}

    names = await asyncio.to_thread(task_names, job) if job is not None else {}
    try:
        stream = hub.open(job, log_after if job else None, since if since is None or math.isfinite(since) else None,
                          names)
    except TooManyStreams as e:
        raise Overloaded(str(e)) from e
    return StreamingResponse(hub.events(stream), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- signing in ----------------------------------------------------------------------------------------
@router.get("/ui/login")
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", title="Sign in", local=bool(request.app.state.dashboard_token))


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str | None = Field(None, max_length=4096)
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=1024)
    key: str | None = Field(None, max_length=4096)


SESSION_TTL = 12 * 3600.0


def cookie_name(request: Request) -> str:
    server = request.scope.get("server")
    return f"corral-token-{server[1]}" if server and server[1] else "corral-token"


@router.post("/ui/login")
async def login(body: LoginIn, request: Request) -> Response:
    """An access token, a user's password or an API key for a session cookie (HttpOnly, SameSite=Strict,
    Secure under TLS) holding the access token or a signed token of the caller's identity."""
    import asyncio

    from corral.api.ratelimit import client_key

    auth = request.app.state.auth
    local: str | None = request.app.state.dashboard_token
    value: str | None = None
    if body.token:
        if local and hmac.compare_digest(body.token.encode(), local.encode()):
            value = local
    elif auth.enabled and (body.key or (body.username and body.password)):
        address, user = client_key(request.scope), body.username or ""
        if not await auth.login_allowed(address, user):
            return JSONResponse({"detail": "too many failed logins: wait a minute and try again"}, status_code=429,
                                headers={"Retry-After": "60"})
        if body.key:
            ident = await asyncio.to_thread(auth.resolve_key, body.key)
        else:
            ident = await asyncio.to_thread(auth.login, body.username, body.password)
        if ident is None:
            await auth.login_failed(address, user)
        else:
            value = auth.issue_token(ident, SESSION_TTL)
    else:
        return JSONResponse({"detail": "send 'token', or 'username' and 'password', or 'key'"}, status_code=400)
    if value is None:
        return JSONResponse({"detail": "wrong token, user name or password, or key"}, status_code=401)
    response = JSONResponse({"ok": True})
    response.set_cookie(cookie_name(request), value, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=int(SESSION_TTL))
    return response


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    response = JSONResponse({"ok": True})
    response.delete_cookie(cookie_name(request), path="/", httponly=True, samesite="strict")
    return response
