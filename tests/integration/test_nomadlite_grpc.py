"""nomad-lite's gRPC SchedulerService on a real `corral up`, through a client generated in the test from the
seed's own .proto (/work/shared/seeds/nomad-lite-scheduler.proto, not the project's copy): a name or a field
number that drifts from nomad-lite's fails here. Every method, and each error code of the document's tables.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from tests.harness import Cluster, wait_until

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "nomad-lite-scheduler.proto"
if not SEED.exists():  # the seeds sit beside the checkout: /work/shared next to /work/<checkout>
    SEED = Path("/work/shared/seeds/nomad-lite-scheduler.proto")


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """The messages and the stub generated from the seed's .proto with grpcio-tools."""
    from grpc_tools import protoc
    if not SEED.exists():
        pytest.fail(f"the seed {SEED} is missing: it is the contract these tests check against")
    out = tmp_path_factory.mktemp("seedproto")
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{SEED.parent}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(SEED)])
    assert code == 0
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("nomad_lite_scheduler_pb2")
        rpc = importlib.import_module("nomad_lite_scheduler_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb, rpc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # a short backpressure limit, so RESOURCE_EXHAUSTED can be reached with a few jobs
    c = Cluster(tmp_path_factory.mktemp("nomadlite-grpc"))
    c.up("--max-pending", "10", "--grpc-port", str(c.grpc_port))
    yield c
    c.close()


@pytest.fixture(scope="module")
def api(server: Cluster, seed: tuple[ModuleType, ModuleType]) -> Iterator[Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield seed[1].SchedulerServiceStub(channel)
    channel.close()


def _md(server: Cluster) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {server.token}")]


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def _wait_status(api: Any, pb: ModuleType, server: Cluster, job_id: str, statuses: set[int]) -> Any:
    def reached() -> Any:
        r = api.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=_md(server), timeout=5)
        return r if r.status in statuses else None
    return wait_until(reached, 30, what=f"job {job_id} to reach {statuses}")


def test_access_token(server: Cluster, api: Any, seed: tuple[ModuleType, ModuleType]) -> None:
    pb = seed[0]
    code, msg = _code(lambda: api.ListJobs(pb.ListJobsRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in msg
    code, _ = _code(lambda: api.ListJobs(pb.ListJobsRequest(), metadata=[("authorization", "Bearer nope")],
                                         timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert api.ListJobs(pb.ListJobsRequest(), metadata=_md(server), timeout=5).total_count >= 0


def test_jobs(server: Cluster, api: Any, seed: tuple[ModuleType, ModuleType]) -> None:
    pb, md = seed[0], _md(server)
    before = int(time.time() * 1000) - 1
    r = api.SubmitJob(pb.SubmitJobRequest(command="echo grpc-hello; echo oops >&2"), metadata=md, timeout=10)
    assert uuid.UUID(r.job_id) and r.created_at_ms >= before
    done = _wait_status(api, pb, server, r.job_id, {pb.JOB_STATUS_COMPLETED})
    assert done.job_id == r.job_id and done.output == "grpc-hello\n" and done.error == "oops\n"
    assert done.HasField("exit_code") and done.exit_code == 0
    assert done.executed_by == done.assigned_worker != 0 and done.created_at_ms == r.created_at_ms
    assert done.HasField("completed_at_ms") and done.completed_at_ms >= done.created_at_ms
    # the same job through the REST API: the same worker number
    assert server.get(f"/api/jobs/{r.job_id}")["executed_by"] == done.executed_by

    failed = api.SubmitJob(pb.SubmitJobRequest(command="exit 3"), metadata=md, timeout=10).job_id
    f = _wait_status(api, pb, server, failed, {pb.JOB_STATUS_FAILED})
    assert f.exit_code == 3 and "exit code 3" in f.error

    # CancelJob: a running job is cancelled; again, it is in a terminal state
    slow = api.SubmitJob(pb.SubmitJobRequest(command="sleep 30"), metadata=md, timeout=10).job_id
    _wait_status(api, pb, server, slow, {pb.JOB_STATUS_RUNNING})
    c = api.CancelJob(pb.CancelJobRequest(job_id=slow), metadata=md, timeout=10)
    assert c.success and slow in c.message
    assert api.GetJobStatus(pb.GetJobStatusRequest(job_id=slow), metadata=md).status == pb.JOB_STATUS_CANCELLED
    code, msg = _code(lambda: api.CancelJob(pb.CancelJobRequest(job_id=slow), metadata=md, timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already cancelled" in msg

    # ListJobs: filters, paging, total_count of the filtered set
    lst = api.ListJobs(pb.ListJobsRequest(status_filter=pb.JOB_STATUS_COMPLETED), metadata=md)
    assert r.job_id in [j.job_id for j in lst.jobs] and all(j.status == pb.JOB_STATUS_COMPLETED for j in lst.jobs)
    assert lst.total_count == len(lst.jobs)
    info = next(j for j in lst.jobs if j.job_id == r.job_id)
    assert info.command == "echo grpc-hello; echo oops >&2" and info.assigned_worker == done.executed_by
    assert info.created_at_ms == r.created_at_ms and info.completed_at_ms == done.completed_at_ms
    by_cmd = api.ListJobs(pb.ListJobsRequest(command_filter="GRPC-HELLO"), metadata=md)
    assert [j.job_id for j in by_cmd.jobs] == [r.job_id]
    by_worker = api.ListJobs(pb.ListJobsRequest(worker_id_filter=done.executed_by), metadata=md)
    assert {r.job_id, failed} <= {j.job_id for j in by_worker.jobs}
    assert api.ListJobs(pb.ListJobsRequest(worker_id_filter=12345), metadata=md).total_count == 0
    window = api.ListJobs(pb.ListJobsRequest(created_after_ms=r.created_at_ms, created_before_ms=r.created_at_ms),
                          metadata=md)
    assert [j.job_id for j in window.jobs] == [r.job_id]
    page1 = api.ListJobs(pb.ListJobsRequest(page_size=2), metadata=md)
    assert len(page1.jobs) == 2 and page1.next_page_token and page1.total_count >= 3
    page2 = api.ListJobs(pb.ListJobsRequest(page_size=2, page_token=page1.next_page_token), metadata=md)
    assert not {j.job_id for j in page1.jobs} & {j.job_id for j in page2.jobs}
    assert [j.job_id for j in [*page1.jobs, *page2.jobs]][:3] == [slow, failed, r.job_id]  # newest first

    # StreamJobs: every job, one message each; with a filter, only those
    streamed = list(api.StreamJobs(pb.StreamJobsRequest(), metadata=md, timeout=10))
    assert {r.job_id, failed, slow} <= {j.job_id for j in streamed}
    only = list(api.StreamJobs(pb.StreamJobsRequest(status_filter=pb.JOB_STATUS_FAILED), metadata=md, timeout=10))
    assert [j.job_id for j in only] == [failed]

    # GetRaftLogEntries: the committed state changes, in order, with indexes that end at commit_index
    log = api.GetRaftLogEntries(pb.GetRaftLogEntriesRequest(), metadata=md, timeout=10)
    assert log.commit_index == log.last_log_index == server.get("/api/cluster")["commit_index"]
    assert log.entries and all(e.is_committed for e in log.entries)
    assert [e.index for e in log.entries] == list(range(log.first_available_index,
                                                        log.first_available_index + len(log.entries)))
    mine = [e.command for e in log.entries if r.job_id in str(e.command)]
    kinds = [c.WhichOneof("command_type") for c in mine]
    assert kinds == ["submit_job", "assign_job", "update_job_status", "update_job_status", "update_job_status"]
    assert mine[0].submit_job.created_at_ms == r.created_at_ms
    assert mine[1].assign_job.worker_id == done.executed_by
    assert mine[-1].update_job_status.status == pb.JOB_STATUS_COMPLETED
    assert any(c.command.WhichOneof("command_type") == "cancel_job" and c.command.cancel_job.job_id == slow
               for c in log.entries)
    tail = api.GetRaftLogEntries(pb.GetRaftLogEntriesRequest(start_index=log.commit_index - 1, limit=5),
                                 metadata=md)
    assert [e.index for e in tail.entries] == [log.commit_index - 1, log.commit_index]


def test_errors(server: Cluster, api: Any, seed: tuple[ModuleType, ModuleType]) -> None:
    pb, md = seed[0], _md(server)
    for command in ("", "   ", "x" * 1025):
        code, msg = _code(lambda c=command: api.SubmitJob(pb.SubmitJobRequest(command=c), metadata=md))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert "1025 bytes" in msg
    assert api.SubmitJob(pb.SubmitJobRequest(command="é" * 512), metadata=md).job_id  # 1024 bytes: accepted
    for call in (lambda: api.GetJobStatus(pb.GetJobStatusRequest(job_id="not-a-uuid"), metadata=md),
                 lambda: api.CancelJob(pb.CancelJobRequest(job_id="123"), metadata=md)):
        code, msg = _code(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "UUID" in msg
    unknown = str(uuid.uuid4())
    for call in (lambda: api.GetJobStatus(pb.GetJobStatusRequest(job_id=unknown), metadata=md),
                 lambda: api.CancelJob(pb.CancelJobRequest(job_id=unknown), metadata=md)):
        code, msg = _code(call)
        assert code == grpc.StatusCode.NOT_FOUND and unknown in msg
    code, _ = _code(lambda: api.ListJobs(pb.ListJobsRequest(page_token="garbage"), metadata=md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _code(lambda: api.ListJobs(pb.ListJobsRequest(created_after_ms=-1), metadata=md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_backpressure(server: Cluster, api: Any, seed: tuple[ModuleType, ModuleType]) -> None:
    pb, md = seed[0], _md(server)
    local = next(n for n in server.nodes() if n["name"] == "local")
    # the only worker drained (the REST route): what is submitted waits, until the server is full
    r = server.client.post(f"/v1/nodes/{local['id']}/drain", json={})
    assert r.status_code == 200 and r.json()["state"] == "draining", r.text
    ids: list[str] = []
    refused: grpc.RpcError | None = None
    try:
        for _ in range(30):
            ids.append(api.SubmitJob(pb.SubmitJobRequest(command="echo waited"), metadata=md, timeout=10).job_id)
    except grpc.RpcError as e:
        refused = e
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    assert "at most 10" in (refused.details() or "") and len(ids) <= 10
    assert all(api.GetJobStatus(pb.GetJobStatusRequest(job_id=j), metadata=md).status == pb.JOB_STATUS_PENDING
               for j in ids)
    r = server.client.post(f"/v1/nodes/{local['id']}/undrain")
    assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["drain"] is None, r.text
    for j in ids:  # undrained: the waiting jobs run
        _wait_status(api, pb, server, j, {pb.JOB_STATUS_COMPLETED})


def test_cluster_transfer_and_drain(server: Cluster, api: Any, seed: tuple[ModuleType, ModuleType]) -> None:
    pb, md = seed[0], _md(server)
    cs = api.GetClusterStatus(pb.GetClusterStatusRequest(), metadata=md)
    rest = server.get("/api/cluster")
    assert cs.leader_id == 1 and cs.current_term == rest["current_term"] > 0
    assert [(n.node_id, n.is_alive) for n in cs.nodes] == [(n["node_id"], n["is_alive"]) for n in rest["nodes"]]
    assert cs.nodes[0].address == f"127.0.0.1:{server.grpc_port}"

    t = api.TransferLeadership(pb.TransferLeadershipRequest(target_node_id=0), metadata=md)
    assert not t.success and t.new_leader_id == 1 and "no other live coordinator" in t.message
    t = api.TransferLeadership(pb.TransferLeadershipRequest(target_node_id=7), metadata=md)
    assert not t.success and "no coordinator 7" in t.message

    # DrainNode (last: it drains this server): new jobs are refused with UNAVAILABLE, the local worker drains
    d = api.DrainNode(pb.DrainNodeRequest(), metadata=md)
    assert d.success and "draining" in d.message
    code, msg = _code(lambda: api.SubmitJob(pb.SubmitJobRequest(command="echo late"), metadata=md))
    assert code == grpc.StatusCode.UNAVAILABLE and "draining" in msg
    local = next(n for n in server.nodes() if n["name"] == "local")
    assert local["state"] == "draining" and local["drain"] and local["drain"]["deadline"] is None
