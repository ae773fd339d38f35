"""Bad input always gets a 4xx problem+json that says what is wrong, never a 500."""

from __future__ import annotations

import pytest

from tests.harness import Cluster

PROBLEM = "application/problem+json"


@pytest.fixture
def standalone(module_standalone: Cluster) -> Cluster:
    """One `corral up` for the module (tests/conftest.py): these tests only send bad input."""
    return module_standalone


@pytest.mark.parametrize(("body", "ctype", "status", "words"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"tasks: [unclosed", "application/yaml", 400, "not valid YAML"),
    (b"", "application/json", 400, "empty"),
    (b"[1, 2]", "application/json", 400, "an object"),
    (b'{"tasks": [{"run": "x", "colour": "red"}]}', "application/json", 400, "tasks.0.colour: unknown field"),
    (b'{"tasks": [{"run": "x", "imgae": "alpine"}]}', "application/json", 400,
     "tasks.0: unknown field 'imgae': did you mean 'image'?"),
    (b"tasks:\n  - run: x\n    retyr: {limit: 2}\n", "application/yaml", 400,
     "tasks.0: unknown field 'retyr': did you mean 'retry'?"),
    (b'{"tasks": [{"run": "x", "resources": {"memory": "lots"}}]}', "application/json", 400, "not a size"),
    (b'{"tasks": [{"run": "x", "timeout": "soon"}]}', "application/json", 400, "not a duration"),
    (b'{"tasks": []}', "application/json", 400, "tasks"),
    (b'{"tasks": [{"run": "x"}]}', "text/html", 415, "content type"),
])
def test_bad_submissions(standalone: Cluster, body: bytes, ctype: str, status: int, words: str) -> None:
    r = standalone.client.post("/v1/jobs", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == status and words in problem["detail"], problem


def test_field_errors_are_listed(standalone: Cluster) -> None:
    r = standalone.client.post("/v1/jobs", json={"priority": 12, "tasks": [{"run": "x", "cpu": 1}]})
    assert r.status_code == 400
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"priority", "tasks.0.cpu"}


def test_ten_megabyte_body_is_413(standalone: Cluster) -> None:
    big = b'{"name": "big", "tasks": [{"run": "' + b"x" * (10 * 1024 * 1024) + b'"}]}'
    r = standalone.client.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM


def test_unknown_ids_are_404(standalone: Cluster) -> None:
    for method, path in [("GET", "/v1/jobs/nope"), ("POST", "/v1/jobs/nope/cancel"),
                         ("POST", "/v1/jobs/nope/restart"), ("DELETE", "/v1/jobs/nope"),
                         ("GET", "/v1/jobs/nope/logs"), ("GET", "/v1/nodes/nope")]:
        r = standalone.client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"] == PROBLEM and "nope" in r.json()["detail"]


@pytest.mark.parametrize(("params", "words"), [
    ({"limit": 1001}, "at most 1000"), ({"limit": 0}, "limit"), ({"state": "sleeping"}, "unknown state"),
    ({"created_after": "yesterday"}, "not a time"), ({"cursor": "garbage"}, "cursor"),
])
def test_bad_listing_parameters(standalone: Cluster, params: dict[str, object], words: str) -> None:
    r = standalone.client.get("/v1/jobs", params=params)
    assert r.status_code == 400 and words in r.json()["detail"], r.text


def test_agent_routes_require_the_token_when_set(cluster: Cluster) -> None:
    cluster.up("--token", "s3cret")
    r = cluster.client.post("/v1/agent/register", json={"name": "x", "cpu": 1, "memory": 1})
    assert r.status_code == 401 and "s3cret" not in r.text


def test_backpressure_refuses_what_cannot_be_held(cluster: Cluster) -> None:
    cluster.up("--max-pending", "3")
    held = cluster.submit({"queue": "nobody", "tasks": [{"run": "true"}, {"run": "true"}, {"run": "true"}]})
    r = cluster.client.post("/v1/jobs", json={"queue": "nobody", "tasks": [{"run": "true"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "at most 3" in r.json()["detail"]
    cluster.client.post(f"/v1/jobs/{held['id']}/cancel")
