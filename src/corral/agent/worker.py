"""The agent loop: register, long-poll for work, run it, ship output and results, heartbeat.

Reports are buffered and sent in batches. An execution stays in the agent's ``known`` set until the
coordinator has acknowledged its final report, so that a poll never hands the same work out twice, and a
coordinator that is briefly unreachable loses nothing: the buffer is sent again once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corral import __version__
from corral.agent import capacity
from corral.agent.forward import Forwarder
from corral.agent.lock import lock_dir, unlock
from corral.agent.logbuf import LogBuffer, fit_update, next_report
from corral.agent.pods import PodAgent
from corral.agent.transport import Refused, Rejected, Transport, UnknownNode
from corral.domain.addresses import is_loopback
from corral.domain.resources import parse_duration
from corral.runtime import scratch
from corral.runtime.base import (
    Escalations,
    Held,
    Mount,
    Probe,
    PublishedPort,
    RegistryAuth,
    RunRequest,
    RunResult,
    Runtime,
    Scratch,
    Sidecar,
)

log = logging.getLogger("corral.agent")
COALESCE_S = 0.005
PROGRESS_INTERVAL_S = 1.0  # how often a running task's progress file is read
REGISTER_ANSWER_WAIT_S = 5.0  # a stop during registration waits this long for the answer in flight
SERVICES_INTERVAL_S = 1.0  # how often the NodePort services to forward are read


REFUSED_LINE = "[corral: a line the coordinator refused was dropped]"


def _bare(item: dict[str, Any]) -> dict[str, Any]:
    """An update or a line without what the coordinator could refuse in it: an update keeps its state
    (and an error saying what was left out), a line becomes a marker."""
    if "line" in item:
        return {**item, "line": REFUSED_LINE}
    out = {"execution_id": item["execution_id"], "state": item["state"], "ts": item["ts"]}
    if item["state"] != "running":
        code = item.get("exit_code")
        if isinstance(code, int) and -(1 << 31) <= code < 1 << 32:
            out["exit_code"] = code
        out["error"] = "[corral: the coordinator refused this update's details (output, error); they were dropped]"
    return out


@dataclass
class AgentConfig:
    name: str = field(default_factory=socket.gethostname)
    data_dir: str = ".corral/worker"
    runtimes: list[str] = field(default_factory=lambda: ["docker"])
    queues: list[str] = field(default_factory=lambda: ["default"])
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None  # override what is detected
    memory: int | None = None
    gpus: list[dict[str, Any]] | None = None  # override detection (None: ask nvidia-smi)
    poll_wait: float = 20.0
    # The address users reach this node's pods at (None: its primary IP); pods' ports are published on
    # it when it is a loopback address, else on every interface.
    advertise_address: str | None = None
    # The escalations this worker's operator lets an admin's task have (--allow-admin-escalation): an
    # assignment granted more by the coordinator fails, saying so; none: every container stays hardened.
    escalations: frozenset[str] = frozenset()


def make_runtimes(names: list[str]) -> dict[str, Runtime]:
    out: dict[str, Runtime] = {}
    for name in names:
        if name == "process":
            from corral.runtime.process import ProcessRuntime
            out["process"] = ProcessRuntime()
        elif name == "docker":
            from corral.runtime.docker import DockerRuntime
            if DockerRuntime.available():
                out["docker"] = DockerRuntime()
            else:
                log.warning("the Docker Engine does not answer: this worker offers no docker runtime")
        else:
            raise ValueError(f"unknown runtime '{name}': use docker or process")
    return out


class Agent:
    def __init__(self, config: AgentConfig, transport: Transport,
                 runtimes: dict[str, Runtime] | None = None) -> None:
        self.config = config
        self.transport = transport
        self.runtimes = runtimes if runtimes is not None else make_runtimes(config.runtimes)
        self.node_id: str | None = None
        self.heartbeat_interval = 3.0
        self.known: set[str] = set()  # started here, final report not yet acknowledged
        self.running: dict[str, asyncio.Task[None]] = {}
        self._stopped_by_coordinator: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        # Output lines waiting to be shipped: bounded (see corral.agent.logbuf), sent in bounded batches.
        self._logs = LogBuffer()
        self._final: set[str] = set()  # executions whose final update sits in the buffer
        self._flush_now = asyncio.Event()
        self._log_full: set[str] = set()  # running executions whose stored log is full
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False
        # The executions' output and progress files (see corral.runtime.scratch); absolute, as a
        # container task's bind mount needs.
        self.scratch_base = os.path.abspath(os.path.join(config.data_dir, "executions"))
        self._scratch_ready = False
        # Running executions whose progress file is read: id -> [path, last value sent, [container id]].
        # One loop reads them all, rather than a timer per execution: a quick task pays a dict insert.
        self._progress: dict[str, list[Any]] = {}
        self._lock: IO[str] | None = None  # the node directory's lock, held while this agent lives
        self._abandoned: set[str] = set()  # stopped by stop(): no final report, handed back by leave
        self._stopped = False
        self.address = config.advertise_address or capacity.primary_address()
        self.pods: PodAgent | None = None  # made once registered
        # NodePort services (corral.agent.forward), opened where the pods' ports are published
        self.forwarder = Forwarder(self.address if is_loopback(self.address) else "0.0.0.0")

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def id_file(self) -> Path:
        return Path(self.config.data_dir) / "node-id"

    @property
    def secret_file(self) -> Path:
        """The node's secret (mode 0600): it proves this node's identity to the coordinator."""
        return Path(self.config.data_dir) / "node-secret"

    def _info(self) -> dict[str, Any]:
        cap = capacity.detect(self.config.data_dir)
        gpus = self.config.gpus if self.config.gpus is not None else cap["gpus"]
        info = {"name": self.config.name, "hostname": socket.gethostname(), "version": __version__,
                "cpu": self.config.cpus if self.config.cpus is not None else cap["cpu"],
                "memory": self.config.memory if self.config.memory is not None else cap["memory"],
                "disk": cap["disk"], "gpus": gpus, "labels": self.config.labels,
                "runtimes": sorted(self.runtimes), "queues": self.config.queues,
                "address": self.address}
        if self.id_file.exists():
            node_id = self.id_file.read_text().strip() or None
            secret = self.secret_file.read_text().strip() if self.secret_file.exists() else ""
            if node_id and secret:
                info["id"] = node_id
                self.transport.node_secret = secret
            elif node_id:
                # Registered by a Corral without node secrets: that identity cannot be proven, so
                # this worker joins as a new node (the old one's work is rescheduled when it expires).
                log.warning("no secret for node %s in %s: registering as a new node", node_id, self.config.data_dir)
        return info

    def _save_identity(self, node_id: str, secret: str | None) -> None:
        self.id_file.parent.mkdir(parents=True, exist_ok=True)
        if secret:
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(secret)
        self.id_file.write_text(node_id)

    async def start(self) -> None:
        """Take the node directory (DirLocked if another process has it), clear what a previous run left,
        and register (Refused if the coordinator refuses the token or this node's secret)."""
        if self._lock is None:
            self._lock = await asyncio.to_thread(lock_dir, self.config.data_dir)
        info = await asyncio.to_thread(self._info)
        # A previous run of this worker (same node id) may have left attempts that still run, or that
        # ended with a status that can be read: they are claimed at registration, and the coordinator
        # keeps those it still wants here (adoption; see docs/operations.md "Worker restarts").
        held: dict[str, tuple[Runtime, Held]] = {}
        if info.get("id"):
            for rt in self.runtimes.values():
                find = getattr(rt, "held", None)
                if find is not None:
                    for h in await find(info["id"], self.scratch_base):
                        held.setdefault(h.execution_id, (rt, h))
        self.known |= set(held)
        kept = await self._register(info)
        self.known -= set(held) - set(kept)
        if info.get("id"):
            # What the coordinator did not keep (cancelled, or placed again after this node's lease ran
            # out) is stopped and removed, as is anything else a previous run left.
            for rt in self.runtimes.values():
                removed = await rt.reap(info["id"], set(kept))
                if removed:
                    log.info("removed %d attempt(s) left from a previous run", len(removed))
        # Everything else in the scratch area is a leftover of a worker that crashed.
        if await asyncio.to_thread(scratch.remove_all, self.scratch_base, set(kept)):
            log.info("removed the scratch files left from a previous run")
        self._scratch_ready = True
        for ex_id, facts in kept.items():
            rt, h = held[ex_id]
            log.info("execution %s, left running by a previous run of this worker, is adopted", ex_id[:12])
            self.running[ex_id] = asyncio.create_task(self._resume(rt, h, facts))
        self._loops = [asyncio.create_task(self._poll_loop(), name="agent-poll"),
                       asyncio.create_task(self._heartbeat_loop(), name="agent-heartbeat"),
                       asyncio.create_task(self._flush_loop(), name="agent-flush"),
                       asyncio.create_task(self._progress_loop(), name="agent-progress"),
                       asyncio.create_task(self._services_loop(), name="agent-services")]
        self.pods = PodAgent(self, host_ip=self.address if is_loopback(self.address) else "0.0.0.0")
        self._loops.append(asyncio.create_task(self.pods.run(), name="agent-pods"))

    async def _register(self, given: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Register (again); returns the executions among those claimed (``known``) that the coordinator
        keeps on this node, each with ``log_bytes`` (its output stored), ``timeout`` and ``elapsed``."""
        info: dict[str, Any] = given if given is not None else await asyncio.to_thread(self._info)
        delay = 0.2
        while True:
            call = asyncio.ensure_future(self.transport.register(info, sorted(self.known)))
            try:
                out = await asyncio.shield(call)
                break
            except asyncio.CancelledError:
                # Asked to stop while the request was out: the coordinator may have made this node already,
                # so its answer (the node's id and secret) is still waited for, briefly, and kept; a worker
                # stopped there would otherwise come back as a new node.
                with contextlib.suppress(Exception):
                    done = await asyncio.wait_for(call, REGISTER_ANSWER_WAIT_S)
                    await asyncio.to_thread(self._save_identity, str(done["node_id"]), done.get("node_secret"))
                raise
            except Refused:
                raise  # a wrong token or secret stays wrong: retrying cannot help
            except Exception as e:  # the coordinator is not up yet, or restarting
                log.warning("cannot register with the coordinator (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.node_id = str(out["node_id"])
        self.heartbeat_interval = float(out.get("heartbeat_interval", 3.0))
        if out.get("node_secret"):
            self.transport.node_secret = str(out["node_secret"])
        await asyncio.to_thread(self._save_identity, self.node_id, out.get("node_secret"))
        log.info("registered as node %s (%s) with runtimes %s", self.node_id, self.config.name,
                 ", ".join(sorted(self.runtimes)) or "none")
        kept = out.get("kept")  # an older coordinator says nothing: none is kept
        return {str(k): dict(v) for k, v in kept.items() if isinstance(v, dict)} if isinstance(kept, dict) else {}

    async def serve(self, stop: asyncio.Event, grace: float) -> None:
        """Run until ``stop`` is set (SIGTERM, Ctrl-C), then shut down within ``grace`` seconds (see
        shutdown; setting ``stop`` again stops at once). Every wait, registration included, gives way
        to ``stop``. Raises Refused when the coordinator refuses this worker, DirLocked when another
        process owns the node directory."""
        asked = asyncio.create_task(stop.wait())
        starting = asyncio.create_task(self.start())
        try:
            await asyncio.wait({asked, starting}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # asked to stop before it could register
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return
            starting.result()
            done, _ = await asyncio.wait({asked, *self._loops}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not asked and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]  # a loop ends only on Refused
            await self.shutdown(grace, stop)
        finally:
            asked.cancel()
            await self.stop()

    async def shutdown(self, grace: float, now: asyncio.Event | None = None) -> None:
        """Leave in good order: the coordinator is told at once (no new work for this node, and what it
        was given but has not started is handed back), what runs may finish within ``grace`` seconds
        (or until ``now`` is set), then the rest is stopped and handed back by stop()."""
        for t in self._loops:
            if t.get_name() == "agent-poll":
                t.cancel()
        if self.node_id is not None:
            try:
                handed = await asyncio.wait_for(self.transport.drain(self.node_id, sorted(self.known)), 10)
                self._stop(handed)
            except Exception as e:
                log.warning("could not tell the coordinator that this node stops (%s)", e)
        running = [t for t in self.running.values() if not t.done()]
        if not running or grace <= 0:
            return
        log.warning("stopping: waiting up to %gs for %d running task(s)", grace, len(running))
        # Not cancelled afterwards: cancelling a gather cancels what it waits for; stop() does that.
        finished: asyncio.Future[Any] = asyncio.gather(*running, return_exceptions=True)
        again: asyncio.Task[Any] | None = None
        if now is not None:
            now.clear()
            again = asyncio.create_task(now.wait())
        await asyncio.wait({finished} | ({again} if again else set()), timeout=grace,
                           return_when=asyncio.FIRST_COMPLETED)
        if again is not None:
            again.cancel()

    def _owed(self) -> bool:
        """Reports not yet sent, or sent and not yet acknowledged (an execution that ended stays known
        until then; those stopped by stop() itself owe nothing: they are handed back)."""
        return bool(self._updates or self._logs or (self.known - self._abandoned - set(self.running)))

    async def stop(self) -> None:
        """Stop now: kill what runs, send the reports owed, and leave: the coordinator marks this node
        down and hands what still ran here to other nodes at once. Then the node directory is free."""
        if self._stopped:
            return
        self._stopped = True
        self._closing = True
        flush = [t for t in self._loops if t.get_name() == "agent-flush"]
        others = [t for t in self._loops if t not in flush]
        for t in others:
            t.cancel()
        for t in list(self.running.values()):
            t.cancel()
        if self.pods is not None:  # the node leaves: its pods stop, and are placed elsewhere
            await self.pods.close()
        await asyncio.gather(*others, *self.running.values(), return_exceptions=True)
        if flush and self._owed():  # the last updates (what finished) go before the node leaves
            deadline = time.monotonic() + 3.0
            while self._owed() and not flush[0].done() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        for t in flush:
            t.cancel()
        await asyncio.gather(*flush, return_exceptions=True)
        await self.forwarder.close()
        if self.node_id is not None:
            try:
                await asyncio.wait_for(self.transport.leave(self.node_id), 5)
            except Exception as e:
                log.warning("could not tell the coordinator that this node left (%s); it will be marked "
                            "down when its lease expires", e)
        await self.transport.close()
        unlock(self._lock)
        self._lock = None

    async def run_forever(self) -> None:
        await self.start()
        await asyncio.gather(*self._loops)

    # -- loops --------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        delay = 0.2
        while True:
            assert self.node_id is not None
            try:
                work, stop = await self.transport.poll(self.node_id, sorted(self.known), self.config.poll_wait)
                delay = 0.2
            except UnknownNode:
                await self._register()
                continue
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as e:
                log.warning("poll failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._stop(stop)
            if not work and not stop and self.pods is not None:
                self.pods.changed()  # woken for something else: its pods (or the wait ran out)
            for w in work:
                if w["execution_id"] not in self.known:
                    self.known.add(w["execution_id"])
                    self.running[w["execution_id"]] = asyncio.create_task(self._execute(w))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            assert self.node_id is not None
            try:
                stop = await self.transport.heartbeat(self.node_id, sorted(self.known), capacity.usage())
                self._stop(stop)
            except UnknownNode:
                await self._register()
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as e:
                log.warning("heartbeat failed: %s", str(e) or type(e).__name__)

    async def _services_loop(self) -> None:
        """Every second, the NodePort services to forward here and their ready endpoints; while the
        coordinator does not answer, forwarding goes on to the endpoints it gave last."""
        while True:
            assert self.node_id is not None
            try:
                await self.forwarder.apply(await self.transport.node_services(self.node_id))
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as e:  # UnknownNode too: the heartbeat registers again
                log.debug("reading this node's services failed: %s", e)
            await asyncio.sleep(SERVICES_INTERVAL_S)

    def _stop(self, ids: list[str]) -> None:
        for ex_id in ids:
            task = self.running.get(ex_id)
            if task is not None:
                self._stopped_by_coordinator.add(ex_id)
                task.cancel()
            elif ex_id not in self._final:
                self.known.discard(ex_id)  # nothing runs and nothing is owed: forget it

    async def _progress_loop(self) -> None:
        """Every PROGRESS_INTERVAL_S, a "running" update for each execution whose progress file holds a
        new number in 0..100 (anything else in it is ignored); then the files that executions without a
        scratch directory of their own left behind are removed (see corral.runtime.scratch)."""
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            for ex_id, watch in list(self._progress.items()):
                value = scratch.read_progress(watch[0])
                if value is not None and value != watch[1]:
                    watch[1] = value
                    self._update(ex_id, "running", container_id=watch[2][0], progress=value)
            try:
                scratch.sweep(self.scratch_base, self.running)
            except OSError as e:
                log.warning("cannot clear the scratch area %s: %s", self.scratch_base, e)

    async def _flush_loop(self) -> None:
        """Ship the buffered updates and output, a bounded batch per report, until nothing is left.

        An execution's final update travels only with or after its last lines, so that a finished
        job's log is complete the moment it shows as finished.
        """
        delay = 0.1
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), 0.1)
            if not self._updates and not self._logs:
                self._flush_now.clear()
                continue
            # A moment to gather more: a quick task's start and end then travel (and are applied)
            # together, and many tasks share one transaction.
            await asyncio.sleep(COALESCE_S)
            self._flush_now.clear()
            logs, updates, self._updates = next_report(self._updates, self._logs)
            self._final -= {u["execution_id"] for u in updates if u["state"] != "running"}
            parts = [(logs, updates)]
            try:
                full = await self._report(parts)
                delay = 0.1
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as e:
                # Keep what was not sent, oldest first, and send it again.
                unsent_logs = [ln for lg, _ in parts for ln in lg]
                unsent = [u for _, up in parts for u in up]
                self._updates = unsent + self._updates
                self._logs.put_back(unsent_logs)
                self._final |= {u["execution_id"] for u in unsent if u["state"] != "running"}
                if isinstance(e, UnknownNode):
                    await self._register()
                else:
                    log.warning("report failed (%s); retrying in %.1fs", e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                continue
            if full:  # their stored log is full: the rest of their output is not wanted
                running = set(full) & set(self.running)
                self._log_full |= running
                self._logs.forget(running)
            if self._logs or self._updates:
                self._flush_now.set()  # more to send: at once

    async def _report(self, parts: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> list[str]:
        """Send ``parts`` (``(lines, updates)`` each, oldest first), removing each from the list once the
        coordinator has it; returns the executions whose stored log is full. On a failure the parts
        left are what was not sent.

        A part the coordinator refuses as it is (Rejected: a 400, 413 or 422 would come again) is split
        in two, and so on down to the item it refuses. That one is sent once more without what can be
        refused (an update's output and error, a line's text), and dropped if refused again; a log line
        says which. Either way the reports after it flow: a bad item never stalls the node."""
        assert self.node_id is not None
        full: list[str] = []
        while parts:
            logs, updates = parts[0]
            try:
                full += await self.transport.report(self.node_id, updates, logs)
            except Rejected as e:
                n = len(logs) + len(updates)
                if n > 1:  # lines before updates, as they are applied: a final update after its lines
                    mid = n // 2
                    cut = max(0, mid - len(logs))
                    parts[0:1] = [(logs[:mid], updates[:cut]), (logs[mid:], updates[cut:])]
                    continue
                item = (logs or updates)[0]
                bare = _bare(item)
                what = "an output line" if logs else f"a '{item['state']}' update"
                if bare != item:
                    log.warning("the coordinator refused %s of execution %s (%s); sending it without its "
                                "text", what, item["execution_id"], e)
                    parts[0] = ([bare], []) if logs else ([], [bare])
                    continue
                log.warning("the coordinator refused %s of execution %s (%s); dropped", what,
                            item["execution_id"], e)
            parts.pop(0)
            self.known -= {u["execution_id"] for u in updates if u["state"] != "running"}
        return full

    # -- one execution ------------------------------------------------------------------------
    def _update(self, ex_id: str, state: str, **fields: Any) -> None:
        ts = time.time()
        if state != "running":
            self._final.add(ex_id)
            self._logs.close(ex_id, ts)  # what was dropped of its output is said before its end
        # Its output and error cut to what a report holds and the coordinator accepts.
        self._updates.append({"execution_id": ex_id, "state": state, "ts": ts, **fit_update(fields)})
        self._flush_now.set()

    async def _resume(self, rt: Runtime, h: Held, facts: dict[str, Any]) -> None:
        """Follow an attempt a previous run of this worker started (adopted at registration) to its end,
        as _execute does: its output and progress, its timeout (what is left of it), its final update,
        its scratch removed."""
        ex_id = h.execution_id
        path = f"{self.scratch_base}/{ex_id}"
        own = os.path.isdir(path)
        sc = Scratch(output=f"{path}/output", progress=f"{path}/progress", dir=path) if own else \
            Scratch(output=f"{path}.output", progress=f"{path}.progress")
        container: list[str | None] = [h.handle]

        def on_output(stream: str, line: str) -> bool:
            if ex_id in self._log_full:
                return True
            if self._logs.add(ex_id, stream, line, time.time()) and len(self._logs) >= 500:
                self._flush_now.set()
            return not self._logs.behind(ex_id)

        def on_started(cid: str | None) -> None:
            container[0] = cid
            self._update(ex_id, "running", container_id=cid)
            self._progress[ex_id] = [sc.progress, None, container]

        try:
            timeout = facts.get("timeout")
            left = None if not isinstance(timeout, int | float) else max(timeout - float(facts.get("elapsed") or 0), 0)
            try:
                async with asyncio.timeout(left):
                    result: RunResult = await rt.resume(  # type: ignore[attr-defined]
                        h, int(facts.get("log_bytes") or 0), on_output, on_started)
            except TimeoutError:
                self._progress.pop(ex_id, None)
                self._update(ex_id, "failed", error=f"timed out after {timeout:g}s", exit_code=124,
                             container_id=container[0])
                return
            self._progress.pop(ex_id, None)
            fields: dict[str, Any] = {"exit_code": result.exit_code}
            output = scratch.read_output(sc.output)
            if output is not None:
                fields["output"] = output
            if result.error:
                self._update(ex_id, "failed", error=result.error, container_id=container[0], **fields)
            else:
                self._update(ex_id, "completed" if result.exit_code == 0 else "failed",
                             container_id=container[0], **fields)
            log.info("adopted execution %s ended, exit code %s", ex_id[:12], result.exit_code)
        except asyncio.CancelledError:
            if not self._cancelled(ex_id, container[0]):
                raise
        except Exception as e:
            log.exception("adopted execution %s failed in the agent", ex_id)
            self._update(ex_id, "failed", error=f"the worker failed to follow it after a restart: {e}")
        finally:
            self._forget(ex_id)
            if not scratch.remove_quick(sc):
                await asyncio.shield(asyncio.to_thread(scratch.remove, sc))

    def _cancelled(self, ex_id: str, container_id: str | None) -> bool:
        """An attempt's task was cancelled: recorded as stopped by the coordinator, or left for the next run
        of the worker when this one is closing; False when the cancellation is neither (it goes on up)."""
        if ex_id in self._stopped_by_coordinator:
            self._update(ex_id, "cancelled", error="stopped by the coordinator", container_id=container_id)
        elif self._closing:
            self._abandoned.add(ex_id)
        else:
            return False
        return True

    def _forget(self, ex_id: str) -> None:
        """What the agent kept about an attempt while it ran."""
        self._progress.pop(ex_id, None)
        self.running.pop(ex_id, None)
        self._log_full.discard(ex_id)
        self._stopped_by_coordinator.discard(ex_id)

    async def _execute(self, w: dict[str, Any]) -> None:
        """Run one execution to its end and buffer its updates.

        Around the run: the execution's scratch (made here, removed here, whatever happens), its
        progress file watched by _progress_loop while it runs, and its output file read when it ends,
        completed or failed (a timeout too), and sent with the final update.
        """
        ex_id = w["execution_id"]
        runtime_name = "docker" if w.get("image") else "process"
        rt = self.runtimes.get(runtime_name)
        container: list[str | None] = [None]
        sc: Scratch | None = None
        had_output = False

        def on_output(stream: str, line: str) -> bool:
            """Buffer the line; False (slow down) once the execution's output is behind."""
            if ex_id in self._log_full:
                return True  # not wanted: read on at full speed
            if self._logs.add(ex_id, stream, line, time.time()) and len(self._logs) >= 500:
                self._flush_now.set()
            return not self._logs.behind(ex_id)

        def on_started(cid: str | None) -> None:
            container[0] = cid
            self._update(ex_id, "running", container_id=cid)
            if sc is not None:
                self._progress[ex_id] = [sc.progress, None, container]

        what = f"task {w.get('task_name')} of job {str(w.get('job_id'))[:12]} (execution {ex_id[:12]})"
        log.info("%s starts: %s", what, f"image {w['image']}" if w.get("image") else "a host process")
        begun = time.monotonic()

        def ended(state: str, **fields: Any) -> None:
            nonlocal had_output
            code = fields.get("exit_code")
            # Not its error: that may quote the command, and with it a secret.
            log.info("%s %s after %.1fs%s", what, state, time.monotonic() - begun,
                     "" if code is None else f", exit code {code}")
            self._progress.pop(ex_id, None)  # no progress after the end
            output = scratch.read_output(sc.output) if sc is not None else None
            if output is not None:
                fields["output"] = output
                had_output = True
            self._update(ex_id, state, container_id=container[0], **fields)

        try:
            if rt is None:
                self._update(ex_id, "failed", error=f"this node has no {runtime_name} runtime")
                return
            mounts = tuple(Mount(type=m["type"], target=m["target"], source=m.get("source"),
                                 readonly=bool(m.get("readonly"))) for m in w.get("mounts") or ())
            sidecars = tuple(Sidecar(name=s.get("name") or f"sidecar-{i}", image=s.get("image") or w["image"],
                                     argv=list(s.get("argv") or ()), entrypoint=s.get("entrypoint"),
                                     env=dict(s.get("env") or {}))
                             for i, s in enumerate(w.get("sidecars") or ()))
            files = dict(w.get("files") or {})
            policy = w.get("policy") or {}  # the coordinator's: what mounts may reach, checked as they are made
            if not self._scratch_ready:
                os.makedirs(self.scratch_base, exist_ok=True)
                self._scratch_ready = True
            sc = scratch.make(self.scratch_base, ex_id, own_dir=runtime_name == "docker" or bool(files))
            req = RunRequest(execution_id=ex_id, job_id=w["job_id"], task_id=w["task_id"],
                             task_name=w["task_name"], node_id=self.node_id or "", argv=w["argv"],
                             image=w.get("image"), entrypoint=w.get("entrypoint"), env=w.get("env") or {},
                             workdir=w.get("workdir"), cpu_limit=w.get("cpu_limit"),
                             memory_limit=w.get("memory_limit"), gpus=tuple(w.get("gpus") or ()),
                             files=files, mounts=mounts, sidecars=sidecars, scratch=sc,
                             bind_roots=tuple(policy.get("bind_roots") or ()),
                             volumes=tuple(policy.get("volumes") or ()),
                             registry=RegistryAuth(str(reg.get("username") or ""), str(reg.get("password") or ""))
                             if isinstance(reg := w.get("registry"), dict) else None,
                             networks=tuple(str(n) for n in w.get("networks") or ()),
                             ports=tuple(PublishedPort(int(p["port"]), str(p["protocol"]), int(p["node_port"]))
                                         for p in w.get("ports") or ()),
                             publish_ip=self.address if is_loopback(self.address) else "0.0.0.0",
                             probe=Probe(int(pr["port"]), str(pr.get("path") or "/"),
                                         parse_duration(pr.get("timeout") or "1m"))
                             if isinstance(pr := w.get("probe"), dict) else None)
            if w.get("ports_error"):
                self._update(ex_id, "failed", error=str(w["ports_error"]))
                return
            try:
                escalations = Escalations.granted(w.get("escalations"), self.config.escalations)
            except ValueError as e:
                self._update(ex_id, "failed", error=str(e))
                return
            if escalations is not None:
                req = dataclasses.replace(req, escalations=escalations)
            timeout = w.get("timeout")
            try:
                async with asyncio.timeout(timeout):
                    result: RunResult = await rt.run(req, on_output, on_started)
            except TimeoutError:
                # 124, as `timeout` exits: what scripts and CI expect of a command that ran too long.
                ended("failed", error=f"timed out after {timeout:g}s", exit_code=124)
                return
            if result.error:
                ended("failed", error=result.error, exit_code=result.exit_code)
            else:
                ended("completed" if result.exit_code == 0 else "failed", exit_code=result.exit_code)
        except asyncio.CancelledError:
            if not self._cancelled(ex_id, container[0]):
                raise
        except Exception as e:
            log.exception("execution %s failed in the agent", ex_id)
            self._update(ex_id, "failed", error=f"the worker failed to run it: {e}")
        finally:
            self._forget(ex_id)
            if sc is None:
                pass
            elif sc.dir is None:
                # The quick path: what this left besides the output goes with the next sweep.
                if had_output:
                    with contextlib.suppress(OSError):
                        os.unlink(sc.output)
            elif not scratch.remove_quick(sc):
                # More than the output in it (files, what the task left): off the event loop. It
                # goes on should this task be cancelled meanwhile.
                await asyncio.shield(asyncio.to_thread(scratch.remove, sc))
