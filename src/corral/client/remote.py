"""``@task``: run a Python function as a Corral job, for people coming from Celery.

    @corral.task(image="python:3.12")
    def add(a: int, b: int) -> int:
        return a + b

    run = add.submit(2, 3)     # a job that runs add(2, 3) in a python:3.12 container
    run.result(timeout=60)     # 5

The function's source (``inspect.getsource``, without its decorators) and its arguments (JSON) travel in
the task's environment; ``python3 -c`` runs a small runner that defines the function, calls it, and writes
the JSON of its return value to ``$CORRAL_OUTPUT``, which becomes the task's ``output``. Limits (also in
docs/client.md): a module-level ``def`` only (no lambda, closure, method or nested function); it sees no
name of its module, so it imports what it needs inside its body, from what the image has; arguments and
result are JSON (tuples come back as lists); source and arguments at most 128 KiB each, the result at most
256 KiB; the image must have ``python3`` (or give ``python=``).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar

from corral.client._core import Json
from corral.client.sync import Client

P = ParamSpec("P")
R = TypeVar("R")

MAX_ENV_VALUE = 128 * 1024  # the server's limit on one environment value
MAX_RESULT = 256 * 1024  # a result's JSON, in bytes: it travels escaped again inside the task's report

# Run by `python3 -c` in the task: no import of corral, no file but $CORRAL_OUTPUT.
RUNNER = """\
import __future__, json, os, sys
ns = {"__name__": "__corral_task__"}
# Annotations stay text: they may name what only the caller's module has (typing.Any, its classes).
exec(compile(os.environ["CORRAL_FN_SOURCE"], "<" + os.environ["CORRAL_FN_NAME"] + ">", "exec",
             __future__.annotations.compiler_flag, True), ns)
call = json.loads(os.environ["CORRAL_FN_ARGS"])
out = json.dumps(ns[os.environ["CORRAL_FN_NAME"]](*call["args"], **call["kwargs"]))
if len(out.encode()) > MAX_RESULT:
    sys.exit("corral.task: the result's JSON is %d bytes; at most MAX_RESULT" % len(out.encode()))
with open(os.environ["CORRAL_OUTPUT"], "w") as f:
    f.write(out)
""".replace("MAX_RESULT", str(MAX_RESULT))


class TaskFailed(Exception):
    """The job that ran the function did not complete: ``job`` is it, ``error`` the task's error and
    ``stderr`` the last lines it printed there (the Python traceback, for an exception)."""

    def __init__(self, job: Json, error: str | None, stderr: str) -> None:
        self.job, self.error, self.stderr = job, error, stderr
        super().__init__(f"job {job.get('id')} {job.get('state')}: {error or 'no error given'}"
                         + (f"\n{stderr}" if stderr else ""))


class Submitted(Generic[R]):
    """A submitted call: ``id`` is its job's id; ``result()`` waits for its return value."""

    def __init__(self, client: Client, job: Json) -> None:
        self.client = client
        self.job = job
        self.id = str(job["id"])

    def result(self, timeout: float | None = None) -> R:
        """The function's return value (from JSON); ``TaskFailed`` if the job failed or was cancelled,
        ``WaitTimeout`` if it has not ended after ``timeout`` seconds."""
        job = self.client.wait(self.id, timeout=timeout)
        self.job = job
        task = (job.get("tasks") or [{}])[0]
        if job.get("state") != "completed":
            logs = self.client.logs(self.id, follow=False, tail=50)
            lines = [x["line"] for x in logs if x.get("stream") == "stderr"]
            raise TaskFailed(job, task.get("error") or job.get("error"), "\n".join(lines))
        output = task.get("output")
        if output is None:
            raise TaskFailed(job, "the task completed without an output (did it run corral.task's runner?)", "")
        return json.loads(output)  # type: ignore[no-any-return]

    def cancel(self) -> Json:
        return self.client.cancel(self.id)


