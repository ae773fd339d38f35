"""Namespace quotas: parsing what an admin sends, the reasons, and placement with budgets (pure)."""

from __future__ import annotations

import pytest

from corral.coordinator.stacks import stack_quota
from corral.domain import k8s
from corral.domain.quotas import Budgets, Quota, Usage, over, parse_quota
from corral.domain.resources import Resources
from corral.scheduler import NodeView, TaskView, plan
from corral.scheduler.pods import PodRequest, place_pods

GiB = 2**30


def _node(nid: str, cpu: float = 16) -> NodeView:
    return NodeView(nid, nid, Resources(cpu, 64 * GiB, 0, 4), Resources(), runtimes=frozenset({"docker"}),
                    free_gpus=[0, 1, 2, 3])


def _task(tid: str, ns: str, cpu: float = 2, gpu: int = 0, seq: int = 0) -> TaskView:
    return TaskView(tid, "j" + tid, "default", 0, seq, Resources(cpu, GiB, 0, gpu), "docker", {}, ns)


def test_the_document_says_what_parse_quota_accepts() -> None:
    import re

    from corral.api.native.quotas import _FIELDS
    cpu, mem = _FIELDS["cpu"]["anyOf"][1]["pattern"], _FIELDS["memory"]["anyOf"][1]["pattern"]
    for v in ("8", "0.5", "500m", "999999.999999", "999999999m"):
        assert re.fullmatch(cpu, v) and parse_quota({"cpu": v}).cpu is not None
    for v in ("16GB", "512Mi", "1k", "1kib", "999Ti", "999T", "1.5G", "999999999999999", "100b", "9999Gi"):
        assert re.fullmatch(mem, v) and parse_quota({"memory": v}).memory is not None


def test_parse_quota() -> None:
    assert parse_quota({"cpu": 8, "memory": "16GB", "gpus": 2, "tasks": 100, "pods": 20}) == Quota(
        8.0, 16 * 10**9, 2, 100, 20)
    assert parse_quota({"cpu": "500m"}) == Quota(cpu=0.5)
    assert parse_quota({"memory": 1024, "tasks": None, "pods": 0}) == Quota(memory=1024, pods=0)


@pytest.mark.parametrize(("body", "says"), [
    ({}, "at least one"), ([], "an object"), ({"cpus": 1}, "unknown quota field(s) cpus"),
    ({"cpu": -1}, "negative"), ({"cpu": "lots"}, "not a number of cores"), ({"cpu": float("nan")}, "cpu"),
    ({"cpu": True}, "cpu"), ({"memory": "16 parsecs"}, "memory"), ({"memory": -5}, "negative"),
    ({"gpus": 1.5}, "whole number"), ({"tasks": -1}, "0 or more"), ({"pods": "3"}, "whole number"),
    ({"tasks": 10**12}, "at most"), ({"cpu": 1e300}, "at most"), ({"cpu": 10**400}, "at most"),
    ({"memory": True}, "memory"), ({"memory": {}}, "memory must be a size"), ({"memory": [1]}, "memory must be a size"),
    ({"cpu": " 1"}, "cpu"), ({"cpu": "8\n"}, "cpu"), ({"memory": "16 GB"}, "memory"), ({"memory": 1.5}, "whole"),
    ({"memory": "9999Ti"}, "memory"),
])
def test_bad_quotas_say_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        parse_quota(body)
    assert says in str(e.value)


def test_reasons_name_the_quota() -> None:
    r = over("team-a", Quota(cpu=8), Usage(cpu=8), Resources(1, 0), "task")
    assert r is not None and r.startswith("namespace team-a is at its CPU quota: 8 of 8 cores in use")
    assert over("team-a", Quota(cpu=8), Usage(cpu=7), Resources(1, 0), "task") is None
    assert "memory quota: 1Gi of 1Gi" in str(over("n", Quota(memory=GiB), Usage(memory=GiB), Resources(0, 1), "pod"))
    assert "GPU quota: 2 of 2 GPUs" in str(over("n", Quota(gpus=2), Usage(gpus=2), Resources(0, 0, 0, 1), "task"))
    assert "running tasks quota: 3 of 3" in str(over("n", Quota(tasks=3), Usage(tasks=3), Resources(), "task"))
    assert over("n", Quota(tasks=3), Usage(tasks=3), Resources(), "pod") is None  # pods have their own count
    assert "pods quota: 1 of 1" in str(over("n", Quota(pods=1), Usage(pods=1), Resources(), "pod"))


