"""The commands that drive a Corral server: run, submit, jobs ..., schedules ..., nodes and queues.

They speak the native HTTP API (see corral.cli.api); `register` adds them to the `corral` group.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, ParamSpec, TypeVar
from urllib.parse import quote

import click
import yaml

from corral.cli import ids as resolve
from corral.cli import output
from corral.cli.api import DEFAULT_SERVER, TERMINAL, ApiError, Client, CliError, Json
from corral.cli.completion import complete_jobs, complete_nodes, complete_schedules, complete_states
from corral.domain.resources import parse_duration, parse_size

P = ParamSpec("P")
R = TypeVar("R")

def _set_token(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:  # the Client finds it there, like a token given as CORRAL_API_TOKEN (corral.cli.api.find_token)
        os.environ["CORRAL_API_TOKEN"] = value


def server_option(f: Callable[P, R]) -> Callable[P, R]:
    """--server, and --token for a server that needs its access token."""
    f = click.option("--token", metavar="TOKEN", expose_value=False, callback=_set_token,
                     help="The server's access token [default: $CORRAL_API_TOKEN; for a server on this machine, "
                     "the token in $CORRAL_DATA_DIR or .corral].")(f)
    return click.option(
        "--server", "-s", envvar="CORRAL_SERVER", default=DEFAULT_SERVER, show_default=True, metavar="URL",
        help="The Corral server to talk to [env CORRAL_SERVER].")(f)
output_option = click.option(
    "--output", "-o", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="A table for people, or the server's raw JSON for programs.")


def fail(e: CliError) -> None:
    click.echo(f"{click.style('error:', fg='red', bold=True)} {e}", err=True)
    for line in e.details:
        click.echo(f"  {line}", err=True)


def guarded(f: Callable[P, R]) -> Callable[P, R]:
    """Expected failures end the command with a message and an exit status, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return f(*args, **kwargs)
        except CliError as e:
            fail(e)
            raise SystemExit(e.exit_code) from None
        except BrokenPipeError:
            # The reader went away (`corral jobs logs ID | head`): stop quietly, as `cat` would.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None

    return wrapper


# -- watching a job --------------------------------------------------------------------------------


def progress(job: Json) -> str:
    """One line on where a job is: 'running task 2/3 (build)', 'task 1/1 (x) pending: no node has ...'."""
    tasks = sorted(job.get("tasks") or [], key=lambda t: t.get("position", 0))
    n = len(tasks)
    for i, t in enumerate(tasks, 1):
        st = t.get("state")
        where = f"task {i}/{n} ({t.get('name')})"
        if st == "running":
            return f"running {where}"
        if st == "scheduled":
            return f"starting {where}"
        if st == "pending":
            return f"{where} pending: {t.get('reason') or 'waiting to be placed'}"
    return f"job {job.get('name')} is {job.get('state')}"


def watch(c: Client, job_id: str, done: Callable[[Json], bool], show_after: float = 0.5) -> Json:
    """Poll the job until ``done(job)``, showing where it is on stderr, and return it.

    On a terminal a transient spinner appears after ``show_after`` seconds; otherwise each change is
    printed as a line, so that CI logs say why a job waits.
    """
    start, interval, last = time.monotonic(), 0.05, ""
    status = output.err.status("") if output.err.is_terminal else None
    shown = False
    try:
        while True:
            job = c.job(job_id)
            if done(job):
                return job
            text, elapsed = progress(job), time.monotonic() - start
            if status is not None:
                status.update(f"{text} · {output.human_seconds(elapsed)}")
                if not shown and elapsed >= show_after:
                    status.start()
                    shown = True
            elif text != last and elapsed >= show_after:
                output.err.print(text, style="dim")
                last = text
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)
    finally:
        if status is not None and shown:
            status.stop()


def parse_since(value: str, now: datetime) -> datetime:
    """``--since``: a duration back from ``now`` (``10m``, ``1h30m``) or a time (RFC 3339; local when it
    has no offset)."""
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is neither a duration (such as 10m) nor a time "
                         "(such as 2026-05-01T12:00:00Z)") from None
    return t if t.tzinfo else t.astimezone()


