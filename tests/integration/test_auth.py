"""Identities, roles and namespaces over HTTP (issue 11): one real `corral server --auth` on SQLite, shared by
every test of this module; no worker is needed (what is checked is who may see and do what)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.harness import Cluster, wait_until

# argon2 at 1 pass over 8 MiB: the default profile takes a second a hash on a busy 2-core machine
ENV = {"CORRAL_RATE_LIMIT_SUBMIT": "10000/minute", "CORRAL_RATE_LIMIT_READ": "100000/minute",
       "CORRAL_ARGON2_TIME_COST": "1", "CORRAL_ARGON2_MEMORY_KIB": "8192"}
JOB = {"name": "ns-job", "tasks": [{"name": "a", "run": "true"}]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("auth"))
    c.start_server("--auth", env=ENV)
    yield c
    c.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_user(c: Cluster, name: str, role: str, namespaces: list[str] | None = None) -> str:
    """A user of ``role``, and an API key of it (made with the user's own token)."""
    r = c.client.post("/v1/users", json={"name": name, "password": f"{name}-password", "role": role,
                                         "namespaces": namespaces})
    assert r.status_code == 201, r.text
    r = c.client.post("/v1/auth/token", json={"username": name, "password": f"{name}-password"})
    assert r.status_code == 200, r.text
    r = c.client.post("/v1/keys", json={"name": f"{name}-key"}, headers=bearer(r.json()["token"]))
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="module")
def keys(srv: Cluster) -> dict[str, str]:
    out = {"admin": str(srv.token)}
    out["operator"] = make_user(srv, "olga", "operator")
    out["user"] = make_user(srv, "alice", "user", ["team-a"])
    out["viewer"] = make_user(srv, "victor", "viewer", ["team-a"])
    r = srv.client.post("/v1/keys", json={"name": "w1", "role": "worker"})
    assert r.status_code == 201, r.text
    out["worker"] = r.json()["key"]
    return out


ROLES = ["admin", "operator", "user", "viewer", "worker"]
# (family, method, path, body, the roles let in): one request per route family, native and each dialect.
FAMILIES: list[tuple[str, str, str, Any, set[str]]] = [
    ("native read", "GET", "/v1/jobs", None, {"admin", "operator", "user", "viewer"}),
    ("native submit", "POST", "/v1/jobs", JOB, {"admin", "operator", "user"}),
    ("schedules", "GET", "/v1/schedules", None, {"admin", "operator", "user", "viewer"}),
    ("pods", "GET", "/v1/pods", None, {"admin", "operator", "user", "viewer"}),
    ("nodes", "GET", "/v1/nodes", None, {"admin", "operator", "user", "viewer"}),
    ("users", "GET", "/v1/users", None, {"admin"}),
    ("own keys", "GET", "/v1/keys", None, {"admin", "operator", "user", "viewer"}),
    ("metrics", "GET", "/metrics", None, {"admin", "operator"}),
    ("docs", "GET", "/openapi.json", None, {"admin", "operator", "user", "viewer"}),
    ("agent", "POST", "/v1/agent/register", {"bad": 1}, {"admin", "worker"}),
    ("tork read", "GET", "/jobs", None, {"admin", "operator", "user", "viewer"}),
    ("tork operate", "DELETE", "/queues/no-such-queue", None, {"admin", "operator"}),
    ("tork users", "POST", "/users", {"username": "", "password": ""}, {"admin"}),
    ("nomad-lite", "GET", "/api/cluster", None, {"admin", "operator", "user", "viewer"}),
    ("cloudai", "GET", "/api/tasks", None, {"admin", "operator", "user", "viewer"}),
    ("cloudai submit", "POST", "/api/tasks", {"bad": 1}, {"admin", "operator", "user"}),
    ("podling", "GET", "/api/v1/tasks", None, {"admin", "operator", "user", "viewer"}),
    ("podling worker", "PUT", "/api/v1/tasks/none/status", {"status": "running"}, {"admin", "worker"}),
    ("stacks", "GET", "/stacks", None, {"admin", "operator", "user", "viewer"}),
]