def test_plan_keeps_a_namespace_within_its_quota_and_leaves_others_alone() -> None:
    budgets = Budgets({"team-a": Quota(cpu=4)}, {"team-a": Usage(cpu=2, tasks=1)})
    tasks = [_task("a1", "team-a", seq=1), _task("a2", "team-a", seq=2), _task("b1", "team-b", seq=3),
             _task("b2", "team-b", seq=4)]
    p = plan([_node("n")], tasks, "spread", budgets)
    assert sorted(pl.task_id for pl in p.placements) == ["a1", "b1", "b2"]
    assert p.reasons == {"a2": "namespace team-a is at its CPU quota: 4 of 4 cores in use, 2 more asked for"}
    assert budgets.usage["team-a"].cpu == 4 and budgets.usage["team-a"].tasks == 2
    assert "team-b" not in budgets.usage  # not bounded: not counted
    # Without budgets nothing changes.
    assert len(plan([_node("n")], tasks).placements) == 4


def test_a_small_task_behind_a_waiting_large_one_still_fits_the_quota() -> None:
    budgets = Budgets({"a": Quota(cpu=3, gpus=1)}, {})
    p = plan([_node("n")], [_task("big", "a", cpu=4, seq=1), _task("gpu1", "a", cpu=1, gpu=1, seq=2),
                             _task("gpu2", "a", cpu=1, gpu=1, seq=3), _task("small", "a", cpu=1, seq=4)],
             "spread", budgets)
    assert sorted(pl.task_id for pl in p.placements) == ["gpu1", "small"]
    assert "CPU quota" in p.reasons["big"] and "GPU quota" in p.reasons["gpu2"]


def test_pods_count_against_pods_and_resources() -> None:
    budgets = Budgets({"a": Quota(pods=1)}, {})
    pods = [PodRequest(f"p{i}", i, Resources(0.5, GiB), "docker", namespace=ns)
            for i, ns in enumerate(("a", "a", "b"))]
    result = place_pods([_node("n")], pods, {}, (30000, 30010), "spread", budgets)
    assert [pl.pod_id for pl in result.placements] == ["p0", "p2"]
    assert result.reasons == {"p1": "namespace a is at its pods quota: 1 of 1 pods placed or running"}


def test_the_stacks_namespace_quota_is_its_resource_quota() -> None:
    assert stack_quota(Quota(cpu=1.5, memory=GiB, gpus=3, pods=2)) == k8s.Quota(1500, GiB, 2)
    assert stack_quota(Quota(tasks=4)) == k8s.Quota()


class _Tx:
    """What nomad-lite's find_jobs asks of the store: the page size it asked for is recorded."""

    def __init__(self) -> None:
        self.limits: list[int] = []

    def find_jobs(self, **kw: object) -> tuple[list[dict[str, object]], int]:
        self.limits.append(int(str(kw["limit"])))
        return [], 0


@pytest.mark.parametrize(("asked", "read"), [(None, 100), (0, 100), (5, 5), (1000, 1000), (2**32 - 1, 1000)])
def test_list_jobs_pages_are_clamped_as_nomad_lite_does(asked: int | None, read: int) -> None:
    from corral.api.dialects.nomadlite_core import JobFilter, find_jobs
    tx = _Tx()
    find_jobs(tx, JobFilter(page_size=asked))  # type: ignore[arg-type]
    assert tx.limits == [read + 1]  # one more than the page: whether there is a next one


@pytest.mark.parametrize(("args", "message"), [
    (["quotas", "set", "team-a", "--cpu", "lots"], "not a number of cores"),
    (["quotas", "set", "team-a", "--memory", "16 parsecs"], "memory"),
    (["quotas", "set", "team-a"], "at least one"),
    (["quotas", "set", "team-a", "--tasks", "-1"], "--tasks"),
])
def test_corral_quotas_set_refuses_bad_values_before_asking(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from corral.cli import admin
    from corral.cli.main import cli
    cli.add_command(admin.quotas)
    result = CliRunner().invoke(cli, [*args, "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_cn_map_flag_is_cn_equals_user() -> None:
    from click.testing import CliRunner

    from corral.cli.serve import server
    result = CliRunner().invoke(server, ["--port", "8000", "--database-url", "sqlite:///:memory:",
                                         "--tls-cn-map", "no-user-here"])
    assert result.exit_code == 2 and "is not CN=USER" in result.output, result.output
