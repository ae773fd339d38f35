"""How the `corral` commands show things: rich tables for people, raw JSON for programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.cli.api import Json


def _wide() -> int | None:
    """Piped output is not cut to 80 columns: a table is as wide as its content (COLUMNS still wins)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    return None if sys.stdout.isatty() else 250


out = Console(highlight=False, markup=False, emoji=False, width=_wide())


def fit_to_terminal() -> None:
    """Size the output for this invocation's stdout and COLUMNS (they are read when a command starts, not
    when this module was first imported, which may have been under another stdout)."""
    out.width = _wide()  # type: ignore[assignment]
# Messages on a stderr that is not a terminal (CI logs, files) stay one line each, however long.
err = Console(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=not sys.stderr.isatty())

STATE_STYLE = {
    "pending": "yellow", "scheduled": "cyan", "running": "bold blue", "completed": "green",
    "failed": "bold red", "cancelled": "magenta", "skipped": "dim", "lost": "red",
    "ready": "green", "down": "bold red", "active": "green", "paused": "yellow",
}


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def state(s: str | None) -> Text:
    return Text(s or "-", style=STATE_STYLE.get(s or "", ""))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def human_seconds(s: float) -> str:
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24:02d}h"


def age(value: str | None) -> str:
    t = parse_time(value)
    if t is None:
        return "-"
    s = max((datetime.now(UTC) - t).total_seconds(), 0.0)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s // 60:.0f}m ago"
    if s < 86400 * 2:
        return f"{s // 3600:.0f}h ago"
    return f"{s // 86400:.0f}d ago"


def relative(value: str | None) -> str:
    """A local time with how far it is from now, past ('3m ago') or future ('in 3m')."""
    t = parse_time(value)
    if t is None:
        return "-"
    s = (t - datetime.now(UTC)).total_seconds()
    near = f"in {human_seconds(s)}" if s > 0 else age(value)
    return f"{t.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({near})"


def duration(start: str | None, end: str | None) -> str:
    """How long something ran, or has been running (with a trailing '+') when it has not ended."""
    t0 = parse_time(start)
    if t0 is None:
        return "-"
    t1 = parse_time(end)
    running = t1 is None
    s = max(((t1 or datetime.now(UTC)) - t0).total_seconds(), 0.0)
    return human_seconds(s) + ("+" if running else "")


def when(value: str | None) -> str:
    t = parse_time(value)
    if t is None:
        return "-"
    return f"{t.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({age(value)})"


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


def listing(data: Json, fmt: str, columns: Sequence[str], row: Callable[[Json], Sequence[str]]) -> None:
    """A listing's answer: as JSON (``--output json``), or a table of its ``items``, a row each."""
    if fmt == "json":
        print_json(data)
        return
    t = _table(*columns)
    for item in data.get("items") or []:
        t.add_row(*row(item))
    out.print(t)


def jobs_grid(items: Sequence[Json]) -> Table:
    """A table of jobs, a row each."""
    t = _table("ID", "NAME", "STATE", "QUEUE", "TASKS", "CREATED", "DURATION")
    t.columns[0].no_wrap = True
    for j in items:
        t.add_row(j["id"][:12], j.get("name") or "", state(j.get("state")), j.get("queue") or "",
                  str(j.get("task_count", "")), age(j.get("created_at")),
                  duration(j.get("started_at"), j.get("finished_at")))
    return t


def jobs_table(page: Json) -> None:
    items: list[Json] = page.get("items") or []
    if not items:
        err.print("no jobs match", style="dim")
        return
    out.print(jobs_grid(items))
    total = page.get("total")
    # The server sends a cursor whenever a page is full, even the last one: trust the total first.
    more_exist = total > len(items) if isinstance(total, int) else bool(page.get("next_cursor"))
    if more_exist:
        more = f"showing {len(items)} of {total} jobs"
        if page.get("next_cursor"):
            more += f"; next page: --cursor {page['next_cursor']}"
        err.print(more, style="dim")


