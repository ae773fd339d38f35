"""Every list's query parameters are bounded: an over-long text filter is a 400 in the asked API's own error
shape that names the parameter (not a LIKE or full-text search over megabytes), a number past its bound is
a 400 rather than a 500, and values within the bounds still find what they name. One server, no worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Cluster

HUGE = 30_000  # near the 32 KiB the edge takes in a path and query (more is a 414)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("bounds"))
    c.start_server()
    yield c
    c.close()


def _native(body: dict[str, Any], param: str) -> None:
    assert body["status"] == 400 and body["errors"][0]["field"] == f"query.{param}", body
    assert f"query.{param}: String should have at most" in body["detail"], body


def _nomad_lite(body: dict[str, Any], param: str) -> None:
    assert set(body) == {"error"} and body["error"].startswith(f"{param}: "), body


def _tork(body: dict[str, Any], param: str) -> None:
    assert set(body) == {"message"} and body["message"].startswith(f"{param}: "), body


def _cloudai(body: dict[str, Any], param: str) -> None:
    err = body["error"]
    assert err["code"] == "INVALID_REQUEST" and err["details"]["field"] == param, body
    assert err["message"].startswith(param), body


@pytest.mark.parametrize(("path", "param", "most", "shape"), [
    ("/v1/jobs", "q", 256, _native),
    ("/v1/jobs", "tag", 100, _native),
    ("/v1/jobs", "queue", 100, _native),
    ("/v1/jobs", "cursor", 200, _native),
    ("/api/jobs", "command", 1024, _nomad_lite),
    ("/api/jobs", "worker_id", 200, _nomad_lite),
    ("/jobs", "q", 256, _tork),
    ("/api/tasks", "user_id", 95, _cloudai),
])
def test_an_over_long_filter_is_a_400_naming_it(server: Cluster, path: str, param: str, most: int,
                                                shape: Any) -> None:
    for size in (most + 1, HUGE):
        r = server.client.get(path, params={param: "x" * size})
        assert r.status_code == 400, (path, param, size, r.text[:300])
        assert len(r.content) < 2000, "the answer does not echo the value"
        shape(r.json(), param)
    # At the bound it is a filter (it names nothing here): not refused
    r = server.client.get(path, params={param: "x" * most} if param != "cursor" else {})
    assert r.status_code == 200, (path, param, r.text[:300])


def test_filters_within_the_bounds_still_find_their_jobs(server: Cluster) -> None:
    mark = uuid.uuid4().hex[:12]
    tag = "t" * 88 + mark  # 100 characters: a tag as long as a job may have
    job = server.submit({"name": f"bounds-{mark}", "tags": [tag], "tasks": [{"run": f"echo {mark}"}]})
    r = server.client.get("/v1/jobs", params={"tag": tag, "q": f"bounds-{mark}"})
    assert r.status_code == 200 and [j["id"] for j in r.json()["items"]] == [job["id"]], r.text

    r = server.client.post("/api/jobs", json={"command": f"echo nl-{mark}"})
    assert r.status_code == 200, r.text
    nl_id = r.json()["job_id"]
    r = server.client.get("/api/jobs", params={"command": f"nl-{mark}"})
    assert r.status_code == 200 and [j["id"] for j in r.json()] == [nl_id], r.text

    r = server.client.get("/jobs", params={"q": f"bounds-{mark} tag:{tag}"})
    assert r.status_code == 200 and [j["id"] for j in r.json()["items"]] == [job["id"]], r.text
    # Tork's text search a page at a time (the store skips the pages before it; a far page is empty)
    newer = server.submit({"name": f"bounds-{mark}-2", "tasks": [{"run": "true"}]})
    pages = [server.client.get("/jobs", params={"q": f"bounds-{mark}", "size": 1, "page": p}).json()
             for p in (1, 2, 3, 2**40)]
    assert [[j["id"] for j in p["items"]] for p in pages] == [[newer["id"]], [job["id"]], [], []], pages
    assert pages[0]["totalItems"] == 2 and pages[0]["totalPages"] == 2, pages[0]


@pytest.mark.parametrize(("path", "params", "param", "shape"), [
    ("/api/jobs", {"created_after_ms": "9" * 400}, "created_after_ms", _nomad_lite),  # was a 500 (to float)
    ("/api/jobs", {"created_before_ms": str(10**15 + 1)}, "created_before_ms", _nomad_lite),
    ("/api/tasks", {"offset": str(10**30)}, "offset", _cloudai),  # was a 500 (the store's integer)
])
def test_a_number_past_its_bound_is_a_400_not_a_500(server: Cluster, path: str, params: dict[str, str],
                                                    param: str, shape: Any) -> None:
    r = server.client.get(path, params=params)
    assert r.status_code == 400, r.text[:300]
    body = r.json()
    if shape is _cloudai:
        assert body["error"]["details"]["field"] == param, body
    else:
        shape(body, param)


def test_a_worker_filter_that_is_no_number_is_no_500(server: Cluster) -> None:
    # str.isdigit() takes '²' and a 200-digit number passes int(): neither names a worker
    for worker in ("²", "9" * 200):
        r = server.client.get("/api/jobs", params={"worker_id": worker})
        assert r.status_code == 200 and r.json() == [], r.text[:300]


@pytest.mark.parametrize(("path", "shape"), [("/v1/jobs", "problem"), ("/api/jobs", "nomad-lite"),
                                             ("/jobs", "tork"), ("/api/tasks", "cloudai")])
def test_a_path_and_query_over_32_kib_is_a_414_in_the_apis_shape(server: Cluster, path: str, shape: str) -> None:
    # A parameter no route takes: the bound is on the request, before any route or parameter is looked at
    r = server.client.get(path, params={"unknown": "y" * (32 * 1024)})
    assert r.status_code == 414, r.text[:300]
    body = r.json()
    message = {"problem": lambda: body["detail"], "nomad-lite": lambda: body["error"],
               "tork": lambda: body["message"], "cloudai": lambda: body["error"]["message"]}[shape]()
    assert "at most 32,768" in message and len(r.content) < 2000, body
    assert server.client.get(path, params={"unknown": "y" * (16 * 1024)}).status_code == 200
