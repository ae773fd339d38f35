"""Stacks over the real coordinator, store and background loops (no HTTP): node ports running out, the
ResourceQuota under concurrent creates, the LimitRange, expiry exactly once with two coordinators on one
database, and batch-delete jobs' counts and error cap. Each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from corral.coordinator.errors import Invalid, NotFound, Overloaded
from corral.coordinator.loops import BackgroundLoops
from corral.coordinator.service import Coordinator, NodeInfo, Settings
from corral.coordinator.stacks import MAX_ERROR_CHARS, MAX_ERRORS, Stacks, StacksConfig
from corral.domain.k8s import LimitRange, Quota
from corral.store.sql import Store
from tests.harness import wait_until

SPEC = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: "
        "busybox\n    ports:\n    - containerPort: 80\n    resources:\n      limits: {cpu: 100m, memory: 64Mi}\n")
TCP80 = [{"container_port": 80, "protocol": "TCP"}]


class Core:
    """A coordinator with its loops and one registered (docker) node, on ``url``."""

    def __init__(self, url: str, ports: tuple[int, int] = (30000, 30100), **config: Any) -> None:
        self.store = Store(url)
        self.coord = Coordinator(self.store, Settings(node_port_range=ports))
        self.loops = BackgroundLoops(self.coord)
        self.loops.start()
        config.setdefault("placement_wait", 5.0)
        self.stacks = Stacks(self.coord, StacksConfig(**config))

    def add_node(self, name: str = "n1") -> str:
        return str(self.coord.register(NodeInfo(name=name, hostname=name, version="t", cpu=64, memory=2**36,
                                                disk=0, runtimes=["docker"], address="10.1.2.3"))["id"])

    def close(self) -> None:
        self.loops.stop()
        self.store.close()


@pytest.fixture
def core(database_url: str) -> Iterator[Core]:
    c = Core(database_url, ports=(30000, 30001), quota=Quota(stacks=50))
    c.add_node()
    yield c
    c.close()


def test_a_stack_is_placed_before_the_answer(core: Core) -> None:
    view = core.stacks.create(SPEC, TCP80)
    assert view["stack_id"].startswith("stack-") and len(view["stack_id"]) == 6 + 16
    assert view["status"] == "creating" and view["node_public_ip"] == "10.1.2.3" and view["node_id"]
    assert view["ports"] == [{"container_port": 80, "protocol": "TCP", "node_port": 30000}]
    pod = core.coord.pods.get(view["stack_id"])
    assert (pod["origin"], pod["namespace"], pod["restart_policy"]) == ("stacks", "stacks", "Never")


def test_no_free_node_port_is_a_503_that_leaves_nothing_behind(core: Core) -> None:
    a, b = core.stacks.create(SPEC, TCP80), core.stacks.create(SPEC, TCP80)
    assert {a["ports"][0]["node_port"], b["ports"][0]["node_port"]} == {30000, 30001}
    with pytest.raises(Overloaded, match="^no available nodeport"):
        core.stacks.create(SPEC, TCP80)
    assert {s["stack_id"] for s in core.stacks.list()} == {a["stack_id"], b["stack_id"]}
    live = [p["id"] for p in core.coord.pods.list(origin="stacks") if p["state"] not in ("terminated", "failed")]
    assert sorted(live) == sorted([a["stack_id"], b["stack_id"]])
    assert core.stacks.stats()["used_node_ports"] == 2


def test_no_node_at_all_is_a_503(database_url: str) -> None:
    """Refused as soon as the placement pass says why (not after placement_wait: the reason is the pass's)."""
    c = Core(database_url, placement_wait=60)
    try:
        with pytest.raises(Overloaded, match="^cluster saturated: no worker is registered and ready"):
            c.stacks.create(SPEC, TCP80)
        assert c.stacks.list() == []
    finally:
        c.close()


def test_the_quota_holds_under_concurrent_creates(database_url: str) -> None:
    c = Core(database_url, quota=Quota(cpu_milli=10_000, stacks=3))
    c.add_node()
    try:
        def one(_: int) -> str:
            try:
                c.stacks.create(SPEC, TCP80)
                return "ok"
            except Overloaded as e:
                return str(e)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        assert results.count("ok") == 3, results
        assert all(r.startswith("cluster saturated: exceeded quota") for r in results if r != "ok")
        assert len(c.stacks.list()) == 3
        stats = c.stacks.stats()
        assert (stats["total_stacks"], stats["reserved_cpu_milli"], stats["reserved_memory_bytes"]) == (
            3, 300, 3 * 64 * 2**20)
    finally:
        c.close()


def test_cpu_and_memory_quota(database_url: str) -> None:
    c = Core(database_url, quota=Quota(cpu_milli=150, memory_bytes=2**30))
    c.add_node()
    try:
        c.stacks.create(SPEC, TCP80)
        with pytest.raises(Overloaded, match="requested: cpu=100m, used: cpu=100m, limited: cpu=150m"):
            c.stacks.create(SPEC, TCP80)
    finally:
        c.close()


def test_the_limit_range_is_a_400_naming_the_violation(database_url: str) -> None:
    c = Core(database_url, limits=LimitRange(max_memory_bytes=32 * 2**20))
    c.add_node()
    try:
        with pytest.raises(Invalid, match="maximum memory usage per Container is 32Mi, but limit is 64Mi"):
            c.stacks.create(SPEC, TCP80)
        assert c.stacks.list() == [] and c.coord.pods.list(origin="stacks") == []
    finally:
        c.close()


def test_an_expired_stack_is_deleted_exactly_once_by_two_coordinators(database_url: str) -> None:
    one = Core(database_url, ttl=0.3)
    two = Core(database_url, ttl=0.3)
    try:
        one.add_node()
        ids = [one.stacks.create(SPEC, TCP80)["stack_id"] for _ in range(5)]
        time.sleep(0.35)
        go = threading.Barrier(2)
        counts: list[int] = []

        def expire(s: Stacks) -> None:
            go.wait()
            counts.append(s.expire_once())

        threads = [threading.Thread(target=expire, args=(s,)) for s in (one.stacks, two.stacks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(counts) == 2 and sum(counts) == 5, counts
        assert one.stacks.list() == []
        for sid in ids:
            with pytest.raises(NotFound):
                two.stacks.get(sid)
            assert one.coord.pods.get(sid)["desired"] == "stop"
    finally:
        one.close()
        two.close()


def test_a_batch_delete_job_counts_and_caps_its_errors(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    real = [core.stacks.create(SPEC, TCP80)["stack_id"]]
    job = core.stacks.start_batch_delete([*real, "stack-missing"])
    while core.stacks.run_batches_once():
        pass
    got = core.stacks.batch_job(job)
    assert (got["status"], got["total"], got["deleted"], got["not_found"], got["failed"]) == ("completed", 2, 1, 1, 0)
    assert "errors" not in got

    def broken(tx: object, stack_id: str) -> bool:
        raise RuntimeError("x" * 2000)

    monkeypatch.setattr(Stacks, "_take", staticmethod(broken))
    job = core.stacks.start_batch_delete([f"stack-{i}" for i in range(110)])
    while core.stacks.run_batches_once():
        pass
    got = core.stacks.batch_job(job)
    assert (got["status"], got["failed"], len(got["errors"])) == ("failed", 110, MAX_ERRORS)
    assert all(len(e["error"]) == MAX_ERROR_CHARS and e["error"].startswith("delete pod/service failed: ")
               for e in got["errors"])
    assert got["errors"][0]["stack_id"] == "stack-0"


def test_a_stack_whose_node_dies_is_node_deleted(database_url: str) -> None:
    c = Core(database_url)
    c.coord.settings.node_ttl, c.coord.settings.heartbeat_interval = 1.0, 0.2
    try:
        c.add_node()  # it never heartbeats: its lease runs out after a second
        s = c.stacks.create(SPEC, TCP80)
        assert s["status"] == "creating"
        wait = time.monotonic() + 20
        while c.stacks.get(s["stack_id"])["status"] != "node_deleted":
            assert time.monotonic() < wait, c.coord.pods.get(s["stack_id"])
            time.sleep(0.1)
        assert c.stacks.stats()["active_stacks"] == 0
    finally:
        c.close()


def test_two_coordinators_working_one_batch_count_each_stack_once(database_url: str) -> None:
    one, two = Core(database_url), Core(database_url)
    try:
        one.add_node()
        ids = [one.stacks.create(SPEC, TCP80)["stack_id"] for _ in range(6)]
        job = one.stacks.start_batch_delete([*ids, "stack-gone-1", "stack-gone-2"])
        go = threading.Barrier(2)

        def work(s: Stacks) -> None:
            go.wait()
            while s.batch_job(job)["status"] in ("queued", "running"):
                s.run_batches_once(0.05)

        threads = [threading.Thread(target=work, args=(s,)) for s in (one.stacks, two.stacks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        got = one.stacks.batch_job(job)
        assert (got["status"], got["total"], got["deleted"], got["not_found"], got["failed"]) == (
            "completed", 8, 6, 2, 0)
        assert one.stacks.list() == []
    finally:
        one.close()
        two.close()


def test_creates_waiting_for_placement_are_bounded(database_url: str) -> None:
    """POST /stacks waits for placement on a thread of the API's pool: past max_creating at once, a create
    is a 503 at once (it neither waits nor leaves a stack), and the ones under way end as before."""
    c = Core(database_url, placement_wait=30, max_creating=2)
    entered, held, place_once = threading.Event(), threading.Event(), c.coord.pods.place_once

    def held_pass() -> int:  # the placement pass waits for the test: the two creates wait for it
        entered.set()
        held.wait(30)
        return place_once()

    c.coord.pods.place_once = held_pass  # type: ignore[method-assign]
    try:
        c.coord.kick()
        assert entered.wait(10)
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(c.stacks.create, SPEC, TCP80) for _ in range(2)]
            wait_until(lambda: len(c.stacks.list()) == 2, 5)  # both are in, waiting for a node
            t = time.monotonic()
            with pytest.raises(Overloaded, match="^2 stack creates are under way"):
                c.stacks.create(SPEC, TCP80)
            assert time.monotonic() - t < 1.0 and len(c.stacks.list()) == 2
            held.set()  # the pass finds no node: both are refused at once, not after placement_wait
            for f in waiting:
                with pytest.raises(Overloaded, match="^cluster saturated"):
                    f.result(10)
        c.add_node()  # the bound is free again: a create goes through
        assert c.stacks.create(SPEC, TCP80)["status"] == "creating"
    finally:
        c.close()

