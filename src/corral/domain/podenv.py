"""What a pod's container is started with, from its assignment: pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Any


def port_env(ports: list[dict[str, Any]], container: str) -> dict[str, str]:
    """``$PORT`` (the container's first port) and ``$PORT_<NAME>`` (each named one): the host ports a
    process container listens on."""
    env: dict[str, str] = {}
    for p in ports:
        if p.get("container") != container or not p.get("hostPort"):
            continue
        host = str(int(p["hostPort"]))
        env.setdefault("PORT", host)
        if p.get("name"):
            env["PORT_" + re.sub(r"[^A-Z0-9]", "_", str(p["name"]).upper())] = host
    return env


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' expansion of ``$(VAR)`` in a container's command and args, from its environment:
    a variable it does not have stays as written, and ``$$`` is a ``$``."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return [_VAR.sub(one, a) for a in args]
