"""Helpers shared by the test modules (which never import from each other): id and time patterns, an image
that cannot be had, making a schedule due, the `corral` CLI as a subprocess, and a stand-in nvidia-smi."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import Cluster

ID_RE = re.compile(r"^[0-9a-f]{32}$")  # a job, task or schedule id (native and Tork)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # nomad-lite's job ids
TORK_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ISO_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$")  # nomad-lite's
TORK_DONE = {"COMPLETED", "FAILED", "CANCELLED"}

# An image no machine has or can pull: `.invalid` is reserved (RFC 2606) and never resolves, so a pull fails
# at once, with or without a network, whatever images this machine holds.
MISSING_IMAGE = "corral.invalid/missing:never"
MISSING_IMAGE_ERROR = f"image '{MISSING_IMAGE}' could not be pulled"


def due_now(c: Cluster, schedule_id: str) -> None:
    """Make a schedule's next tick due at once in a `corral up`'s database: a minute is too long to wait."""
    db = sqlite3.connect(c.tmp / "data" / "corral.db", timeout=30)
    with db:
        db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (time.time() - 5, schedule_id))
    db.close()


def corral(*args: str, server: str | None, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `corral ARGS` with CORRAL_SERVER set to ``server`` (None: unset)."""
    e = {k: v for k, v in os.environ.items() if k != "CORRAL_SERVER"}
    if server is not None:
        e["CORRAL_SERVER"] = server
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                       input=stdin, env=e, timeout=45)
    assert "Traceback" not in r.stderr, r.stderr
    return r


# The query the worker makes (src/corral/agent/capacity.py): anything else is an error, as nvidia-smi's own.
SMI_QUERY = "--query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits"


def stand_in_nvidia_smi(bindir: Path, rows: list[str]) -> dict[str, str]:
    """Write a stand-in `nvidia-smi` into ``bindir`` that answers the worker's query with ``rows`` (none: a
    machine without GPUs) and fails on any other arguments, recording each call's arguments in
    ``bindir/calls``; returns the environment (PATH first through ``bindir``) to start a process with."""
    bindir.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  echo '{r}'\n" for r in rows) or "  :\n"
    smi = bindir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
# A stand-in for nvidia-smi (this test pins the GPUs a node has). It answers one query, the worker's.
echo "$*" >> '{bindir / "calls"}'
if [ "$*" = "{SMI_QUERY}" ]; then
{body}  exit 0
fi
echo "stand-in nvidia-smi: unexpected arguments: $*" >&2
exit 2
""")
    smi.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
