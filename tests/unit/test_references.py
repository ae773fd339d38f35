"""The code's docstrings and comments name modules and functions that exist: a reference left behind by
a rename or a merge (``corral.runtime.hostpaths``) sends a reader to nothing."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import corral

PACKAGES = ("agent", "api", "cli", "coordinator", "domain", "runtime", "scheduler", "store")
REFERENCE = re.compile(r"\bcorral\.(?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _resolves(name: str) -> bool:
    """Whether ``name`` is a module, or an attribute (at any depth) of one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_named_module_exists() -> None:
    root = Path(corral.__file__).parent
    missing = sorted({f"{path.relative_to(root)}: {name}" for path in root.rglob("*.py")
                      for name in REFERENCE.findall(path.read_text()) if not _resolves(name)})
    assert not missing, missing
