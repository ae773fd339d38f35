"""`corral up`, `corral server` and `corral worker`: the three wirings of the same parts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral.domain.resources import parse_duration, parse_size

if TYPE_CHECKING:
    from fastapi import FastAPI

    from corral.auth.service import AuthLimits
    from corral.coordinator.service import Settings
    from corral.coordinator.stacks import StacksConfig


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every plugin and step; only a migration that actually runs is worth a line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request at INFO: a worker's heartbeats and its pods' HTTP probes would fill the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _serve(app: FastAPI, bind: str, port: int, log_level: str,
           more: list[tuple[FastAPI, int]] | None = None, tls: dict[str, Any] | None = None) -> None:
    """Serve ``app`` on ``port``, and each of ``more`` (a dialect alone) on its own port, in one event loop."""
    import sys

    import uvicorn

    # The event loop, the scheduler and the store hand work to each other across threads many times per
    # task; with the default 5 ms GIL switch interval every hand-over can stall that long.
    sys.setswitchinterval(0.0005)
    from corral.api.wire import JoinedWritesProtocol

    # httptools, with a response's head and body written in one system call (corral.api.wire)
    opts: dict[str, Any] = {"host": bind, "log_level": log_level.lower(), "access_log": False, "loop": "uvloop",
                            "http": JoinedWritesProtocol, "timeout_graceful_shutdown": 5, **(tls or {})}
    if not more:
        uvicorn.run(app, port=port, **opts)
        return
    servers = [uvicorn.Server(uvicorn.Config(app, port=port, **opts))]
    servers += [uvicorn.Server(uvicorn.Config(a, port=p, lifespan="off", **opts)) for a, p in more]

    async def main() -> None:
        async def one_stops_all() -> None:  # a signal reaches one server's handler: stop them all
            while not any(s.should_exit for s in servers):
                await asyncio.sleep(0.1)
            for s in servers:
                s.should_exit = True

        watch = asyncio.ensure_future(one_stops_all())
        try:
            await asyncio.gather(*(s.serve() for s in servers))
        finally:
            watch.cancel()

    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(main())
    if not all(s.started for s in servers):
        raise SystemExit(3)


def _dialect_ports(values: tuple[str, ...], main_port: int) -> dict[str, int]:
    from corral.api.dialects import PORT_APPS
    out: dict[str, int] = {}
    for v in values:
        name, sep, port = v.partition("=")
        name = name.strip().lower()
        if not sep or name not in PORT_APPS or not port.strip().isdigit() or not 1 <= int(port) <= 65535:
            raise click.BadParameter(f"'{v}': give NAME=PORT with NAME one of {', '.join(sorted(PORT_APPS))}",
                                     param_hint="--dialect-port")
        if int(port) == main_port or int(port) in out.values() or name in out:
            raise click.BadParameter(f"'{v}': each dialect once, each on a port of its own",
                                     param_hint="--dialect-port")
        out[name] = int(port)
    return out


UP_GRPC_PORT = 50051  # nomad-lite's own default port; `corral up` serves its gRPC API there unless told


def _grpc_port(given: int | None, default: int | None, main_port: int, dialect_ports: dict[str, int]) -> int | None:
    if given == 0:
        return None
    port = given or default
    taken = port == main_port or port in dialect_ports.values()
    if given is None and taken:
        return None  # the default collides with an HTTP port given: no gRPC unless asked for
    if port is not None and taken:
        raise click.BadParameter(f"{port} is taken by the HTTP API: give the gRPC API a port of its own",
                                 param_hint="--grpc-port")
    return port


def _serve_all(config: Any, bind: str, port: int, log_level: str, dialect_ports: dict[str, int],
               tls: dict[str, Any] | None = None) -> None:
    from corral.api.app import create_app, create_dialect_app
    app = create_app(config)
    if config.first_admin_key:
        click.echo("Identities are on (--auth). The first admin's API key, shown this once (keep it; make others "
                   f"with `corral keys create`):\n  {config.first_admin_key}", err=True)
    more = [(create_dialect_app(app, name, config), p) for name, p in dialect_ports.items()]
    for name, p in dialect_ports.items():
        click.echo(f"The {name} API alone on {'https' if tls else 'http'}://{bind}:{p}", err=True)
    _serve(app, bind, port, log_level, more, tls)


def _tls(common: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's TLS options from --tls-cert, --tls-key and --tls-client-ca (taken out of ``common``)."""
    from corral.api.tls import server_options
    try:
        return server_options(common.pop("tls_cert"), common.pop("tls_key"), common.pop("tls_client_ca"))
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _audit(common: dict[str, Any]) -> Any:
    from corral.coordinator.audit import AuditConfig
    try:
        return AuditConfig(retention=parse_duration(common.pop("audit_retention")))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--audit-retention") from None


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}' is not key=value", param_hint="--label")
        k, _, val = v.partition("=")
        if not 1 <= len(k.strip()) <= 128 or len(val.strip()) > 256:
            raise click.BadParameter(f"'{v}': a label key is 1-128 characters, a value at most 256",
                                     param_hint="--label")
        out[k.strip()] = val.strip()
    return out


