"""`corral cluster`: the coordinators sharing a database, which one leads, leadership transfer, drain
(the native /v1/cluster API)."""

from __future__ import annotations

import time

import click
from rich.table import Table

from corral.cli import output
from corral.cli.api import Client, Json
from corral.cli.client import guarded, output_option, server_option


@click.group()
def cluster() -> None:
    """The coordinators: which one leads (and under which epoch), transfer, drain.

    \b
    Examples:
      corral cluster status
      corral cluster transfer              # to any other live coordinator
      corral cluster transfer ID
      corral cluster drain ID              # it hands over and stops taking the leadership
    """


def _table(data: Json) -> None:
    now = time.time()
    t = Table(title=f"leader: {data.get('leader_id') or '(none)'}   epoch: {data.get('epoch')}")
    for col in ("NO", "ID", "ADDRESS", "ROLE", "ALIVE", "DRAINING", "LAST SEEN"):
        t.add_column(col)
    for c in data.get("coordinators") or []:
        me = " (this one)" if c.get("id") == data.get("me") else ""
        t.add_row(str(c.get("node_no")), f"{c.get('id')}{me}", str(c.get("address")), str(c.get("role")),
                  "yes" if c.get("alive") else "NO", "yes" if c.get("draining") else "no",
                  f"{max(now - float(c.get('last_seen') or now), 0):.1f}s ago")
    output.out.print(t)


def _show(fmt: str, data: Json) -> None:
    if fmt == "json":
        output.print_json(data)
    else:
        _table(data)


@cluster.command("status")
@output_option
@server_option
@guarded
def status(fmt: str, server: str) -> None:
    """Each coordinator's id, address, role, liveness and last seen; the current epoch."""
    with Client(server) as c:
        _show(fmt, c.json("GET", "/v1/cluster"))


@cluster.command("transfer")
@click.argument("target", metavar="[ID]", required=False)
@output_option
@server_option
@guarded
def transfer(target: str | None, fmt: str, server: str) -> None:
    """Hand the leadership to coordinator ID (or to any other live one); done within 2 s."""
    with Client(server) as c:
        _show(fmt, c.json("POST", "/v1/cluster/transfer", json={"target": target} if target else {}))


@cluster.command("drain")
@click.argument("coord_id", metavar="ID")
@click.option("--undo", is_flag=True, help="Undrain: it may lead again and is ready.")
@output_option
@server_option
@guarded
def drain(coord_id: str, undo: bool, fmt: str, server: str) -> None:
    """Drain coordinator ID: it hands the leadership over, takes it no more, and its /readyz fails."""
    with Client(server) as c:
        _show(fmt, c.json("POST", f"/v1/cluster/{coord_id}/{'undrain' if undo else 'drain'}"))
