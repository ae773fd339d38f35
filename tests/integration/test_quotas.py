"""Namespace quotas, the bounds on what a caller may make, and client certificates mapped to users (issue 11),
over one real `corral server --auth` with TLS and client certificates (a CA made here) and one process worker,
shared by every test of this module."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Cluster, wait_until
from tests.integration.test_auth import ENV, bearer
from tests.integration.test_authedge import _cert

STACK = {"target_port": [{"container_port": 80, "protocol": "TCP"}],
         "pod_spec": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\nspec:\n  containers:\n    - name: app\n"
                     "      image: nginx:stable\n      ports:\n        - containerPort: 80\n"
                     "      resources:\n        limits:\n          cpu: 100m\n          memory: 128Mi\n"}


class Env:
    def __init__(self, c: Cluster, tmp: Path) -> None:
        self.c, self.tmp = c, tmp
        self.keys: dict[str, str] = {}

    def as_cert(self, name: str) -> httpx.Client:
        """A client that presents a certificate with common name ``name`` (and no other credential)."""
        ctx = ssl.create_default_context(cafile=str(self.tmp / "ca.pem"))
        ctx.load_cert_chain(str(self.tmp / f"{name}.pem"), str(self.tmp / f"{name}.key"))
        return httpx.Client(base_url=self.c.url, timeout=30, verify=ctx)


def _user(c: Cluster, name: str, role: str, namespaces: list[str] | None) -> str:
    r = c.client.post("/v1/users", json={"name": name, "password": f"{name}-password", "role": role,
                                         "namespaces": namespaces})
    assert r.status_code == 201, r.text
    r = c.client.post("/v1/auth/token", json={"username": name, "password": f"{name}-password"})
    r = c.client.post("/v1/keys", json={"name": f"{name}-key"}, headers=bearer(r.json()["token"]))
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("quotas")
    ca = _cert(tmp / "ca", "corral test CA", None, ca=True)
    _cert(tmp / "server", "coordinator", ca, ip="127.0.0.1")
    for cn in ("ops-cert", "alice", "stranger", "node"):
        _cert(tmp / cn, cn, ca)
    c = Cluster(tmp)
    c.client.close()
    c.url = f"https://127.0.0.1:{c.port}"
    c.client = httpx.Client(base_url=c.url, timeout=30, verify=ssl.create_default_context(cafile=str(tmp / "ca.pem")))
    c.start_server("--auth", "--tls-cert", str(tmp / "server.pem"), "--tls-key", str(tmp / "server.key"),
                   "--tls-client-ca", str(tmp / "ca.pem"), "--tls-cn-map", "ops-cert=olga",
                   "--max-users", "3", "--max-keys-per-owner", "2", "--max-join-tokens", "2", env=ENV)
    e = Env(c, tmp)
    e.keys["alice"] = _user(c, "alice", "user", ["team-a"])
    e.keys["bob"] = _user(c, "bob", "user", ["team-b"])
    e.keys["olga"] = _user(c, "olga", "operator", None)
    c.add_worker("qnode", "--runtime", "process", "--cpus", "4", "--ca", str(tmp / "ca.pem"))
    # team-a's quota, which several tests read: set here, since the tests of this module may run on
    # different xdist workers, each with a server of its own (the first test sets it again, and checks the answer).
    r = c.client.put("/v1/namespaces/team-a/quota", json={"cpu": 1, "tasks": 10})
    assert r.status_code == 200, r.text
    yield e
    c.close()


def _job(e: Env, who: str, run: str, cpu: float = 1) -> dict[str, Any]:
    r = e.c.client.post("/v1/jobs", json={"tasks": [{"run": run, "resources": {"cpu": cpu}}]},
                        headers=bearer(e.keys[who]))
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def _task(e: Env, job_id: str) -> dict[str, Any]:
    return dict(e.c.get(f"/v1/jobs/{job_id}/tasks")["items"][0])


@pytest.mark.slow  # it bears the module's setup: a TLS server with --auth, three users, a worker
def test_a_namespace_at_its_cpu_quota_waits_and_others_run(env: Env) -> None:
    c = env.c
    r = c.client.put("/v1/namespaces/team-a/quota", json={"cpu": 1, "tasks": 10})
    assert r.status_code == 200, r.text
    assert r.json()["quota"] == {"cpu": 1.0, "memory": None, "gpus": None, "tasks": 10, "pods": None}
    gate = env.tmp / "gate"
    first = _job(env, "alice", f"while [ ! -f {gate} ]; do sleep 0.05; done")
    c.wait_for(f"/v1/jobs/{first['id']}", {"running"})
    second = _job(env, "alice", "echo second")
    # The second waits, and says why (evidence that a scheduling pass looked at it).
    reason = wait_until(lambda: (r := str(_task(env, second["id"])["reason"])).startswith("namespace") and r, 15,
                        what="the quota reason")
    assert reason.startswith("namespace team-a is at its CPU quota: 1 of 1 core in use"), reason
    assert c.job(second["id"])["state"] == "pending"
    # Another namespace is not held by team-a's quota: its job runs while team-a's waits.
    other = _job(env, "bob", "echo other")
    assert c.wait_job(other["id"])["state"] == "completed"
    assert c.job(second["id"])["state"] == "pending"
    q = env.c.client.get("/v1/namespaces/team-a/quota", headers=bearer(env.keys["alice"])).json()
    assert q["used"]["cpu"] == 1 and q["used"]["tasks"] == 1
    # Room frees: the waiting job runs.
    gate.write_text("go")
    assert c.wait_job(first["id"])["state"] == "completed"
    assert c.wait_job(second["id"])["state"] == "completed"


def test_quotas_are_read_by_namespace_and_set_only_by_an_admin(env: Env) -> None:
    c = env.c
    assert c.client.put("/v1/namespaces/team-b/quota", json={"pods": 5}).status_code == 200
    alice, olga = bearer(env.keys["alice"]), bearer(env.keys["olga"])
    assert [q["namespace"] for q in c.client.get("/v1/quotas", headers=alice).json()["items"]] == ["team-a"]
    assert c.client.get("/v1/namespaces/team-b/quota", headers=alice).status_code == 404  # not hers: no such
    assert {q["namespace"] for q in c.client.get("/v1/quotas", headers=olga).json()["items"]} >= {"team-a", "team-b"}
    for who in (alice, olga):
        r = c.client.put("/v1/namespaces/team-a/quota", json={"cpu": 100}, headers=who)
        assert r.status_code == 403 and "admin" in r.text, r.text
        assert c.client.delete("/v1/namespaces/team-b/quota", headers=who).status_code == 403
    assert c.client.delete("/v1/namespaces/team-b/quota").status_code == 204
    assert c.client.delete("/v1/namespaces/team-b/quota").status_code == 404


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/v1/namespaces/team-a/quota", {"cpu": -1}, "negative"),
    ("/v1/namespaces/team-a/quota", {"memory": "lots"}, "memory"),
    ("/v1/namespaces/team-a/quota", {"gpu": 1}, "unknown quota field"),
    ("/v1/namespaces/team-a/quota", {}, "at least one"),
    ("/v1/namespaces/team-a/quota", [1], "an object"),
    ("/v1/namespaces/team-a/quota", {"tasks": 1.5}, "whole number"),
    ("/v1/namespaces/Team_A/quota", {"cpu": 1}, "namespace"),
    ("/v1/namespaces/" + "a" * 64 + "/quota", {"cpu": 1}, "namespace"),
])
def test_bad_quota_input_is_a_400(env: Env, path: str, body: Any, says: str) -> None:
    r = env.c.client.put(path, json=body)
    assert r.status_code == 400 and says in r.text, r.text


def test_a_stack_over_the_stacks_namespace_quota_is_a_503(env: Env) -> None:
    c = env.c
    assert c.client.put("/v1/namespaces/stacks/quota", json={"pods": 0}).status_code == 200
    try:
        r = c.client.post("/stacks", json=STACK)
        assert r.status_code == 503 and "exceeded quota" in r.text, r.text
        assert c.client.get("/stacks").json()["stacks"] == []
    finally:
        c.client.delete("/v1/namespaces/stacks/quota")


def test_how_many_keys_users_and_join_tokens_a_caller_may_make(env: Env) -> None:
    c = env.c
    alice = bearer(env.keys["alice"])
    r = c.client.post("/v1/keys", json={"name": "second"}, headers=alice)  # her first was made with her user
    assert r.status_code == 201, r.text
    r = c.client.post("/v1/keys", json={"name": "third"}, headers=alice)
    assert r.status_code == 409 and "--max-keys-per-owner" in r.text, r.text
    second = next(k for k in c.client.get("/v1/keys", headers=alice).json()["items"] if k["name"] == "second")
    assert c.client.delete(f"/v1/keys/{second['id']}", headers=alice).status_code == 200
    assert c.client.post("/v1/keys", json={"name": "third"}, headers=alice).status_code == 201  # room again
    r = c.client.post("/v1/users", json={"name": "dave", "password": "dave-password", "role": "viewer"})
    assert r.status_code == 409 and "--max-users" in r.text, r.text
    made = [c.client.post("/v1/tokens", json={"kind": "worker"}) for _ in range(2)]
    assert all(t.status_code == 201 for t in made), [t.text for t in made]
    r = c.client.post("/v1/tokens", json={"kind": "worker"})
    assert r.status_code == 409 and "--max-join-tokens" in r.text, r.text
    assert c.client.delete(f"/v1/tokens/{made[0].json()['id']}").status_code == 204
    assert c.client.post("/v1/tokens", json={"kind": "worker"}).status_code == 201


def test_the_namespace_header_is_a_dns_label(env: Env) -> None:
    c = env.c
    for bad in ("a" * 64, "Team-A", "team_a", "-a", "a" * 1000):
        r = c.client.get("/v1/jobs", headers={"X-Corral-Namespace": bad})
        assert r.status_code == 400 and "not a namespace" in r.text, r.text
    r = c.client.post("/v1/users", json={"name": "eve", "password": "eve-password", "namespaces": ["Not A Label"]})
    assert r.status_code == 400 and "DNS label" in r.text, r.text


def test_cluster_status_counts_only_what_a_user_sees(env: Env) -> None:
    c = env.c
    _job(env, "bob", "true")
    mine = c.client.get("/v1/jobs", headers=bearer(env.keys["alice"]), params={"limit": 1000}).json()["total"]
    status = c.client.get("/api/cluster/status", headers=bearer(env.keys["alice"])).json()
    assert status["total_tasks"] == mine
    everyone = c.client.get("/api/cluster/status").json()["total_tasks"]
    assert everyone > mine


def test_a_client_certificate_acts_as_the_user_its_common_name_names(env: Env) -> None:
    with env.as_cert("ops-cert") as ops:  # mapped by --tls-cn-map ops-cert=olga
        who = ops.get("/v1/whoami").json()
        assert (who["name"], who["role"]) == ("olga", "operator")
        assert ops.get("/v1/users").status_code == 403  # an operator's rights, no more
    with env.as_cert("alice") as alice:  # a CN that names a user
        who = alice.get("/v1/whoami").json()
        assert (who["name"], who["role"], who["namespaces"]) == ("alice", "user", ["team-a"])
        assert alice.get("/v1/namespaces/team-a/quota").status_code == 200
    with env.as_cert("stranger") as stranger:  # an unknown CN is anonymous: with --auth, refused
        r = stranger.get("/v1/whoami")
        assert r.status_code == 401, r.text


def test_the_telemetry_websocket_shows_a_user_only_its_namespaces(env: Env) -> None:
    import json

    from websockets.sync.client import connect
    c = env.c
    gate = env.tmp / "gate-ws"
    theirs = _job(env, "bob", f"while [ ! -f {gate} ]; do sleep 0.05; done")
    try:
        c.wait_for(f"/v1/jobs/{theirs['id']}", {"running"})
        def ids(who: str) -> set[str]:
            return {t["task_id"] for t in c.client.get("/api/tasks", headers=bearer(env.keys[who])).json()["tasks"]}

        bob_ids, alice_ids = ids("bob"), ids("alice")
        ctx = ssl.create_default_context(cafile=str(env.tmp / "ca.pem"))

        def first_update(key: str) -> dict[str, Any]:
            with connect(f"wss://127.0.0.1:{c.port}/ws/telemetry?token={key}", ssl=ctx, open_timeout=10) as ws:
                while (msg := json.loads(ws.recv(timeout=10)))["type"] != "telemetry_update":
                    pass
            return dict(msg["data"])

        everyone = first_update(str(c.token))
        assert bob_ids & {t["task_id"] for t in everyone["tasks"]}  # the admin sees bob's running task
        mine = first_update(env.keys["alice"])
        assert {t["task_id"] for t in mine["tasks"]} <= alice_ids
        assert mine["cluster"]["running_tasks"] == 0 < everyone["cluster"]["running_tasks"]
    finally:
        gate.write_text("go")
    assert c.wait_job(theirs["id"])["state"] == "completed"
