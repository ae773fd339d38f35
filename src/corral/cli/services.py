"""`corral services`: create, list, show, endpoints and delete services (the native /v1/services API)."""

from __future__ import annotations

from typing import IO

import click
from rich.table import Table

from corral.cli import ids as resolve
from corral.cli import output
from corral.cli.api import ApiError, Client, CliError, Json
from corral.cli.client import _each, guarded, load_job, output_option, server_option
from corral.cli.completion import complete_services


@click.group()
def services() -> None:
    """Services: a stable port in front of the ready pods a label selector matches.

    \b
    Example svc.yaml:
      name: web
      selector: {app: web}
      type: NodePort            # a port on every node, forwarded to the ready pods
      ports:
        - {name: http, port: 80, targetPort: 8080}

    \b
    Examples:
      corral services create svc.yaml
      corral services ls --namespace default
      corral services endpoints ID
    """


def _ports(s: Json) -> str:
    parts = []
    for p in s.get("ports") or []:
        text = f"{p.get('port')}->{p.get('targetPort')}/{p.get('protocol') or 'TCP'}"
        if p.get("nodePort"):
            text += f" (node {p['nodePort']})"
        parts.append(text)
    return ", ".join(parts)


def _selector(s: Json) -> str:
    return ",".join(f"{k}={v}" for k, v in (s.get("selector") or {}).items()) or "-"


@services.command("create", short_help="Create a service from a file (YAML or JSON).")
@click.argument("file", type=click.File("rb"))
@output_option
@server_option
@guarded
def services_create(file: IO[bytes], fmt: str, server: str) -> None:
    """Create the service in FILE (YAML or JSON; - reads stdin) and print its id."""
    label = "stdin" if file.name in ("<stdin>", "-") else str(file.name)
    spec = load_job(file)
    with Client(server) as c:
        try:
            svc = c.create_service(spec)
        except ApiError as e:
            if e.exit_code == 2:
                raise CliError(f"{label} is not a valid service", 2, e.details or [str(e)]) from e
            raise
    if fmt == "json":
        output.print_json(svc)
        return
    click.echo(svc["id"])
    output.err.print(f"service {svc['namespace']}/{svc['name']} ({svc['type']}): {_ports(svc)}", style="dim")


@services.command("ls")
@click.option("--namespace", "-N", metavar="NAMESPACE", help="Only services in this namespace.")
@output_option
@server_option
@guarded
def services_ls(namespace: str | None, fmt: str, server: str) -> None:
    """List services, oldest first. Full ids and every field: -o json."""
    with Client(server) as c:
        data = c.services(namespace)
    if fmt == "json":
        output.print_json(data)
        return
    items: list[Json] = data.get("items") or []
    if not items:
        output.err.print("no services: create one with `corral services create FILE`", style="dim")
        return
    t = output._table("ID", "NAMESPACE", "NAME", "TYPE", "SELECTOR", "PORTS", "AGE")
    t.columns[0].no_wrap = True
    for s in items:
        t.add_row(s["id"][:12], s["namespace"], s["name"], s["type"], _selector(s), _ports(s),
                  output.age(s.get("created_at")))
    output.out.print(t)


@services.command("get", short_help="Show a service.")
@click.argument("service_id", metavar="ID", shell_complete=complete_services)
@output_option
@server_option
@guarded
def services_get(service_id: str, fmt: str, server: str) -> None:
    """Show a service: its selector, its ports and its endpoints now."""
    with Client(server) as c:
        service_id = resolve.service_id(c, service_id)
        s = c.service(service_id)
        eps = c.service_endpoints(service_id).get("endpoints") or []
    if fmt == "json":
        output.print_json(s)
        return
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("ID", s["id"])
    head.add_row("Name", f"{s['namespace']}/{s['name']}")
    head.add_row("Type", s["type"])
    head.add_row("Selector", _selector(s))
    head.add_row("Ports", _ports(s))
    head.add_row("Endpoints", ", ".join(f"{e['address']}:{e['port']}" for e in eps) or "- (no ready pod)")
    head.add_row("Created", output.when(s.get("created_at")))
    output.out.print(head)


@services.command("endpoints", short_help="List a service's ready endpoints.")
@click.argument("service_id", metavar="ID", shell_complete=complete_services)
@output_option
@server_option
@guarded
def services_endpoints(service_id: str, fmt: str, server: str) -> None:
    """The ready pods the service sends traffic to, each at its node's address and port."""
    with Client(server) as c:
        data = c.service_endpoints(resolve.service_id(c, service_id))
    if fmt == "json":
        output.print_json(data)
        return
    eps: list[Json] = data.get("endpoints") or []
    if not eps:
        output.err.print("no endpoints: no ready pod matches the service's selector", style="dim")
        return
    t = output._table("POD", "NODE", "ADDRESS", "SERVICE PORT")
    for e in eps:
        t.add_row(e["pod_id"], (e.get("node_id") or "")[:12], f"{e['address']}:{e['port']}",
                  str(e.get("port_name") or e.get("service_port")))
    output.out.print(t)


@services.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_services)
@server_option
@guarded
def services_rm(ids: tuple[str, ...], server: str) -> None:
    """Delete services; their node ports are freed."""

    def rm(c: Client, service_id: str) -> str:
        c.delete_service(resolve.service_id(c, service_id))
        return f"{service_id} deleted"

    _each(ids, server, rm)