def _memory(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--memory") from e


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An IP address or a host name, as clients put it before ':port'."""
    if value is None:
        return None
    v = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", v) or v.startswith(("-", ".")):
        raise click.BadParameter(f"'{value}' is not an IP address or a host name")
    return v


def _log_cap(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        n = parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    if n < 1000:
        raise click.BadParameter("give at least 1000 bytes (such as 10MB or 500KiB)")
    return n


def _retain(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value.strip().lower() in ("", "off", "0"):
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _port_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    lo, dash, hi = value.partition("-")
    try:
        rng = (int(lo), int(hi)) if dash else (0, 0)
    except ValueError:
        rng = (0, 0)
    if not 1 <= rng[0] <= rng[1] <= 65535:
        raise click.BadParameter(f"'{value}' is not a port range such as 30000-32767 (1-65535, low to high)")
    return rng


_Deco = Callable[[Callable[..., Any]], Callable[..., Any]]

common_server: list[_Deco] = [
    click.option("--token", envvar="CORRAL_TOKEN", default=None,
                 help="The cluster token: workers must present it on /v1/agent/* (the API's access "
                 "token is another) [env CORRAL_TOKEN]."),
    click.option("--strategy", type=click.Choice(["spread", "binpack"]), default="spread", show_default=True,
                 help="Spread tasks over nodes, or pack them onto as few as possible."),
    click.option("--node-ttl", type=float, default=15.0, show_default=True,
                 help="Seconds without a heartbeat before a node is down and its tasks are rescheduled."),
    click.option("--max-pending", type=int, default=100_000, show_default=True,
                 help="Refuse submissions (503, Retry-After) while this many tasks wait."),
    click.option("--max-tasks-per-job", "max_tasks", type=click.IntRange(1, 1_000_000), default=10_000,
                 show_default=True, help="Refuse a job with more tasks than this across all its levels (parallel, "
                 "each, pre/post, subjobs); an each that would open more when it runs fails with the reason."),
    click.option("--allow-bind-mount", "bind_roots", multiple=True, envvar="CORRAL_ALLOW_BIND_MOUNT",
                 type=click.Path(file_okay=False), help="Let tasks bind-mount host paths under this directory "
                 "(repeatable) [default: bind mounts are refused] [env CORRAL_ALLOW_BIND_MOUNT]."),
    click.option("--allow-admin-escalation", "escalations", multiple=True, envvar="CORRAL_ALLOW_ADMIN_ESCALATION",
                 metavar="KIND,...", help="Let admins (only) ask for these in a task: privileged, cap_add, "
                 "host_network, host_pid, host_ipc, devices, or all (comma-separated or repeated; a warning is "
                 "printed at start) [default: every container is hardened] [env CORRAL_ALLOW_ADMIN_ESCALATION]."),
    click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
                 help="On a loopback address the server answers only requests whose Host is one of its loopback "
                 "names; also accept this name (repeatable)."),
    click.option("--allow-volume", "volumes", multiple=True, envvar="CORRAL_ALLOW_VOLUME",
                 help="Let tasks mount this existing named volume (repeatable) [default: a task's named volume "
                 "is one of its job's own, never another application's] [env CORRAL_ALLOW_VOLUME]."),
    click.option("--allow-network", "networks", multiple=True, envvar="CORRAL_ALLOW_NETWORK",
                 help="Let container tasks join this existing Docker network (repeatable) [default: a task's "
                 "networks are refused] [env CORRAL_ALLOW_NETWORK]."),
    click.option("--allow-webhook-host", "webhook_hosts", multiple=True, envvar="CORRAL_ALLOW_WEBHOOK_HOST",
                 help="Let webhooks reach this host (a name or an address) although it is loopback, private, "
                 "link-local or reserved (repeatable) [default: refused] [env CORRAL_ALLOW_WEBHOOK_HOST]."),
    click.option("--default-memory", default="512Mi", show_default=True,
                 help="A container's memory limit when its task asks for no memory; 0: no limit."),
    click.option("--default-cpu", type=float, default=1.0, show_default=True,
                 help="A container's CPU limit (cores) when its task asks for no CPU; 0: no limit."),
    click.option("--max-log-bytes", "max_log_bytes", default="10MB", show_default=True, callback=_log_cap,
                 help="Output stored per attempt of a task (such as 10MB, 512KiB); past it the log gets "
                 "a truncation marker and the rest is dropped."),
    click.option("--node-port-range", "node_port_range", default="30000-32767", show_default=True,
                 callback=_port_range, help="Ports on the nodes given to pods' published ports that ask for no "
                 "hostPort (LOW-HIGH)."),
    click.option("--log-level", default="info", show_default=True,
                 type=click.Choice(["debug", "info", "warning", "error"])),
    # The Stacks API (docs/api/stacks.md).
    click.option("--stacks-api-key", envvar="CORRAL_STACKS_API_KEY", default=None,
                 help="Require this key (X-API-KEY header or ?api_key=) on every Stacks route; they then skip the "
                 "access token [default: none: the access token, if any, guards them] [env CORRAL_STACKS_API_KEY]."),
    click.option("--stacks-ttl", default="2h", show_default=True,
                 help="How long a stack lives before the coordinator deletes it (such as 2h, 30m)."),
    click.option("--stacks-limit-range", "stacks_limits", multiple=True, metavar="KEY=QTY,...",
                 help="Per-container bounds of a stack, like a Kubernetes LimitRange: min.cpu, max.cpu, min.memory, "
                 "max.memory (such as max.cpu=2,max.memory=4Gi); outside them: 400 [default: none]."),
    click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
                 help="Serve nomad-lite's gRPC SchedulerService on this port, on the --bind address; 0: not "
                 "served [default: not served; `corral up`: 50051]."),
    click.option("--dialect-port", "dialect_ports", multiple=True, metavar="NAME=PORT",
                 help="Also serve one dialect alone on a port of its own, answering exactly as its document "
                 "(such as stacks=8081); it stays on the main port too. Repeatable."),
    # TLS (docs/operations.md): the API over HTTPS, and client certificates.
    click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                 envvar="CORRAL_TLS_CERT", help="Serve HTTPS with this certificate (PEM; with --tls-key) "
                 "[env CORRAL_TLS_CERT]."),
    click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                 envvar="CORRAL_TLS_KEY", help="The private key of --tls-cert (PEM) [env CORRAL_TLS_KEY]."),
    click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                 envvar="CORRAL_TLS_CLIENT_CA", help="Accept client certificates signed by this CA (PEM); a "
                 "certificate's common name is the caller's identity (a worker's: its node name). Clients "
                 "without one may still use tokens [env CORRAL_TLS_CLIENT_CA]."),
    click.option("--tls-cn-map", "tls_cn_map", multiple=True, metavar="CN=USER",
                 help="With --auth and --tls-client-ca: a client certificate with this common name acts as this "
                 "user (its role and namespaces). A CN not mapped acts as the user of that name, if there is "
                 "one; any other CN is anonymous. Repeatable."),
    click.option("--secret-key-file", type=click.Path(dir_okay=False), default=None,
                 envvar="CORRAL_SECRET_KEY_FILE", help="The key file that encrypts job secrets, webhook headers "
                 "and registry passwords at rest (Fernet keys, one a line, the first encrypts), made at first "
                 "start [default: secret.key beside the SQLite database; .corral/secret.key with PostgreSQL] "
                 "[env CORRAL_SECRET_KEY_FILE; CORRAL_SECRET_KEY gives the keys themselves]."),
    click.option("--retain", default=None, metavar="DURATION", callback=_retain,
                 help="Delete finished jobs (with their tasks, executions and logs) this long after they "
                 "finished, such as 30d or 12h, in small batches [default: keep them]."),
    click.option("--audit-retention", default="90d", show_default=True,
                 help="How long the audit log (GET /v1/audit) keeps an entry (such as 90d, 12h)."),
    click.option("--stacks-quota", "stacks_quota", multiple=True, metavar="KEY=QTY,...",
                 help="Totals of all stacks, like a Kubernetes ResourceQuota: cpu, memory, pods (such as "
                 "cpu=8,memory=16Gi,pods=50); past them: 503. Namespace stacks' own quota (corral quotas set "
                 "stacks ...), when it has one, is used instead [default: none]."),
    # Bounds on what one caller may make (docs/operations.md): past one, 409.
    click.option("--max-keys-per-owner", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
                 help="API keys not revoked that one user (or key) may own."),
    click.option("--max-users", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
                 help="Users this server keeps."),
    click.option("--max-join-tokens", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
                 help="Worker join tokens, not revoked nor expired, that one admin may have."),
]


def _cn_map(common: dict[str, Any]) -> dict[str, str]:
    out = {}
    for item in common.pop("tls_cn_map"):
        cn, sep, user = item.partition("=")
        if not sep or not cn.strip() or not user.strip():
            raise click.BadParameter(f"'{item[:80]}' is not CN=USER", param_hint="--tls-cn-map")
        out[cn.strip()] = user.strip()
    return out


def _auth_limits(common: dict[str, Any]) -> AuthLimits:
    from corral.auth.service import AuthLimits
    return AuthLimits(common.pop("max_keys_per_owner"), common.pop("max_users"), common.pop("max_join_tokens"))


def _with(options: list[_Deco]) -> _Deco:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        for o in reversed(options):
            f = o(f)
        return f
    return deco


def _token_file(data: Path) -> tuple[str, Path]:
    """The access token in ``<data>/token``: reused if there, else a new random one (mode 0600).

    An existing file is trusted only if it is a regular file (not a symlink: it is opened with
    O_NOFOLLOW), owned by this user and not readable or writable by anyone else; otherwise Corral stops
    and says why, rather than adopt a token someone else planted in a shared data dir."""
    path = data / "token"
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600)
    except FileExistsError:
        token = _read_private(path, nofollow)
        if token:
            return token, path
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | nofollow)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(token + "\n")
    return token, path


def _secret_keys(common: dict[str, Any], default: Path) -> list[str]:
    """The keys that seal secrets at rest: CORRAL_SECRET_KEY (comma-separated), else the key file
    (--secret-key-file, else ``default``), made with a new key at first start (mode 0600). The first key
    seals; the others only open what they sealed (rotation: put a new key first, keep the old after it)."""
    from corral.store import sealing
    given = common.pop("secret_key_file")
    if os.environ.get("CORRAL_SECRET_KEY"):
        keys = sealing.parse_keys(os.environ["CORRAL_SECRET_KEY"])
    else:
        path = Path(given) if given else default
        path.parent.mkdir(parents=True, exist_ok=True)
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600)
        except FileExistsError:
            keys = sealing.parse_keys(_read_private(path, nofollow, what="key", size=1 << 16))
        else:
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(sealing.new_key() + "\n")
            click.echo(f"Made a new secret key in {path}: secrets are encrypted with it at rest; keep it (and "
                       "back it up) with the database", err=True)
            keys = sealing.parse_keys(path.read_text())
    if not keys:
        raise click.UsageError("no secret key: the key file or CORRAL_SECRET_KEY is empty")
    try:
        sealing.configure(keys)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return keys


def _read_private(path: Path, nofollow: int, what: str = "token", size: int = 4096) -> str:
    """The text of a file only this user may read or write (ClickException otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | nofollow)
    except OSError as e:  # ELOOP: a symlink
        raise click.ClickException(f"{path} must be a regular file of yours, not a link; remove it and start "
                                   f"again for a new {what} ({e.strerror})") from None
    with os.fdopen(fd, "r") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise click.ClickException(f"{path} is not a regular file owned by you: it may have been planted; "
                                       f"remove it and start again for a new {what}")
        if st.st_mode & 0o077:
            raise click.ClickException(f"{path} may be read or written by other users (mode "
                                       f"{stat.S_IMODE(st.st_mode):o}): its {what} cannot be trusted; remove it "
                                       f"and start again for a new {what}")
        return fh.read(size).strip()


def _browser_host(bind: str) -> str:
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if ":" in bind:
        return "[::1]" if bind in ("::", "::1") else f"[{bind}]"
    return bind


NO_TOKEN_WARNING = ("warning: --no-token: any program of any user on this machine, and any web page that "
                    "reaches this address, can run commands through this server as you (Host and Origin checks "
                    "stay on); keep the token unless this machine and its browser are yours alone")


def _stacks(common: dict[str, Any]) -> StacksConfig:
    """The Stacks API's settings, taken out of the options every server command shares."""
    from corral.coordinator.stacks import StacksConfig
    from corral.domain import k8s
    key, ttl = common.pop("stacks_api_key"), common.pop("stacks_ttl")
    limits, quota = common.pop("stacks_limits"), common.pop("stacks_quota")
    try:
        ttl_s = parse_duration(ttl)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--stacks-ttl") from e
    if ttl_s <= 0:
        raise click.BadParameter("must be longer than zero", param_hint="--stacks-ttl")
    try:
        lr = k8s.parse_limit_range(limits)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--stacks-limit-range") from e
    try:
        q = k8s.parse_quota(quota)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--stacks-quota") from e
    return StacksConfig(ttl=ttl_s, limits=lr, quota=q, api_key=(key or "").strip() or None)


def _escalations(given: tuple[str, ...]) -> frozenset[str]:
    """--allow-admin-escalation's kinds, with the warning a server that allows any prints at start."""
    from corral.coordinator.policy import parse_escalations
    try:
        kinds = parse_escalations(given)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--allow-admin-escalation") from e
    if kinds:
        click.echo(f"warning: --allow-admin-escalation {','.join(sorted(kinds))}: an admin's tasks may have "
                   "these, and with them the host (each such submission is in the audit log)", err=True)
    return kinds


def _settings(strategy: str, node_ttl: float, max_pending: int, max_tasks: int, bind_roots: tuple[str, ...],
              volumes: tuple[str, ...], webhook_hosts: tuple[str, ...], default_memory: str,
              default_cpu: float, max_log_bytes: int, networks: tuple[str, ...] = (),
              node_port_range: tuple[int, int] = (30000, 32767), retain: float | None = None,
              escalations: tuple[str, ...] = ()) -> Settings:
    """The coordinator's settings from the options every server command shares (``common_server``)."""
    from corral.coordinator.policy import Policy  # the server's modules: only for the commands that serve
    from corral.coordinator.service import Settings

    roots = tuple(os.path.normpath(os.path.abspath(r)) for r in bind_roots)
    try:
        memory = parse_size(default_memory)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--default-memory") from e
    if default_cpu < 0:
        raise click.BadParameter("cannot be negative", param_hint="--default-cpu")
    policy = Policy(bind_roots=roots, volumes=tuple(volumes), networks=tuple(networks),
                    webhook_hosts=tuple(h.strip().lower().strip("[]") for h in webhook_hosts),
                    default_cpu=default_cpu or None, default_memory=memory or None,
                    escalations=_escalations(escalations))
    return Settings(strategy="binpack" if strategy == "binpack" else "spread", node_ttl=node_ttl,
                    heartbeat_interval=max(min(3.0, node_ttl / 5), 0.2), max_pending_tasks=max_pending,
                    max_tasks_per_job=max_tasks, policy=policy, max_log_bytes=max_log_bytes,
                    node_port_range=node_port_range, retain=retain)


@click.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8000, show_default=True, help="Port to listen on.")
@click.option("--data-dir", "-d", default=".corral", show_default=True, type=click.Path(file_okay=False),
              envvar="CORRAL_DATA_DIR",
              help="Where the SQLite database, the access token and the local worker's state live "
              "[env CORRAL_DATA_DIR].")
