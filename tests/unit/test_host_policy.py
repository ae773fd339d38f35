"""The host policy's pure checks: bind mounts, limits, webhook addresses, idempotency keys."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from corral.coordinator.idempotency import check_key, fingerprint
from corral.coordinator.policy import DEFAULT_MEMORY, Policy, PolicyError, pod_container
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




# -- escalations an operator lets admins have (--allow-admin-escalation) --------------------------------------
def escalated(**asks: Any) -> JobSpec:
    return JobSpec.model_validate({"tasks": [{"name": "t", "image": "x", "run": "true", **asks}]})


@pytest.mark.parametrize(("asks", "kind"), [
    ({"privileged": True}, "privileged"), ({"cap_add": ["NET_ADMIN"]}, "cap_add"),
    ({"network_mode": "host"}, "host_network"), ({"pid": "host"}, "host_pid"), ({"ipc": "host"}, "host_ipc"),
    ({"devices": ["/dev/fuse"]}, "devices")])
def test_an_escalation_is_an_admins_on_a_server_that_allows_it(asks: dict[str, Any], kind: str) -> None:
    from corral.coordinator.policy import escalations_of
    spec = escalated(**asks)
    assert escalations_of(spec) == [kind]
    allowing = Policy(escalations=frozenset({kind}))
    allowing.check(spec, admin=True)
    allowing.check(spec, admin=None)  # no caller (a schedule firing): what the server allows
    with pytest.raises(PolicyError, match=f"not allowed to this caller.*--allow-admin-escalation {kind}"):
        allowing.check(spec, admin=False)
    with pytest.raises(PolicyError, match=f"not allowed on this server.*--allow-admin-escalation {kind}"):
        Policy().check(spec, admin=True)  # an admin, on a server that does not allow it
    others = Policy(escalations=frozenset({"privileged", "cap_add", "host_network", "host_pid", "host_ipc",
                                           "devices"}) - {kind})
    with pytest.raises(PolicyError):
        others.check(spec, admin=True)
    assert allowing.grants(spec.tasks[0].model_dump(exclude_none=True)) == {
        kind: asks[next(iter(asks))] if kind in ("cap_add", "devices") else True}
    assert others.grants(spec.tasks[0].model_dump(exclude_none=True)) == {}
    with pytest.raises(PolicyError, match="not allowed to this caller"):  # a restart checks the stored spec
        allowing.check_stored({"tasks": [spec.tasks[0].model_dump(exclude_none=True)]}, admin=False)


def test_escalations_never_reach_a_sidecar_or_go_with_a_shared_network() -> None:
    everything = Policy(escalations=frozenset({"privileged", "host_network"}))
    side = {"sidecars": [{"name": "s", "image": "x", "run": "true", "privileged": True}]}
    with pytest.raises(PolicyError, match="sidecar"):
        everything.check(escalated(**side), admin=True)
    with pytest.raises(PolicyError, match="sidecar"):
        everything.check_task({"image": "x", **side}, "t", admin=True)
    for shared in ({"ports": [{"port": 80}]}, {"probe": {"port": 80}}, {"networks": ["n"]}):
        with pytest.raises(PolicyError, match="host's network"):
            Policy(escalations=frozenset({"host_network"}), networks=("n",)).check(
                escalated(network_mode="host", **shared), admin=True)
    Policy(escalations=frozenset({"host_network"})).check(escalated(network_mode="host"), admin=True)


def test_escalation_kinds_and_fields_are_checked_as_given() -> None:
    from pydantic import ValidationError

    from corral.coordinator.policy import parse_escalations
    assert parse_escalations(["privileged,cap_add", " devices "]) == {"privileged", "cap_add", "devices"}
    assert len(parse_escalations("all")) == 6 and parse_escalations(()) == frozenset()
    with pytest.raises(ValueError, match="unknown escalation root"):
        parse_escalations("privileged,root")
    for bad in ({"network_mode": "bridge"}, {"pid": "container:x"}, {"devices": ["sda"]},
                {"cap_add": ["SYS ADMIN"]}):
        with pytest.raises(ValidationError):
            escalated(**bad)


def test_the_runtime_applies_exactly_what_was_granted() -> None:
    from corral.runtime.base import Escalations
    from corral.runtime.docker import hardening
    assert hardening(None) == {"privileged": False, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    assert hardening(Escalations(privileged=True)) == {"privileged": True}
    assert hardening(Escalations(cap_add=("NET_ADMIN",), host_pid=True, devices=("/dev/fuse",))) == {
        "privileged": False, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"], "cap_add": ["NET_ADMIN"],
        "pid_mode": "host", "devices": ["/dev/fuse"]}


def test_a_pods_escalations_go_through_the_same_check_and_grants() -> None:
    from corral.domain.pods import PodSpec, dump_pod
    from corral.runtime.base import Escalations

    def pod(**extra: Any) -> dict[str, Any]:
        sc = extra.pop("sc", None)
        c = {"name": "app", "image": "x", **({"securityContext": sc} if sc else {}), **extra.pop("container", {})}
        return dump_pod(PodSpec.model_validate({"name": "p", "containers": [c], **extra}))

    allowing = Policy(escalations=frozenset({"cap_add", "host_pid", "host_network"}))
    assert allowing.check_pod(pod(), admin=False) == []  # asks for nothing: anyone
    asks = pod(sc={"capabilities": {"add": ["NET_ADMIN"]}}, hostPID=True)
    assert allowing.check_pod(asks, admin=True) == ["cap_add", "host_pid"]
    with pytest.raises(PolicyError, match="pod 'p', container 'app': added capabilities is not allowed to this caller"):
        allowing.check_pod(asks, admin=False)
    with pytest.raises(PolicyError, match="privileged mode is not allowed on this server"):
        allowing.check_pod(pod(sc={"privileged": True}), admin=True)
    with pytest.raises(PolicyError, match="hostNetwork cannot go with ports"):
        allowing.check_pod(pod(hostNetwork=True, container={"ports": [{"containerPort": 80}]}), admin=True)
    assert allowing.check_pod(pod(hostNetwork=True), admin=True) == ["host_network"]
    # What an assignment is granted, and what a worker gives of it.
    granted = allowing.grants(pod_container(asks, asks["containers"][0]))
    assert granted == {"cap_add": ["NET_ADMIN"], "host_pid": True}
    assert Escalations.granted(granted, {"cap_add", "host_pid"}) == Escalations(cap_add=("NET_ADMIN",), host_pid=True)
    assert Escalations.granted({}, set()) is None
    with pytest.raises(ValueError, match="this worker does not allow host_pid"):
        Escalations.granted(granted, {"cap_add"})
