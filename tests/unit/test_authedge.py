"""Pure parts of worker credentials, TLS and the audit log: what a request counts as in the audit log, who
an entry names, how a client certificate's subject is read, which uvicorn options the TLS flags give, and
which parts of a spec are sealed at rest."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from corral.api import tls
from corral.coordinator import audit


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/jobs", "create"),
    ("POST", "/v1/jobs/batch", "create"),
    ("POST", "/v1/jobs/abc/cancel", "cancel"),
    ("POST", "/v1/jobs/abc/restart", "restart"),
    ("DELETE", "/v1/jobs/abc", "delete"),
    ("PUT", "/jobs/abc/cancel", "cancel"),  # Tork
    ("DELETE", "/api/jobs/abc", "delete"),  # nomad-lite
    ("POST", "/api/tasks/abc/cancel", "cancel"),  # CloudAI
    ("POST", "/stacks/batch-delete", "batch-delete"),
    ("PUT", "/v1/services/abc", "update"),
    ("POST", "/v1/nodes/abc/drain", "drain"),
    ("POST", "/v1/keys", "permission.create"),
    ("DELETE", "/v1/keys/abc", "permission.delete"),
    ("POST", "/v1/tokens", "permission.create"),
    ("DELETE", "/v1/tokens/abc", "permission.delete"),
    ("POST", "/users", "permission.create"),  # Tork's users
    # Not kept: reads, logins, and what workers report about their own work.
    ("GET", "/v1/jobs", None),
    ("HEAD", "/v1/jobs", None),
    ("POST", "/v1/auth/token", None),
    ("POST", "/v1/agent/register", None),
    ("POST", "/v1/agent/nodes/abc/report", None),
    ("PUT", "/api/v1/tasks/abc/status", None),  # Podling's worker report
    ("POST", "/api/v1/nodes/abc/heartbeat", None),
])
def test_which_requests_the_audit_log_keeps(method: str, path: str, expected: str | None) -> None:
    assert audit.action(method, path) == expected


def test_an_entry_names_the_identity_then_the_certificate_then_the_server_owner() -> None:
    assert audit.actor(SimpleNamespace(name="alice", role="user"), True, "w1") == "alice"
    assert audit.actor(None, True, "w1") == "cn:w1"
    assert audit.actor(None, True) == "local"
    assert audit.actor(None, False) == "anonymous"
    assert audit.actor(SimpleNamespace(name="", role="user"), False) == "anonymous"
    assert len(audit.actor(SimpleNamespace(name="x" * 1000), False)) == 200


def test_a_certificate_subject_and_common_name() -> None:
    peer = {"subject": ((("countryName", "FR"),), (("organizationName", "Acme"),), (("commonName", "node-7"),))}
    assert tls.subject(peer) == ("CN=node-7,O=Acme,C=FR", "node-7")
    assert tls.subject({"subject": ((("organizationName", "Acme"),),)}) == ("O=Acme", None)
    assert tls.subject(None) == (None, None)
    assert tls.subject({}) == (None, None)
    assert tls.client_cn({"state": {"client_cn": "node-7"}}) == "node-7"
    assert tls.client_cn({"state": {}}) is None
    assert tls.client_cn({}) is None


def test_tls_flags_give_uvicorns_options() -> None:
    assert tls.server_options(None, None, None) == {}
    assert tls.server_options("c.pem", "k.pem", None) == {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}
    both = tls.server_options("c.pem", "k.pem", "ca.pem")
    assert both["ssl_ca_certs"] == "ca.pem" and both["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert both["http"] is tls.CertProtocol
    for bad in (("c.pem", None, None), (None, "k.pem", None), (None, None, "ca.pem")):
        with pytest.raises(ValueError, match="go together"):
            tls.server_options(*bad)


# -- secrets sealed at rest ----------------------------------------------------------------------------
@pytest.fixture
def keys() -> Iterator[list[str]]:
    from corral.store import sealing
    ks = [sealing.new_key(), sealing.new_key()]
    sealing.configure(ks[:1])
    yield ks
    sealing.configure([])


def test_secrets_webhook_headers_registry_passwords_and_marked_text_are_sealed(keys: list[str]) -> None:
    from corral.store import sealing
    spec = {"name": "j", "secrets": {"tok": "s3cret-1"},
            "webhooks": [{"url": "http://h/x", "headers": {"Authorization": "hdr-s3cret"}}],
            "tasks": [{"name": "t", "image": "busybox", "registry": {"username": "u", "password": "pw-s3cret"},
                       "env": {"A": "plain"},
                       "subjob": {"secrets": {"deep": "deep-s3cret"}, "tasks": []}},
                      {"name": "u", "env": sealing.mark({"B": "x-s3cret-1-y", "C": "nothing"}, ["s3cret-1"])}]}
    stored = sealing.seal(spec)
    text = json.dumps(stored)
    for secret in ("s3cret-1", "hdr-s3cret", "pw-s3cret", "deep-s3cret"):
        assert secret not in text
    assert text.count(sealing.PREFIX) == 5
    assert stored["tasks"][0]["registry"]["username"] == "u" and stored["tasks"][0]["env"] == {"A": "plain"}
    assert stored["tasks"][1]["env"]["C"] == "nothing" and stored["webhooks"][0]["url"] == "http://h/x"
    assert sealing.unseal(json.loads(text)) == spec
    assert spec["secrets"] == {"tok": "s3cret-1"}  # the spec given is not changed


def test_a_rotated_key_still_opens_what_the_old_one_sealed(keys: list[str]) -> None:
    from corral.store import sealing
    old = sealing.seal({"secrets": {"a": "before rotation"}})
    sealing.configure([keys[1], keys[0]])  # a new key first, the old one after it
    new = sealing.seal({"secrets": {"a": "after rotation"}})
    assert sealing.unseal(old) == {"secrets": {"a": "before rotation"}}
    assert sealing.unseal(new) == {"secrets": {"a": "after rotation"}}
    sealing.configure([keys[1]])  # the old key dropped: what it sealed stays sealed (and is logged)
    assert sealing.unseal(old)["secrets"]["a"].startswith(sealing.PREFIX)
    with pytest.raises(ValueError, match="Fernet"):
        sealing.configure(["not a key"])


def test_without_a_key_nothing_is_sealed_and_key_files_parse() -> None:
    from corral.store import sealing
    spec = {"secrets": {"a": "b"}}
    assert sealing.seal(spec) == spec
    assert sealing.parse_keys("# keys\nk1\n\n k2 # old\n") == ["k1", "k2"]
    assert sealing.parse_keys("k1,k2") == ["k1", "k2"]


# -- hardening ---------------------------------------------------------------------------------------------
def test_what_a_hardened_container_never_gets_is_named_in_the_refusal() -> None:
    from corral.coordinator.policy import escalation, escalation_message
    assert escalation({"command": "true", "image": "x"}) is None
    msg = escalation({"command": "true", "privileged": True}, "tasks[0].")
    assert msg is not None and msg.startswith("tasks[0].privileged: privileged mode is not allowed")
    for field, what in (("tasks.0.cap_add", "added capabilities"), ("containers.0.hostNetwork", "the host's network"),
                        ("hostPID", "PID namespace"), ("tasks[1].devices", "host devices"), ("ipc_mode", "IPC")):
        refusal = escalation_message(field)
        assert refusal is not None and what in refusal and "--allow-admin-escalation" in refusal, field
    refusal = escalation_message("security_opt")
    assert refusal is not None and "no server allows it" in refusal
    assert escalation_message("tasks.0.env") is None and escalation_message("") is None
