"""`corral tokens` (join tokens for workers), `corral audit` (the audit log) and `corral quotas` (namespace
quotas): an admin's commands."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import click

from corral.cli import output
from corral.cli.api import Client, CliError, Json
from corral.cli.client import guarded, output_option, server_option
from corral.domain.quotas import parse_quota
from corral.domain.resources import format_size, parse_duration


def list_items(server: str, path: str, fmt: str, columns: Sequence[str], row: Callable[[Json], Sequence[str]],
               params: dict[str, Any] | None = None) -> Json:
    """An admin listing (users, keys, tokens, quotas, the audit log): GET ``path`` and print it, as JSON or
    a table of ``columns`` with a ``row`` per item; returns the answer."""
    with Client(server) as c:
        data = c.json("GET", path, params=params)
    output.listing(data, fmt, columns, row)
    return data


def change(server: str, method: str, path: str, done: str) -> None:
    """An admin change without a body to show (remove, revoke): make it, then say ``done``."""
    with Client(server) as c:
        c.request(method, path)
    click.echo(done)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@click.group()
def tokens() -> None:
    """Join tokens: what a worker presents (corral worker --token) to join instead of the cluster token.

    \b
    Examples:
      corral tokens create --worker --ttl 1h
      corral tokens ls
      corral tokens revoke ID
    """


@tokens.command("create")
@click.option("--worker", is_flag=True, required=True, help="A token for workers to join with.")
@click.option("--ttl", metavar="DURATION", help="How long it can be used, such as 1h or 7d [default: until revoked].")
@output_option
@server_option
@guarded
def tokens_create(worker: bool, ttl: str | None, fmt: str, server: str) -> None:
    """Create a join token and print it (it is shown once: the server keeps only its hash)."""
    body: dict[str, object] = {"kind": "worker"}
    if ttl:
        try:
            body["ttl"] = float(parse_duration(ttl))
        except ValueError as e:
            raise CliError(f"--ttl: {e}", 2) from e
    with Client(server) as c:
        tok = c.json("POST", "/v1/tokens", json=body)
    if fmt == "json":
        output.print_json(tok)
        return
    click.echo(tok["token"])
    expires = f", expires {_when(tok['expires_at'])}" if tok.get("expires_at") else ""
    output.err.print(f"join token {tok['id']}{expires}: corral worker --token <it> ... (shown once)", style="dim")


@tokens.command("ls")
@output_option
@server_option
@guarded
def tokens_ls(fmt: str, server: str) -> None:
    """List join tokens (never the tokens themselves), newest first."""
    list_items(server, "/v1/tokens", fmt, ("ID", "KIND", "CREATED BY", "CREATED", "EXPIRES", "REVOKED", "LAST USED"),
                   lambda r: (r["id"], r["kind"], r["created_by"], _when(r["created_at"]), _when(r["expires_at"]),
                              _when(r["revoked_at"]), _when(r["last_used_at"])))


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
@server_option
@guarded
def tokens_revoke(token_id: str, server: str) -> None:
    """Revoke a join token: no worker joins with it any more (nodes that joined keep their own credential)."""
    change(server, "DELETE", f"/v1/tokens/{quote(token_id, safe='')}", f"revoked {token_id}")


@click.command()
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="Start after the page that returned this next_cursor.")
@click.option("--actor", metavar="NAME", help="Only what this caller did.")
@click.option("--action", metavar="ACTION", help="Only this kind of change (create, cancel, delete, drain, ...).")
@output_option
@server_option
@guarded
def audit(limit: int, cursor: str | None, actor: str | None, action: str | None, fmt: str, server: str) -> None:
    """The audit log, newest first: who created, cancelled, deleted, drained or changed a permission."""
    params = {k: v for k, v in {"limit": limit, "cursor": cursor, "actor": actor, "action": action}.items() if v}
    data = list_items(server, "/v1/audit", fmt, ("WHEN", "ACTOR", "ACTION", "REQUEST", "STATUS", "FROM"),
                   lambda r: (_when(r["at"]), r["actor"], r["action"], f"{r['method']} {r['path']}",
                              str(r["status"]), r.get("address") or "-"), params)
    if fmt != "json" and data.get("next_cursor"):
        output.err.print(f"more: --cursor {data['next_cursor']}", style="dim")


@click.group()
def quotas() -> None:
    """Namespace quotas: the CPU, memory, GPUs, running tasks and pods one namespace may hold at once. Work
    over a quota waits (pending, with the reason); a stack over it is refused.

    \b
    Examples:
      corral quotas set team-a --cpu 8 --memory 16GB --gpus 2 --tasks 100 --pods 20
      corral quotas ls
      corral quotas rm team-a
    """


@quotas.command("set", short_help="Set a namespace's quota (admin); what is not given is not bounded.")
@click.argument("namespace")
@click.option("--cpu", metavar="CORES", help="Cores, such as 8, 0.5 or 500m.")
@click.option("--memory", metavar="SIZE", help="Such as 16GB or 512Mi.")
@click.option("--gpus", type=click.IntRange(0), metavar="N")
@click.option("--tasks", type=click.IntRange(0), metavar="N", help="Tasks placed or running at once.")
@click.option("--pods", type=click.IntRange(0), metavar="N", help="Pods placed or running at once.")
@output_option
@server_option
@guarded
def quotas_set(namespace: str, cpu: str | None, memory: str | None, gpus: int | None, tasks: int | None,
               pods: int | None, fmt: str, server: str) -> None:
    body = {k: v for k, v in {"cpu": cpu, "memory": memory, "gpus": gpus, "tasks": tasks, "pods": pods}.items()
            if v is not None}
    try:
        parse_quota(body)  # the server checks it too: this only says what is wrong before asking
    except ValueError as e:
        raise CliError(str(e), 2) from e
    with Client(server) as c:
        q = c.json("PUT", f"/v1/namespaces/{quote(namespace, safe='')}/quota", json=body)
    if fmt == "json":
        output.print_json(q)
    else:
        click.echo(f"quota of {q['namespace']}: {_bounds(q['quota'])}")


def _bounds(q: dict[str, object]) -> str:
    parts = []
    for k, v in q.items():
        if v is not None:
            parts.append(f"{k} {format_size(int(str(v))) if k == 'memory' else v}")
    return ", ".join(parts) or "none"


def _of(used: object, limit: object, size: bool = False) -> str:
    if limit is None:
        return "-"
    if size:
        return f"{format_size(int(str(used)))}/{format_size(int(str(limit)))}"
    return f"{used:g}/{limit:g}" if isinstance(used, float) and isinstance(limit, float) else f"{used}/{limit}"


@quotas.command("ls", short_help="List the namespaces' quotas, each with what it holds (used/limit).")
@output_option
@server_option
@guarded
def quotas_ls(fmt: str, server: str) -> None:
    list_items(server, "/v1/quotas", fmt, ("NAMESPACE", "CPU", "MEMORY", "GPUS", "TASKS", "PODS", "UPDATED BY"),
                   lambda r: (r["namespace"], _of(float(r["used"]["cpu"]), r["quota"]["cpu"]),
                              _of(r["used"]["memory"], r["quota"]["memory"], True),
                              _of(r["used"]["gpus"], r["quota"]["gpus"]), _of(r["used"]["tasks"], r["quota"]["tasks"]),
                              _of(r["used"]["pods"], r["quota"]["pods"]), r["updated_by"]))


@quotas.command("rm", short_help="Remove a namespace's quota (admin): it is no longer bounded.")
@click.argument("namespace")
@server_option
@guarded
def quotas_rm(namespace: str, server: str) -> None:
    change(server, "DELETE", f"/v1/namespaces/{quote(namespace, safe='')}/quota", f"removed the quota of {namespace}")
