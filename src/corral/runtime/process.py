"""Host processes: each attempt runs in its own process group, killed whole on cancel or timeout.

Processes are started with ``subprocess.Popen`` (vfork + exec: cheap even from a large server process)
and then watched from the event loop: their pipes through stream readers, their exit through a pidfd.

An attempt outlives its worker (adoption, see docs/operations.md "Worker restarts"): it runs in a session
of its own (a SIGKILL of the worker, or of the worker's process group, does not reach it); it holds the
read ends of its own stdout and stderr pipes, so that its writes neither fail nor kill it while no worker
reads them (they wait once the pipe is full), and a worker started again reopens them through
/proc/<pid>/fd; and its shell appends ``<execution> <status>`` to the worker's status log (an fd it
inherits) when it exits (an EXIT trap: ``run`` tasks are already a ``sh -c``, so this costs no extra
process; a ``command`` task runs under a ``sh -c`` that waits for it). :func:`find_held` finds both the
running attempts and those that ended after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile

from corral.runtime import scratch
from corral.runtime.base import FULL_PAUSE, MAX_LINE, Held, OutputSink, RunRequest, RunResult, StartedSink

SLICE = 2048  # lines handed on per turn of the event loop: a flood must not hold the loop
# What a host task gets besides the variables it asked for: nothing of the worker's own environment
# (its token, its database URL, whatever its shell had) reaches a task.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_LANG = "C.UTF-8"


SHELLS = frozenset({"sh", "bash", "dash"})  # by their base name: ``-c SCRIPT`` takes the trap in front
STATUS_LOG = "process-status-"  # + <pid>-<generation>.log, in the worker's data dir
ROTATE_EVERY = 50_000  # attempts per status log; the one before the previous is removed
# The EXIT trap that records an attempt's exit status: a line "<execution> <status>" appended to the worker's
# status log, which the attempt inherits as fd N (reopened by path through /dev/fd: no file is created).
_TRAP = "trap 'echo {} $? >>/dev/fd/{}' EXIT; "
_TRAP_RE = re.compile(rb"^trap 'echo ([\w.-]+) \$\? >>/dev/fd/(\d+)' EXIT; ")
_PLAIN = re.compile(r"[\w.-]+", re.ASCII)  # an execution id the trap holds as it is


def supervised(argv: list[str], execution_id: str, fd: int) -> list[str] | None:
    """``argv`` made to append its exit status to the status log it inherits as ``fd`` when it exits (None
    if the id cannot be put in a trap as it is). A ``sh -c`` (or bash) script gets the trap in front of its
    script; any other command runs under ``sh -c`` with the trap, which waits for it (one process more)."""
    if not _PLAIN.fullmatch(execution_id):
        return None
    trap = _TRAP.format(execution_id, fd)
    if len(argv) >= 3 and os.path.basename(argv[0]) in SHELLS and argv[1] == "-c":
        return [argv[0], "-c", trap + argv[2], *argv[3:]]
    return ["/bin/sh", "-c", trap + '"$@"', "sh", *argv]


def _read_ends(pid: int) -> tuple[int, int] | None:
    """The fds of process ``pid`` that are the read ends of its stdout and stderr pipes, if it holds both."""
    proc = f"/proc/{pid}/fd"
    try:
        want = [os.readlink(f"{proc}/1"), os.readlink(f"{proc}/2")]
        found: dict[str, int] = {}
        for name in os.listdir(proc):
            fd = int(name)
            if fd <= 2:
                continue
            with contextlib.suppress(OSError):
                link = os.readlink(f"{proc}/{fd}")
                if link in want and link.startswith("pipe:") and link not in found:
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        flags = next((int(ln.split()[1], 8) for ln in f if ln.startswith("flags:")), 1)
                    if flags & os.O_ACCMODE == os.O_RDONLY:
                        found[link] = fd
    except (OSError, ValueError):
        return None
    if want[0] not in found or want[1] not in found:
        return None
    return found[want[0]], found[want[1]]


def parse_statuses(text: bytes) -> dict[str, int]:
    """A status log's lines, ``<execution> <status>``: the last status of each execution (a torn or
    foreign line is skipped)."""
    out: dict[str, int] = {}
    for line in text.split(b"\n"):
        ex, _, code = line.partition(b" ")
        if code.strip().isdigit():
            out[ex.decode("ascii", "replace")] = int(code)
    return out


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _trap_of(pid: int) -> re.Match[bytes] | None:
    """The status trap of a session leader that supervised() started (execution id, status log fd), or
    None for any other process. Raises OSError when ``pid`` is gone or not readable."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().split(b"\0")
    if len(cmd) < 3 or cmd[1] != b"-c" or os.getsid(pid) != pid:
        return None
    return _TRAP_RE.match(cmd[2])


