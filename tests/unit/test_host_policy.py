"""The host policy's pure checks: bind mounts, limits, webhook addresses, idempotency keys."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from corral.coordinator.idempotency import check_key, fingerprint
from corral.coordinator.policy import DEFAULT_MEMORY, Policy, PolicyError
from corral.coordinator.webhooks import Refused, pick_address, refused_address
from corral.domain.spec import JobSpec
from corral.runtime.docker import Refused as MountRefused
from corral.runtime.docker import checked_bind


def job(mounts: list[dict[str, Any]], where: str = "top") -> JobSpec:
    task: dict[str, Any] = {"image": "x", "run": "true", "mounts": mounts}
    if where == "top":
        tasks = [task]
    elif where == "subjob":
        tasks = [{"subjob": {"tasks": [task]}}]
    elif where == "each":
        tasks = [{"each": {"list": "{{ [1] }}", "task": task}}]
    else:  # a post step
        tasks = [{"image": "x", "run": "true", "post": [task]}]
    return JobSpec.model_validate({"tasks": tasks})


@pytest.mark.parametrize("where", ["top", "subjob", "each", "post"])
def test_bind_mount_refused_at_any_depth(where: str) -> None:
    bind = [{"type": "bind", "source": "/etc", "target": "/h"}]
    with pytest.raises(PolicyError, match="not allowed"):
        Policy().check(job(bind, where))
    with pytest.raises(PolicyError, match="outside the allowed"):
        Policy(bind_roots=("/srv/data",)).check(job(bind, where))
    Policy(bind_roots=("/etc",)).check(job(bind, where))


def test_root_is_matched_by_components_not_by_prefix() -> None:
    p = Policy(bind_roots=("/srv/data",))
    p.check(job([{"type": "bind", "source": "/srv/data/x", "target": "/h"}]))
    with pytest.raises(PolicyError):
        p.check(job([{"type": "bind", "source": "/srv/database", "target": "/h"}]))


def test_check_task_covers_an_evaluated_or_stored_task() -> None:
    task = {"image": "x", "run": "true",
            "sidecars": [{"image": "x", "run": "true", "mounts": [{"type": "bind", "source": "/", "target": "/h"}]}]}
    with pytest.raises(PolicyError, match="sidecars"):
        Policy().check_task(task, "t")
    Policy().check_task({"image": "x", "mounts": [{"type": "volume", "source": "v", "target": "/v"}]}, "t")


def test_default_limits_apply_when_a_task_asks_for_none() -> None:
    p = Policy()
    assert p.limits({}) == (1.0, DEFAULT_MEMORY)
    assert p.limits({"cpu": 0, "memory": 0}) == (1.0, DEFAULT_MEMORY)  # 0 would be "no limit" to Docker
    assert p.limits({"cpu": 2, "memory": "1Gi"}) == (2.0, 2**30)
    assert Policy(default_cpu=None, default_memory=None).limits({}) == (None, None)


def test_checked_bind_resolves_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "sub").mkdir(parents=True)
    (root / "rootlink").symlink_to("/")
    (root / "inside").symlink_to(root / "sub")
    assert checked_bind(str(root / "sub"), (str(root),)) == str(root / "sub")
    assert checked_bind(str(root / "inside"), (str(root),)) == str(root / "sub")  # what is mounted: the real path
    with pytest.raises(MountRefused, match="really '/'"):
        checked_bind(str(root / "rootlink"), (str(root),))
    with pytest.raises(MountRefused, match="no bind mounts"):
        checked_bind(str(root / "sub"), ())


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254",
                                     "fe80::1", "0.0.0.0", "::", "224.0.0.1", "240.0.0.1", "100.64.0.1",
                                     "::ffff:127.0.0.1", "fc00::1"])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_are_not(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


def fake_dns(*answers: str) -> Any:
    def resolve(host: str, port: int, type: int = 0) -> list[Any]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in answers]
    return resolve


def test_every_address_of_a_name_is_checked_and_the_checked_one_used() -> None:
    assert pick_address("hooks.example", 443, frozenset(), fake_dns("8.8.8.8")) == "8.8.8.8"
    with pytest.raises(Refused, match="loopback"):  # one bad address among good ones is enough
        pick_address("hooks.example", 443, frozenset(), fake_dns("8.8.8.8", "127.0.0.1"))
    assert pick_address("localhost", 80, frozenset({"localhost"}), fake_dns("127.0.0.1")) is None
    assert pick_address("127.0.0.1", 80, frozenset({"127.0.0.1"})) is None
    with pytest.raises(Refused):
        pick_address("127.0.0.1", 80, frozenset({"10.0.0.1"}))


def test_idempotency_keys() -> None:
    assert check_key("a-key_1:2") == "a-key_1:2"
    for bad in ("", "x" * 256, "has space", "tab\t", "é"):
        with pytest.raises(ValueError):
            check_key(bad)
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


