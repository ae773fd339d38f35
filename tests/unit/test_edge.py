"""The pure parts of the API's edge: parsing bodies, content types, hosts and origins, limits, tokens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corral.api.body import MAX_DEPTH, BadBody, check_depth, kind_of, parse, parse_yaml
from corral.api.edge import EdgeConfig, EdgeMiddleware, body_limit, host_name
from corral.cli.api import find_token
from corral.domain.addresses import is_loopback
from tests.support import LAUGHS


def deep_json(n: int) -> bytes:
    return b"[" * n + b"]" * n


def deep_yaml(n: int) -> bytes:
    return "".join("  " * i + "a:\n" for i in range(n)).encode() + b"  " * n + b"x\n"


@pytest.mark.parametrize("raw,kind", [(deep_json(1000), "json"), (deep_json(100_000), "json"),
                                      (deep_yaml(1000), "yaml"), (deep_json(1000), "yaml")])
def test_deep_bodies_are_refused_naming_the_limit(raw: bytes, kind: str) -> None:
    with pytest.raises(BadBody) as e:
        parse(raw, kind)
    assert e.value.status == 400 and f"more than {MAX_DEPTH} levels" in str(e.value)


@pytest.mark.parametrize("fast", [True, False])  # libyaml's loader, and the pure Python one
@pytest.mark.parametrize("raw,words", [(deep_yaml(1000), "64 levels"), (b"[" * 1_000_000, "64 levels"),
                                       (b"- " * 100_000 + b"x", "64 levels"), (LAUGHS, "alias expansion limit"),
                                       (b"a: &a [1, *a]\n", "loop")])
def test_both_yaml_loaders_refuse_fast(raw: bytes, words: str, fast: bool) -> None:
    start = time.monotonic()
    with pytest.raises(BadBody) as e:
        parse_yaml(raw, fast=fast)
    assert words in str(e.value) and time.monotonic() - start < 2.0
    doc = b"defaults: &d {a: [1, 2]}\ntasks:\n- {<<: *d, run: x}\n- [" + b"[" * 60 + b"]" * 61 + b"\n"
    assert parse_yaml(doc, fast=fast)["tasks"][0] == {"a": [1, 2], "run": "x"}


def test_the_depth_limit_is_exact() -> None:
    assert parse(deep_json(MAX_DEPTH), "json") is not None
    assert parse(deep_json(MAX_DEPTH), "yaml") is not None
    for kind in ("json", "yaml"):
        with pytest.raises(BadBody):
            parse(deep_json(MAX_DEPTH + 1), kind)
    with pytest.raises(BadBody):
        check_depth({"a": [{"b": [1]}]}, 3)
    check_depth({"a": [{"b": [1]}]}, 4)


def test_billion_laughs_is_refused_fast_naming_the_limit() -> None:
    start = time.monotonic()
    with pytest.raises(BadBody) as e:
        parse(LAUGHS, "yaml")
    assert time.monotonic() - start < 1.0
    assert "alias expansion limit" in str(e.value) and "100000" in str(e.value)


def test_aliases_within_the_budget_and_merge_keys_work() -> None:
    raw = b"defaults: &d {image: alpine, env: {A: '1'}}\ntasks:\n" + b"".join(
        b"- {<<: *d, run: echo %d}\n" % i for i in range(200))
    data = parse(raw, "yaml")
    assert len(data["tasks"]) == 200 and data["tasks"][7] == {"image": "alpine", "env": {"A": "1"}, "run": "echo 7"}


def test_an_alias_inside_itself_is_refused() -> None:
    with pytest.raises(BadBody) as e:
        parse(b"a: &a [1, *a]\n", "yaml")
    assert "loop" in str(e.value)


@pytest.mark.parametrize("raw,kind,words", [(b"", "json", "empty"), (b"  \n", "yaml", "empty"),
                                            (b"{oops", "json", "not valid JSON"), (b"a: [", "yaml", "not valid YAML"),
                                            (b"\xff\xfe", "json", "not valid JSON"),
                                            (b'{"n": ' + b"9" * 5000 + b"}", "json", "not valid JSON"),
                                            (b"n: " + b"9" * 5000, "yaml", "not valid YAML"),
                                            (b"t: 2026-13-45", "yaml", "not valid YAML")])
def test_malformed_bodies(raw: bytes, kind: str, words: str) -> None:
    with pytest.raises(BadBody) as e:
        parse(raw, kind)
    assert e.value.status == 400 and words in str(e.value)


@pytest.mark.parametrize("ctype,yaml_ok,kind", [
    ("application/json", False, "json"), ("application/json; charset=utf-8", False, "json"),
    ("application/problem+json", False, "json"), ("Application/JSON", True, "json"),
    ("text/yaml", True, "yaml"), ("application/x-yaml", True, "yaml"), ("application/yaml", True, "yaml")])
def test_accepted_content_types(ctype: str, yaml_ok: bool, kind: str) -> None:
    assert kind_of(ctype, yaml_ok) == kind


@pytest.mark.parametrize("ctype,yaml_ok", [("text/plain", True), ("application/x-www-form-urlencoded", True),
                                           ("multipart/form-data; boundary=x", True), ("", True), (None, False),
                                           ("text/yaml", False), ("text/html", True)])
def test_refused_content_types_are_415(ctype: str | None, yaml_ok: bool) -> None:
    with pytest.raises(BadBody) as e:
        kind_of(ctype, yaml_ok)
    assert e.value.status == 415 and "application/json" in str(e.value)


def test_hosts_and_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")
    assert host_name("LocalHost:8000") == "localhost" and host_name("[::1]:80") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1" and host_name("::1") == "::1"
    cfg = EdgeConfig.for_bind("127.0.0.1", ["corral.test"])
    assert cfg.allowed_hosts is not None and {"localhost", "127.0.0.1", "::1", "corral.test"} <= cfg.allowed_hosts
    assert EdgeConfig.for_bind("0.0.0.0").allowed_hosts is None


@pytest.mark.parametrize("origin,host,scheme,same", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "http", True),
    ("http://localhost", "localhost:80", "ws", True),
    ("http://127.0.0.1:9999", "127.0.0.1:8000", "http", False),  # another local site
    ("http://evil.example", "127.0.0.1:8000", "http", False),
    ("http://localhost:8000", "127.0.0.1:8000", "http", False),
    ("null", "127.0.0.1:8000", "http", False),
    ("http://127.0.0.1:8000", None, "http", False),
])
def test_same_origin(origin: str, host: str | None, scheme: str, same: bool) -> None:
    assert EdgeMiddleware._same_origin(origin, host, scheme) is same


def test_body_limits_by_route() -> None:
    assert body_limit("POST", "/v1/jobs") == 10 * 1024 * 1024
    assert body_limit("POST", "/v1/jobs/batch") == 10 * 1024 * 1024
    assert body_limit("POST", "/v1/agent/nodes/abc/report") == 8 * 1024 * 1024
    assert body_limit("POST", "/api/tasks") == 1024 * 1024
    assert body_limit("PUT", "/v1/jobs") == 1024 * 1024


def test_find_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_token("http://127.0.0.1:8000") is None
    (tmp_path / ".corral").mkdir()
    (tmp_path / ".corral" / "token").write_text("from-cwd\n")
    assert find_token("http://127.0.0.1:8000") == "from-cwd"
    assert find_token("http://localhost:8000") == "from-cwd"
    assert find_token("http://corral.example.com") is None  # a token read from a file stays on this machine
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "token").write_text("from-data-dir")
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "d"))
    assert find_token("http://[::1]:8000") == "from-data-dir"
    monkeypatch.setenv("CORRAL_API_TOKEN", "given")
    assert find_token("http://corral.example.com") == "given"


def test_server_beyond_loopback_needs_auth_or_both_tokens_or_insecure() -> None:
    from click.testing import CliRunner

    from corral.cli.serve import server

    r = CliRunner().invoke(server, ["--bind", "0.0.0.0", "--port", "1"])
    assert r.exit_code == 2 and "without --auth (or --api-token and --token)" in r.output, r.output
    r = CliRunner().invoke(server, ["--bind", "10.1.2.3", "--token", "t", "--port", "1"])
    assert r.exit_code == 2 and "without --auth (or --api-token)" in r.output, r.output
