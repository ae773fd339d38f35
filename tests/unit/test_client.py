"""The client library's pure parts: errors from problem answers, spec bodies, retries, the @task runner,
and that importing it (and the CLI) loads none of the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.client import (
    BadRequest,
    Client,
    Conflict,
    CorralError,
    JobSpec,
    NotFound,
    ServerError,
    Unreachable,
    _core,
    task,
)
from corral.client.remote import RUNNER, function_source

SERVER_MODULES = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "docker", "psycopg",
                  "corral.api", "corral.coordinator", "corral.store", "corral.agent", "corral.runtime")


def loaded_by(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [m for m in json.loads(out) if any(m == s or m.startswith(s + ".") for s in SERVER_MODULES)]


def test_importing_the_client_loads_none_of_the_server() -> None:
    assert loaded_by("import corral; corral.task\nfrom corral.client import AsyncClient, Client, JobSpec, task") == []


def test_the_cli_loads_the_server_only_for_the_commands_that_serve() -> None:
    assert loaded_by("import corral.cli.main as m\nfrom corral.cli import admin, auth, client, cluster, pods") == []


def answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://x/v1/jobs/1"))


def test_a_problem_answer_becomes_the_exception_of_its_status() -> None:
    e = _core.problem(answer(400, {"title": "Bad request", "status": 400, "detail": "tasks.0.imgae: unknown field",
                                   "errors": [{"field": "tasks.0.imgae", "message": "did you mean image?"}]}))
    assert isinstance(e, BadRequest) and e.status == 400 and e.title == "Bad request"
    assert e.errors == [{"field": "tasks.0.imgae", "message": "did you mean image?"}]
    assert "did you mean image?" in str(e)
    assert isinstance(_core.problem(answer(404, {"title": "Not Found", "detail": "no job"})), NotFound)
    assert isinstance(_core.problem(answer(409, {"title": "Conflict", "detail": "finished"})), Conflict)
    proxy = _core.problem(httpx.Response(502, text="<html>bad gateway</html>",
                                         request=httpx.Request("GET", "http://x/")))
    assert isinstance(proxy, CorralError) and proxy.status == 502 and "bad gateway" in proxy.detail


def test_a_spec_is_a_model_a_dict_or_yaml_text() -> None:
    spec = JobSpec.model_validate({"name": "j", "tasks": [{"run": "true", "if": "{{ 1 }}"}]})
    body = _core.spec_body(spec)
    assert body["tasks"][0]["if"] == "{{ 1 }}" and "if_" not in body["tasks"][0]
    assert JobSpec.model_validate(body) == spec  # what is sent validates to the same spec on the server
    assert _core.spec_body("name: y\ntasks: [{run: 'true'}]\n") == {"name": "y", "tasks": [{"run": "true"}]}
    with pytest.raises(ValueError, match="YAML mapping"):
        _core.spec_body("- a list")
    with pytest.raises(ValueError, match="not valid YAML"):
        _core.spec_body("a: [")
    with pytest.raises(TypeError):
        _core.spec_body(42)  # type: ignore[arg-type]


def test_job_filters_and_short_ids() -> None:
    assert _core.job_filters({"state": ["failed", "cancelled"], "tag": None, "page_size": 10}) == \
        {"state": "failed,cancelled", "limit": 10}
    assert _core.needs_lookup("1ed3f2031683") and not _core.needs_lookup("a" * 32) and not _core.needs_lookup("abc")
    with pytest.raises(NotFound):
        _core.pick_prefix("abcd", [])
    with pytest.raises(Conflict):
        _core.pick_prefix("abcd", [{"id": "abcd1"}, {"id": "abcd2"}])


class Flaky:
    """A transport whose first ``fail`` requests meet a refused connection."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if len(self.seen) <= self.fail:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201 if request.method == "POST" else 200, json={"id": "a" * 32, "state": "x"})


def flaky_client(fail: int, retries: int = 3) -> tuple[Client, Flaky]:
    t = Flaky(fail)
    return Client("http://127.0.0.1:1", token="t", retries=retries, transport=httpx.MockTransport(t)), t


