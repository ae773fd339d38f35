"""Namespace quotas in the store and the Stacks ResourceQuota they stand for, over the real coordinator and
store (no HTTP), on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest

from corral.coordinator.errors import Overloaded
from corral.domain.k8s import Quota
from tests.integration.test_stacks_core import SPEC, TCP80, Core


def _put(core: Core, ns: str, **bounds: object) -> None:
    row = {"namespace": ns, "cpu": None, "memory": None, "gpus": None, "tasks": None, "pods": None, **bounds,
           "updated_by": "test", "updated_at": time.time()}
    with core.store.transaction() as tx:
        tx.put_quota(row)


def test_the_stacks_namespace_quota_is_its_resource_quota(database_url: str) -> None:
    core = Core(database_url, quota=Quota(stacks=50))  # the global --stacks-quota: the default
    try:
        core.add_node()
        _put(core, "stacks", pods=1)
        _put(core, "stacks", cpu=0.15, pods=5)  # replaced, not added
        with core.store.read() as tx:
            assert list(tx.quotas()) == ["stacks"]
            assert (tx.quota("stacks") or {})["pods"] == 5
        first = core.stacks.create(SPEC, TCP80)
        with core.store.read() as tx:
            used = tx.namespace_usage(["stacks", "team-a"])["stacks"]
        assert (used.pods, round(used.cpu, 3), used.memory, used.tasks) == (1, 0.1, 64 * 2**20, 0)
        with pytest.raises(Overloaded, match="exceeded quota: requested: cpu=100m, used: cpu=100m, limited: "
                                             "cpu=150m"):
            core.stacks.create(SPEC, TCP80)
        with core.store.transaction() as tx:
            assert tx.delete_quota("stacks") and not tx.delete_quota("stacks")
        second = core.stacks.create(SPEC, TCP80)  # back to --stacks-quota
        assert {s["stack_id"] for s in core.stacks.list()} == {first["stack_id"], second["stack_id"]}
    finally:
        core.close()