@pytest.mark.parametrize(("family", "method", "path", "body", "allowed"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_role_against_each_route_family(srv: Cluster, keys: dict[str, str], family: str, method: str,
                                             path: str, body: Any, allowed: set[str]) -> None:
    for role in ROLES:
        r = srv.client.request(method, path, json=body, headers=bearer(keys[role]))
        if role in allowed:  # past the rule (the route may still refuse, as Podling's without a node's secret)
            refused = r.status_code == 401 or (r.status_code == 403 and "permission" in r.text)
            assert not refused, f"{role} on {family}: {r.text[:500]}"
        else:
            assert r.status_code == 403 and "permission" in r.text, f"{role} on {family}: {r.text}"
    r = srv.client.request(method, path, json=body, headers={"Authorization": ""})
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"], f"{family}: {r.text}"


def test_refusals_come_in_each_dialects_shape(srv: Cluster, keys: dict[str, str]) -> None:
    nobody = {"Authorization": "Bearer crl_0123456789abcdef_wrong"}
    assert srv.client.get("/v1/jobs", headers=nobody).json()["status"] == 401  # problem+json
    assert "message" in srv.client.get("/jobs", headers=nobody).json()  # Tork
    assert srv.client.get("/api/tasks", headers=nobody).json()["error"]["code"] == "UNAUTHORIZED"  # CloudAI
    assert "error" in srv.client.get("/api/v1/tasks", headers=nobody).json()  # Podling
    r = srv.client.post("/v1/jobs", json=JOB, headers=bearer(keys["viewer"]))
    assert r.status_code == 403 and "submit" in r.json()["detail"]
    assert "message" in srv.client.delete("/queues/q", headers=bearer(keys["user"])).json()
    assert srv.client.get("/healthz", headers={"Authorization": ""}).status_code == 200  # probes stay open


def test_every_credential_a_dialect_documents_is_accepted(srv: Cluster, keys: dict[str, str]) -> None:
    key = keys["user"]
    none = {"Authorization": ""}  # not the admin's key the harness's client sends
    for how in ({"headers": {**none, "X-API-KEY": key}}, {"params": {"api_key": key}, "headers": none},
                {"headers": bearer(key)},
                {"headers": {"Authorization": ""}, "auth": ("alice", "alice-password")}):
        r = srv.client.get("/v1/whoami", **how)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.json()["name"] == "alice", (how, r.text)
    jwt = srv.client.post("/v1/auth/token", json={"key": key}).json()["token"]
    assert srv.client.get("/api/v1/tasks", headers=bearer(jwt)).status_code == 200  # Podling: Bearer <JWT>
    assert srv.client.get("/stacks", headers={"X-API-KEY": key, "Authorization": ""}).status_code == 200
    # Tork's users: POST /users, then basic auth
    r = srv.client.post("/users", json={"username": "tom", "password": "tom-password"})
    assert r.status_code == 200 and r.json()["username"] == "tom", r.text
    assert srv.client.post("/users", json={"username": "tom", "password": "x" * 9}).json() == {
        "message": "user already exists"}
    r = srv.client.get("/jobs", headers={"Authorization": ""}, auth=("tom", "tom-password"))
    assert r.status_code == 200, r.text
    with connect(f"ws://127.0.0.1:{srv.port}/ws/telemetry?token={jwt}", open_timeout=10) as ws:
        assert ws.recv(timeout=10)
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{srv.port}/ws/telemetry", open_timeout=10)
    assert e.value.response.status_code == 401


def test_another_namespace_is_a_404_on_every_api(srv: Cluster, keys: dict[str, str]) -> None:
    bob = make_user(srv, "bob", "user", ["team-b"])
    alice = bearer(keys["user"])
    r = srv.client.post("/v1/jobs", json=JOB, headers=alice)
    assert r.status_code == 201, r.text
    job = r.json()
    row = srv.client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert row["namespace"] == "team-a" and row["created_by"] == "user:alice"
    nomad = srv.client.post("/api/jobs", json={"command": "echo hi"}, headers=alice).json()["job_id"]
    cloud = srv.client.post("/api/tasks", json={"user_id": "a", "docker_image": "busybox", "command": "true",
                                                "req_cpu": 0.1}, headers=alice).json()["task_id"]
    pod_task = srv.client.post("/api/v1/tasks", json={"name": "p", "image": "busybox"}, headers=alice).json()
    mine = [f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/logs", f"/jobs/{job['id']}", f"/api/jobs/{nomad}",
            f"/api/tasks/{cloud}", f"/api/v1/tasks/{pod_task['taskId']}"]
    for path in mine:
        assert srv.client.get(path, headers=alice).status_code == 200, path
        assert srv.client.get(path, headers=bearer(bob)).status_code == 404, path
        assert srv.client.get(path, headers=bearer(keys["operator"])).status_code == 200, path
    assert srv.client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(bob)).status_code == 404
    assert srv.client.put(f"/jobs/{job['id']}/cancel", headers=bearer(bob)).status_code == 404

    def ids(path: str, key: str, pick: Any) -> set[str]:
        r = srv.client.get(path, headers=bearer(key))
        assert r.status_code == 200, r.text
        return {str(x) for x in pick(r.json())}

    assert job["id"] in ids("/v1/jobs", keys["user"], lambda b: [j["id"] for j in b["items"]])
    assert job["id"] not in ids("/v1/jobs", bob, lambda b: [j["id"] for j in b["items"]])
    assert job["id"] not in ids("/jobs", bob, lambda b: [j["id"] for j in b["items"]])
    assert nomad not in ids("/api/jobs", bob, lambda b: [j["job_id"] for j in b["jobs"]] if "jobs" in b else b)
    assert str(cloud) not in ids("/api/tasks", bob, lambda b: [t["task_id"] for t in b["tasks"]])
    assert pod_task["taskId"] not in ids("/api/v1/tasks", bob, lambda b: [t["taskId"] for t in b])
    assert pod_task["taskId"] in ids("/api/v1/tasks", keys["user"], lambda b: [t["taskId"] for t in b])
    # a namespace of one's own is chosen with X-Corral-Namespace; another's is refused
    r = srv.client.post("/v1/jobs", json=JOB, headers={**alice, "X-Corral-Namespace": "team-b"})
    assert r.status_code == 403, r.text
    r = srv.client.post("/v1/jobs", json=JOB, headers={**bearer(keys["admin"]), "X-Corral-Namespace": "team-b"})
    assert r.status_code == 201 and srv.client.get(f"/v1/jobs/{r.json()['id']}", headers=bearer(bob)).json()[
        "namespace"] == "team-b"


def test_revoked_and_expired_keys_are_refused_at_once(srv: Cluster, keys: dict[str, str]) -> None:
    r = srv.client.post("/v1/keys", json={"name": "short"}, headers=bearer(keys["user"]))
    key, key_id = r.json()["key"], r.json()["id"]
    jwt = srv.client.post("/v1/auth/token", json={"key": key}).json()["token"]
    assert srv.client.get("/v1/whoami", headers=bearer(key)).status_code == 200  # now in the verify cache
    assert srv.client.get("/v1/whoami", headers=bearer(jwt)).status_code == 200
    listed = srv.client.get("/v1/keys", headers=bearer(keys["user"])).json()["items"]
    assert key_id in {k["id"] for k in listed} and all("hash" not in k and "key" not in k for k in listed)
    assert srv.client.delete(f"/v1/keys/{key_id}", headers=bearer(keys["viewer"])).status_code == 404  # not its own
    assert srv.client.delete(f"/v1/keys/{key_id}", headers=bearer(keys["user"])).status_code == 200
    assert srv.client.get("/v1/whoami", headers=bearer(key)).status_code == 401  # the very next request
    assert srv.client.get("/v1/whoami", headers=bearer(jwt)).status_code == 401  # and the tokens made with it
    r = srv.client.post("/v1/keys", json={"name": "brief", "expires_in": 1}, headers=bearer(keys["user"]))
    brief = r.json()["key"]
    assert srv.client.get("/v1/whoami", headers=bearer(brief)).status_code == 200
    wait_until(lambda: srv.client.get("/v1/whoami", headers=bearer(brief)).status_code == 401, 5,
               what="the key to expire")
    # no key gives more than its maker has
    r = srv.client.post("/v1/keys", json={"name": "up", "role": "admin"}, headers=bearer(keys["user"]))
    assert r.status_code == 403, r.text
    r = srv.client.post("/v1/keys", json={"name": "x", "namespaces": ["team-b"]}, headers=bearer(keys["user"]))
    assert r.status_code == 403, r.text


def test_the_signing_key_rotates(srv: Cluster, keys: dict[str, str]) -> None:
    jwt = srv.client.post("/v1/auth/token", json={"key": keys["viewer"]}).json()["token"]
    assert srv.client.get("/v1/whoami", headers=bearer(jwt)).status_code == 200
    assert srv.client.post("/v1/auth/rotate", headers=bearer(keys["operator"])).status_code == 403
    assert srv.client.post("/v1/auth/rotate").status_code == 204
    assert srv.client.get("/v1/whoami", headers=bearer(jwt)).status_code == 401


def test_failed_logins_are_limited_per_user_and_address(srv: Cluster) -> None:
    """Last in this module: it spends this address's failed-login allowance."""
    started = time.monotonic()
    codes = [srv.client.post("/v1/auth/token", json={"username": "alice", "password": f"wrong-{i}"}).status_code
             for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[-1] == 429, codes
    # the right password waits too, as does basic auth on any route
    assert srv.client.post("/v1/auth/token", json={"username": "alice", "password": "alice-password"}
                           ).status_code == 429
    r = srv.client.get("/v1/whoami", headers={"Authorization": ""}, auth=("alice", "alice-password"))
    assert r.status_code == 429 and r.headers["retry-after"]
    assert srv.client.get("/healthz", timeout=1).status_code == 200
    assert time.monotonic() - started < 30
    assert isinstance(srv.client, httpx.Client)