def _task_detail(task: Json) -> Text:
    if task.get("state") == "pending" and task.get("reason"):
        return Text(str(task["reason"]), style="yellow")
    if task.get("error"):
        return Text(str(task["error"]), style="red")
    return Text("")


def _task_runtime(task: Json) -> str:
    return str(task.get("image") or f"host {task.get('runtime') or 'process'}")


KIND_NOTE = {"parallel": "parallel", "each": "each", "steps": "with pre/post", "subjob": "subjob"}


def task_tree(tasks: Sequence[Json]) -> list[tuple[str, str, Json]]:
    """A workflow's tasks in tree order, each with its number (``2.1.3``: the path of positions) and a label
    that draws the tree and tells the tasks apart: a name its siblings share gets ``#2``, ``#3``; the steps
    of a task with pre/post are marked ``pre:``, ``post:``; a composite says what it is. Pure."""
    by_parent: dict[str | None, list[Json]] = {}
    known = {t.get("id") for t in tasks}
    for t in tasks:
        parent = t.get("parent_id") if t.get("parent_id") in known else None
        by_parent.setdefault(parent, []).append(t)
    rows: list[tuple[str, str, Json]] = []

    def walk(parent: Json | None, number: str, indent: str) -> None:
        kids = sorted(by_parent.get(parent.get("id") if parent else None, []), key=lambda x: x.get("position", 0))
        seen: dict[str, int] = {}
        n_pre = len(parent.get("pre") or []) if parent is not None and parent.get("kind") == "steps" else -1
        for i, t in enumerate(kids):
            last = i == len(kids) - 1
            name = str(t.get("name") or "")
            seen[name] = seen.get(name, 0) + 1
            shown = name if seen[name] == 1 else f"{name}#{seen[name]}"
            if n_pre >= 0:
                pos = int(t.get("position", i))
                shown = f"pre: {shown}" if pos < n_pre else f"post: {shown}" if pos > n_pre else shown
            note = KIND_NOTE.get(str(t.get("kind")))
            if note:
                shown += f" ({note}{' ' + str(t['subjob_id'])[:12] if t.get('subjob_id') else ''})"
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            num = f"{number}{int(t.get('position', i)) + 1}"
            rows.append((num, f"{indent}{branch}{shown}", t))
            walk(t, f"{num}.", indent + ("" if parent is None else ("   " if last else "│  ")))

    walk(None, "", "")
    return rows


def job_detail(job: Json, node_names: dict[str, str]) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("ID", job["id"])
    head.add_row("Name", job.get("name") or "")
    head.add_row("State", state(job.get("state")))
    head.add_row("Queue", f"{job.get('queue')}  (priority {job.get('priority', 0)})")
    if job.get("tags"):
        head.add_row("Tags", ", ".join(job["tags"]))
    head.add_row("Created", when(job.get("created_at")))
    if job.get("started_at"):
        head.add_row("Started", when(job.get("started_at")))
    if job.get("finished_at"):
        head.add_row("Finished", when(job.get("finished_at")))
    head.add_row("Duration", duration(job.get("started_at"), job.get("finished_at")))
    if job.get("error"):
        head.add_row("Error", Text(str(job["error"]), style="red"))
    summary = {k: v for k, v in (job.get("task_summary") or {}).items() if k != "total"}
    if summary:
        head.add_row("Tasks", f"{job['task_summary'].get('total', 0)}: "
                              + ", ".join(f"{n} {k}" for k, n in sorted(summary.items())))
    out.print(head)
    tasks: list[Json] = job.get("tasks") or []
    if not tasks:
        return
    out.print()
    t = _table("#", "TASK", "STATE", "RUNS ON", "NODE", "ATTEMPTS", "EXIT", "DURATION", "REASON / ERROR")
    for number, label, task in task_tree(tasks):
        node_id = task.get("node_id") or next(
            (e.get("node_id") for e in reversed(task.get("executions") or []) if e.get("node_id")), None)
        node = node_names.get(node_id, node_id[:12]) if node_id else "-"
        code = task.get("exit_code")
        composite = task.get("kind") not in (None, "run", "template")
        t.add_row(number, label, state(task.get("state")), "-" if composite else _task_runtime(task), node,
                  "-" if composite else str(task.get("attempts", 0)), "-" if code is None else str(code),
                  duration(task.get("started_at"), task.get("finished_at")), _task_detail(task))
    out.print(t)
    if job.get("tasks_next_cursor"):
        total = (job.get("task_summary") or {}).get("total")
        out.print(f"(the first {len(tasks)} of {total} tasks; the rest: GET /v1/jobs/{job['id']}/tasks)")