def line_filter(task: str | None, since: datetime | None) -> Callable[[Json], bool]:
    """Which log lines to show: a task's (by name, id, or id prefix of 4+ characters) and those written at
    or after ``since``."""

    def wanted(line: Json) -> bool:
        if task is not None:
            tid = str(line.get("task_id") or "")
            if task not in (line.get("task"), tid) and not (len(task) >= 4 and tid.startswith(task)):
                return False
        if since is not None:
            t = output.parse_time(line.get("time"))
            if t is not None and t < since:
                return False
        return True

    return wanted


def stream(c: Client, job: Json, follow: bool, tail: int | None = None,
           printer: output.LogPrinter | None = None, wanted: Callable[[Json], bool] | None = None) -> None:
    """Write the job's log lines to stdout and stderr as the tasks wrote them: on a terminal, with the
    task's name in front, in colour, when the job has several tasks."""
    if printer is None:
        several = int(job.get("task_count") or 0) > 1
        printer = output.LogPrinter(prefixes=several and output.out.is_terminal, colour=output.out.is_terminal,
                                    width=_name_width(job))
    for line in c.logs(job["id"], tail=tail, follow=follow):
        if wanted is None or wanted(line):
            printer.write(line)


def _name_width(job: Json) -> int:
    return min(max((len(str(t.get("name") or "")) for t in job.get("tasks") or []), default=0), 24)


def attach(c: Client, job: Json, cancel_on_interrupt: bool) -> Json:
    """Follow a job's output until it ends and return the finished job. Ctrl-C exits 130: it cancels the
    job when ``cancel_on_interrupt`` (see ``interrupted``), else leaves it running."""
    job_id = job["id"]
    try:
        watch(c, job_id, lambda j: j["state"] not in ("pending", "scheduled"), show_after=0.5)
        stream(c, job, follow=True)
        return watch(c, job_id, lambda j: j["state"] in TERMINAL, show_after=2.0)
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            raise SystemExit(interrupted(c, job_id, ask=sys.stdin.isatty() and output.err.is_terminal)) from None
        output.err.print(f"\nstopped following; the job goes on: corral jobs logs -f {job_id}",
                         style="yellow")
        raise SystemExit(130) from None


def interrupted(c: Client, job_id: str, ask: bool) -> int:
    """What `corral run` does on Ctrl-C: cancel the job and wait for it to end (asking once first, when
    ``ask``: on a terminal). A second Ctrl-C, or 'n', detaches: the job goes on. The exit status: 130."""
    detached = f"detached; the job goes on: corral jobs logs -f {job_id[:12]}"
    try:
        if ask and not click.confirm(f"\ncancel job {job_id[:12]}? (Ctrl-C again: detach, it goes on)",
                                     default=True, err=True):
            output.err.print(detached, style="yellow")
            return 130
        if not ask:
            output.err.print(f"\ninterrupted: cancelling job {job_id} (Ctrl-C again: detach, it goes on)",
                             style="yellow")
        c.cancel(job_id)
        done = watch(c, job_id, lambda j: j["state"] in TERMINAL, show_after=1.0)
        output.err.print(f"job {job_id} {done['state']}", style=output.STATE_STYLE.get(done["state"], ""))
    except (KeyboardInterrupt, click.Abort):
        output.err.print(f"\n{detached}", style="yellow")
    except CliError as e:
        fail(e)
    return 130


def shell_status(code: int) -> int:
    """A task's exit code as a process exit status: signals as 128+N, never 0 for a failure."""
    if code < 0:
        return min(128 - code, 255)
    return code % 256 or 1


def run_status(job: Json) -> int:
    """The exit status of `corral run`: the task's own exit code (126 or 127 when its command could not be
    run, as `docker run` says), 124 when it timed out (as `timeout` says), 1 for other failures, 130 if
    cancelled."""
    if job["state"] == "completed":
        return 0
    if job["state"] == "cancelled":
        output.err.print(f"job {job['id']} was cancelled", style="magenta")
        return 130
    tasks = job.get("tasks") or []
    task = next((t for t in tasks if t.get("state") in ("failed", "lost")), tasks[-1] if tasks else {})
    code, error = task.get("exit_code"), task.get("error") or job.get("error") or "the job failed"
    if code in (None, 124) and str(task.get("error") or "").startswith("timed out after"):
        fail(CliError(str(job.get("error") or error)))
        return 124
    if code is None or code == 0:
        fail(CliError(str(job.get("error") or error)))
        return 1
    if error != f"exit code {code}":
        fail(CliError(str(job.get("error") or error)))
    return shell_status(int(code))


