"""PostgreSQL for the tests: a throwaway server started from the installed binaries, and fresh databases.

Why not pytest-postgresql: it runs initdb and pg_ctl as the current user, and initdb refuses to run as root,
which is how CI and the developers' machines run the suite. Here, under root, the server runs as the
`postgres` user (or `nobody`), which owns its temporary data directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness import free_port

START_TIMEOUT = 60  # seconds for initdb + start on a loaded 2-core machine
# Throwaway data: durability off, which makes CREATE DATABASE and every commit much faster.
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300"]


class Unreachable(Exception):
    """No PostgreSQL answered at the URL."""


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


def probe(url: str) -> None:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as e:
        raise Unreachable(str(e).strip()) from e


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The bin directory of the newest PostgreSQL server installed: Debian's /usr/lib/postgresql/*/bin, or
    initdb on PATH; ``CORRAL_TEST_PG_BIN`` overrides."""
    if os.environ.get("CORRAL_TEST_PG_BIN"):
        given = Path(os.environ["CORRAL_TEST_PG_BIN"])
        if not (given / "initdb").exists():
            raise FileNotFoundError(f"CORRAL_TEST_PG_BIN={given} has no initdb")
        return given
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()
             and (p / "pg_ctl").exists()]
    if found:
        return max(found, key=_version)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unprivileged() -> dict[str, Any]:
    """subprocess arguments that drop root for initdb and the server (they refuse to run as root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


class TempServer:
    """``with TempServer(bindir) as s: s.url`` — a PostgreSQL server on 127.0.0.1 with a superuser
    ``corral`` (trust authentication, loopback only), removed with its data on exit."""

    def __init__(self, bindir: Path, also_on: str | None = None, allow: str | None = None) -> None:
        """``also_on``: one more address to listen on (besides 127.0.0.1); ``allow``: a network (CIDR) whose
        clients are trusted too, as for a coordinator in a network namespace (tests/netns.py)."""
        self.bindir = bindir
        self.also_on, self.allow = also_on, allow
        self.run_as = _unprivileged()
        self.dir = Path(tempfile.mkdtemp(prefix="corral-test-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.url = ""

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        r = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                           timeout=timeout, cwd=self.dir, **self.run_as)
        if r.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stdout}{r.stderr}{log}")

    def __enter__(self) -> TempServer:
        try:
            if self.run_as:
                os.chown(self.dir, self.run_as["user"], self.run_as["group"])
            self._run("initdb", "-D", str(self.data), "-U", "corral", "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            if self.allow:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.allow} trust\n")
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self) -> None:
        """Start the server: on a free port the first time, on the same port again after stop()."""
        for attempt in range(3):  # a free port may be taken between finding it and binding it
            port = self.port or free_port()
            listen = ",".join(["127.0.0.1", *([self.also_on] if self.also_on else [])])
            opts = " ".join(["-p", str(port), "-k", str(self.dir), "-c", f"listen_addresses={listen}", *FAST])
            try:
                self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", str(START_TIMEOUT), "-o", opts)
                break
            except RuntimeError:
                if self.port or attempt == 2 or "could not bind" not in self.log.read_text(errors="replace"):
                    raise
        self.port = port
        self.url = f"postgresql://corral@127.0.0.1:{self.port}/postgres"
        probe(self.url)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (its data stays: start() brings it back)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", timeout=30)

    def __exit__(self, *exc: object) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``, dropped on exit."""
    import psycopg

    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