@click.option("--no-token", is_flag=True, default=False,
              help="Answer requests without the access token (not recommended: see the warning it prints).")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["docker", "process"]),
              help="Runtimes the local worker offers [default: process, and docker when it answers].")
@click.option("--advertise-address", default="127.0.0.1", show_default=True, callback=_address,
              help="Where the local worker's pods are reached (their ports are published on it when it is a "
              "loopback address, else on every interface).")
@click.option("--queue", "-q", "queues", multiple=True,
              help="Queues the local worker serves [default: default]. Repeatable.")
@click.option("--label", "labels", multiple=True,
              help="A label of the local worker's node, key=value (for node_selector). Repeatable.")
@_with(common_server)
def up(bind: str, port: int, data_dir: str, no_token: bool, runtimes: tuple[str, ...], token: str | None,
       allow_hosts: tuple[str, ...], log_level: str, advertise_address: str, queues: tuple[str, ...],
       labels: tuple[str, ...], **common: Any) -> None:
    """Start Corral standalone: a coordinator and a local worker in one process, state in SQLite.

    Every request must carry the access token kept in <data dir>/token (the corral commands read it by
    themselves); a browser logs in once with the link printed at start.

    \b
    Examples:
      corral up
      corral up --port 8080 --label arch=amd64 --queue default --queue gpu
      corral up --data-dir /tmp/corral --runtime process
    """
    from corral.agent.lock import DirLocked, lock_dir, unlock
    from corral.api.app import ServerConfig
    from corral.api.edge import EdgeConfig
    _logging(log_level)
    node_labels = _labels(labels)
    data = Path(data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True)
    try:  # the local worker takes this lock for good when it starts; say now if someone has it
        unlock(lock_dir(str(data / "worker")))
    except DirLocked as e:
        raise click.ClickException(str(e)) from None
    api_token, token_path = (None, None) if no_token else _token_file(data)
    code = None if no_token else secrets.token_urlsafe(24)
    stacks = _stacks(common)
    ports = _dialect_ports(common.pop("dialect_ports"), port)
    given_grpc = common.pop("grpc_port")
    grpc_port = _grpc_port(given_grpc, UP_GRPC_PORT, port, ports)
    tls, audit, auth_limits, cn_map = _tls(common), _audit(common), _auth_limits(common), _cn_map(common)
    _secret_keys(common, data / "secret.key")
    scheme = "https" if tls else "http"
    settings = _settings(**common)
    config = ServerConfig(
        database_url=f"sqlite:///{data / 'corral.db'}", agent_token=token, stacks=stacks, audit=audit,
        auth_limits=auth_limits, cn_map=cn_map,
        grpc_port=grpc_port, grpc_bind=bind, grpc_optional=not given_grpc,
        settings=dataclasses.replace(settings, address=f"{scheme}://{bind}:{port}"),
        local_worker={"name": "local", "data_dir": str(data / "worker"),
                      "escalations": settings.policy.escalations,  # the same operator: the same allowance
                      "runtimes": list(runtimes) or ["process", "docker"],
                      "advertise_address": advertise_address, "labels": node_labels,
                      "queues": list(queues) or ["default"]},
        edge=EdgeConfig.for_bind(bind, allow_hosts, api_token=api_token, login_code=code,
                                 token_hint=f"the token in {token_path}"),
    )
    click.echo(f"Corral standalone on {scheme}://{bind}:{port}  (state in {data})", err=True)
    if grpc_port:
        click.echo(f"nomad-lite's gRPC SchedulerService on {bind}:{grpc_port}", err=True)
    if no_token:
        click.echo(NO_TOKEN_WARNING, err=True)
    else:
        click.echo(f"Access token in {token_path} (the corral commands read it by themselves)", err=True)
        click.echo(f"Log in from a browser (this link works once): "
                   f"{scheme}://{_browser_host(bind)}:{port}/login?code={code}", err=True)
    _serve_all(config, bind, port, log_level, ports, tls)


