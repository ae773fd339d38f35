"""Job webhooks: an HTTP POST to each of a job's ``webhooks`` when the job (``job.StateChange``) or one of
its tasks (``task.StateChange``) changes state.

How it works. Every ``CORRAL_WEBHOOK_INTERVAL`` seconds (0.25 by default) a loop reads the jobs whose
delivery is not over (``jobs.hooks_done = false``), a page at a time with a cursor so that every such job
gets its turn, and compares each job's state (and, for a job with task hooks, each task's state) with what
``jobs.hook_marks`` says was delivered. A job with something new is handed to a small pool of delivery
threads; while it is there the loop leaves it alone, so one job's changes go out one at a time, in order,
and a slow receiver never holds up the loop or other jobs.

A delivery reads the job again and sends each change to every hook of its kind whose ``if`` holds: the
body is the job (or the task) as Tork shows it, with every secret value replaced by ``[REDACTED]``; the
headers are the hook's, each rendered as an expression over ``secrets``, ``inputs`` and ``job``, plus
``Content-Type: application/json``. An attempt times out after 5 s; connection errors, 5xx and 429 are
tried again after 0.5, 1, 2 and 4 s (5 attempts); any other answer is final. A change that could not be
delivered is logged (with the URL, never the headers, which may hold secrets) and given up.

After each change that went out (or was given up) ``hook_marks`` is updated with a compare-and-set on the
version it holds, so a coordinator that restarts sends again at most the change it was delivering:
at-least-once. Once the job is finished and its last change went out, ``hooks_done`` is set and the job
is not read again (a restart of the job opens it again).

Where a hook may go. Before each attempt the URL's host is resolved and every address it has is checked:
loopback, link-local, private, multicast, unspecified, reserved and other non-public addresses are
refused (logged, not retried) unless the operator allowed the host with ``--allow-webhook-host``. The
request then goes to the address that was checked (the ``Host`` header and TLS's server name stay the
URL's), so a name that resolves differently a moment later (DNS rebinding) does not lead it elsewhere;
redirects are never followed.

What is sent is what the loop sees: changes closer together than the interval are coalesced, so a
receiver may see ``PENDING`` then ``COMPLETED`` with no ``RUNNING`` between; it never sees them out of
order, and a finished job's final state always arrives.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from corral.api.timefmt import rfc3339
from corral.domain import expr
from corral.domain.spec import WebhookSpec
from corral.domain.states import TERMINAL_JOB_STATES, JobState
from corral.domain.workflow import redact, secrets_in
from corral.store import hooks as sql
from corral.store.sql import Row, Store

log = logging.getLogger("corral.webhooks")

DEFAULT_INTERVAL = 0.25
ATTEMPTS = 5
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # seconds before the 2nd, 3rd, 4th and 5th attempt
TIMEOUT = 5.0
PAGE = 256  # jobs read per pass
MAX_QUEUED = 512  # jobs waiting for or in delivery; beyond this the loop reads no more
WORKERS = 8
REOPEN_EVERY = 1.0  # seconds between looks for restarted jobs
TERMINAL = frozenset(s.value for s in TERMINAL_JOB_STATES)
UNFINISHED = sorted(s.value for s in JobState if s not in TERMINAL_JOB_STATES)
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,200}$")  # RFC 9110's token
JOB_EVENT, TASK_EVENT = "job.StateChange", "task.StateChange"


def interval_from_env() -> float:
    raw = os.environ.get("CORRAL_WEBHOOK_INTERVAL")
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
        if not 0.01 <= value <= 60:
            raise ValueError
    except ValueError:
        log.warning("CORRAL_WEBHOOK_INTERVAL=%r is not a number of seconds from 0.01 to 60; using %s",
                    raw, DEFAULT_INTERVAL)
        return DEFAULT_INTERVAL
    return value


# -- payloads ---------------------------------------------------------------------------------------
def _ended(state: str, at: float | None) -> dict[str, Any]:
    """Tork's completedAt or failedAt, by how the job or task ended."""
    if state == "completed":
        return {"completedAt": rfc3339(at)}
    if state == "failed":
        return {"failedAt": rfc3339(at)}
    if state == "cancelled":
        return {"cancelledAt": rfc3339(at)}
    return {}


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != {}}


