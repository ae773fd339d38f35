"""Services over HTTP against a real server: create, list, get, update, delete, bad input, node ports held
on every node (and on one that joins later), the agent's services route and its node check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Cluster
from tests.support import ID_RE, corral

LOW, HIGH = 30300, 30315  # no worker here: nothing listens on these
WEB = {"name": "web", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("services"))
    c.start_server("--node-port-range", f"{LOW}-{HIGH}")
    yield c
    c.close()


def _register(c: Cluster, name: str) -> tuple[str, str]:
    r = c.client.post("/v1/agent/register", json={"name": name, "cpu": 1, "memory": 1 << 30,
                                                   "runtimes": ["process"]})
    assert r.status_code == 200, r.text
    return r.json()["node_id"], r.json()["node_secret"]


def _node_services(c: Cluster, node: tuple[str, str]) -> list[dict[str, Any]]:
    r = c.client.get(f"/v1/agent/nodes/{node[0]}/services", headers={"X-Corral-Node-Secret": node[1]})
    assert r.status_code == 200, r.text
    assert r.json()["interval"] == 1.0
    return list(r.json()["services"])


def _create(c: Cluster, body: dict[str, Any] | str, **kw: Any) -> httpx.Response:
    if isinstance(body, str):
        return c.client.post("/v1/services", content=body, headers={"Content-Type": "application/yaml"})
    return c.client.post("/v1/services", json=body, **kw)


def test_create_list_get_update_delete(server: Cluster) -> None:
    c = server
    r = _create(c, {**WEB, "name": "crud"})
    assert r.status_code == 201, r.text
    svc = r.json()
    assert r.headers["Location"] == f"/v1/services/{svc['id']}"
    assert (svc["namespace"], svc["type"], svc["origin"], svc["version"]) == ("default", "ClusterIP", "native", 1)
    assert svc["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert c.get(f"/v1/services/{svc['id']}") == svc
    # YAML, another namespace; the same name there is fine, twice in one namespace is not.
    other = _create(c, "name: crud\nnamespace: prod\nselector: {app: web}\nports: [{port: 81}]\n")
    assert other.status_code == 201, other.text
    dup = _create(c, {**WEB, "name": "crud"})
    assert dup.status_code == 409 and "has a service named 'crud'" in dup.json()["detail"]
    ids = [s["id"] for s in c.get("/v1/services?namespace=prod")["items"]]
    assert ids == [other.json()["id"]]
    page = c.get("/v1/services?limit=1")
    assert len(page["items"]) == 1 and page["next_cursor"]
    # Update: the selector changes, the version grows; a stale version is refused.
    up = c.client.put(f"/v1/services/{svc['id']}?version=1", json={**WEB, "name": "crud", "selector": {"app": "v2"}})
    assert up.status_code == 200, up.text
    assert (up.json()["selector"], up.json()["version"]) == ({"app": "v2"}, 2)
    stale = c.client.put(f"/v1/services/{svc['id']}?version=1", json={**WEB, "name": "crud"})
    assert stale.status_code == 409
    renamed = c.client.put(f"/v1/services/{svc['id']}", json={**WEB, "name": "other"})
    assert renamed.status_code == 400 and "cannot change" in renamed.json()["detail"]
    assert c.get(f"/v1/services/{svc['id']}/endpoints") == {"service_id": svc["id"], "endpoints": []}
    assert c.client.delete(f"/v1/services/{svc['id']}").status_code == 204
    assert c.client.get(f"/v1/services/{svc['id']}").status_code == 404
    assert c.client.delete(f"/v1/services/{svc['id']}").status_code == 404
    assert c.client.get(f"/v1/services/{svc['id']}/endpoints").status_code == 404


@pytest.mark.parametrize(("body", "field", "words"), [
    ({**WEB, "name": "Bad Name"}, "name", "not a valid service name"),
    ({**WEB, "ports": []}, "ports", "at least 1"),
    ({**WEB, "ports": [{"port": 70000}]}, "ports.0.port", "less than or equal to 65535"),
    ({**WEB, "type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}, "", "outside this server's node port"),
    ({**WEB, "selector": ["app"]}, "selector", "valid dictionary"),
    ({**WEB, "bogus": 1}, "bogus", "unknown field"),
    ([1, 2], "", "a service is an object"),
])
def test_bad_input_is_a_400_that_says_what_is_wrong(server: Cluster, body: Any, field: str, words: str) -> None:
    r = _create(server, body)
    assert r.status_code == 400, r.text
    assert words in r.text
    if field:
        assert any(e["field"] == field for e in r.json()["errors"]), r.json()


def test_bad_ids_queries_and_updates_are_4xx(server: Cluster) -> None:
    c = server
    r = c.client.get("/v1/services/" + "x" * 65)
    assert r.status_code == 400 and "service_id" in r.text, r.text
    for query in ("cursor=nope", "limit=0", "limit=1001"):
        r = c.client.get(f"/v1/services?{query}")
        assert r.status_code == 400, (query, r.text)
    assert "cursor" in c.client.get("/v1/services?cursor=nope").json()["detail"]
    assert c.client.put("/v1/services/nope", json=WEB).status_code == 404
    svc = _create(c, {**WEB, "name": "upd"}).json()
    r = c.client.put(f"/v1/services/{svc['id']}", json={**WEB, "name": "upd", "ports": []})
    assert r.status_code == 400 and "ports" in r.text
    r = c.client.put(f"/v1/services/{svc['id']}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert c.get(f"/v1/services/{svc['id']}")["version"] == 1  # nothing changed


def test_node_ports_on_every_node_and_the_agent_route(server: Cluster) -> None:
    c = server
    n1 = _register(c, "svc-n1")
    r = _create(c, {**WEB, "name": "np", "type": "NodePort",
                    "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 81, "targetPort": "admin"}]})
    assert r.status_code == 201, r.text
    svc = r.json()
    ports = [p["nodePort"] for p in svc["ports"]]
    assert len(set(ports)) == 2 and all(LOW <= p <= HIGH for p in ports)
    # A second service never gets the same ports; one asked for that is taken is refused.
    r2 = _create(c, {**WEB, "name": "np2", "type": "NodePort", "ports": [{"port": 80}]})
    assert r2.status_code == 201 and r2.json()["ports"][0]["nodePort"] not in ports
    taken = _create(c, {**WEB, "name": "np3", "type": "NodePort", "ports": [{"port": 80, "nodePort": ports[0]}]})
    assert taken.status_code == 409 and "in use" in taken.json()["detail"]
    # Both nodes forward both ports: the one that was there, and one that joins later.
    n2 = _register(c, "svc-n2")
    for node in (n1, n2):
        mine = {s["id"]: s for s in _node_services(c, node)}
        assert [p["nodePort"] for p in mine[svc["id"]]["ports"]] == ports
        assert all(p["endpoints"] == [] for p in mine[svc["id"]]["ports"])
    # An update keeps the node port of a port that stays and frees the one dropped.
    up = c.client.put(f"/v1/services/{svc['id']}", json={**WEB, "name": "np", "type": "NodePort",
                                                          "ports": [{"name": "http", "port": 80}]})
    assert up.status_code == 200 and [p["nodePort"] for p in up.json()["ports"]] == ports[:1]
    again = _create(c, {**WEB, "name": "np4", "type": "NodePort", "ports": [{"port": 80, "nodePort": ports[1]}]})
    assert again.status_code == 201, again.text
    # The route is the node's own: another node's secret, or none, is refused.
    wrong = c.client.get(f"/v1/agent/nodes/{n1[0]}/services", headers={"X-Corral-Node-Secret": n2[1]})
    assert wrong.status_code == 403
    assert c.client.get(f"/v1/agent/nodes/{n1[0]}/services").status_code == 403
    # Deleted: its ports are free, and no node forwards them any more.
    for s in (svc["id"], r2.json()["id"], again.json()["id"]):
        assert c.client.delete(f"/v1/services/{s}").status_code == 204
    assert _node_services(c, n1) == []
    assert _create(c, {**WEB, "name": "np5", "type": "NodePort",
                       "ports": [{"port": 80, "nodePort": ports[0]}]}).status_code == 201


def test_cli_create_ls_get_endpoints_rm(server: Cluster, tmp_path: Path) -> None:
    url = server.url
    f = tmp_path / "svc.yaml"
    f.write_text("name: cli\nnamespace: tools\ntype: NodePort\nselector: {app: cli}\n"
                 "ports:\n  - {name: http, port: 80, targetPort: 8080}\n")
    r = corral("services", "create", str(f), server=url)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    assert ID_RE.match(sid) and "tools/cli (NodePort): 80->8080/TCP (node 3" in r.stderr
    ls = corral("services", "ls", "--namespace", "tools", server=url)
    row = next(line for line in ls.stdout.splitlines() if line.startswith(sid[:12]))
    assert "cli" in row and "NodePort" in row and "app=cli" in row
    got = corral("services", "get", sid, server=url)
    assert got.returncode == 0 and "no ready pod" in got.stdout, got.stderr
    eps = corral("services", "endpoints", sid, server=url)
    assert eps.returncode == 0 and eps.stdout == "" and "no endpoints" in eps.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: cli\nports: []\n")
    refused = corral("services", "create", str(bad), server=url)
    assert refused.returncode == 2 and "is not a valid service" in refused.stderr and "ports" in refused.stderr
    rm = corral("services", "rm", sid, sid, server=url)
    assert rm.returncode == 1 and rm.stdout.strip() == f"{sid} deleted" and f"no service with id '{sid}'" in rm.stderr


def test_the_openapi_document_describes_the_service_body(server: Cluster) -> None:
    doc = server.get("/openapi.json")
    for method in ("post", "put"):
        path = "/v1/services" if method == "post" else "/v1/services/{service_id}"
        assert doc["paths"][path][method]["requestBody"]["content"]["application/yaml"]["schema"] == {
            "$ref": "#/components/schemas/ServiceSpec"}
    schemas = doc["components"]["schemas"]
    assert {"ServiceSpec", "ServicePortSpec"} <= set(schemas)
    assert schemas["ServiceSpec"]["properties"]["type"]["enum"] == ["ClusterIP", "NodePort"]


def test_a_full_node_port_range_is_a_503(server: Cluster) -> None:
    c = server
    made = []
    while True:
        r = _create(c, {**WEB, "name": f"fill{len(made)}", "type": "NodePort", "ports": [{"port": 80}]})
        if r.status_code != 201:
            break
        made.append(r.json()["id"])
        assert len(made) <= HIGH - LOW + 1, "more services than ports"
    assert r.status_code == 503 and f"no free node port left in {LOW}-{HIGH}" in r.json()["detail"], r.text
    assert made  # the range was not full before
    assert _create(c, {**WEB, "name": "fill-clusterip"}).status_code == 201  # ClusterIP needs no port
    for sid in made:
        assert c.client.delete(f"/v1/services/{sid}").status_code == 204
    assert _create(c, {**WEB, "name": "fill-after", "type": "NodePort", "ports": [{"port": 80}]}).status_code == 201