@click.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8000, show_default=True, help="Port to listen on.")
@click.option("--database-url", envvar="CORRAL_DATABASE_URL", default="sqlite:///.corral/corral.db",
              show_default=True, help="sqlite:///PATH or postgresql://user:pass@host/db [env CORRAL_DATABASE_URL].")
@click.option("--api-token", envvar="CORRAL_API_TOKEN", default=None,
              help="Require this token (Authorization: Bearer) on every request but probes and the workers' "
              "/v1/agent/* [default: none] [env CORRAL_API_TOKEN].")
@click.option("--auth/--no-auth", "auth", envvar="CORRAL_AUTH", default=False, show_default=True,
              help="Identities: every request needs a user's, a key's or a token's credentials and is held to "
              "its role and namespaces (docs/security.md). The first start prints the first admin's key "
              "[env CORRAL_AUTH].")
@click.option("--insecure-no-auth", "--insecure", "insecure", is_flag=True, default=False,
              help="Listen on a non-loopback address without --auth (nor --api-token and --token): not "
              "recommended, anyone who reaches the port could run commands and join as a worker; a warning is "
              "printed at every start.")
@click.option("--coordinator-id", default=None, metavar="ID",
              help="This coordinator's id among those sharing the database; keep it across restarts "
              "[default: its advertised URL].")