class Task(Generic[P, R]):
    """A function that can also run as a Corral job: ``f(...)`` calls it here, ``f.submit(...)`` there."""

    def __init__(self, fn: Callable[P, R], image: str | None, client: Client | None, python: str,
                 job: Mapping[str, Any], task: Mapping[str, Any]) -> None:
        self.fn = fn
        self.image = image
        self.python = python
        self.source = function_source(fn)
        self._client = client
        self._job = dict(job)
        self._task = dict(task)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    def spec(self, *args: P.args, **kwargs: P.kwargs) -> Json:
        """The job that runs ``fn(*args, **kwargs)``: a plain dict, for a look or a change before submit."""
        name = self.fn.__name__
        try:
            call = json.dumps({"args": args, "kwargs": kwargs})
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}.submit: the arguments must be JSON values: {e}") from e
        for what, text in (("arguments", call), ("source", self.source)):
            if len(text.encode()) > MAX_ENV_VALUE:
                raise ValueError(f"{name}.submit: its {what} are {len(text.encode())} bytes as JSON; at most "
                                 f"{MAX_ENV_VALUE} (pass large data by reference: a path or a URL)")
        env = {**self._task.get("env", {}), "CORRAL_FN_NAME": name, "CORRAL_FN_SOURCE": self.source,
               "CORRAL_FN_ARGS": call}
        task: Json = {**self._task, "name": name, "command": [self.python, "-c", RUNNER], "env": env}
        if self.image is not None:
            task["image"] = self.image
        return {"name": name, **self._job, "tasks": [task]}

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Submitted[R]:
        """Run ``fn(*args, **kwargs)`` as a job; ``.result(timeout=)`` of the answer is its return value."""
        return Submitted(self.client, self.client.submit(self.spec(*args, **kwargs)))

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Submitted[R]:
        """Celery's name for ``submit``."""
        return self.submit(*args, **kwargs)


def function_source(fn: Callable[..., Any]) -> str:
    """``fn``'s source without its decorators; ValueError for what cannot run on its own elsewhere."""
    name = getattr(fn, "__name__", repr(fn))
    code = getattr(fn, "__code__", None)
    if code is None or not inspect.isfunction(fn):
        raise ValueError(f"corral.task runs plain functions; {name} is {type(fn).__name__}")
    if name == "<lambda>" or "<locals>" in fn.__qualname__ or "." in fn.__qualname__:
        raise ValueError(f"corral.task runs module-level functions only; {fn.__qualname__} is nested or a method")
    if code.co_freevars:
        raise ValueError(f"corral.task: {name} uses names of an enclosing function: {', '.join(code.co_freevars)}")
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise ValueError(f"corral.task: {name} must be a plain function, not async or a generator")
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise ValueError(f"corral.task: the source of {name} cannot be read ({e}): define it in a file") from e
    node = ast.parse(text).body[0]
    if not isinstance(node, ast.FunctionDef):
        raise ValueError(f"corral.task: {name} is not defined by a def statement")
    # The decorators (this one among them) are names the task does not have: start at `def`.
    return "\n".join(text.splitlines()[node.lineno - 1:]) + "\n"


def task(image: str | None = None, *, client: Client | None = None, python: str = "python3",
         job: Mapping[str, Any] | None = None, **task_fields: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Make a module-level function submittable as a job: ``@task(image="python:3.12")``.

    ``image`` None runs it as a host process on a worker that has the process runtime. ``client``: the
    server to use (default: ``Client()``: ``$CORRAL_SERVER`` or http://127.0.0.1:8000). ``python``: the
    interpreter's name in the image. ``job``: more job fields (``queue``, ``priority``, ``tags``...);
    other keyword arguments are task fields (``resources``, ``timeout``, ``env``, ``retry``...)."""

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        return Task(fn, image, client, python, job or {}, task_fields)

    return wrap


__all__ = ["Submitted", "Task", "TaskFailed", "task"]
