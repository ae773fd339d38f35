"""The dashboard on a server with identities (`corral server --auth`): the sign-in page's password for a
session cookie, and pages that show only the caller's namespaces. HTTP only (no browser needed)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Cluster


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard-auth"))
    c.start_server("--auth", env={"CORRAL_RATE_LIMIT": "off"})
    yield c
    c.close()


def test_a_user_signs_in_and_sees_only_its_namespaces(authed: Cluster) -> None:
    c = authed.client
    made = c.post("/v1/users", json={"name": "ann", "password": "pw-of-ann", "namespaces": ["team-a"]})
    assert made.status_code == 201
    mine = c.post("/v1/jobs", json={"name": "job-of-team-a", "tasks": [{"run": "true"}]},
                  headers={"X-Corral-Namespace": "team-a"}).json()
    other = c.post("/v1/jobs", json={"name": "job-of-team-b", "tasks": [{"run": "true"}]},
                   headers={"X-Corral-Namespace": "team-b"}).json()
    with httpx.Client(base_url=authed.url, timeout=10) as browser:  # a browser: no header, only its cookies
        r = browser.get("/ui/jobs")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        assert browser.get("/ui/login").status_code == 200
        wrong = browser.post("/ui/login", json={"username": "ann", "password": "nope"})
        assert wrong.status_code == 401 and not wrong.cookies
        ok = browser.post("/ui/login", json={"username": "ann", "password": "pw-of-ann"})
        assert ok.status_code == 200
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = browser.get("/ui/jobs")
        assert page.status_code == 200
        assert "job-of-team-a" in page.text and "job-of-team-b" not in page.text
        assert browser.get(f"/ui/jobs/{mine['id']}").status_code == 200
        assert browser.get(f"/ui/jobs/{other['id']}").status_code == 404  # another namespace's job: not found
        assert browser.get("/ui/events", params={"job": other["id"]}).status_code == 404
        # A user may not drain a node: the API's rule answers, whatever the page shows.
        assert browser.post("/v1/nodes/x/drain", json={}).status_code == 403
        assert browser.post("/ui/logout").status_code == 200
        assert browser.get("/ui/jobs").status_code == 303