@click.option("--advertise-url", default=None, metavar="URL",
              help="The URL workers and the other coordinators reach this one at [default: http://BIND:PORT].")
@click.option("--leader-lease", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              help="Seconds the leader holds its lease without renewing it: a leader that dies is replaced "
              "after about this long.")
@_with(common_server)
def server(bind: str, port: int, database_url: str, api_token: str | None, token: str | None, insecure: bool,
           auth: bool, allow_hosts: tuple[str, ...], log_level: str, coordinator_id: str | None,
           advertise_url: str | None, leader_lease: float, **common: Any) -> None:
    """Start a coordinator alone; workers connect to it with `corral worker`.

    On an address other than loopback it needs --auth (or --api-token for the API and --token for
    workers), unless --insecure-no-auth says to run it open.
    """
    from corral.api.app import ServerConfig
    from corral.api.edge import EdgeConfig
    from corral.domain.addresses import is_loopback
    missing = [] if auth else [name for name, given in (("--api-token", api_token), ("--token", token))
                               if not given]
    if missing and not is_loopback(bind):
        if not insecure:
            raise click.UsageError(
                f"--bind {bind} reaches beyond this machine, and without --auth (or {' and '.join(missing)}) "
                "anyone who reaches it could run commands on the workers or join as one: start it with --auth "
                "(see docs/security.md), or --insecure-no-auth to run it open anyway")
        click.echo(f"WARNING: --insecure-no-auth: {bind}:{port} answers anyone who reaches it without asking who "
                   f"they are (missing: {', '.join(missing)}); start it with --auth", err=True)
    _logging(log_level)
    stacks = _stacks(common)
    ports = _dialect_ports(common.pop("dialect_ports"), port)
    grpc_port = _grpc_port(common.pop("grpc_port"), None, port, ports)
    if grpc_port:
        click.echo(f"nomad-lite's gRPC SchedulerService on {bind}:{grpc_port}", err=True)
    tls, audit, auth_limits, cn_map = _tls(common), _audit(common), _auth_limits(common), _cn_map(common)
    sqlite_path = database_url.split("///", 1)[-1] if database_url.startswith("sqlite") else ""
    _secret_keys(common, (Path(sqlite_path).parent if sqlite_path and sqlite_path != ":memory:"
                          else Path(".corral")) / "secret.key")
    settings = _settings(**common)
    settings.address = (advertise_url or f"{'https' if tls else 'http'}://{bind}:{port}").rstrip("/")
    settings.coordinator_id = coordinator_id or settings.address
    settings.leader_lease = leader_lease
    config = ServerConfig(database_url=database_url, agent_token=token, stacks=stacks, audit=audit, auth=auth,
                          auth_limits=auth_limits, cn_map=cn_map,
                          grpc_port=grpc_port, grpc_bind=bind,
                          settings=settings,
                          edge=EdgeConfig.for_bind(bind, allow_hosts, api_token=api_token or None,
                                                   token_hint="the token given to corral server --api-token"
                                                   if api_token else "the key in an X-API-KEY header"))
    _serve_all(config, bind, port, log_level, ports, tls)