def test_reads_and_submissions_are_retried_after_a_connection_error_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    c, t = flaky_client(2)
    assert c.get("a" * 32)["id"] == "a" * 32 and len(t.seen) == 3
    assert t.seen[0].headers["Authorization"] == "Bearer t"
    c, t = flaky_client(2)
    c.submit({"tasks": [{"run": "true"}]})
    keys = {r.headers["Idempotency-Key"] for r in t.seen}
    assert len(t.seen) == 3 and len(keys) == 1  # the same key each time: the server creates one job
    c, t = flaky_client(1)
    with pytest.raises(Unreachable) as e:
        c.cancel("a" * 32)
    assert len(t.seen) == 1 and e.value.status == 0 and "127.0.0.1:1" in e.value.detail
    c, t = flaky_client(5, retries=2)
    with pytest.raises(Unreachable):
        c.get("a" * 32)
    assert len(t.seen) == 3


def test_a_read_is_retried_after_a_503_and_a_cancel_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    seen: list[str] = []

    def busy_once(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) == 1 or request.method == "POST":
            return httpx.Response(503, json={"title": "Service Unavailable", "detail": "overloaded"})
        return httpx.Response(200, json={"id": "a" * 32, "state": "completed"})

    c = Client("http://127.0.0.1:1", token="t", transport=httpx.MockTransport(busy_once))
    assert c.wait("a" * 32, timeout=1)["state"] == "completed" and seen == ["GET", "GET"]
    with pytest.raises(ServerError) as e:
        c.cancel("a" * 32)
    assert e.value.status == 503 and e.value.detail == "overloaded" and seen[2:] == ["POST"]


def test_an_empty_or_bad_url_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Client("  ")
    with pytest.raises(ValueError, match="not a server URL"):
        Client("http://[::1").get("a" * 32)
    with pytest.raises(ValueError, match="not a server URL"):
        Client("ftp://example").get("a" * 32)  # not retried: it would never work


# -- @task -----------------------------------------------------------------------------------------


@task(image="python:3.12", timeout="1m", job={"priority": 3})
def scale(xs: list[int], by: int = 2) -> dict[str, Any]:
    import math

    return {"scaled": [x * by for x in xs], "pi": round(math.pi, 2)}


@task()
def big(n: int) -> str:
    return "x" * n


def run_spec(spec: dict[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    t = spec["tasks"][0]
    out = tmp / "output"
    return subprocess.run([sys.executable, *t["command"][1:]], env={**os.environ, **t["env"],
                          "CORRAL_OUTPUT": str(out)}, capture_output=True, text=True, timeout=30)


def test_a_task_is_the_function_source_and_json_arguments_run_by_python(tmp_path: Path) -> None:
    spec = scale.spec([1, 2], by=3)
    JobSpec.model_validate(spec)  # a job the server accepts
    t = spec["tasks"][0]
    assert t["image"] == "python:3.12" and t["timeout"] == "1m" and spec["priority"] == 3
    assert t["command"][:2] == ["python3", "-c"] and "@task" not in t["env"]["CORRAL_FN_SOURCE"]
    r = run_spec(spec, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "output").read_text()) == {"scaled": [3, 6], "pi": 3.14}
    assert scale([1]) == {"scaled": [2], "pi": 3.14}  # a plain call runs here
    r = run_spec(big.spec(300 * 1024), tmp_path / "x")
    assert r.returncode == 1 and "at most 262144" in r.stderr
    with pytest.raises(TypeError, match="JSON"):
        scale.spec([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at most"):
        big.spec("x" * 200_000)  # type: ignore[arg-type]


def test_only_module_level_functions_can_be_tasks() -> None:
    k = 3

    def nested(x: int) -> int:
        return x * k

    with pytest.raises(ValueError, match="module-level"):
        task()(nested)
    with pytest.raises(ValueError, match="module-level|plain"):
        task()(lambda x: x)

    async def coro() -> None:
        return None

    with pytest.raises(ValueError):
        function_source(coro)
    assert function_source(big.fn).startswith("def big(n: int) -> str:")


def test_runner_is_plain_python() -> None:
    compile(RUNNER, "<runner>", "exec")
    assert "import corral" not in RUNNER and "from corral" not in RUNNER  # the image has no corral
