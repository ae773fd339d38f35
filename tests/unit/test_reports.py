"""A worker's reports: within one byte budget however big its outputs and errors, and a report the
coordinator refuses (400, 413, 422) never stalls the ones after it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent.logbuf import (
    ERROR_CHARS,
    OUTPUT_BYTES,
    OUTPUT_CHARS,
    REPORT_BYTES,
    LogBuffer,
    fit,
    fit_update,
    next_report,
    wire_size,
)
from corral.agent.transport import HttpTransport, Refused, Rejected
from corral.agent.worker import REFUSED_LINE, Agent, AgentConfig
from corral.api.edge import body_limit
from corral.api.native.agent import ReportBody

EX = [f"{i:032x}" for i in range(1, 5)]


def test_fit_keeps_what_fits_and_marks_a_cut() -> None:
    assert fit("short", 100, 100, "output") == "short"
    cut = fit("\x01" * (1 << 20), OUTPUT_CHARS, OUTPUT_BYTES, "output")  # 6 bytes a character in JSON
    assert wire_size(cut) <= OUTPUT_BYTES and len(cut) <= OUTPUT_CHARS
    assert cut.startswith("\x01" * 1000) and cut.endswith(f"of {1 << 20} characters not sent]")
    assert "output cut to fit a report" in cut
    long_error = fit_update({"error": "e" * 100_000, "exit_code": 1})
    assert len(long_error["error"]) <= ERROR_CHARS and "error cut" in long_error["error"]
    assert long_error["exit_code"] == 1


def test_every_report_fits_the_budget_and_the_coordinator_model() -> None:
    """The worst case: finished tasks whose outputs are 1 MiB of control characters (6 MiB in JSON) and
    whose errors are long, behind a full log buffer of such lines."""
    buf = LogBuffer()
    for ex in EX:
        for _ in range(60):
            buf.add(ex, "stdout", "\x01" * 65536, 1.0)  # a runtime's longest line
        buf.close(ex, 2.0)  # it ended (as Agent._update says): the marker for what was dropped goes in
    assert buf.size > 3 * REPORT_BYTES
    pending = [{"execution_id": ex, "state": "completed", "ts": 2.0,
                **fit_update({"exit_code": 0, "output": "\x01" * (1 << 20), "error": '"' * 200_000})}
               for ex in EX]
    sent: list[str] = []
    limit = body_limit("POST", f"/v1/agent/nodes/{EX[0]}/report")
    for _ in range(100):
        if not pending and not buf:
            break
        logs, updates, pending = next_report(pending, buf)
        wire = httpx.Request("POST", "http://c/", json={"updates": updates, "logs": logs}).content
        assert len(wire) <= REPORT_BYTES + 16 * 1024 < limit  # what httpx sends; the edge takes 8 MiB
        ReportBody.model_validate(json.loads(wire))  # and the coordinator's model accepts it
        sent += [u["execution_id"] for u in updates]
    assert sent == EX and not buf  # every update went, in order, each after its output


class Picky:
    """A coordinator that refuses (422) any report holding the word 'poison'."""

    node_secret: str | None = None

    def __init__(self) -> None:
        self.calls = 0
        self.updates: list[dict[str, Any]] = []
        self.lines: list[str] = []

    async def report(self, node_id: str, updates: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
        self.calls += 1
        if "poison" in json.dumps([updates, logs]):
            raise Rejected(422, "errors.0.error: not accepted")
        self.updates += updates
        self.lines += [ln["line"] for ln in logs]
        return []


def test_a_refused_item_is_cut_or_dropped_and_later_reports_flow(tmp_path: Path) -> None:
    async def run() -> tuple[Picky, Agent]:
        picky = Picky()
        agent = Agent(AgentConfig(data_dir=str(tmp_path)), picky, runtimes={})  # type: ignore[arg-type]
        agent.node_id = "n" * 32
        agent.known = set(EX[:3])
        for i in range(100):
            agent._logs.add(EX[2], "stdout", "poison" if i == 37 else f"line {i}", 1.0)
        agent._update(EX[0], "failed", exit_code=3, error="poison pill")
        agent._update(EX[1], "completed", exit_code=0)
        flush = asyncio.create_task(agent._flush_loop())
        try:
            async with asyncio.timeout(5):
                while EX[1] in agent.known or len(picky.lines) < 100:
                    await asyncio.sleep(0.01)
        finally:
            flush.cancel()
            await asyncio.gather(flush, return_exceptions=True)
        return picky, agent

    picky, agent = asyncio.run(run())
    assert picky.lines == [REFUSED_LINE if i == 37 else f"line {i}" for i in range(100)]
    by_ex = {u["execution_id"]: u for u in picky.updates}
    assert by_ex[EX[1]]["state"] == "completed"
    bare = by_ex[EX[0]]  # its state and exit code go; its refused error does not
    assert bare["state"] == "failed" and bare["exit_code"] == 3 and "poison" not in bare["error"]
    assert agent.known == {EX[2]} and not agent._updates and not agent._logs
    assert picky.calls < 30  # split down to the bad items, not one call per item


def test_http_refusals_are_told_apart() -> None:
    async def run() -> None:
        answers = {"/v1/agent/register": 422, f"/v1/agent/nodes/{EX[0]}/report": 413,
                   f"/v1/agent/nodes/{EX[1]}/report": 400, f"/v1/agent/nodes/{EX[2]}/report": 503}

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(answers[request.url.path], json={"detail": "no"})

        t = HttpTransport("http://c")
        await t.client.aclose()
        t.client = httpx.AsyncClient(base_url="http://c", transport=httpx.MockTransport(handler))
        with pytest.raises(Refused, match="registration"):
            await t.register({}, [])
        for ex, status in ((EX[0], 413), (EX[1], 400)):
            with pytest.raises(Rejected) as e:
                await t.report(ex, [], [])
            assert e.value.status == status
        with pytest.raises(httpx.HTTPStatusError):  # a 5xx may pass: it is tried again
            await t.report(EX[2], [], [])
        await t.close()

    asyncio.run(run())