def job_json(j: Row, info: JobHooks) -> dict[str, Any]:
    """The job in Tork's shape (its job summary): the body of a job.StateChange hook, before redaction."""
    return _compact({
        "id": j["id"], "parentId": j["parent_job_id"], "name": j["name"], "description": info.description,
        "state": j["state"].upper(), "createdAt": rfc3339(j["created_at"]), "startedAt": rfc3339(j["started_at"]),
        **_ended(j["state"], j["finished_at"]), "inputs": dict(info.inputs), "taskCount": j["task_count"],
        "output": info.output, "result": j["output"], "error": j["error"],
    })


def task_json(t: Row) -> dict[str, Any]:
    """A task in Tork's shape: the body of a task.StateChange hook, before redaction. What the task wrote
    as its output is Tork's ``result``."""
    spec = t["spec"] or {}
    return _compact({
        "id": t["id"], "jobId": t["job_id"], "parentId": t["parent_id"], "position": t["position"] + 1,
        "name": t["name"], "description": spec.get("description"), "state": t["state"].upper(),
        "createdAt": rfc3339(t["created_at"]), "startedAt": rfc3339(t["started_at"]),
        **_ended(t["state"], t["finished_at"]), "image": spec.get("image"), "run": spec.get("run"),
        "cmd": spec.get("command"), "var": spec.get("var"), "progress": t["progress"],
        "exitCode": t["exit_code"], "result": t["output"], "error": t["error"],
    })


# -- what a job asks for ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobHooks:
    """A job's webhooks and what their expressions see, read from its spec once."""

    hooks: tuple[WebhookSpec, ...]
    inputs: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    output: str | None = None
    hidden: tuple[str, ...] = ()  # the text of every secret to redact: the job's and its subjobs'

    @property
    def wants_tasks(self) -> bool:
        return any(h.event == TASK_EVENT for h in self.hooks)

    @staticmethod
    def from_spec(spec: Mapping[str, Any]) -> JobHooks:
        hooks: list[WebhookSpec] = []
        for h in spec.get("webhooks") or []:
            try:
                hooks.append(WebhookSpec.model_validate(h))
            except ValidationError:
                log.warning("a stored webhook is not valid any more; it is left out")
        return JobHooks(tuple(hooks), dict(spec.get("inputs") or {}), dict(spec.get("secrets") or {}),
                        spec.get("description"), spec.get("output"), secrets_in(spec))


@dataclass
class Change:
    """A state not yet delivered: of the job (task None) or of one of its tasks."""

    state: str
    task: Row | None = None


def changes(job: Row, tasks: Iterable[Row]) -> list[Change]:
    """What is new since ``hook_marks``, in the order it is sent: an unfinished job's change first, then its
    tasks' (by the time of their last change, then position), then a finished job's change last."""
    marks = job["hook_marks"] or {}
    delivered: Mapping[str, str] = marks.get("tasks") or {}
    new_tasks = sorted((t for t in tasks if delivered.get(t["id"]) != t["state"]),
                       key=lambda t: (t["finished_at"] or t["started_at"] or t["created_at"] or 0, t["position"]))
    out = [Change(t["state"], t) for t in new_tasks]
    if marks.get("job") != job["state"]:
        job_change = Change(job["state"])
        out = out + [job_change] if job["state"] in TERMINAL else [job_change, *out]
    return out


def has_changes(job: Row, task_states: Mapping[str, str]) -> bool:
    marks = job["hook_marks"] or {}
    delivered: Mapping[str, str] = marks.get("tasks") or {}
    return marks.get("job") != job["state"] or any(delivered.get(t) != st for t, st in task_states.items())