def summary(job: Json) -> int:
    """A last line on stderr for `submit --wait/--follow`; 0 if the job completed, else 1."""
    took = output.duration(job.get("started_at"), job.get("finished_at"))
    if job["state"] == "completed":
        output.err.print(f"job {job['id']} completed in {took}", style="green")
        return 0
    why = f": {job['error']}" if job.get("error") else ""
    output.err.print(f"job {job['id']} {job['state']}{why}", style=output.STATE_STYLE.get(job["state"], ""))
    return 1


# -- run and submit --------------------------------------------------------------------------------


def _env(values: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq:
            if key not in os.environ:
                raise click.BadParameter(f"'{key}' is not KEY=VALUE and is not set here", param_hint="--env")
            val = os.environ[key]
        env[key] = val
    return env


def _checked(value: str | None, parse: Callable[[str], object], hint: str) -> str | None:
    if value is not None:
        try:
            parse(value)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=hint) from e
    return value


def _default_name(argv: tuple[str, ...]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", os.path.basename(argv[0]))[:100].strip("-.")
    return name if name and name[0].isalnum() else "run"


RUN_HELP = """Run one command as a job, stream its output, and exit with its exit code.

\b
The command runs in a container of IMAGE, or as a host process on the worker when no --image is
given. Its stdout and stderr come back on yours. Ctrl-C cancels the job and exits 130 (on a
terminal it asks first); a second Ctrl-C detaches, leaving the job to run. A command that is not
there exits 127 and one that may not run 126 (as `docker run`); a timeout exits 124 (as `timeout`).

\b
Examples:
  corral run --image python:3.12 -- python -c 'print(42)'
  corral run --cpu 2 --memory 1Gi --timeout 10m --image alpine -- sh -c 'make test'
  corral run -e MODE=fast --retry 2 -- ./script.sh
  JOB=$(corral run --detach --image alpine -- sleep 60)
"""


@click.command(help=RUN_HELP, short_help="Run a command as a job; stream its output.",
               context_settings={"allow_interspersed_args": False})
@click.option("--image", "-i", metavar="IMAGE", help="Container image [default: none, a host process].")
@click.option("--name", "-n", help="Job name [default: the command's name].")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]",
              help="An environment variable; KEY alone passes this shell's value. Repeatable.")
