"""Who a caller is and what it may do: pure, no I/O.

Roles (docs/security.md): ``admin`` does everything (users, keys, nodes, drain); ``operator`` all jobs and
pods in every namespace, nodes and queues; ``user`` submits, and sees, cancels, restarts and deletes only
what is in its namespaces; ``viewer`` only reads (its namespaces); ``worker`` only the agent routes.
A key may be narrower than its owner's role: its ``scopes`` are a subset of the role's permissions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Kind = Literal["user", "key", "token", "local", "worker", "anonymous"]
DEFAULT_NAMESPACE = "default"
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label, as Kubernetes has it
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    USER = "user"
    VIEWER = "viewer"
    WORKER = "worker"


class Perm(StrEnum):
    """What a route needs (corral.auth.rules). ``PUBLIC``: nothing (probes, the token exchange)."""

    PUBLIC = "public"
    READ = "read"  # see jobs, pods, logs, nodes, queues (what is in the caller's namespaces)
    SUBMIT = "submit"  # submit, cancel, restart, delete (in the caller's namespaces)
    OPERATE = "operate"  # nodes and queues: drain, pause; all namespaces
    ADMIN = "admin"  # users, every key
    SELF = "self"  # one's own keys and tokens
    METRICS = "metrics"  # /metrics, its own scope
    DOCS = "docs"  # /docs, /redoc, /openapi.json
    AGENT = "agent"  # a worker's routes (/v1/agent/*, the Podling worker port's calls)


ROLE_PERMS: dict[Role, frozenset[Perm]] = {
    Role.ADMIN: frozenset(Perm),
    Role.OPERATOR: frozenset({Perm.READ, Perm.SUBMIT, Perm.OPERATE, Perm.SELF, Perm.METRICS, Perm.DOCS}),
    Role.USER: frozenset({Perm.READ, Perm.SUBMIT, Perm.SELF, Perm.DOCS}),
    Role.VIEWER: frozenset({Perm.READ, Perm.SELF, Perm.DOCS}),
    Role.WORKER: frozenset({Perm.AGENT}),
}
# Roles that see and act in every namespace, whatever namespaces they were given.
ALL_NAMESPACES_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.WORKER})


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValueError(f"unknown role '{value[:40]}': one of {', '.join(r.value for r in Role)}") from None


def parse_scopes(values: list[str] | None) -> frozenset[Perm] | None:
    if values is None:
        return None
    out = set()
    for v in values:
        try:
            out.add(Perm(v.strip().lower()))
        except ValueError:
            raise ValueError(f"unknown scope '{v[:40]}': one of "
                             f"{', '.join(p.value for p in Perm if p is not Perm.PUBLIC)}") from None
    return frozenset(out)


def check_namespace(ns: str) -> str:
    if not NAMESPACE_RE.match(ns):
        raise ValueError(f"namespace '{ns[:70]}' is not a DNS label (lowercase letters, digits and '-', "
                         "at most 63)")
    return ns


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"name '{name[:70]}' must be 1 to 63 letters, digits, '.', '_', '@' or '-'")
    return name


@dataclass(frozen=True)
class Identity:
    """The caller of one request. ``namespaces`` None: every namespace. ``scopes`` None: all its role has."""

    kind: Kind
    name: str
    role: Role
    namespaces: frozenset[str] | None = None
    scopes: frozenset[Perm] | None = None
    key_id: str | None = None  # the API key this caller used, if any (audit, last_used_at)

    def can(self, perm: Perm) -> bool:
        if perm is Perm.PUBLIC:
            return True
        return perm in ROLE_PERMS[self.role] and (self.scopes is None or perm in self.scopes)

    @property
    def can_admin(self) -> bool:
        return self.can(Perm.ADMIN)

    @property
    def all_namespaces(self) -> bool:
        return self.namespaces is None or self.role in ALL_NAMESPACES_ROLES

    def sees(self, namespace: str | None) -> bool:
        """Whether an object of ``namespace`` exists for this caller (else it is a 404)."""
        return self.all_namespaces or (namespace or DEFAULT_NAMESPACE) in (self.namespaces or ())

    def visible(self) -> frozenset[str] | None:
        """The namespaces a listing is filtered to; None: no filter."""
        return None if self.all_namespaces else (self.namespaces or frozenset())

    def default_namespace(self) -> str:
        """Where this caller's objects go when it names no namespace."""
        if self.all_namespaces or DEFAULT_NAMESPACE in (self.namespaces or ()):
            return DEFAULT_NAMESPACE
        return sorted(self.namespaces or {DEFAULT_NAMESPACE})[0]

    @property
    def principal(self) -> str:
        """``created_by`` of what this caller makes: ``user:alice``, ``local``, ``anonymous``."""
        if self.kind in ("local", "anonymous"):
            return self.name
        return f"{'worker' if self.kind == 'worker' else 'user'}:{self.name}"


# The caller of a server that checks no credential (loopback, no --auth): it may do everything.
ANONYMOUS = Identity("anonymous", "anonymous", Role.ADMIN)
# The holder of `corral up`'s local access token: the admin of the local server.
LOCAL = Identity("local", "local", Role.ADMIN)


def narrower(role: Role, scopes: frozenset[Perm] | None, owner: Identity) -> str | None:
    """Why a key with ``role`` and ``scopes`` cannot be made by ``owner`` (None: it can): no key gives more
    than its maker has."""
    if not ROLE_PERMS[role] <= ROLE_PERMS[owner.role]:
        return f"a {owner.role.value} cannot make a key with role {role.value}"
    if owner.scopes is not None and (scopes is None or not scopes <= owner.scopes):
        return "a key cannot have scopes its maker's key does not have"
    return None
