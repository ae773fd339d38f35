"""One process per node directory: an exclusive lock on ``<data dir>/lock``, held for the process's life.

Two workers on one directory would share a node id: the second would register as the first, and the
first's work would be reaped as "restarted without it". The lock makes the second one stop at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import IO

LOCK_FILE = "lock"


class DirLocked(Exception):
    """Another process owns this node directory."""


def lock_dir(path: str) -> IO[str]:
    """Take the directory's lock (made if missing) without waiting; DirLocked if another process holds
    it. The lock lasts as long as the returned file stays open (the process's life, at most)."""
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, LOCK_FILE), "a+")  # noqa: SIM115 (held open for the process's life)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read(32).strip()
        f.close()
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise DirLocked(f"the node directory {os.path.abspath(path)} is in use by another Corral process{by}; "
                        "each worker needs a directory of its own (--data-dir)") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def unlock(f: IO[str] | None) -> None:
    if f is not None:
        with contextlib.suppress(OSError):
            f.close()