@click.command()
@click.option("--server", "-s", "server_urls", envvar="CORRAL_SERVER", multiple=True,
              help="A coordinator's URL; repeat it, or give a comma-separated list, for several coordinators: "
              "the worker moves to the next when its own does not answer [default: http://127.0.0.1:8000] "
              "[env CORRAL_SERVER].")
@click.option("--token", envvar="CORRAL_TOKEN", default=None,
              help="The cluster token, or a join token (corral tokens create --worker) [env CORRAL_TOKEN].")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), default=None, envvar="CORRAL_CA",
              help="Verify the coordinator's HTTPS certificate against this CA (PEM) [default: the system's "
              "CAs] [env CORRAL_CA].")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Present this client certificate (PEM; with --tls-key) to a coordinator that asks for one.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The private key of --tls-cert (PEM).")
@click.option("--name", default=None, help="This node's name [default: the hostname].")
@click.option("--data-dir", default=".corral/worker", show_default=True, type=click.Path(file_okay=False),
              help="Where the worker keeps its node id and secret between restarts (one worker per directory).")
@click.option("--queue", "-q", "queues", multiple=True, help="Queues to serve [default: default]. Repeatable.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["docker", "process"]),
              help="Runtimes to offer [default: docker]. Host processes only when asked. Repeatable.")