def _headers(h: WebhookSpec, ctx: Mapping[str, Any], where: str) -> httpx.Headers:
    """The hook's headers, rendered, after ``Content-Type: application/json`` (which they may replace)."""
    out = httpx.Headers({"Content-Type": "application/json"})
    for k, v in h.headers.items():
        value = expr.render(v, ctx, f"{where}.headers.{k}")
        if not HEADER_NAME_RE.match(k):
            raise ValueError(f"{where}.headers: '{k}' is not a header name")
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
            raise ValueError(f"{where}.headers.{k}: the rendered value holds a line break or a control character")
        out[k] = value
    return out


# -- where a hook may go ------------------------------------------------------------------------------
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_address(ip: IPAddress) -> str | None:
    """Why a webhook may not go to ``ip`` (loopback, private, ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what, hit in (("a loopback", ip.is_loopback), ("a link-local", ip.is_link_local),
                      ("an unspecified", ip.is_unspecified), ("a multicast", ip.is_multicast),
                      ("a private", ip.is_private), ("a reserved", ip.is_reserved)):
        if hit:
            return what
    return None if ip.is_global else "a non-public"


class Refused(Exception):
    """The hook's host is not one a webhook may reach; the message says why."""


def pick_address(host: str, port: int, allowed: frozenset[str],
                 resolve: Any = socket.getaddrinfo) -> str | None:
    """The address to connect to for ``host``: every address it resolves to is checked, and the first is
    used. None when the operator allowed the host (it is reached as named). Raises Refused, or OSError
    when the name does not resolve."""
    if host.lower().strip("[]") in allowed:
        return None
    try:
        addrs = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
        addrs = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
    if not addrs:
        raise OSError(f"{host} has no address")
    for a in addrs:
        why = refused_address(a)
        if why is not None and str(a) not in allowed:
            raise Refused(f"its host resolves to {a}, {why} address (the server's --allow-webhook-host "
                          "HOST allows it)")
    return str(addrs[0])


class _Stopping(Exception):
    """The coordinator is stopping: leave the change undelivered, to be sent again after a restart."""


