"""Where a task leaves its output and its progress: the agent's scratch area.

Under ``<agent data dir>/executions/``:

    <execution id>.output, <execution id>.progress
        a host-process task without files: no directory of its own
    <execution id>/output, <execution id>/progress, <execution id>/work/
        a container task (the directory is bind-mounted at /corral), or one with files (work/ is its
        working directory when it has no workdir of its own)

``output`` is the task's result, read when the attempt ends ($CORRAL_OUTPUT, $TORK_OUTPUT); ``progress``
a number in 0..100, read about once a second while it runs ($CORRAL_PROGRESS, $TORK_PROGRESS). The
task creates them itself when it writes them (``echo 42 > $TORK_OUTPUT``).

Why no directory per host-process task: on the ext4 disk we measure on, a mkdir and rmdir pair costs
about 270 us, most of what the agent spends on a whole `echo hi` task (throughput fell by a third with
one). Without it a quick task costs one failed open (its output, read when it ends); the progress file,
if it wrote one, goes with the agent's next :func:`sweep`, once a second. A container task pays for its
directory (a container costs a hundred times more); so does a task with files, which needs somewhere to
put them.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Container

from corral.runtime.base import Scratch

OUTPUT = "output"
PROGRESS = "progress"
WORK = "work"
MAX_OUTPUT = 1 << 20  # bytes of output kept; the rest is dropped
MAX_PROGRESS = 64  # bytes of the progress file looked at


def env_for(output: str, progress: str) -> dict[str, str]:
    """The variables that tell a task where to write, with the paths as the task sees them."""
    return {"CORRAL_OUTPUT": output, "TORK_OUTPUT": output, "CORRAL_PROGRESS": progress, "TORK_PROGRESS": progress}


def make(base: str, execution_id: str, own_dir: bool) -> Scratch:
    """The scratch of one execution under ``base`` (which exists); with ``own_dir``, its directory made."""
    path = f"{base}/{execution_id}"  # not os.path.join: this runs for every task
    if not own_dir:
        return Scratch(output=f"{path}.{OUTPUT}", progress=f"{path}.{PROGRESS}")
    try:
        os.mkdir(path)
    except FileExistsError:  # a leftover of an attempt of the same id (a crash): start clean
        shutil.rmtree(path, ignore_errors=True)
        os.mkdir(path)
    return Scratch(output=f"{path}/{OUTPUT}", progress=f"{path}/{PROGRESS}", dir=path)


def remove_quick(s: Scratch) -> bool:
    """Remove what a scratch holds when that is no more than its output and progress files, in a few
    syscalls (fit for the event loop); False if there is more, for :func:`remove`."""
    for name in (s.output, s.progress):
        with contextlib.suppress(OSError):
            os.unlink(name)
    if s.dir is None:
        return True
    try:
        os.rmdir(s.dir)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def remove(s: Scratch) -> None:
    """Remove a scratch and all in it; never raises. Files a container's user made in it may be beyond
    what this process may delete: those stay, for :func:`remove_all` at the next start."""
    if not remove_quick(s) and s.dir is not None:
        shutil.rmtree(s.dir, ignore_errors=True)


def sweep(base: str, alive: Container[str]) -> int:
    """Remove the output and progress files under ``base`` (those of executions without a directory of
    their own) of executions not in ``alive``; how many. Directories are left to their executions."""
    removed = 0
    try:
        with os.scandir(base) as entries:
            stale = [e.path for e in entries
                     if e.is_file(follow_symlinks=False) and e.name.rpartition(".")[0] not in alive]
    except FileNotFoundError:
        return 0
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


def remove_all(base: str, keep: Container[str] = ()) -> int:
    """Remove everything under ``base`` (what a worker that crashed left) but what belongs to the
    executions in ``keep`` (adopted by the restarted worker), and make ``base``; how many."""
    try:
        names = [n for n in os.listdir(base) if n not in keep and n.rpartition(".")[0] not in keep]
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    os.makedirs(base, exist_ok=True)
    return len(names)


def write_files(directory: str, files: dict[str, str], mode: int | None = None) -> None:
    """Write ``files`` (plain names, validated by the coordinator) into ``directory``, made if missing.

    ``mode``: also chmod the directory and the files to it (for a container whose user may not be ours).
    """
    os.makedirs(directory, exist_ok=True)
    if mode is not None:
        os.chmod(directory, mode)
    for name, content in files.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"file name {name!r} must be a plain name")
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        if mode is not None:
            os.chmod(path, mode & 0o666)


def read_output(path: str) -> str | None:
    """What the task wrote to its output file (at most MAX_OUTPUT bytes, as written); None if nothing."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OUTPUT)
    except OSError:  # never written (the usual case), or not a file
        return None
    return data.decode("utf-8", "replace") if data else None


def read_progress(path: str) -> float | None:
    """The number in the progress file, if it holds one in 0..100; None for anything else."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROGRESS + 1)
    except OSError:
        return None
    if not data or len(data) > MAX_PROGRESS:
        return None
    with contextlib.suppress(ValueError):
        value = float(data.decode("ascii", "strict").strip().rstrip("%"))
        if math.isfinite(value) and 0 <= value <= 100:
            return value
    return None