@click.option("--label", "labels", multiple=True, help="A node label, key=value. Repeatable.")
@click.option("--cpus", type=float, default=None, help="CPU cores to offer [default: detected].")
@click.option("--memory", default=None, help="Memory to offer, such as 8Gi [default: detected].")
@click.option("--grace", default="30s", show_default=True,
              help="On SIGTERM or Ctrl-C, how long running tasks may take to finish before they are stopped "
              "and handed back (a second signal stops at once).")
@click.option("--advertise-address", default=None, callback=_address,
              help="The address users reach this node's pods at, sent to the coordinator [default: this "
              "machine's primary IP]. Pods' ports are published on it when it is a loopback address, else on "
              "every interface.")
@click.option("--podling-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Podling's worker endpoints (execute, status, logs of the tasks this node runs) on "
              "this port [default: not served].")
@click.option("--podling-bind", default="127.0.0.1", show_default=True,
              help="The address the Podling port listens on.")
@click.option("--allow-admin-escalation", "escalations", multiple=True, envvar="CORRAL_ALLOW_ADMIN_ESCALATION",
              metavar="KIND,...", help="Grant an admin's task these when its coordinator does too: privileged, "
              "cap_add, host_network, host_pid, host_ipc, devices, or all [default: none; a task granted more "
              "fails here, saying so] [env CORRAL_ALLOW_ADMIN_ESCALATION].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(server_urls: tuple[str, ...], token: str | None, ca: str | None, tls_cert: str | None,
           tls_key: str | None, name: str | None, data_dir: str, queues: tuple[str, ...],
           runtimes: tuple[str, ...], labels: tuple[str, ...], cpus: float | None, memory: str | None,
           grace: str, advertise_address: str | None, podling_port: int | None, podling_bind: str,
           escalations: tuple[str, ...], log_level: str) -> None:
    """Run a worker that dials out to a coordinator and runs the tasks it is given."""
    from corral.agent.lock import DirLocked
    from corral.agent.transport import HttpTransport, Refused
    from corral.agent.worker import Agent, AgentConfig
    try:
        grace_s = parse_duration(grace)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grace") from e
    _logging(log_level)
    servers = [u.strip() for given in server_urls for u in given.split(",") if u.strip()]
    servers = servers or ["http://127.0.0.1:8000"]
    node_labels = _labels(labels)
    if podling_port:
        from corral.domain.podling import PORT_LABEL
        node_labels[PORT_LABEL] = str(podling_port)  # shown as the node's port by Podling's GET /nodes
    cfg = AgentConfig(data_dir=data_dir, runtimes=list(runtimes) or ["docker"],
                      queues=list(queues) or ["default"], labels=node_labels, cpus=cpus,
                      memory=_memory(memory), advertise_address=advertise_address,
                      escalations=_escalations(escalations))
    if name:
        cfg.name = name
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")

    async def main() -> None:
        transport = HttpTransport(servers, token, ca=ca, cert=(tls_cert, tls_key) if tls_cert and tls_key else None)
        agent = Agent(cfg, transport)
        if not agent.runtimes:
            raise click.ClickException("no runtime is available on this machine")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if podling_port is None:
            await agent.serve(stop, grace_s)
            return
        from corral.agent import podling
        done = asyncio.Event()
        side = asyncio.create_task(podling.serve(agent, transport, podling_bind, podling_port, done))
        try:
            await agent.serve(stop, grace_s)
        finally:
            done.set()
            await side

    click.echo(f"Corral worker {cfg.name} (pid {os.getpid()}) -> {', '.join(servers)}", err=True)
    try:
        asyncio.run(main())
    except (Refused, DirLocked) as e:
        raise click.ClickException(str(e)) from None
