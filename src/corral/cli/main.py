"""The `corral` command: run the system (up, server, worker) and drive it (run, submit, jobs, ...)."""

from __future__ import annotations

import click

from corral import __version__
from corral.cli import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """Corral runs jobs of container and host-process tasks across worker machines.

    \b
    Start:   corral up                      (standalone, http://127.0.0.1:8000)
    Run:     corral run --image IMG -- CMD  (streams output, exits with its code)
    Inspect: corral jobs ls | corral jobs get ID | corral jobs logs ID -f
    """
    from corral.cli import output

    output.fit_to_terminal()


cli.add_command(serve.up)
cli.add_command(serve.server)
cli.add_command(serve.worker)


def build() -> click.Group:
    """The `corral` group with every command in it."""
    from corral.cli import admin, auth, client, cluster, pods
    from corral.cli.completion import completion
    from corral.cli.examples import add_examples
    from corral.cli.live import top

    client.register(cli)
    auth.register(cli)
    for cmd in (pods.pods, admin.tokens, admin.audit, admin.quotas, cluster.cluster, completion, top):
        cli.add_command(cmd)
    add_examples(cli)
    return cli


def main() -> None:
    build()(prog_name="corral")
