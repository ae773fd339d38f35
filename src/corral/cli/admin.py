"""`corral tokens` (join tokens for workers) and `corral audit` (the audit log): an admin's commands."""

from __future__ import annotations

import time
from urllib.parse import quote

import click

from corral.cli import output
from corral.cli.api import Client, CliError
from corral.cli.client import guarded, output_option, server_option
from corral.domain.resources import parse_duration


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
    with Client(server) as c:
        data = c.json("GET", "/v1/tokens")
    output.listing(data, fmt, ("ID", "KIND", "CREATED BY", "CREATED", "EXPIRES", "REVOKED", "LAST USED"),
                   lambda r: (r["id"], r["kind"], r["created_by"], _when(r["created_at"]), _when(r["expires_at"]),
                              _when(r["revoked_at"]), _when(r["last_used_at"])))


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
@server_option
@guarded
def tokens_revoke(token_id: str, server: str) -> None:
    """Revoke a join token: no worker joins with it any more (nodes that joined keep their own credential)."""
    with Client(server) as c:
        c.request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")
    click.echo(f"revoked {token_id}")


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
    with Client(server) as c:
        data = c.json("GET", "/v1/audit", params=params)
    output.listing(data, fmt, ("WHEN", "ACTOR", "ACTION", "REQUEST", "STATUS", "FROM"),
                   lambda r: (_when(r["at"]), r["actor"], r["action"], f"{r['method']} {r['path']}",
                              str(r["status"]), r.get("address") or "-"))
    if fmt != "json" and data.get("next_cursor"):
        output.err.print(f"more: --cursor {data['next_cursor']}", style="dim")
