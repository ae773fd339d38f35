"""`corral users` and `corral keys`: identities over the native API (/v1/users, /v1/keys; docs/security.md).

They speak to the server with the caller's credentials (``--token`` or ``CORRAL_API_TOKEN``: an admin's key
for users; any key for one's own keys).
"""

from __future__ import annotations

import click

from corral.cli import output
from corral.cli.admin import change, list_items
from corral.cli.api import Client, CliError, Json
from corral.cli.client import guarded, output_option, server_option

ROLES = ["admin", "operator", "user", "viewer", "worker"]
SCOPES = ["read", "submit", "operate", "admin", "self", "metrics", "docs", "agent"]


def _password(value: str | None) -> str:
    if value:
        return value
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _namespaces(ns: list[str] | None) -> str:
    return ",".join(ns) if ns is not None else "(all)"


@click.group()
def users() -> None:
    """Users: a name, a password (hashed with argon2), a role and namespaces.

    \b
    Examples:
      corral users create alice --role user --namespace team-a
      corral users ls
      corral users passwd alice
      corral users rm alice
    """


@users.command("create", short_help="Create a user (admin).")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.option("--namespace", "namespaces", multiple=True, metavar="NS",
              help="A namespace the user may see and act in (repeatable) [default: every namespace].")
@click.option("--password", envvar="CORRAL_NEW_PASSWORD", default=None,
              help="The password [default: asked for] [env CORRAL_NEW_PASSWORD].")
@output_option
@server_option
@guarded
def users_create(name: str, role: str, namespaces: tuple[str, ...], password: str | None, fmt: str,
                 server: str) -> None:
    with Client(server) as c:
        u = c.json("POST", "/v1/users", json={"name": name, "password": _password(password), "role": role,
                                               "namespaces": list(namespaces) or None})
    if fmt == "json":
        output.print_json(u)
    else:
        click.echo(f"created user {u['name']} ({u['role']}, namespaces {_namespaces(u['namespaces'])})")


@users.command("ls", short_help="List users (admin).")
@output_option
@server_option
@guarded
def users_ls(fmt: str, server: str) -> None:
    list_items(server, "/v1/users", fmt, ("NAME", "ROLE", "NAMESPACES", "CREATED"),
                   lambda u: (u["name"], u["role"], _namespaces(u["namespaces"]), output.when(_iso(u["created_at"]))))


@users.command("rm", short_help="Remove a user (admin); its keys are revoked.")
@click.argument("name")
@server_option
@guarded
def users_rm(name: str, server: str) -> None:
    change(server, "DELETE", f"/v1/users/{_seg(name)}", f"removed user {name}")


@users.command("passwd", short_help="Set a user's password (one's own, or an admin).")
@click.argument("name")
@click.option("--password", envvar="CORRAL_NEW_PASSWORD", default=None,
              help="The new password [default: asked for] [env CORRAL_NEW_PASSWORD].")
@server_option
@guarded
def users_passwd(name: str, password: str | None, server: str) -> None:
    with Client(server) as c:
        c.request("PUT", f"/v1/users/{_seg(name)}/password", json={"password": _password(password)})
    click.echo(f"password of {name} changed")


@click.group()
def keys() -> None:
    """API keys: shown once when made, kept only as a hash, revoked at once.

    \b
    Examples:
      corral keys create ci --role user --namespace team-a --expires-in 30d
      corral keys create worker-1 --role worker
      corral keys ls
      corral keys revoke KEY_ID
    """


@keys.command("create", short_help="Make an API key; it is printed this once.")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None, help="[default: the caller's role]")
@click.option("--namespace", "namespaces", multiple=True, metavar="NS", help="Repeatable [default: the caller's].")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Narrower than the role: only these permissions (repeatable).")
@click.option("--expires-in", default=None, metavar="DURATION", help="Such as 12h or 30d [default: never].")
@output_option
@server_option
@guarded
def keys_create(name: str, role: str | None, namespaces: tuple[str, ...], scopes: tuple[str, ...],
                expires_in: str | None, fmt: str, server: str) -> None:
    from corral.domain.resources import parse_duration
    try:
        seconds = parse_duration(expires_in) if expires_in else None
    except ValueError as e:
        raise CliError(f"--expires-in: {e}", 2) from None
    with Client(server) as c:
        k = c.json("POST", "/v1/keys", json={"name": name, "role": role, "namespaces": list(namespaces) or None,
                                              "scopes": list(scopes) or None, "expires_in": seconds})
    if fmt == "json":
        output.print_json(k)
        return
    click.echo(f"key {k['id']} ({k['role']}, namespaces {_namespaces(k['namespaces'])}); keep it, it is not "
               "shown again:", err=True)
    click.echo(k["key"])


@keys.command("ls", short_help="List API keys (one's own; an admin: all).")
@output_option
@server_option
@guarded
def keys_ls(fmt: str, server: str) -> None:
    list_items(server, "/v1/keys", fmt, ("ID", "NAME", "OWNER", "ROLE", "NAMESPACES", "LAST USED", "STATE"),
                   lambda k: (k["id"], k["name"], k["owner"], k["role"], _namespaces(k["namespaces"]),
                              output.when(_iso(k["last_used_at"])), "revoked" if k["revoked_at"] else "active"))


@keys.command("revoke", short_help="Revoke an API key: the next request with it is refused.")
@click.argument("key_id")
@server_option
@guarded
def keys_revoke(key_id: str, server: str) -> None:
    change(server, "DELETE", f"/v1/keys/{_seg(key_id)}", f"revoked key {key_id}")


def _seg(value: str) -> str:
    from urllib.parse import quote
    return quote(value, safe="")


def _iso(ts: float | None) -> str | None:
    from corral.api.timefmt import rfc3339
    return rfc3339(ts)


def register(cli: click.Group) -> None:
    cli.add_command(users)
    cli.add_command(keys)


__all__ = ["Json", "register"]
