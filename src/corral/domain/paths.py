"""Paths on a host (pure: no file system access)."""

from __future__ import annotations

from collections.abc import Iterable


def under(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies below one (by path components, not by prefix)."""
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)
