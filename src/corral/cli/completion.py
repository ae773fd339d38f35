"""Shell completion: `corral completion bash|zsh|fish` prints (or installs) the script; the ids of jobs,
schedules, pods, services and nodes and the job states complete from the server.

Completion runs `corral` itself (click's shell_complete) with the words typed so far: ``--server`` given
earlier on the line is used, else ``CORRAL_SERVER``. A server that does not answer within a second
completes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem, get_completion_class

from corral.cli.api import DEFAULT_SERVER, Client, CliError, Json

JOB_STATES = ("pending", "scheduled", "running", "completed", "failed", "cancelled")
# Where each shell looks for a command's completion script by itself (zsh: a directory to put on $fpath).
INSTALL_PATHS = {
    "bash": "~/.local/share/bash-completion/completions/corral",
    "zsh": "~/.zfunc/_corral",
    "fish": "~/.config/fish/completions/corral.fish",
}
LIMIT = 200


def complete_states(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job states, for a comma-separated list: what was typed before the last comma is kept."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    chosen = set(done.split(",")) if done else set()
    return [CompletionItem(prefix + s) for s in JOB_STATES if s.startswith(last) and s not in chosen]


def _server(ctx: click.Context) -> str:
    c: click.Context | None = ctx
    while c is not None:
        given = c.params.get("server")
        if isinstance(given, str) and given:
            return given
        c = c.parent
    return os.environ.get("CORRAL_SERVER") or DEFAULT_SERVER


def _from_server(path: str, label: Callable[[Json], str],
                 params: dict[str, str | int] | None = None) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        query: dict[str, str | int] = {"limit": LIMIT, **(params or {})}
        if path == "/v1/jobs" and re.fullmatch(r"[0-9a-f]{1,32}", incomplete):
            query["id_prefix"] = incomplete  # the server finds them, however many jobs there are
        try:
            with Client(_server(ctx), timeout=1.0) as c:
                items = c.json("GET", path, params=query).get("items") or []
        except (CliError, OSError):
            return []
        out = []
        for item in items:
            for value in (str(item.get("id") or ""), str(item.get("name") or "") if path == "/v1/nodes" else ""):
                if value and value.startswith(incomplete):
                    out.append(CompletionItem(value, help=label(item)))
        return out

    return complete


def _job_label(j: Json) -> str:
    return f"{j.get('name') or ''} ({j.get('state')})"


complete_jobs = _from_server("/v1/jobs", _job_label)
complete_schedules = _from_server("/v1/schedules", lambda s: f"{s.get('name') or ''} {s.get('cron') or ''}")
complete_pods = _from_server("/v1/pods", lambda p: f"{p.get('name') or ''} ({p.get('state')})")
complete_services = _from_server("/v1/services", lambda s: str(s.get("name") or ""))
complete_nodes = _from_server("/v1/nodes", lambda n: f"{n.get('name') or ''} ({n.get('state')})")


COMPLETION_HELP = """Print the completion script for SHELL (bash, zsh or fish), or install it with --install.

Commands, options, job states and the ids of jobs, schedules, pods, services and nodes then complete
with Tab (the ids from the server of --server or CORRAL_SERVER).

\b
Examples:
  corral completion bash --install        # then open a new shell
  eval "$(corral completion bash)"        # this shell only (zsh: corral completion zsh)
  corral completion fish > ~/.config/fish/completions/corral.fish
"""


@click.command(help=COMPLETION_HELP, short_help="Shell completion for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.option("--install", is_flag=True,
              help="Write it where the shell finds it: " + ", ".join(f"{k} {v}" for k, v in INSTALL_PATHS.items())
              + ".")
@click.pass_context
def completion(ctx: click.Context, shell: str, install: bool) -> None:
    cls = get_completion_class(shell)
    if cls is None:  # click knows all three; kept for a click that does not
        raise click.ClickException(f"no completion for {shell}")
    root = ctx.find_root()
    name = root.info_name or "corral"
    script = cls(root.command, {}, name, f"_{name.replace('-', '_').upper()}_COMPLETE").source()
    if not install:
        click.echo(script)
        return
    path = Path(INSTALL_PATHS[shell]).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script + "\n")
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from None
    click.echo(f"wrote {path}", err=True)
    if shell == "zsh":
        click.echo("zsh reads it when ~/.zshrc has, before compinit:  fpath=(~/.zfunc $fpath)", err=True)
    else:
        click.echo("a new shell completes `corral` commands", err=True)
