"""The OpenAPI document tells the truth: Schemathesis, every check on, against a real `corral up`, finds no 5xx
and no answer the document does not describe (status, content type, headers, body schema, Allow on a 405, a
schema-valid request refused). A few examples per operation and a time budget here (on a busy machine the
budget may end before every operation is reached); the full run (25 per
operation, every phase) is bench/openapi_conformance.sh, its figures in docs/benchmarks.md."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster

pytest.importorskip("schemathesis")
EXAMPLES = os.environ.get("CORRAL_OPENAPI_EXAMPLES", "2")
BUDGET = os.environ.get("CORRAL_OPENAPI_SECONDS", "10")  # schemathesis' --max-time: the run stops when spent


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("openapi"))
    # No runtime that could run what the fuzzer submits: jobs wait (a docker task's image is never pulled:
    # there is no registry), which is all the API needs. The rate limiter off: a 429 is documented, but
    # would hide the route behind it.
    c.up("--runtime", "docker", env={"CORRAL_RATE_LIMIT": "off"})
    yield c
    c.close()


def schemathesis(c: Cluster, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert c.token, "corral up has an access token"
    doc = c.client.get("/openapi.json")  # through the harness's client: its auth header reaches the document
    assert doc.status_code == 200, doc.text
    spec = tmp / "openapi.json"
    spec.write_text(doc.text)
    # One worker: hypothesis describes its filters with ast.parse, and on CPython 3.11 parsing in two threads
    # at once can fail ("AST constructor recursion depth mismatch"), a crash of the tool, not of the server.
    config = Path(__file__).resolve().parents[2] / "bench" / "schemathesis.toml"  # what no schema can say
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", str(spec), "--url", c.url,
           "--checks", "all",
           "-H", f"Authorization: Bearer {c.token}", "--seed", "1", "--request-timeout", "5",
           "--generation-database", "none", "--no-color", "--workers", "1",
           "--suppress-health-check", "all", *extra]  # slow generation on a busy machine is not a failure
    hooks = config.parent / "schemathesis_hooks.py"  # a job refused for a task name it repeats: no schema says it
    return subprocess.run(cmd, capture_output=True, text=True, timeout=200, cwd=tmp,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_schemathesis_finds_nothing(up: Cluster, tmp_path: Path) -> None:
    # Every check, positive_data_acceptance (a schema-valid request refused) included: the full run is clean for
    # it (docs/benchmarks.md, "OpenAPI conformance"); what no schema can say is in bench/schemathesis_hooks.py.
    run = schemathesis(up, tmp_path, "--max-examples", EXAMPLES, "--max-time", BUDGET,
                       "--phases", "examples,coverage,fuzzing")
    assert "Operations:" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


def test_a_405_lists_the_methods_of_the_resource_in_the_paths_api_shape(up: Cluster) -> None:
    r = up.client.put("/v1/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["status"] == 405
    r = up.client.patch("/jobs")  # Tork's
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST" and set(r.json()) == {"message"}, r.text
    r = up.client.put("/stacks/batch-delete")  # the resource, not the stack called "batch-delete"
    assert r.status_code == 405 and r.headers["allow"] == "POST" and set(r.json()) == {"error"}, r.text
    doc = up.client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "405" in op["responses"] and "422" not in op["responses"], (method, path)
    metrics = up.client.get("/metrics")
    assert metrics.headers["content-type"].split(";")[0] in doc["paths"]["/metrics"]["get"]["responses"]["200"][
        "content"]
