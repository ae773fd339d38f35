"""A stored node record made safe to show: whatever a row holds, a node view answers.

Agent input is checked strictly at the edge (api/native/agent.py), but rows written before those checks
(or by a bug) may hold a lone surrogate in a label, a usage that is not a number, a GPU that is not a
map. One bad row must not make every listing of nodes fail.
"""

from __future__ import annotations

import math
from typing import Any


def text(value: Any) -> str:
    """A string that encodes as UTF-8 (lone surrogates replaced); anything else as its str()."""
    s = value if isinstance(value, str) else ("" if value is None else str(value))
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def number(value: Any) -> float:
    """A finite number, or 0.0 (a bool, a string, NaN or infinity are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    f = float(value)
    return f if math.isfinite(f) else 0.0


def _json(value: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return number(value) if isinstance(value, float) else value
    if isinstance(value, dict):
        return {text(k): _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return text(value)


def safe_node(n: dict[str, Any]) -> dict[str, Any]:
    """A copy of a node row whose every field has the type its views expect."""
    out = dict(n)
    for k in ("name", "hostname", "version", "state"):
        out[k] = text(n.get(k))
    gpus = n.get("gpus")
    out["gpus"] = [_json(g) for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []
    labels = n.get("labels")
    out["labels"] = {text(k): text(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    for k in ("runtimes", "queues"):
        items = n.get(k)
        out[k] = [text(x) for x in items] if isinstance(items, list) else []
    usage = n.get("usage")
    out["usage"] = {text(k): number(v) for k, v in usage.items()} if isinstance(usage, dict) else {}
    for k in ("cpu", "registered_at", "last_heartbeat"):
        out[k] = number(n.get(k))
    for k in ("memory", "disk"):
        out[k] = int(number(n.get(k)))
    out["address"] = None if n.get("address") is None else text(n.get("address"))
    out.pop("secret_hash", None)
    return out
