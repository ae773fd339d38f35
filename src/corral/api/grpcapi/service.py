"""nomad-lite's SchedulerService (package ``scheduler``) over Corral's core. See docs/api/nomad-lite.md#grpc.

Each method does what its REST twin in dialects/nomadlite.py does, through the pieces both share
(dialects/nomadlite_core.py); errors are gRPC status codes as nomad-lite's document lists them. The store
is reached in a thread, so the event loop (shared with the HTTP server) never waits on it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from corral.api.dialects.base import DialectError
from corral.api.dialects.nomadlite_core import (
    Change,
    JobFacts,
    JobFilter,
    cancel_job,
    find_jobs,
    job_spec,
    job_uuid,
    jobs_facts,
    parse_job_id,
    state_changes,
    state_numbers,
)
from corral.api.grpcapi import leadership
from corral.api.grpcapi.proto import pb2
from corral.coordinator.errors import Invalid, Overloaded, ServiceError, Unavailable
from corral.coordinator.service import Coordinator

log = logging.getLogger("corral.grpc")
SERVICE = "scheduler.SchedulerService"
STATUS_NAMES = {0: "", 1: "pending", 2: "running", 3: "completed", 4: "failed", 5: "cancelled"}
STATUS_VALUES = {v: k for k, v in STATUS_NAMES.items() if v}
STREAM_CHUNK = 500  # jobs read per step of StreamJobs
LOG_DEFAULT, LOG_MAX = 100, 1000  # GetRaftLogEntries' limit


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _abort_of(e: DialectError) -> Abort:
    if e.code == "terminal":
        return Abort(grpc.StatusCode.FAILED_PRECONDITION, e.message)
    code = {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(
        e.status, grpc.StatusCode.INVALID_ARGUMENT)
    return Abort(code, e.message)


def _ms(ts: float | None) -> int:
    return math.floor(ts * 1000) if ts is not None else 0


@dataclass
class State:
    """What one server process knows beyond the store: whether it drains (DrainNode)."""

    draining: bool = False


class SchedulerService:
    def __init__(self, coord: Coordinator, address: str, api_token: str | None = None,
                 local_node: Callable[[], str | None] = lambda: None) -> None:
        self.coord = coord
        self.address = address
        self.api_token = api_token
        self.local_node = local_node  # the node id of this process's own worker (corral up), if any
        self.state = State()
        self.pb = pb2()

    # -- the methods ------------------------------------------------------------------------------
    async def SubmitJob(self, req: Any) -> Any:  # noqa: N802 - the method names are the .proto's
        image = req.image if req.HasField("image") else None
        spec = job_spec(req.command, image)  # INVALID_ARGUMENT before anything else, as nomad-lite
        if self.state.draining:
            raise Abort(grpc.StatusCode.UNAVAILABLE, "this node is draining: submit to another node")
        try:
            job = await asyncio.to_thread(self.coord.submit, spec)
        except Overloaded as e:
            raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from e
        except Unavailable as e:
            raise Abort(grpc.StatusCode.UNAVAILABLE, str(e)) from e
        except Invalid as e:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
        return self.pb.SubmitJobResponse(job_id=job_uuid(job["id"]), created_at_ms=_ms(job["created_at"]))

    async def CancelJob(self, req: Any) -> Any:  # noqa: N802
        jid = parse_job_id(req.job_id)
        await asyncio.to_thread(cancel_job, self.coord, jid)
        return self.pb.CancelJobResponse(success=True, message=f"job {job_uuid(jid)} cancelled")

    async def GetJobStatus(self, req: Any) -> Any:  # noqa: N802
        jid = parse_job_id(req.job_id)

        def read() -> JobFacts | None:
            with self.coord.store.read() as tx:
                job = tx.job(jid)
                return jobs_facts(tx, [job])[0] if job else None

        f = await asyncio.to_thread(read)
        if f is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"job {job_uuid(jid)} not found")
        out = self.pb.GetJobStatusResponse(
            job_id=f.job_id, status=STATUS_VALUES.get(f.status, 0), output=f.output or "", error=f.error or "",
            assigned_worker=f.worker or 0, executed_by=f.worker or 0, created_at_ms=_ms(f.created_at))
        if f.exit_code is not None:
            out.exit_code = f.exit_code
        if f.completed_at is not None:
            out.completed_at_ms = _ms(f.completed_at)
        return out

    def _info(self, f: JobFacts) -> Any:
        info = self.pb.JobInfo(job_id=f.job_id, command=f.command, status=STATUS_VALUES.get(f.status, 0),
                               assigned_worker=f.worker or 0, created_at_ms=_ms(f.created_at))
        if f.completed_at is not None:
            info.completed_at_ms = _ms(f.completed_at)
        return info

    def _page(self, f: JobFilter) -> tuple[list[JobFacts], int, str]:
        with self.coord.store.read() as tx:
            rows, total, token = find_jobs(tx, f)
            return jobs_facts(tx, rows, output=False), total, token

    async def ListJobs(self, req: Any) -> Any:  # noqa: N802
        if req.status_filter not in STATUS_NAMES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown status_filter {req.status_filter}")
        f = JobFilter(status=STATUS_NAMES[req.status_filter], worker=str(req.worker_id_filter or ""),
                      command=req.command_filter, created_after_ms=req.created_after_ms,
                      created_before_ms=req.created_before_ms, page_size=req.page_size, page_token=req.page_token)
        facts, total, token = await asyncio.to_thread(self._page, f)
        return self.pb.ListJobsResponse(jobs=[self._info(x) for x in facts], next_page_token=token,
                                        total_count=total)

    async def StreamJobs(self, req: Any) -> AsyncIterator[Any]:  # noqa: N802
        if req.status_filter not in STATUS_NAMES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown status_filter {req.status_filter}")
        token = ""
        while True:  # page by page, newest first: memory stays one page whatever the number of jobs
            f = JobFilter(status=STATUS_NAMES[req.status_filter], page_size=STREAM_CHUNK, page_token=token)
            facts, _, token = await asyncio.to_thread(self._page, f)
            for x in facts:
                yield self._info(x)
            if not token:
                return

    async def GetClusterStatus(self, req: Any) -> Any:  # noqa: N802
        state, members = await asyncio.to_thread(leadership.cluster_view, self.coord)
        me, leader = state_numbers(state)
        # This coordinator by its gRPC address (the others: by their API's).
        return self.pb.GetClusterStatusResponse(
            current_term=state.epoch, leader_id=leader or 0,
            nodes=[self.pb.NodeInfo(node_id=int(m["node_id"]), is_alive=bool(m["is_alive"]),
                                    address=self.address if (m["role"], m["node_id"]) == ("coordinator", me)
                                    else str(m["address"])) for m in members])

    def _command(self, c: Change) -> Any:
        pb = self.pb
        if c.kind == "submit":
            return pb.Command(submit_job=pb.SubmitJobCommand(job_id=c.job_id, created_at_ms=_ms(c.ts)))
        if c.kind == "assign":
            return pb.Command(assign_job=pb.AssignJobCommand(job_id=c.job_id, worker_id=c.worker or 0))
        if c.kind == "cancel":
            return pb.Command(cancel_job=pb.CancelJobCommand(job_id=c.job_id))
        u = pb.UpdateJobStatusCommand(job_id=c.job_id, status=STATUS_VALUES.get(c.status, 0),
                                      executed_by=c.worker or 0)
        if c.exit_code is not None:
            u.exit_code = c.exit_code
        if c.status not in ("running", "pending"):
            u.completed_at_ms = _ms(c.ts)
        return pb.Command(update_job_status=u)

    async def GetRaftLogEntries(self, req: Any) -> Any:  # noqa: N802
        limit = min(req.limit or LOG_DEFAULT, LOG_MAX)

        def read() -> tuple[int, list[Change], int]:
            term = self.coord.cluster_status().epoch
            with self.coord.store.read() as tx:
                return tx.state_change_count(), state_changes(*tx.state_change_rows()), term

        commit, changes, term = await asyncio.to_thread(read)
        first = commit - len(changes) + 1  # the changes of deleted jobs are gone, as compacted entries are
        start = max(req.start_index, first)
        entries = [self.pb.RaftLogEntryInfo(index=start + i, term=term, command=self._command(c), is_committed=True)
                   for i, c in enumerate(changes[start - first:start - first + limit])]
        return self.pb.GetRaftLogEntriesResponse(entries=entries, commit_index=commit, last_log_index=commit,
                                                 first_available_index=first)

    async def TransferLeadership(self, req: Any) -> Any:  # noqa: N802
        t = await asyncio.to_thread(leadership.transfer_leadership, self.coord, req.target_node_id)
        return self.pb.TransferLeadershipResponse(success=t.success, message=t.message, new_leader_id=t.new_leader_id)

    async def DrainNode(self, req: Any) -> Any:  # noqa: N802
        """This coordinator takes no new job (SubmitJob: UNAVAILABLE), its own worker (``corral up``) is
        drained (its running tasks finish, nothing new is placed on it), and leadership is handed over."""
        self.state.draining = True
        said = ["node is draining: it accepts no new job"]
        node = self.local_node()
        if node:
            try:
                await asyncio.to_thread(self.coord.admin_drain, node, None)
                said.append("its worker finishes its running tasks and takes no new work")
            except ServiceError as e:  # its worker is stopping by itself, say: it takes no new work either
                said.append(f"its worker: {e}")
        said.append(await asyncio.to_thread(leadership.hand_over, self.coord))
        return self.pb.DrainNodeResponse(success=True, message="; ".join(said))

    # -- serving ----------------------------------------------------------------------------------
    def _authorized(self, context: grpc.aio.ServicerContext) -> bool:
        if not self.api_token:
            return True
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        return hmac.compare_digest(str(given).encode(), f"Bearer {self.api_token}".encode())

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers, built from the .proto's own service descriptor."""
        desc = self.pb.DESCRIPTOR.services_by_name["SchedulerService"]
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for m in desc.methods:
            req_cls = getattr(self.pb, m.input_type.name)
            resp_cls = getattr(self.pb, m.output_type.name)
            impl = getattr(self, m.name)
            opts = {"request_deserializer": req_cls.FromString, "response_serializer": resp_cls.SerializeToString}
            if m.server_streaming:
                handlers[m.name] = grpc.unary_stream_rpc_method_handler(self._streaming(impl), **opts)
            else:
                handlers[m.name] = grpc.unary_unary_rpc_method_handler(self._unary(impl), **opts)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def _refuse(self, context: grpc.aio.ServicerContext, e: Exception) -> None:
        if isinstance(e, DialectError):
            e = _abort_of(e)
        if isinstance(e, Abort):
            await context.abort(e.code, e.message)
        log.exception("gRPC call failed")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (see the server's log)")

    def _unary(self, impl: Callable[[Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(req: Any, context: grpc.aio.ServicerContext) -> Any:
            if not self._authorized(context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "this server needs its access token: metadata authorization: Bearer <token>")
            try:
                return await impl(req)
            except (Abort, DialectError) as e:
                await self._refuse(context, e)
            except Exception as e:  # noqa: BLE001 - a bug answers INTERNAL, and is logged
                await self._refuse(context, e)
        return call

    def _streaming(self, impl: Callable[[Any], AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def call(req: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if not self._authorized(context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "this server needs its access token: metadata authorization: Bearer <token>")
            try:
                async for item in impl(req):
                    yield item
            except (Abort, DialectError) as e:
                await self._refuse(context, e)
            except Exception as e:  # noqa: BLE001
                await self._refuse(context, e)
        return call


async def start(service: SchedulerService, bind: str, port: int) -> grpc.aio.Server:
    """A grpcio asyncio server for ``service`` on ``bind:port``, in the running event loop."""
    # No SO_REUSEPORT (grpcio's default on Linux): a second server on a taken port must fail, not share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((service.handler(),))
    host = f"[{bind}]" if ":" in bind else bind
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpcio raises this when the port is taken
        raise OSError(f"cannot listen on {host}:{port} for gRPC ({e})") from e
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} for gRPC")
    await server.start()
    return server
