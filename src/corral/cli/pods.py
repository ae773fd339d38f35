"""`corral pods`: create a pod from a file, list, inspect, read or follow its logs, delete it."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any
from urllib.parse import quote

import click
import yaml
from rich.table import Table

from corral.cli import ids as resolve
from corral.cli import output
from corral.cli.api import Client, CliError
from corral.cli.client import guarded, output_option, server_option
from corral.cli.completion import complete_pods

FINAL = {"succeeded", "failed", "terminated"}


def _path(pod_id: str, suffix: str = "") -> str:
    return f"/v1/pods/{quote(pod_id, safe='')}{suffix}"


@click.group()
def pods() -> None:
    """Pods: containers that stay up, placed together on one node.

    \b
    corral pods create web.yaml
    corral pods ls --selector app=web
    corral pods logs ID -c app --follow
    corral pods rm ID
    """


@pods.command("create")
@click.argument("file", type=click.File("rb"), metavar="FILE")
@output_option
@server_option
@guarded
def pods_create(file: IO[bytes], fmt: str, server: str) -> None:
    """Create a pod from a YAML or JSON file ('-': standard input); a Kubernetes Pod manifest works too."""
    raw = file.read(8 * 2**20 + 1)
    if len(raw) > 8 * 2**20:
        raise CliError(f"{file.name}: larger than 8 MiB")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise CliError(f"{file.name} is not YAML or JSON: {e}", 2) from e
    if not isinstance(data, dict):
        raise CliError(f"{file.name}: a pod is an object with at least 'name' and 'containers'", 2)
    with Client(server) as c:
        pod = c.json("POST", "/v1/pods", json=data)
    if fmt == "json":
        output.print_json(pod)
    else:
        click.echo(pod["id"])


@pods.command("ls")
@click.option("--namespace", "-n", metavar="NS", help="Only pods in this namespace.")
@click.option("--selector", "-l", metavar="K=V[,K=V]", help="Only pods with these labels.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="Start after the page that returned this next_cursor.")
@output_option
@server_option
@guarded
def pods_ls(namespace: str | None, selector: str | None, limit: int, cursor: str | None, fmt: str,
            server: str) -> None:
    """List pods, oldest first."""
    params = {k: v for k, v in (("namespace", namespace), ("selector", selector), ("cursor", cursor)) if v}
    with Client(server) as c:
        page = c.json("GET", "/v1/pods", params={**params, "limit": limit})
    if fmt == "json":
        output.print_json(page)
        return
    items = page.get("items") or []
    if not items:
        output.err.print("no pods match", style="dim")
        return
    t = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for col in ("ID", "NAMESPACE", "NAME", "STATE", "READY", "RESTARTS", "NODE", "PORTS", "AGE"):
        t.add_column(col, overflow="fold")
    for p in items:
        cs = p.get("containers") or []
        ready = sum(1 for x in cs if x.get("ready"))
        ports = ",".join(f"{x['hostPort']}->{x['containerPort']}/{x['protocol']}" for x in p.get("ports") or []
                         if x.get("hostPort"))
        t.add_row(p["id"], p.get("namespace") or "", p.get("name") or "", output.state(p.get("state")),
                  f"{ready}/{len(cs)}", str(sum(int(x.get("restart_count") or 0) for x in cs)),
                  p.get("node_name") or "", ports, output.age(p.get("created_at")))
    output.out.print(t)
    if page.get("next_cursor"):
        output.err.print(f"more: --cursor {page['next_cursor']}", style="dim")


@pods.command("get")
@click.argument("pod_id", metavar="ID", shell_complete=complete_pods)
@output_option
@server_option
@guarded
def pods_get(pod_id: str, fmt: str, server: str) -> None:
    """Show a pod: its state and why, its node and address, its ports and each container."""
    with Client(server) as c:
        p = c.json("GET", _path(resolve.pod_id(c, pod_id)))
    if fmt == "json":
        output.print_json(p)
        return
    out = output.out
    out.print(f"[bold]{p['name']}[/bold]  {p['id']}  namespace {p['namespace']}")
    out.print(f"state:    {p['state']}" + (f"  ({p['reason']})" if p.get("reason") else ""))
    out.print(f"ready:    {'yes' if p.get('ready') else 'no'}    restartPolicy: {p.get('restartPolicy')}")
    if p.get("node_id"):
        out.print(f"node:     {p.get('node_name') or p['node_id']}" + (f"  address {p['address']}" if p.get("address")
                                                                        else ""))
    for x in p.get("ports") or []:
        where = f"{p.get('address') or '<node>'}:{x['hostPort']}" if x.get("hostPort") else "not published yet"
        out.print(f"port:     {x['container']} {x['containerPort']}/{x['protocol']} -> {where}")
    if p.get("ttl_expires_at"):
        out.print(f"expires:  {output.when(p['ttl_expires_at'])}")
    t = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for col in ("CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS", "EXIT", "REASON"):
        t.add_column(col, overflow="fold")
    for x in p.get("containers") or []:
        t.add_row(x["name"], x.get("image") or "(host process)", output.state(x.get("state")),
                  "yes" if x.get("ready") else "no", str(x.get("restart_count") or 0),
                  "" if x.get("exit_code") is None else str(x["exit_code"]), x.get("error") or x.get("reason") or "")
    out.print(t)


@pods.command("logs")
@click.argument("pod_id", metavar="ID", shell_complete=complete_pods)
@click.option("--container", "-c", metavar="NAME", help="Only this container's output.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the pod ends.")
@server_option
@guarded
def pods_logs(pod_id: str, container: str | None, follow: bool, server: str) -> None:
    """Print a pod's output (stdout to stdout, stderr to stderr), kept after its containers are gone."""
    params: dict[str, Any] = {"format": "ndjson", "limit": 10_000}
    if container:
        params["container"] = container
    with Client(server, timeout=60) as c:
        pod_id = resolve.pod_id(c, pod_id)
        after, ended = 0, False
        try:
            while True:
                r = c.request("GET", _path(pod_id, "/logs"), params={**params, "after": after})
                lines = [json.loads(ln) for ln in r.text.splitlines() if ln]
                for row in lines:
                    output.write_line(row)
                    after = int(row["seq"])
                if len(lines) >= params["limit"]:
                    continue  # more to read at once
                if not follow or ended:
                    return
                # A node reports a pod's end with or after its last lines: one more read after the end.
                ended = c.json("GET", _path(pod_id)).get("state") in FINAL
                if not ended:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            raise SystemExit(130) from None


@pods.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_pods)
@click.option("--grace", type=click.FloatRange(0, 3600), help="Seconds between SIGTERM and SIGKILL [default: "
              "the pod's, 10].")
@click.option("--purge", is_flag=True, help="Remove the records of pods that have ended (and their logs).")
@server_option
@guarded
def pods_rm(ids: tuple[str, ...], grace: float | None, purge: bool, server: str) -> None:
    """Delete pods: their containers are stopped and their ports and capacity released."""
    worst = 0
    with Client(server) as c:
        for pod_id in ids:
            try:
                pod_id = resolve.pod_id(c, pod_id)
                if purge:
                    c.request("POST", _path(pod_id, "/purge"))
                    click.echo(f"{pod_id}: purged")
                else:
                    params = {} if grace is None else {"grace": grace}
                    p = c.json("DELETE", _path(pod_id), params=params)
                    click.echo(f"{pod_id}: {p['state']}")
            except CliError as e:
                click.echo(f"{pod_id}: {e}", err=True)
                worst = max(worst, e.exit_code)
    if worst:
        sys.exit(worst)