@click.option("--workdir", "-w", metavar="DIR", help="Working directory of the command.")
@click.option("--cpu", type=click.FloatRange(0, 1024), help="CPU cores to reserve, such as 0.5 or 2.")
@click.option("--memory", "-m", metavar="SIZE", help="Memory to reserve, such as 256Mi or 2Gi.")
@click.option("--gpu", type=click.IntRange(0, 64), help="Whole GPUs to reserve.")
@click.option("--timeout", metavar="DURATION", help="Stop and fail it after this long, such as 30s or 2h.")
@click.option("--retry", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Times a failed attempt is tried again.")
@click.option("--queue", metavar="QUEUE", help="Queue to submit to [default: default].")
@click.option("--priority", type=click.IntRange(0, 9), help="0-9; higher runs first.")
@click.option("--tag", "tags", multiple=True, help="A tag to find the job by later. Repeatable.")
@click.option("--detach", "-d", is_flag=True, help="Print the job id and return at once.")
@server_option
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@guarded
def run(image: str | None, name: str | None, env: tuple[str, ...], workdir: str | None, cpu: float | None,
        memory: str | None, gpu: int | None, timeout: str | None, retry: int, queue: str | None,
        priority: int | None, tags: tuple[str, ...], detach: bool, server: str,
        command: tuple[str, ...]) -> None:
    task: Json = {"command": list(command)}
    resources = {k: v for k, v in {"cpu": cpu, "memory": _checked(memory, parse_size, "--memory"),
                                   "gpu": gpu}.items() if v is not None}
    extra = {"image": image, "env": _env(env) or None, "workdir": workdir, "resources": resources or None,
             "timeout": _checked(timeout, parse_duration, "--timeout"),
             "retry": {"limit": retry} if retry else None}
    task.update({k: v for k, v in extra.items() if v is not None})
    spec: Json = {"name": name or _default_name(command), "tasks": [task]}
    spec.update({k: v for k, v in {"queue": queue, "priority": priority, "tags": list(tags) or None}.items()
                 if v is not None})
    with Client(server) as c:
        job = c.submit(spec)
        if detach:
            click.echo(job["id"])
            return
        if output.err.is_terminal:
            output.err.print(f"job {job['id']}", style="dim")
        raise SystemExit(run_status(attach(c, job, cancel_on_interrupt=True)))


def load_job(fh: IO[bytes]) -> Json:
    """A job from a YAML or JSON file (JSON is YAML), checked to be a mapping."""
    label = "stdin" if fh.name in ("<stdin>", "-") else str(fh.name)
    try:
        data = yaml.safe_load(fh.read())
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise CliError(f"{label} is not valid YAML or JSON", 2, [f"{where}{problem or e}"]) from e
    if not isinstance(data, dict):
        raise CliError(f"{label} does not hold a job: expected a mapping with 'name' and 'tasks'", 2)
    # YAML may hold dates and other non-JSON values; the server reads them as strings.
    return dict(json.loads(json.dumps(data, default=str)))


SUBMIT_HELP = """Submit the job in FILE (YAML or JSON; - reads stdin) and print its id.

\b
Example job.yaml:
  name: build
  tasks:
    - name: test
      image: python:3.12
      run: pip install -e . && pytest
      resources: {cpu: 2, memory: 2Gi}
    - name: package
      image: python:3.12
      command: [python, -m, build]

\b
Examples:
  corral submit job.yaml
  corral submit job.yaml --wait        # progress on stderr; exit 0 if it completed
  corral submit job.yaml --follow      # stream its output, then exit like --wait
"""


@click.command(help=SUBMIT_HELP, short_help="Submit a job file (YAML or JSON).")
@click.argument("file", type=click.File("rb"))
@click.option("--wait", "-w", is_flag=True, help="Show progress until the job ends; exit 0 if it completed.")
@click.option("--follow", "-f", is_flag=True, help="Stream the job's output until it ends; exit like --wait.")
@server_option
@guarded
def submit(file: IO[bytes], wait: bool, follow: bool, server: str) -> None:
    spec = load_job(file)
    with Client(server) as c:
        try:
            job = c.submit(spec)
        except ApiError as e:
            if e.exit_code != 2:
                raise
            label = "stdin" if file.name in ("<stdin>", "-") else file.name
            msg = f"{label} is not a valid job" if e.details else f"{label}: {e}"
            raise CliError(msg, 2, e.details) from e
        click.echo(job["id"])
        if follow:
            raise SystemExit(summary(attach(c, job, cancel_on_interrupt=False)))
        if wait:
            try:
                done = watch(c, job["id"], lambda j: j["state"] in TERMINAL, show_after=0.0)
            except KeyboardInterrupt:
                output.err.print(f"\nstopped waiting; the job goes on: corral jobs get {job['id']}",
                                 style="yellow")
                raise SystemExit(130) from None
            raise SystemExit(summary(done))


# -- jobs ------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """List, inspect, follow, cancel, restart and delete jobs.

    \b
    Examples:
      corral jobs ls --state running,pending
      corral jobs get 3f2a9c...
      corral jobs logs 3f2a9c... -f
      corral jobs ls -o json | jq -r '.items[].id'
    """


@jobs.command("ls")
@click.option("--state", metavar="STATE[,STATE]", shell_complete=complete_states,
              help="pending, scheduled, running, completed, failed or cancelled; several with commas.")
@click.option("--queue", metavar="QUEUE", help="Only jobs in this queue.")
@click.option("--tag", metavar="TAG", help="Only jobs with this tag.")
@click.option("-q", "--search", "query", metavar="TEXT", help="Text to find in the name or tags.")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="At most this many jobs, newest first.")
@click.option("--cursor", metavar="CURSOR", help="Start after the page that returned this next_cursor.")
@click.option("--watch", "-w", is_flag=True, help="Refresh the table in place until Ctrl-C (piped: print it again "
              "when it changes).")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(1), default=None, hidden=True)  # --watch this many times (tests)
@output_option
@server_option
@guarded
def jobs_ls(state: str | None, queue: str | None, tag: str | None, query: str | None, limit: int,
            cursor: str | None, watch: bool, interval: float, count: int | None, fmt: str, server: str) -> None:
    """List jobs, newest first. Full ids and every field: -o json.

    \b
    Examples:
      corral jobs ls --state running,pending --queue gpu
      corral jobs ls -q nightly --watch
      corral jobs ls -o json | jq -r '.items[].id'
    """
    if watch and fmt == "json":
        raise click.UsageError("--watch shows a table: leave out -o json")
    with Client(server) as c:
        if watch:
            from corral.cli.live import jobs_view, refresh
            params = {"state": state, "queue": queue, "tag": tag, "q": query, "limit": limit, "cursor": cursor}
            refresh(lambda: jobs_view(c, params), interval, count)
            return
        page = c.list_jobs(state=state, queue=queue, tag=tag, q=query, limit=limit, cursor=cursor)
    if fmt == "json":
        output.print_json(page)
    else:
        output.jobs_table(page)


@jobs.command("get")
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@output_option
@server_option
@guarded
def jobs_get(job_id: str, fmt: str, server: str) -> None:
    """Show a job and its tasks.

    Each task has its state, node, attempts, exit code, and why it waits or failed.
    """
    with Client(server) as c:
        job = c.job(resolve.job_id(c, job_id))
        if fmt == "json":
            output.print_json(job)
            return
        try:
            names = {n["id"]: n["name"] for n in c.nodes().get("items") or []}
        except CliError:
            names = {}
    output.job_detail(job, names)


@jobs.command("logs")
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new lines until the job ends.")
@click.option("--tail", "-t", type=click.IntRange(0, 100000), metavar="N", help="Only the last N lines.")
@click.option("--task", "task", metavar="NAME", help="Only this task's lines (its name, id or id prefix).")
@click.option("--since", metavar="WHEN", help="Only lines written since then: a duration back from now (10m, 2h) "
              "or a time (2026-05-01T12:00:00Z).")
@click.option("--timestamps", "-T", is_flag=True, help="Each line with the time it was written (RFC 3339, UTC).")
@click.option("--prefix/--no-prefix", default=None,
              help="Each line with its task's name [default: on a terminal, when the job has several tasks].")
@server_option
@guarded
def jobs_logs(job_id: str, follow: bool, tail: int | None, task: str | None, since: str | None,
              timestamps: bool, prefix: bool | None, server: str) -> None:
    """Print a job's output.

    The tasks' stdout goes to stdout and their stderr to stderr. A line '--- NAME: another attempt ---'
    (on stderr) separates a task's attempts. With --tail, --task and --since pick among the last N lines.

    \b
    Examples:
      corral jobs logs 3f2a9c01b7e4 --tail 20
      corral jobs logs 3f2a9c01b7e4 -f --task build --timestamps
      corral jobs logs 3f2a9c01b7e4 --since 10m --prefix
    """
    try:
        cutoff = parse_since(since, datetime.now(UTC)) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    with Client(server) as c:
        job = c.job(resolve.job_id(c, job_id))
        tasks = job.get("tasks") or []
        if task is not None and not job.get("tasks_next_cursor") and not any(
                line_filter(task, None)({"task": t.get("name"), "task_id": t.get("id")}) for t in tasks):
            names = ", ".join(str(t.get("name")) for t in tasks)
            raise CliError(f"job {job['id'][:12]} has no task '{task}' (its tasks: {names})")
        several = int(job.get("task_count") or 0) > 1 and task is None
        printer = output.LogPrinter(prefixes=several and output.out.is_terminal if prefix is None else prefix,
                                    timestamps=timestamps, colour=output.out.is_terminal, width=_name_width(job))
        try:
            stream(c, job, follow=follow, tail=tail, printer=printer, wanted=line_filter(task, cutoff))
        except KeyboardInterrupt:
            raise SystemExit(130) from None


def _each(ids: tuple[str, ...], server: str, act: Callable[[Client, str], str]) -> None:
    """Apply ``act`` to every id, report each, and exit with the worst status."""
    worst = 0
    with Client(server) as c:
        for job_id in ids:
            try:
                click.echo(act(c, job_id))
            except CliError as e:
                fail(e)
                worst = max(worst, e.exit_code)
    if worst:
        raise SystemExit(worst)


@jobs.command("cancel")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_jobs)
@server_option
@guarded
def jobs_cancel(ids: tuple[str, ...], server: str) -> None:
    """Cancel unfinished jobs; their running tasks are stopped."""
    _each(ids, server, lambda c, i: f"{i} {c.cancel(resolve.job_id(c, i))['state']}")


@jobs.command("restart")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_jobs)
@server_option
@guarded
def jobs_restart(ids: tuple[str, ...], server: str) -> None:
    """Run failed or cancelled jobs again.

    Each starts again from its first unfinished task.
    """
    _each(ids, server, lambda c, i: f"{i} {c.restart(resolve.job_id(c, i))['state']}")


@jobs.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_jobs)
@server_option
@guarded
def jobs_rm(ids: tuple[str, ...], server: str) -> None:
    """Delete finished jobs and their logs.

    An unfinished job must be cancelled first.
    """

    def rm(c: Client, job_id: str) -> str:
        c.delete(resolve.job_id(c, job_id))
        return f"{job_id} deleted"

    _each(ids, server, rm)


# -- schedules -------------------------------------------------------------------------------------


@click.group()
def schedules() -> None:
    """Create, list, pause, resume and delete scheduled (cron) jobs.

    A schedule creates a new job from its job file at each tick of a cron expression (UTC).

    \b
    Examples:
      corral schedules create --cron "*/5 * * * *" job.yaml
      corral schedules ls
      corral schedules pause ID
      corral schedules ls -o json | jq -r '.items[].id'
    """


@schedules.command("ls")
@output_option
@server_option
@guarded
def schedules_ls(fmt: str, server: str) -> None:
    """List schedules, oldest first. Full ids and every field: -o json."""
    with Client(server) as c:
        data = c.schedules()
    if fmt == "json":
        output.print_json(data)
    else:
        output.schedules_table(data)


@schedules.command("get", short_help="Show a schedule.")
@click.argument("schedule_id", metavar="ID", shell_complete=complete_schedules)
@output_option
@server_option
@guarded
def schedules_get(schedule_id: str, fmt: str, server: str) -> None:
    """Show a schedule: its cron, state, next and last run, and the job it creates."""
    with Client(server) as c:
        sch = c.schedule(resolve.schedule_id(c, schedule_id))
    if fmt == "json":
        output.print_json(sch)
    else:
        output.schedule_detail(sch)


SCHEDULE_CREATE_HELP = """Create a schedule for the job in FILE (YAML or JSON, as `corral submit` takes; - reads
stdin) and print its id.

CRON is five fields, minute hour day-of-month month day-of-week, in UTC (`*/5 * * * *`,
`0 3 * * MON-FRI`), or @hourly, @daily, @weekly, @monthly or @yearly. A FILE with
`schedule: {cron: ...}` needs no --cron.

\b
Examples:
  corral schedules create --cron "*/5 * * * *" job.yaml
  corral schedules create --cron @daily --name nightly-build build.yaml
"""


@schedules.command("create", help=SCHEDULE_CREATE_HELP, short_help="Create a schedule from a job file.")
@click.option("--cron", "-c", "expr", metavar="CRON", help="When to create a job: a cron expression, in UTC.")
@click.option("--name", "-n", help="The schedule's name [default: the job's name].")
@click.argument("file", type=click.File("rb"))
@output_option
@server_option
@guarded
def schedules_create(expr: str | None, name: str | None, file: IO[bytes], fmt: str, server: str) -> None:
    spec = load_job(file)
    label = "stdin" if file.name in ("<stdin>", "-") else str(file.name)
    inline = spec.pop("schedule", None)
    if expr is None:
        expr = inline.get("cron") if isinstance(inline, dict) else None
        if not isinstance(expr, str):
            raise CliError(f"no cron expression: give --cron, or `schedule: {{cron: ...}}` in {label}", 2)
    with Client(server) as c:
        try:
            sch = c.create_schedule(expr, spec, name)
        except ApiError as e:
            if e.exit_code != 2:
                raise
            cron_errors = [d.removeprefix("cron: ") for d in e.details if d.startswith("cron:")]
            if cron_errors:
                raise CliError(f"'{expr}' is not a cron expression", 2, cron_errors) from e
            job_errors = [d.removeprefix("job.") for d in e.details if d.startswith("job")]
            if job_errors:
                raise CliError(f"{label} is not a valid job", 2, job_errors) from e
            raise CliError(f"{label}: {e}", 2, e.details) from e
    if fmt == "json":
        output.print_json(sch)
        return
    click.echo(sch["id"])
    output.err.print(f"schedule {sch['name']}: {sch['cron']} (UTC); next run {output.relative(sch['next_run_at'])}",
                     style="dim")


@schedules.command("pause")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_schedules)
@output_option
@server_option
@guarded
def schedules_pause(ids: tuple[str, ...], fmt: str, server: str) -> None:
    """Stop schedules from creating jobs until they are resumed."""

    def pause(c: Client, schedule_id: str) -> str:
        sch = c.pause_schedule(resolve.schedule_id(c, schedule_id))
        return json.dumps(sch, indent=2) if fmt == "json" else f"{schedule_id} {sch['state']}"

    _each(ids, server, pause)


@schedules.command("resume")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_schedules)
@output_option
@server_option
@guarded
def schedules_resume(ids: tuple[str, ...], fmt: str, server: str) -> None:
    """Make paused schedules create jobs again.

    The next job comes at the first tick after now: ticks missed while paused never fire.
    """

    def resume(c: Client, schedule_id: str) -> str:
        sch = c.resume_schedule(resolve.schedule_id(c, schedule_id))
        if fmt == "json":
            return json.dumps(sch, indent=2)
        return f"{schedule_id} {sch['state']}; next run {output.relative(sch['next_run_at'])}"

    _each(ids, server, resume)


@schedules.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_schedules)
@server_option
@guarded
def schedules_rm(ids: tuple[str, ...], server: str) -> None:
    """Delete schedules. The jobs they created stay."""

    def rm(c: Client, schedule_id: str) -> str:
        c.delete_schedule(resolve.schedule_id(c, schedule_id))
        return f"{schedule_id} deleted"

    _each(ids, server, rm)


# -- cluster ---------------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@output_option
@server_option
@click.pass_context
@guarded
def nodes(ctx: click.Context, fmt: str, server: str) -> None:
    """List worker nodes and what is allocated on them; drain and undrain them.

    CPU, MEMORY and GPU show allocated/capacity; TASKS the tasks running there.
    """
    if ctx.invoked_subcommand is not None:
        return
    with Client(server) as c:
        data = c.nodes()
    if fmt == "json":
        output.print_json(data)
    else:
        output.nodes_table(data)


@nodes.command("get")
@click.argument("node", metavar="ID", shell_complete=complete_nodes)
@output_option
@server_option
@guarded
def nodes_get(node: str, fmt: str, server: str) -> None:
    """Show a node (by id, id prefix or name): its labels, runtimes, queues, capacity and what is allocated.

    \b
    Examples:
      corral nodes get local
      corral nodes get 3f2a9c01b7e4 -o json | jq .labels
    """
    with Client(server) as c:
        n = c.json("GET", f"/v1/nodes/{quote(c.node_id(node), safe='')}")
    if fmt == "json":
        output.print_json(n)
    else:
        output.node_detail(n)


def _drained(n: dict[str, object], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(n, indent=2)
    drain = n.get("drain")
    deadline = drain.get("deadline") if isinstance(drain, dict) else None
    moves = f"; what still runs there moves at {deadline}" if deadline else ""
    return f"{n['id']} ({n['name']}) {n['state']}{moves}"


@nodes.command("drain")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_nodes)
@click.option("--deadline", default=None, metavar="DURATION",
              help="After this long (such as 10m), tasks still running there are stopped and placed on other "
              "nodes, without using a retry [default: none: they may take as long as they need].")
@output_option
@server_option
@guarded
def nodes_drain(ids: tuple[str, ...], deadline: str | None, fmt: str, server: str) -> None:
    """Drain nodes (by id, id prefix or name): no new work is placed there; running tasks finish (or move at
    the deadline), and pods that restart are placed on other nodes now."""
    _each(ids, server, lambda c, node: _drained(c.drain_node(node, deadline), fmt))


@nodes.command("undrain")
@click.argument("ids", nargs=-1, required=True, metavar="ID...", shell_complete=complete_nodes)
@output_option
@server_option
@guarded
def nodes_undrain(ids: tuple[str, ...], fmt: str, server: str) -> None:
    """Let drained nodes take new work again."""
    _each(ids, server, lambda c, node: _drained(c.undrain_node(node), fmt))


@click.command()
@output_option
@server_option
@guarded
def queues(fmt: str, server: str) -> None:
    """List queues with their pending and running tasks.

    WORKERS counts the ready nodes serving each queue; 0 with tasks pending is shown in red.
    """
    with Client(server) as c:
        data = c.queues()
    if fmt == "json":
        output.print_json(data)
    else:
        output.queues_table(data)


def register(cli: click.Group) -> None:
    from corral.cli.services import services
    for cmd in (run, submit, jobs, schedules, nodes, queues, services):
        cli.add_command(cmd)
