"""Worker credentials, the audit log and TLS, against real server and worker processes.

One server (an access token and a cluster token) serves the join-token and audit tests; the TLS test has its
own, with a CA, a server certificate and a client certificate made here with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Cluster, wait_until
from tests.support import corral

API_TOKEN, CLUSTER_TOKEN = "api-token-for-authedge", "cluster-token-for-authedge"
NODE_SECRET = "X-Corral-Node-Secret"
REG = {"name": "other", "cpu": 1, "memory": 1 << 30, "runtimes": ["process"]}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("authedge"))
    try:
        c.start_server("--api-token", API_TOKEN, "--token", CLUSTER_TOKEN)
        yield c
    finally:
        c.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _running_execution(c: Cluster, job_id: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        t = c.job(job_id)["tasks"][0]
        return t["executions"][-1] if t["state"] == "running" and t["executions"] else None
    return dict(wait_until(running, 20, what="the task to run"))


def test_a_worker_joins_with_a_join_token_and_its_credential_is_its_own(shared: Cluster) -> None:
    c = shared
    r = c.client.post("/v1/tokens", json={"kind": "worker", "ttl": 600})
    assert r.status_code == 201, r.text
    tok = r.json()
    assert tok["token"].startswith("cjt_") and tok["expires_at"] > time.time() and tok["created_by"] == "local"
    # A worker with the join token (and not the cluster token) registers and runs work.
    c.add_worker("joined", "--runtime", "process", "--token", tok["token"])
    job = c.submit({"tasks": [{"run": "sleep 30"}]})
    ex = _running_execution(c, job["id"])
    joined_dir = c.tmp / "w-joined"
    joined = (joined_dir / "node-id").read_text().strip()
    joined_secret = (joined_dir / "node-secret").read_text().strip()
    # Another node, joined with the same token: its credential does not reach the first node's work.
    r = c.client.post("/v1/agent/register", json=REG, headers=_bearer(tok["token"]))
    assert r.status_code == 200, r.text
    other, other_secret = r.json()["node_id"], r.json()["node_secret"]
    forged = {"updates": [{"execution_id": ex["id"], "state": "failed", "ts": time.time(), "exit_code": 1}]}
    r = c.client.post(f"/v1/agent/nodes/{other}/report", json=forged,
                      headers={**_bearer(tok["token"]), NODE_SECRET: other_secret})
    assert r.status_code == 403 and "not assigned" in r.json()["detail"], r.text
    r = c.client.post(f"/v1/agent/nodes/{joined}/report", json=forged,
                      headers={**_bearer(tok["token"]), NODE_SECRET: other_secret})
    assert r.status_code == 403, r.text  # another node's credential, for this node
    r = c.client.post(f"/v1/agent/nodes/{joined}/heartbeat", json={"running": []},
                      headers={**_bearer(tok["token"]), NODE_SECRET: "not-a-credential"})
    assert r.status_code == 401, r.text  # no node's credential at all
    assert c.job(job["id"])["tasks"][0]["state"] == "running"  # nothing of it was applied
    # The token never shows again; revoked, nobody new joins with it, and an unknown one is refused too.
    listed = c.get("/v1/tokens")["items"]
    assert [t["id"] for t in listed] == [tok["id"]] and tok["token"] not in str(listed)
    assert listed[0]["last_used_at"] is not None
    assert c.client.delete(f"/v1/tokens/{tok['id']}").status_code == 204
    assert c.client.delete(f"/v1/tokens/{tok['id']}").status_code == 404
    for bad in (tok["token"], "cjt_made-up"):
        r = c.client.post("/v1/agent/register", json=REG, headers=_bearer(bad))
        assert r.status_code == 401 and "join token" in r.json()["detail"], r.text
        assert bad not in r.text
    # A node that joined before comes back as itself (its own credential), but as no other node.
    r = c.client.post("/v1/agent/register", json={**REG, "id": other},
                      headers={**_bearer(tok["token"]), NODE_SECRET: other_secret})
    assert r.status_code == 200, r.text
    r = c.client.post("/v1/agent/register", json={**REG, "id": "e" * 32},
                      headers={**_bearer(tok["token"]), NODE_SECRET: other_secret})
    assert r.status_code == 401, r.text
    # The worker that joined keeps working (its node credential, not the token, is checked).
    r = c.client.post(f"/v1/agent/nodes/{joined}/heartbeat", json={"running": [ex["id"]]},
                      headers={**_bearer(tok["token"]), NODE_SECRET: joined_secret})
    assert r.status_code == 200, r.text
    c.client.post(f"/v1/jobs/{job['id']}/cancel")
    c.wait_job(job["id"])


def test_the_audit_log_names_who_changed_what(shared: Cluster) -> None:
    c = shared
    job = c.submit({"name": "audited", "tasks": [{"run": "sleep 30"}]})
    assert c.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    c.wait_job(job["id"])
    assert c.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    # Refused (no access token) and read-only requests are not changes; a query string is never kept.
    anon = httpx.Client(base_url=c.url, timeout=10)
    assert anon.post("/v1/jobs", json={"tasks": [{"run": "true"}]}).status_code == 401
    anon.close()
    assert c.client.post("/v1/jobs?secret_in_query=1", json={"tasks": [{"run": "true"}]}).status_code == 201
    items = c.get("/v1/audit?limit=100")["items"]
    mine = [(i["actor"], i["action"], i["method"], i["path"]) for i in items if job["id"] in i["path"]]
    assert mine == [("local", "delete", "DELETE", f"/v1/jobs/{job['id']}"),
                    ("local", "cancel", "POST", f"/v1/jobs/{job['id']}/cancel")]
    creates = [i for i in items if i["action"] == "create" and i["path"] == "/v1/jobs"]
    assert len(creates) >= 2 and all(i["status"] == 201 and i["actor"] == "local" for i in creates)
    assert "secret_in_query" not in str(items)
    assert not any(i["path"].startswith("/v1/agent/") for i in items)
    # Newest first, paged.
    assert [i["seq"] for i in items] == sorted((i["seq"] for i in items), reverse=True)
    page = c.get("/v1/audit?limit=1")
    assert len(page["items"]) == 1 and page["next_cursor"]
    nxt = c.get(f"/v1/audit?limit=1&cursor={page['next_cursor']}")
    assert nxt["items"][0]["seq"] < page["items"][0]["seq"]
    assert c.get("/v1/audit?action=cancel")["items"][0]["path"] == f"/v1/jobs/{job['id']}/cancel"
    assert c.client.get("/v1/audit?cursor=nonsense").status_code == 400
    assert c.client.get("/v1/audit?limit=0").status_code in (400, 422)
    # The commands: a join token made, listed and revoked; the audit log shows it.
    made = corral("tokens", "create", "--worker", "--ttl", "1h", server=c.url)
    assert made.returncode == 0 and made.stdout.startswith("cjt_"), made.stderr
    listed = corral("tokens", "ls", server=c.url)
    assert listed.returncode == 0 and made.stdout.strip() not in listed.stdout
    token_id = next(t["id"] for t in c.get("/v1/tokens")["items"] if t["revoked_at"] is None)
    assert token_id in listed.stdout
    assert corral("tokens", "revoke", token_id, server=c.url).returncode == 0
    shown = corral("audit", "--action", "permission.delete", "-o", "json", server=c.url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["items"][0]["path"] == f"/v1/tokens/{token_id}"


def test_secrets_are_encrypted_in_the_database_file_and_still_reach_the_task(shared: Cluster) -> None:
    c = shared
    c.add_worker("sealer", "--runtime", "process", "--token", CLUSTER_TOKEN)
    secret, header = "Sealed-Secret-Value-7d1f", "Header-Secret-Value-93ab"
    job = c.submit({"name": "sealed", "secrets": {"token": secret},
                    "tasks": [{"run": "printf '%s\\n' \"$TOKEN\" | tr a-z A-Z",  # its output is not the secret
                               "env": {"TOKEN": "{{ secrets.token }}"}}],
                    "webhooks": [{"url": "https://hooks.invalid/x", "headers": {"X-Auth": header}}]})
    done = c.wait_job(job["id"])
    assert done["state"] == "completed", done
    assert c.logs(job["id"]) == secret.upper() + "\n"  # the task received the secret
    assert secret not in str(c.job(job["id"])) and header not in str(c.job(job["id"]))
    # The raw database file (and its write-ahead log): no secret in clear text, and the key beside it.
    raw = b"".join(p.read_bytes() for p in c.tmp.glob("server.db*"))
    assert b"corral-sealed:v1:" in raw
    for text in (secret, header):
        assert text.encode() not in raw
    key = c.tmp / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text().strip()


STACK_POD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}  containers:\n  - name: app\n" \
            "    image: nginx:stable\n    ports:\n    - containerPort: 80\n" \
            "    resources:\n      limits: {{cpu: 100m, memory: 64Mi}}\n{container}"
ESCALATIONS: list[tuple[str, str, Any]] = [
    # (API, path, body asking for the escalation named by its key)
    ("native", "/v1/jobs", lambda k, v: {"tasks": [{"name": "t", "image": "busybox", "run": "true", k: v}]}),
    ("native pods", "/v1/pods", lambda k, v: {"name": "p", "containers": [{"name": "a", "image": "busybox", k: v}]}),
    ("tork", "/jobs", lambda k, v: {"name": "j", "tasks": [{"name": "t", "image": "busybox", "run": "true", k: v}]}),
    ("podling tasks", "/api/v1/tasks", lambda k, v: {"name": "t", "image": "busybox", k: v}),
    ("podling pods", "/api/v1/pods",
     lambda k, v: {"name": "p", "containers": [{"name": "a", "image": "busybox", k: v}]}),
    ("nomad-lite", "/api/jobs", lambda k, v: {"command": "true", "image": "busybox", k: v}),
]
ASKS = [("privileged", True), ("cap_add", ["SYS_ADMIN"]), ("hostNetwork", True), ("pid", "host"),
        ("ipc_mode", "host"), ("devices", ["/dev/sda:/dev/sda"])]


def test_escalations_are_refused_with_a_400_in_every_api(shared: Cluster) -> None:
    c = shared
    before = c.get("/v1/jobs?limit=1000")["total"], len(c.get("/v1/pods")["items"])
    for api, path, body in ESCALATIONS:
        for key, value in ASKS:
            r = c.client.post(path, json=body(key, value))
            assert r.status_code == 400 and key in r.text, (api, key, r.status_code, r.text)
            if api not in ("podling tasks", "podling pods"):  # Podling names the field it does not know
                assert "not allowed" in r.text, (api, key, r.text)
    # CloudAI (a few calls: its per-address limit is low).
    for key, value in ASKS[:2]:
        r = c.client.post("/api/tasks", json={"user_id": "u", "docker_image": "busybox", "command": "true", key: value})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == key, r.text
        assert "not allowed" in r.json()["error"]["details"]["reason"]
    # The Stacks API (a Pod manifest): privileged, added capabilities, host namespaces, host paths.
    for spec, container in (("", "    securityContext:\n      privileged: true\n"),
                            ("", "    securityContext:\n      capabilities:\n        add: [SYS_ADMIN]\n"),
                            ("  hostNetwork: true\n", ""), ("  hostPID: true\n", ""), ("  hostIPC: true\n", ""),
                            ("  volumes:\n  - name: v\n    hostPath: {path: /etc}\n", "")):
        r = c.client.post("/stacks", json={"target_port": [{"container_port": 80, "protocol": "TCP"}],
                                           "pod_spec": STACK_POD.format(spec=spec, container=container)})
        assert r.status_code == 400 and ("forbidden" in r.text or "is not allowed" in r.text), (spec, container, r.text)
    # Host bind mounts outside the allow-list (none here), natively and through Tork.
    mount = [{"type": "bind", "source": "/etc", "target": "/x"}]
    for path, body in (("/v1/jobs", {"tasks": [{"name": "t", "image": "busybox", "run": "true", "mounts": mount}]}),
                       ("/jobs", {"name": "j", "tasks": [{"name": "t", "image": "busybox", "run": "true",
                                                          "mounts": mount}]})):
        r = c.client.post(path, json=body)
        assert r.status_code == 400 and "bind mounts are not allowed" in r.text, r.text
    # Nothing was made.
    assert (c.get("/v1/jobs?limit=1000")["total"], len(c.get("/v1/pods")["items"])) == before


# -- TLS ---------------------------------------------------------------------------------------------
def _cert(path: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *,
          ca: bool = False, ip: str | None = None) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    cert = b.sign(issuer_key, hashes.SHA256())
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return subject, key


@pytest.mark.slow  # a server and a worker of its own
def test_tls_with_a_ca_made_here_and_client_certificates(cluster: Cluster, tmp_path: Path) -> None:
    ca = _cert(tmp_path / "ca", "corral test CA", None, ca=True)
    _cert(tmp_path / "server", "coordinator", ca, ip="127.0.0.1")
    _cert(tmp_path / "ops", "ops-admin", ca)
    _cert(tmp_path / "node", "tls-node", ca)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    ctx.load_cert_chain(str(tmp_path / "ops.pem"), str(tmp_path / "ops.key"))
    cluster.client.close()
    cluster.url = f"https://127.0.0.1:{cluster.port}"
    cluster.client = httpx.Client(base_url=cluster.url, timeout=30, verify=ctx)
    cluster.start_server("--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
                         "--tls-client-ca", str(tmp_path / "ca.pem"))
    # A worker that verifies the coordinator (and presents a certificate of its own) joins and works.
    cluster.add_worker("tls-node", "--runtime", "process", "--ca", str(tmp_path / "ca.pem"),
                       "--tls-cert", str(tmp_path / "node.pem"), "--tls-key", str(tmp_path / "node.key"))
    job = cluster.submit({"tasks": [{"run": "echo over tls"}]})
    assert cluster.wait_job(job["id"])["state"] == "completed"
    assert cluster.logs(job["id"]) == "over tls\n"
    # The caller's certificate names it (here, in the audit log); one without a certificate is anonymous.
    entry = wait_until(lambda: [i for i in cluster.get("/v1/audit")["items"] if i["path"] == "/v1/jobs"], 10)
    assert entry[0]["actor"] == "cn:ops-admin"
    # A client that does not trust the CA is refused by its own check; plain HTTP gets no answer.
    with httpx.Client(base_url=cluster.url, timeout=5) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get("/healthz")
    with httpx.Client(base_url=f"http://127.0.0.1:{cluster.port}", timeout=5) as plain, \
            pytest.raises(httpx.HTTPError):
        plain.get("/healthz")
    # A certificate from another CA is refused at the handshake.
    other = _cert(tmp_path / "rogue-ca", "rogue CA", None, ca=True)
    _cert(tmp_path / "rogue", "ops-admin", other)
    rogue_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    rogue_ctx.load_cert_chain(str(tmp_path / "rogue.pem"), str(tmp_path / "rogue.key"))
    with httpx.Client(base_url=cluster.url, timeout=5, verify=rogue_ctx) as rogue, pytest.raises(httpx.HTTPError):
        rogue.get("/healthz")
