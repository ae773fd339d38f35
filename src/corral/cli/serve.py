"""`corral up`, `corral server` and `corral worker`: the three wirings of the same parts."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral.coordinator.service import Settings
from corral.domain.resources import parse_size

if TYPE_CHECKING:
    from fastapi import FastAPI


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every plugin and step; only a migration that actually runs is worth a line.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _serve(app: FastAPI, bind: str, port: int, log_level: str) -> None:
    import sys

    import uvicorn

    # The event loop, the scheduler and the store hand work to each other across threads many times per
    # task; with the default 5 ms GIL switch interval every hand-over can stall that long.
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=bind, port=port, log_level=log_level.lower(), access_log=False,
                loop="uvloop", http="httptools", timeout_graceful_shutdown=5)


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}' is not key=value", param_hint="--label")
        k, _, val = v.partition("=")
        out[k.strip()] = val.strip()
    return out


def _memory(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--memory") from e


def _log_cap(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        n = parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    if n < 1000:
        raise click.BadParameter("give at least 1000 bytes (such as 10MB or 500KiB)")
    return n


_Deco = Callable[[Callable[..., Any]], Callable[..., Any]]

common_server: list[_Deco] = [
    click.option("--token", envvar="CORRAL_TOKEN", default=None,
                 help="Workers must present this token [env CORRAL_TOKEN]."),
    click.option("--strategy", type=click.Choice(["spread", "binpack"]), default="spread", show_default=True,
                 help="Spread tasks over nodes, or pack them onto as few as possible."),
    click.option("--node-ttl", type=float, default=15.0, show_default=True,
                 help="Seconds without a heartbeat before a node is down and its tasks are rescheduled."),
    click.option("--max-pending", type=int, default=100_000, show_default=True,
                 help="Refuse submissions (503, Retry-After) while this many tasks wait."),
    click.option("--allow-bind-mount", "bind_roots", multiple=True, envvar="CORRAL_ALLOW_BIND_MOUNT",
                 type=click.Path(file_okay=False), help="Let tasks bind-mount host paths under this directory "
                 "(repeatable) [default: bind mounts are refused] [env CORRAL_ALLOW_BIND_MOUNT]."),
    click.option("--max-log-bytes", "max_log_bytes", default="10MB", show_default=True, callback=_log_cap,
                 help="Output stored per attempt of a task (such as 10MB, 512KiB); past it the log gets "
                 "a truncation marker and the rest is dropped."),
    click.option("--log-level", default="info", show_default=True,
                 type=click.Choice(["debug", "info", "warning", "error"])),
]


def _with(options: list[_Deco]) -> _Deco:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        for o in reversed(options):
            f = o(f)
        return f
    return deco


def _settings(strategy: str, node_ttl: float, max_pending: int, bind_roots: tuple[str, ...],
              max_log_bytes: int) -> Settings:
    roots = [os.path.normpath(os.path.abspath(r)) for r in bind_roots]
    return Settings(strategy="binpack" if strategy == "binpack" else "spread", node_ttl=node_ttl,
                    heartbeat_interval=max(min(3.0, node_ttl / 5), 0.2), max_pending_tasks=max_pending,
                    bind_roots=roots, max_log_bytes=max_log_bytes)


@click.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8000, show_default=True, help="Port to listen on.")
@click.option("--data-dir", "-d", default=".corral", show_default=True, type=click.Path(file_okay=False),
              help="Where the SQLite database and the local worker's state live.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["docker", "process"]),
              help="Runtimes the local worker offers [default: process, and docker when it answers].")
@_with(common_server)
def up(bind: str, port: int, data_dir: str, runtimes: tuple[str, ...], token: str | None, strategy: str,
       node_ttl: float, max_pending: int, bind_roots: tuple[str, ...], max_log_bytes: int, log_level: str) -> None:
    """Start Corral standalone: a coordinator and a local worker in one process, state in SQLite."""
    from corral.api.app import ServerConfig, create_app
    _logging(log_level)
    data = Path(data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(
        database_url=f"sqlite:///{data / 'corral.db'}", agent_token=token,
        settings=_settings(strategy, node_ttl, max_pending, bind_roots, max_log_bytes),
        local_worker={"name": "local", "data_dir": str(data / "worker"),
                      "runtimes": list(runtimes) or ["process", "docker"]},
    )
    click.echo(f"Corral standalone on http://{bind}:{port}  (state in {data})", err=True)
    _serve(create_app(config), bind, port, log_level)


@click.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8000, show_default=True, help="Port to listen on.")
@click.option("--database-url", envvar="CORRAL_DATABASE_URL", default="sqlite:///.corral/corral.db",
              show_default=True, help="sqlite:///PATH or postgresql://user:pass@host/db [env CORRAL_DATABASE_URL].")
@_with(common_server)
def server(bind: str, port: int, database_url: str, token: str | None, strategy: str, node_ttl: float,
           max_pending: int, bind_roots: tuple[str, ...], max_log_bytes: int, log_level: str) -> None:
    """Start a coordinator alone; workers connect to it with `corral worker`."""
    from corral.api.app import ServerConfig, create_app
    _logging(log_level)
    config = ServerConfig(database_url=database_url, agent_token=token,
                          settings=_settings(strategy, node_ttl, max_pending, bind_roots, max_log_bytes))
    _serve(create_app(config), bind, port, log_level)


@click.command()
@click.option("--server", "-s", "server_url", envvar="CORRAL_SERVER", default="http://127.0.0.1:8000",
              show_default=True, help="The coordinator's URL [env CORRAL_SERVER].")
@click.option("--token", envvar="CORRAL_TOKEN", default=None, help="The cluster token [env CORRAL_TOKEN].")
@click.option("--name", default=None, help="This node's name [default: the hostname].")
@click.option("--data-dir", default=".corral/worker", show_default=True, type=click.Path(file_okay=False),
              help="Where the worker keeps its node id between restarts.")
@click.option("--queue", "-q", "queues", multiple=True, help="Queues to serve [default: default]. Repeatable.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["docker", "process"]),
              help="Runtimes to offer [default: docker]. Host processes only when asked. Repeatable.")
@click.option("--label", "labels", multiple=True, help="A node label, key=value. Repeatable.")
@click.option("--cpus", type=float, default=None, help="CPU cores to offer [default: detected].")
@click.option("--memory", default=None, help="Memory to offer, such as 8Gi [default: detected].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(server_url: str, token: str | None, name: str | None, data_dir: str, queues: tuple[str, ...],
           runtimes: tuple[str, ...], labels: tuple[str, ...], cpus: float | None, memory: str | None,
           log_level: str) -> None:
    """Run a worker that dials out to a coordinator and runs the tasks it is given."""
    from corral.agent.transport import HttpTransport
    from corral.agent.worker import Agent, AgentConfig
    _logging(log_level)
    cfg = AgentConfig(data_dir=data_dir, runtimes=list(runtimes) or ["docker"],
                      queues=list(queues) or ["default"], labels=_labels(labels), cpus=cpus,
                      memory=_memory(memory))
    if name:
        cfg.name = name

    async def main() -> None:
        agent = Agent(cfg, HttpTransport(server_url, token))
        if not agent.runtimes:
            raise click.ClickException("no runtime is available on this machine")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.start()
        await stop.wait()
        await agent.stop()

    click.echo(f"Corral worker {cfg.name} (pid {os.getpid()}) -> {server_url}", err=True)
    asyncio.run(main())