# -- the loop -----------------------------------------------------------------------------------------
class Webhooks:
    def __init__(self, store: Store, interval: float | None = None, workers: int = WORKERS,
                 allowed_hosts: Iterable[str] = (), leading: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.leading = leading  # delivery is the leader's (several coordinators on one database)
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)
        self.interval = interval_from_env() if interval is None else interval
        self.stop_event = threading.Event()
        self._queue: queue.Queue[str] = queue.Queue()
        self._busy: set[str] = set()  # queued or being delivered
        self._lock = threading.Lock()
        self._info: dict[str, JobHooks] = {}
        self._cursor = 0
        self._next_reopen = 0.0
        self._local = threading.local()  # an HTTP client per delivery thread
        self._workers = [threading.Thread(target=self._work, name=f"corral-webhook-{i}", daemon=True)
                         for i in range(workers)]

    # The loop thread ------------------------------------------------------------------------------
    def run(self) -> None:
        """Poll until stopped (BackgroundLoops runs this in its own thread)."""
        for w in self._workers:
            w.start()
        failing_since: float | None = None
        last_said = 0.0
        while not self.stop_event.wait(self.interval):
            if not self.leading():
                continue
            try:
                self.poll_once()
                if failing_since is not None:
                    log.info("webhook passes work again")
                    failing_since = None
            except Exception as e:
                # The traceback once; then a line every 30 s while it goes on (the database may be away).
                now = time.monotonic()
                if failing_since is None:
                    log.exception("webhook pass failed; trying again")
                    failing_since, last_said = now, now
                elif now - last_said >= 30:
                    log.warning("webhook passes failing for %.0f s: %s", now - failing_since, type(e).__name__)
                    last_said = now

    def stop(self) -> None:
        self.stop_event.set()
        for _ in self._workers:
            self._queue.put("")

    def poll_once(self, now: float | None = None) -> int:
        """One look at the jobs whose delivery is not over; returns how many were handed to delivery."""
        now = time.monotonic() if now is None else now
        if now >= self._next_reopen:
            self._next_reopen = now + REOPEN_EVERY
            with self.store.read() as tx:  # a read first: no write transaction while there is nothing to do
                again = sql.restarted(tx, UNFINISHED)
            if again:
                with self.store.transaction() as tx:
                    sql.reopen(tx, again, UNFINISHED)
        with self._lock:
            busy = set(self._busy)
        room = min(PAGE, MAX_QUEUED - len(busy))
        if room <= 0:
            return 0
        with self.store.read() as tx:
            jobs = sql.jobs_awaiting_hooks(tx, self._cursor, busy, room)
            self._cursor = jobs[-1]["seq"] if len(jobs) == room else 0  # from the start once at the end
            missing = [j["id"] for j in jobs if j["id"] not in self._info]
            for job_id, spec in sql.job_specs(tx, missing).items():
                self._info[job_id] = JobHooks.from_spec(spec or {})
            states = sql.task_states(tx, [j["id"] for j in jobs if self._hooks(j["id"]).wants_tasks])
        handed = 0
        for j in jobs:
            if j["state"] in TERMINAL or has_changes(j, states.get(j["id"], {})):
                with self._lock:
                    if j["id"] in self._busy:
                        continue
                    self._busy.add(j["id"])
                self._queue.put(j["id"])
                handed += 1
        with self._lock:  # forget what is neither in this page nor in delivery: it is read again when due
            keep = {j["id"] for j in jobs} | self._busy
        for job_id in [k for k in self._info if k not in keep]:
            self._info.pop(job_id, None)
        return handed

    def _hooks(self, job_id: str) -> JobHooks:
        return self._info.get(job_id) or JobHooks(())

    # The delivery threads -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if self.stop_event.is_set():
                return
            try:
                self.deliver(job_id)
            except _Stopping:
                return
            except Exception:
                log.exception("webhook delivery for job %s failed; it is tried again", job_id)
            finally:
                with self._lock:
                    self._busy.discard(job_id)

    def deliver(self, job_id: str) -> None:
        """Send the job's undelivered changes, in order, recording each; mark delivery over when the job
        has finished and nothing is left."""
        info = self._info.get(job_id)
        with self.store.read() as tx:
            job = sql.job_awaiting_hooks(tx, job_id)
            if job is None:
                return
            if info is None:
                info = JobHooks.from_spec(sql.job_specs(tx, [job_id]).get(job_id) or {})
            tasks: list[Row] = []
            if info.wants_tasks:
                delivered = (job["hook_marks"] or {}).get("tasks") or {}
                states = sql.task_states(tx, [job_id])[job_id]
                tasks = list(sql.tasks_for_payload(
                    tx, [t for t, st in states.items() if delivered.get(t) != st]).values())
        marks: dict[str, Any] = dict(job["hook_marks"] or {})
        marks["tasks"] = dict(marks.get("tasks") or {})
        version = int(marks.get("v") or 0)
        pending = changes(job, tasks)
        finished = job["state"] in TERMINAL
        for i, ch in enumerate(pending):
            sent = self._send(job, info, ch)
            if ch.task is None:
                marks["job"] = ch.state
            else:
                marks["tasks"][ch.task["id"]] = ch.state
            last = i == len(pending) - 1
            # Recorded after each change that went out; those that matched no hook ride along with the next.
            if sent or last:
                if not self._save(job_id, version, marks, finished and last):
                    return
                version += 1
        if not pending and finished:
            self._save(job_id, version, marks, True)

    def _save(self, job_id: str, version: int, marks: dict[str, Any], done: bool) -> bool:
        marks["v"] = version + 1
        with self.store.transaction() as tx:
            ok = sql.save_marks(tx, job_id, version, marks, done)
        if not ok:
            log.info("webhooks of job %s: its delivery record changed meanwhile (deleted?); stopping", job_id)
        return ok

    def _send(self, job: Row, info: JobHooks, ch: Change) -> bool:
        """POST the change to each hook that wants it; whether any request was made."""
        event = JOB_EVENT if ch.task is None else TASK_EVENT
        hooks = [(i, h) for i, h in enumerate(info.hooks) if h.event == event]
        if not hooks:
            return False
        secrets = [*info.secrets.values(), *info.hidden]
        jj = redact(job_json(job, info), secrets)
        tj = None if ch.task is None else redact(task_json(ch.task), secrets)
        body = json.dumps(jj if tj is None else tj, separators=(",", ":")).encode()
        sent = False
        for i, h in hooks:
            where = f"webhooks[{i}]"
            url = redact(h.url, secrets)
            try:
                if h.if_ is not None:
                    ctx = {"job": jj, "task": tj, "inputs": dict(info.inputs), "secrets": dict(info.secrets)}
                    if not expr.truthy(expr.evaluate(h.if_, ctx, f"{where}.if")):
                        continue
                headers = _headers(h, {"secrets": dict(info.secrets), "inputs": dict(info.inputs), "job": jj}, where)
            except ValueError as e:  # ExprError, or a header that cannot be sent (the message holds no value)
                log.warning("webhook %s of job %s (%s) not sent: %s", where, job["id"], url, redact(str(e), secrets))
                continue
            sent = True
            self._post(h.url, url, headers, body, f"{where} of job {job['id']} ({event} {ch.state.upper()})")
        return sent

    def _client(self) -> httpx.Client:
        c: httpx.Client | None = getattr(self._local, "client", None)
        if c is None:
            c = httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
            self._local.client = c
        return c

    def _target(self, url: str, headers: httpx.Headers) -> tuple[httpx.URL, httpx.Headers, dict[str, Any]]:
        """The URL to connect to (the checked address in place of the name), the headers (with the
        name as Host) and, for https, the name TLS is to verify."""
        u = httpx.URL(url)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"not an http(s) URL: {u.scheme}")
        address = pick_address(u.host, u.port or (443 if u.scheme == "https" else 80), self.allowed_hosts)
        if address is None:
            return u, headers, {}
        out = httpx.Headers(headers)
        if "host" not in out:
            out["Host"] = u.netloc.decode("ascii").rpartition("@")[2]
        extensions: dict[str, Any] = {"sni_hostname": u.host} if u.scheme == "https" else {}
        return u.copy_with(host=address), out, extensions

    def _post(self, url: str, shown_url: str, headers: httpx.Headers, body: bytes, what: str) -> None:
        """One delivery with its retries. Raises _Stopping if the coordinator stops meanwhile."""
        why = ""
        for attempt in range(ATTEMPTS):
            if attempt and self.stop_event.wait(BACKOFF[attempt - 1]):
                raise _Stopping
            if self.stop_event.is_set():
                raise _Stopping
            try:
                target, headers_sent, extensions = self._target(url, headers)
            except Refused as e:
                log.warning("webhook %s to %s refused: %s", what, shown_url, e)
                return
            except (OSError, UnicodeError, ValueError) as e:  # the name does not resolve (now)
                why = f"{type(e).__name__}: the host did not resolve"
                continue
            try:
                r = self._client().post(target, content=body, headers=headers_sent, extensions=extensions)
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL, ValueError, TypeError) as e:
                # What would be sent is not valid HTTP: trying again would not help.
                log.warning("webhook %s to %s not sent: %s", what, shown_url, type(e).__name__)
                return
            except httpx.TransportError as e:  # could not connect, timed out, the connection dropped
                why = type(e).__name__
                continue
            except httpx.HTTPError as e:  # an answer that could not be read: it did arrive
                why = type(e).__name__
                log.warning("webhook %s to %s: the answer could not be read (%s)", what, shown_url, why)
                return
            if 200 <= r.status_code < 300:
                return
            why = f"HTTP {r.status_code}"
            if r.status_code != 429 and r.status_code < 500:
                log.warning("webhook %s to %s refused with %s; not retried", what, shown_url, why)
                return
        log.warning("webhook %s to %s given up after %d attempts: %s", what, shown_url, ATTEMPTS, why)