def _size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    for unit, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= factor:
            v = n / factor
            return f"{v:.0f}{unit}" if v >= 100 or v == int(v) else f"{v:.1f}{unit}"
    return str(int(n))


def nodes_table(data: Json) -> None:
    items: list[Json] = data.get("items") or []
    if not items:
        err.print("no nodes have registered: start one with `corral worker` or `corral up`", style="dim")
        return
    out.print(nodes_grid(items))


def nodes_grid(items: Sequence[Json]) -> Table:
    """A table of nodes with what is allocated on each, a row each."""
    t = _table("ID", "NAME", "STATE", "CPU", "MEMORY", "GPU", "TASKS", "RUNTIMES", "QUEUES", "SEEN")
    for i in (0, 3, 4, 9):
        t.columns[i].no_wrap = True
    for n in items:
        cap, used = n.get("capacity") or {}, n.get("allocated") or {}
        t.add_row(n["id"][:12], n.get("name") or "", state(n.get("state")),
                  f"{used.get('cpu', 0):g}/{cap.get('cpu', 0):g}",
                  f"{_size(used.get('memory'))}/{_size(cap.get('memory'))}",
                  f"{used.get('gpu', 0)}/{cap.get('gpu', 0)}", str(n.get("running", 0)),
                  ",".join(n.get("runtimes") or []), ",".join(n.get("queues") or []),
                  age(n.get("last_heartbeat")))
    return t