def _is_attempt(pid: int, execution_id: str) -> bool:
    """Whether ``pid`` is still the session leader of that attempt (as find_held found it), not a process
    that was given its pid since: checked before its group is killed."""
    try:
        m = _trap_of(pid)
    except OSError:
        return False
    return m is not None and m.group(1).decode() == execution_id


def find_held(data_dir: str) -> tuple[list[Held], dict[str, int]]:
    """The attempts a previous run of the worker whose data dir is ``data_dir`` left: those still running
    (session leaders whose trap appends to a status log in ``data_dir``, holding their pipes' read ends)
    and those whose status is in a status log there. For each running one, an fd open on its status
    log (the caller closes it), to read its status from once it has ended."""
    prefix = os.path.join(os.path.abspath(data_dir), STATUS_LOG)
    held: dict[str, Held] = {}
    logs: dict[str, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    me = os.getpid()
    for pid in pids:
        if pid == me:
            continue
        try:
            m = _trap_of(pid)
            if m is None or not os.readlink(f"/proc/{pid}/fd/{int(m.group(2))}").startswith(prefix):
                continue
            ex_id = m.group(1).decode()
            fds = _read_ends(pid)
            if fds is None or ex_id in held:
                continue
            logs[ex_id] = os.open(f"/proc/{pid}/fd/{int(m.group(2))}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        held[ex_id] = Held(ex_id, True, None, str(pid), fds)
    base = os.path.dirname(prefix)
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith(STATUS_LOG))
    except OSError:
        names = []
    ended: dict[str, int] = {}
    for name in names:
        with contextlib.suppress(OSError), open(os.path.join(base, name), "rb") as f:
            ended.update(parse_statuses(f.read()))
    for ex_id, code in ended.items():
        if ex_id not in held:
            held[ex_id] = Held(ex_id, False, code)
    return list(held.values()), logs


def base_env(home: str) -> dict[str, str]:
    """The environment every host task starts from; the task's own variables override it."""
    return {"PATH": BASE_PATH, "HOME": home, "LANG": BASE_LANG}


READ_CHUNK = 256 * 1024  # bytes read from a pipe per wake-up


class _Pipe:
    """The read end of a pipe, read on the event loop (``add_reader``) into a protocol; its fd is closed
    once, here. Not ``loop.connect_read_pipe``: uvloop's pipe transport closes the fd through libuv and
    then closes the file object it was given, a second close of the same number, which in a threaded
    process can close the socket or pipe another thread has just opened under that number (a Docker
    request then fails with EBADF)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: _Lines) -> None:
        self.loop, self.fd, self.protocol = loop, fd, protocol
        self.reading = False
        self.closed = False
        os.set_blocking(fd, False)
        protocol.connection_made(self)
        self.resume_reading()

    def _ready(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(e)
            return
        if data:
            self.protocol.data_received(data)
        else:
            self._close(None)

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume_reading(self) -> None:
        if not self.reading and not self.closed:
            self.reading = True
            self.loop.add_reader(self.fd, self._ready)

    def close(self) -> None:
        if not self.closed:
            self._close(None)

    def _close(self, exc: Exception | None) -> None:
        self.pause_reading()
        self.closed = True
        os.close(self.fd)
        self.protocol.connection_lost(exc)


class _Lines:
    """Reads one pipe, hands its output on line by line, and resolves ``done`` at end of file.

    The protocol of a ``_Pipe`` rather than a StreamReader and a task per pipe: this runs for every line of every task.
    At most SLICE lines are handed on per turn of the loop, and the pipe is not read while more wait.
    While the sink says the output is behind, one line is handed on every FULL_PAUSE until it says
    otherwise: the task waits on its writes until its output has been shipped. So what is held here
    stays bounded, and other work on the loop (heartbeats, timeouts, the API) goes on.
    """

    def __init__(self, name: str, sink: OutputSink, done: asyncio.Future[None]) -> None:
        self.name, self.sink, self.done = name, sink, done
        self.buf = b""
        self.transport: _Pipe | None = None
        self.paused = False
        self.later = False  # a turn is scheduled
        self.behind = False  # the sink said so at the last line
        self.eof = False
        self.timer: asyncio.Handle | None = None

    def connection_made(self, transport: _Pipe) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.later:
            self._turn()

    def _turn(self) -> None:
        self.later = False
        # Once the writer is gone there is nobody left to slow down: what is left goes at full speed.
        limit = 1 if self.behind and not self.eof else SLICE
        *lines, self.buf = self.buf.split(b"\n", limit)
        behind = False
        for line in lines:
            behind = self.sink(self.name, line.decode("utf-8", "replace")) is False
        if len(lines) < limit:  # every whole line is out
            while len(self.buf) > MAX_LINE:  # a very long line: hand it on in pieces
                piece, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
                behind = self.sink(self.name, piece.decode("utf-8", "replace")) is False
        self.behind = behind
        if len(lines) == limit and (self.buf or behind):  # more lines may wait, or the sink is behind
            self._pause()
            self.later = True
            loop = asyncio.get_running_loop()
            self.timer = (loop.call_later(FULL_PAUSE, self._turn) if behind and not self.eof
                          else loop.call_soon(self._turn))
        elif self.eof:
            self._finish()
        elif self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _pause(self) -> None:
        if not self.paused and not self.eof and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if not self.later:
            self._turn()

    def abort(self) -> None:
        """The attempt is over (cancelled): drop what is left and let go of the pipe."""
        if self.timer is not None:
            self.timer.cancel()
        self.buf = b""
        self.eof = True
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def _finish(self) -> None:
        if self.buf:
            self.sink(self.name, self.buf.decode("utf-8", "replace"))
            self.buf = b""
        if not self.done.done():
            self.done.set_result(None)


def _read(loop: asyncio.AbstractEventLoop, fd: int, name: str, sink: OutputSink) -> _Lines:
    """Read the pipe ``fd`` (which it owns from now on) into a new ``_Lines``."""
    lines = _Lines(name, sink, loop.create_future())
    _Pipe(loop, fd, lines)
    return lines


async def _wait_exit(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> int:
    """The exit status, learnt from a pidfd becoming readable (no thread, no SIGCHLD handler). As in a
    container, the attempt ends with its main process: what it left running in its group is killed, before
    the main process is reaped, while its pid (the group's id) cannot have been given to another process."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        code = await asyncio.to_thread(proc.wait)
        _kill_group(proc.pid)  # at once: a group with no member left may have its id used again later
        return code
    await _readable(loop, pidfd)
    _kill_group(proc.pid)
    return proc.wait()


async def _wait_pid(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """Wait for a process that is not our child (an adopted attempt) to exit, through a pidfd; polled
    where there is none."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while _alive(pid):
            await asyncio.sleep(0.1)
        return
    await _readable(loop, pidfd)


async def _readable(loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
    """Wait until a pidfd is readable (its process has exited), then close it."""
    done = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class ProcessRuntime:
    """Runs ``argv`` directly on the host, in a clean environment (see base_env). GPUs are handed over
    with ``CUDA_VISIBLE_DEVICES``."""

    name = "process"

    def __init__(self, base_dir: str | None = None) -> None:
        self.base_dir = base_dir
        self._which: dict[str, str] = {}  # searching PATH costs more than the spawn itself
        self._runnable_cache: dict[str, bool] = {}
        self._held: dict[str, Held] = {}  # found by held(), not yet resumed or reaped
        self._logs: dict[str, int] = {}  # their status logs, open (running ones)
        # This run's status log (see module docstring): its fd, path, generation, attempts written to it.
        self._log_fd: int | None = None
        self._log_path: str | None = None
        self._log_gen = 0
        self._log_n = 0

    def _resolve(self, exe: str) -> str:
        if "/" in exe:
            return exe
        found = self._which.get(exe)
        if found is None:
            found = shutil.which(exe, path=BASE_PATH) or exe
            self._which[exe] = found
        return found

    async def run(self, req: RunRequest, on_output: OutputSink, on_started: StartedSink) -> RunResult:
        loop = asyncio.get_running_loop()
        if req.mounts or req.sidecars:
            return RunResult(None, "mounts and sidecars need a container task (an image)")
        cwd = req.workdir or self.base_dir
        if req.files:
            # The given workdir (made if missing), else work/ in the scratch directory, becomes the cwd.
            if req.workdir is None and (req.scratch is None or req.scratch.dir is None):
                return RunResult(None, "files need a working directory")
            cwd = req.workdir or os.path.join(str(req.scratch and req.scratch.dir), scratch.WORK)
            try:
                await asyncio.to_thread(scratch.write_files, cwd, req.files)
            except (OSError, ValueError) as e:
                return RunResult(None, f"could not write the task's files to {cwd}: {e}")
        # HOME: the task's working directory, else its scratch (its own directory, or the shared one).
        if cwd:
            home = cwd
        elif req.scratch is not None:
            home = req.scratch.dir or os.path.dirname(req.scratch.output)
        else:
            home = tempfile.gettempdir()
        extra = {**base_env(home), **req.env}
        if req.scratch is not None:
            extra.update(scratch.env_for(req.scratch.output, req.scratch.progress))
        if req.gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in req.gpus)
        env = {os.fsencode(k): os.fsencode(v) for k, v in extra.items()}
        argv = list(req.entrypoint or []) + list(req.argv)
        if argv and "PATH" not in req.env:
            argv[0] = self._resolve(argv[0])
        log_fd = None
        spawn = argv
        if req.scratch is not None and argv and self._runnable(argv[0]):
            log_fd = self._status_log(req.scratch.output)
            spawn = (supervised(argv, req.execution_id, log_fd) if log_fd is not None else None) or argv
            if spawn is argv:
                log_fd = None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            # The task holds its pipes' read ends too (pass_fds): see the module's docstring.
            proc = subprocess.Popen(spawn, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=env,
                                    cwd=cwd, start_new_session=True,
                                    pass_fds=(out_r, err_r, log_fd) if log_fd is not None else ())
        except (OSError, ValueError) as e:
            for fd in (out_r, err_r):
                os.close(fd)
            code = 127 if isinstance(e, FileNotFoundError) else 126 if isinstance(e, PermissionError) else None
            return RunResult(code, f"could not start {argv[0]!r}: {e}")
        finally:
            os.close(out_w)
            os.close(err_w)
        on_started(str(proc.pid))
        pipes = [_read(loop, out_r, "stdout", on_output), _read(loop, err_r, "stderr", on_output)]
        try:
            code = await _wait_exit(loop, proc)  # its group killed with it
            await asyncio.gather(*(p.done for p in pipes))  # output already in the pipes is read to the end
        except BaseException:  # cancelled, or it failed: nothing of it left running
            if proc.returncode is None:  # not reaped: its pid is still its own
                _kill_group(proc.pid)
            for p in pipes:
                p.abort()
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(proc.wait))
            raise
        return RunResult(code)

    def _runnable(self, exe: str) -> bool:
        """Whether ``exe`` (resolved) can be run: else it is spawned as it is, for the error that gives."""
        ok = self._runnable_cache.get(exe)
        if ok is None:
            ok = "/" in exe and os.path.isfile(exe) and os.access(exe, os.X_OK)
            if len(self._runnable_cache) < 1024:
                self._runnable_cache[exe] = ok
        return ok

    def _status_log(self, output: str) -> int | None:
        """This run's status log, opened at the first attempt in the data dir (the parent of the scratch
        area ``output`` lies in), and rotated every ROTATE_EVERY attempts: running attempts keep the one
        they inherited; the one before the previous is removed."""
        if self._log_fd is None or self._log_n >= ROTATE_EVERY:
            base = os.path.dirname(os.path.dirname(output.removesuffix("/" + scratch.OUTPUT)))
            path = os.path.join(base, f"{STATUS_LOG}{os.getpid()}-{self._log_gen}.log")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return self._log_fd
            if self._log_fd is not None:
                os.close(self._log_fd)
            if self._log_gen >= 2:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(base, f"{STATUS_LOG}{os.getpid()}-{self._log_gen - 2}.log"))
            self._log_fd, self._log_path, self._log_n = fd, path, 0
            self._log_gen += 1
        self._log_n += 1
        return self._log_fd

    async def held(self, node_id: str, scratch_base: str) -> list[Held]:
        """What a previous run left (see find_held); the status logs it read are removed."""
        data_dir = os.path.dirname(os.path.abspath(scratch_base))
        found, logs = await asyncio.to_thread(find_held, data_dir)
        for fd in self._logs.values():
            os.close(fd)
        self._held = {h.execution_id: h for h in found}
        self._logs = logs
        with contextlib.suppress(OSError):
            for name in os.listdir(data_dir):
                if name.startswith(STATUS_LOG):
                    os.unlink(os.path.join(data_dir, name))
        return found

    async def resume(self, held: Held, skip_bytes: int, on_output: OutputSink,
                     on_started: StartedSink) -> RunResult:
        """Follow an attempt a previous run of the worker started: its output from its pipes (what the
        previous run had read and not yet shipped is lost; nothing is read twice, so ``skip_bytes`` is
        not needed), its exit status from its status log."""
        log_fd = self._logs.pop(held.execution_id, None)
        try:
            if not held.running:
                return RunResult(held.exit_code)
            loop = asyncio.get_running_loop()
            pid = int(held.handle or 0)
            on_started(str(pid))
            pipes: list[_Lines] = []
            killed = False
            try:
                assert held.fds is not None
                for fd, name in zip(held.fds, ("stdout", "stderr"), strict=True):
                    with contextlib.suppress(OSError):  # it has ended meanwhile: its status tells
                        pipes.append(_read(loop, os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK),
                                           name, on_output))
                await _wait_pid(loop, pid)
                # Once, at once: what the task left running in its group goes with it. Its group id is not
                # reused while a member lives; once none does, a later kill could hit a new group.
                _kill_group(pid)
                killed = True
                await asyncio.gather(*(p.done for p in pipes))
            except BaseException:  # cancelled, or it failed: nothing of it left running
                if not killed and _is_attempt(pid, held.execution_id):
                    _kill_group(pid)
                for p in pipes:
                    p.abort()
                raise
            code = parse_statuses(_read_all(log_fd)).get(held.execution_id) if log_fd is not None else None
            if code is None:
                return RunResult(None, "the task ended while its worker was restarting, and its exit status "
                                       "was not recorded (killed by a signal?)")
            return RunResult(code)
        finally:
            self._held.pop(held.execution_id, None)
            if log_fd is not None:
                os.close(log_fd)

    async def reap(self, node_id: str, keep: set[str]) -> list[str]:
        """Kill what :meth:`held` found and the coordinator did not keep (its status files go with the
        scratch area)."""
        gone = [h for h in self._held.values() if h.execution_id not in keep]
        for h in gone:
            if h.running and h.handle and _is_attempt(int(h.handle), h.execution_id):
                _kill_group(int(h.handle))
            self._held.pop(h.execution_id, None)
            fd = self._logs.pop(h.execution_id, None)
            if fd is not None:
                os.close(fd)
        return [h.execution_id for h in gone]
