"""Views that refresh in place: `corral jobs ls --watch` and `corral top`.

On a terminal the view is redrawn where it stands (rich's Live); otherwise (a pipe, a CI log) it is
printed again each time it changes, so that a log holds each state once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from corral.cli import output
from corral.cli.api import Client, Json
from corral.cli.client import guarded, server_option

RUNNING = "pending,scheduled,running"


def refresh(render: Callable[[], tuple[RenderableType, str]], interval: float, count: int | None = None) -> None:
    """Show ``render()`` every ``interval`` seconds until Ctrl-C (or ``count`` times). ``render`` returns
    the view and a text that changes when the view does (what a non-terminal compares)."""
    shown = 0
    try:
        if output.out.is_terminal:
            with Live(render()[0], console=output.out, auto_refresh=False, transient=False) as live:
                shown = 1
                while count is None or shown < count:
                    time.sleep(interval)
                    live.update(render()[0], refresh=True)
                    shown += 1
            return
        last = None
        while count is None or shown < count:
            if shown:
                time.sleep(interval)
            view, key = render()
            shown += 1
            if key != last:
                if last is not None:
                    output.out.print()
                output.out.print(view)
                last = key
    except KeyboardInterrupt:
        raise SystemExit(0) from None


def _stamp(what: str, server: str) -> Text:
    return Text(f"{what} on {server} at {time.strftime('%H:%M:%S')} (Ctrl-C to stop)", style="dim")


def jobs_view(c: Client, params: Mapping[str, object]) -> tuple[RenderableType, str]:
    page = c.list_jobs(**params)
    items: list[Json] = page.get("items") or []
    key = repr([(j["id"], j.get("state")) for j in items])
    body: RenderableType = output.jobs_grid(items) if items else Text("no jobs match", style="dim")
    return Group(_stamp("jobs", c.server), body), key


def top_view(c: Client, limit: int) -> tuple[RenderableType, str]:
    nodes, queues = c.nodes(), c.queues()
    work = c.list_jobs(state=RUNNING, limit=limit)
    items: list[Json] = work.get("items") or []
    key = repr(([(n["id"], n.get("state"), n.get("running"), n.get("allocated")) for n in nodes.get("items") or []],
                queues.get("items"), [(j["id"], j.get("state")) for j in items]))
    total = work.get("total")
    more = f" (the newest {len(items)} of {total})" if isinstance(total, int) and total > len(items) else ""
    parts: list[RenderableType] = [
        _stamp("corral top", c.server), Text(""), Text("NODES", style="bold"),
        output.nodes_grid(nodes.get("items") or []) if nodes.get("items") else Text("no nodes", style="dim"),
        Text(""), Text("QUEUES", style="bold"), output.queues_grid(queues), Text(""),
        Text(f"UNFINISHED JOBS{more}", style="bold"),
        output.jobs_grid(items) if items else Text("none", style="dim"),
    ]
    return Group(*parts), key


TOP_HELP = """Show the nodes, the queues and the unfinished jobs, refreshed in place (Ctrl-C stops).

Nodes show allocated/capacity for CPU, memory and GPUs and how many tasks run there; queues their
pending and running tasks and the nodes serving them.

\b
Examples:
  corral top
  corral top --interval 5 -n 20
"""


@click.command(help=TOP_HELP, short_help="Nodes, queues and running work, live.")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=30, show_default=True,
              help="At most this many unfinished jobs, newest first.")
@click.option("--count", type=click.IntRange(1), default=None, hidden=True)
@server_option
@guarded
def top(interval: float, limit: int, count: int | None, server: str) -> None:
    with Client(server) as c:
        refresh(lambda: top_view(c, limit), interval, count)