def node_detail(n: Json) -> None:
    """One node: who it is, its labels, what it offers and what is allocated on it."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("ID", n["id"])
    head.add_row("Name", n.get("name") or "")
    head.add_row("State", state(n.get("state")))
    drain = n.get("drain")
    if isinstance(drain, dict):
        until = f"; what still runs moves at {when(drain.get('deadline'))}" if drain.get("deadline") else ""
        head.add_row("Draining", f"since {when(drain.get('since'))}{until}")
    head.add_row("Host", f"{n.get('hostname') or '-'}  (address {n.get('address') or '-'}, "
                         f"version {n.get('version') or '-'})")
    labels = n.get("labels") or {}
    head.add_row("Labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else "-")
    head.add_row("Runtimes", ", ".join(n.get("runtimes") or []) or "-")
    head.add_row("Queues", ", ".join(n.get("queues") or []) or "-")
    cap, used = n.get("capacity") or {}, n.get("allocated") or {}
    head.add_row("CPU", f"{used.get('cpu', 0):g} of {cap.get('cpu', 0):g} allocated")
    head.add_row("Memory", f"{_size(used.get('memory'))} of {_size(cap.get('memory'))} allocated")
    head.add_row("Disk", f"{_size(used.get('disk'))} of {_size(cap.get('disk'))} allocated")
    gpus = n.get("gpus") or []
    names = ", ".join(str(g.get("name") or g.get("index")) if isinstance(g, dict) else str(g) for g in gpus)
    head.add_row("GPUs", f"{used.get('gpu', 0)} of {cap.get('gpu', 0)} allocated" + (f" ({names})" if names else ""))
    head.add_row("Running", f"{n.get('running', 0)} tasks, {n.get('pods', 0)} pods")
    head.add_row("Registered", when(n.get("registered_at")))
    head.add_row("Last seen", when(n.get("last_heartbeat")))
    out.print(head)


def queues_table(data: Json) -> None:
    out.print(queues_grid(data))


def queues_grid(data: Json) -> Table:
    t = _table("QUEUE", "PENDING", "RUNNING", "WORKERS")
    for q in data.get("items") or []:
        workers = int(q.get("workers", 0))
        starved = workers == 0 and int(q.get("pending", 0)) > 0
        t.add_row(q.get("name") or "", str(q.get("pending", 0)), str(q.get("running", 0)),
                  Text(str(workers), style="bold red" if starved else ""))
    return t


def schedules_table(data: Json) -> None:
    items: list[Json] = data.get("items") or []
    if not items:
        err.print("no schedules: create one with `corral schedules create --cron CRON FILE`", style="dim")
        return
    t = _table("ID", "NAME", "CRON", "STATE", "NEXT RUN", "LAST RUN", "LAST JOB")
    t.columns[0].no_wrap = True
    for s in items:
        paused = s.get("state") == "paused"
        t.add_row(s["id"][:12], s.get("name") or "", s.get("cron") or "", state(s.get("state")),
                  "-" if paused else relative(s.get("next_run_at")), age(s.get("last_run_at")),
                  (s.get("last_job_id") or "-")[:12])
    out.print(t)


def schedule_detail(s: Json) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("ID", s["id"])
    head.add_row("Name", s.get("name") or "")
    head.add_row("Cron", f"{s.get('cron')}  (UTC)")
    head.add_row("State", state(s.get("state")))
    head.add_row("Next run", "- (paused)" if s.get("state") == "paused" else relative(s.get("next_run_at")))
    head.add_row("Last run", when(s.get("last_run_at")))
    head.add_row("Last job", s.get("last_job_id") or "-")
    head.add_row("Created", when(s.get("created_at")))
    tasks = [str(t.get("name")) for t in (s.get("job") or {}).get("tasks") or []]
    head.add_row("Tasks", f"{len(tasks)}: {', '.join(tasks)}" if tasks else "-")
    out.print(head)


TASK_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green",
                "bright_yellow", "bright_blue")


@dataclass
class LogPrinter:
    """How `corral jobs logs` shows a job's lines: each as the task wrote it, or with its time and its task's
    name in front (in a colour of its own when ``colour``), and a separator where a task's next attempt
    starts. Pure: ``render`` returns what to write where."""

    prefixes: bool = False
    timestamps: bool = False
    colour: bool = False
    width: int = 0  # the task names' column (the longest name)
    _attempt: dict[str, str] = field(default_factory=dict)  # a task's id -> the execution of its last line
    _colours: dict[str, str] = field(default_factory=dict)

    def _paint(self, text: str, **style: Any) -> str:
        return click.style(text, **style) if self.colour else text

    def render(self, line: Json) -> list[tuple[str, str]]:
        """(stream, text) pairs for one log line: a separator on stderr first, when it is the first line
        of another attempt of a task already seen."""
        out: list[tuple[str, str]] = []
        task_id, ex = str(line.get("task_id") or ""), line.get("execution_id")
        name = str(line.get("task") or task_id[:12])
        before = self._attempt.get(task_id)
        if ex:
            self._attempt[task_id] = str(ex)
        if before is not None and ex and ex != before:
            out.append(("stderr", self._paint(f"--- {name}: another attempt (execution {str(ex)[:12]}) ---",
                                              dim=True)))
        head = ""
        if self.timestamps:
            head += self._paint(str(line.get("time") or "-"), dim=True) + " "
        if self.prefixes:
            fg = self._colours.setdefault(task_id, TASK_COLOURS[len(self._colours) % len(TASK_COLOURS)])
            head += self._paint(f"{name:<{self.width}} |", fg=fg) + " "
        stream = "stderr" if line.get("stream") == "stderr" else "stdout"
        out.append((stream, f"{head}{line.get('line', '')}"))
        return out

    def write(self, line: Json) -> None:
        for stream, text in self.render(line):
            f = sys.stderr if stream == "stderr" else sys.stdout
            f.write(text + "\n")
            f.flush()


def write_line(line: Json) -> None:
    """One log line to stdout or stderr, as the task wrote it, flushed at once."""
    stream = sys.stderr if line.get("stream") == "stderr" else sys.stdout
    stream.write(f"{line.get('line', '')}\n")
    stream.flush()
