"""The dashboard's pure parts: the workflow graph's layout, the Submit page's per-line validation, the live
channel's bounds (corral.api.dashboard)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corral.api.dashboard import graph, live, validate
from corral.coordinator.service import Coordinator, Settings
from corral.domain.spec import JobSpec
from corral.store.sql import Store


def t(tid: str, name: str, state: str = "completed", kind: str = "run", parent: str | None = None, pos: int = 0,
      **kw: Any) -> dict[str, Any]:
    return {"id": tid, "name": name, "state": state, "kind": kind, "parent_id": parent, "position": pos, **kw}


def boxes(g: graph.Graph) -> dict[str, graph.Box]:
    return {b.name: b for b in g.boxes}


def test_a_chain_is_one_column_per_task_with_an_edge_between_each() -> None:
    g = graph.layout([t("1", "a", pos=0), t("2", "b", pos=1), t("3", "c", pos=2)])
    b = boxes(g)
    assert b["a"].x < b["b"].x < b["c"].x and b["a"].y == b["b"].y == b["c"].y
    assert len(g.edges) == 2
    assert g.edges[0].x1 == b["a"].x + b["a"].w and g.edges[0].x2 == b["b"].x


def test_a_parallel_is_a_frame_around_its_children_stacked_and_keeps_their_states() -> None:
    g = graph.layout([t("1", "prep"), t("p", "fan", "failed", "parallel", pos=1),
                      t("c1", "good", parent="p"), t("c2", "bad", "failed", parent="p", pos=1)])
    b = boxes(g)
    frame, good, bad = b["fan"], b["good"], b["bad"]
    assert frame.frame and not good.frame
    assert good.x == bad.x and good.y < bad.y  # stacked
    for child in (good, bad):  # inside the frame
        assert frame.x < child.x and child.x + child.w <= frame.x + frame.w
        assert frame.y < child.y and child.y + child.h <= frame.y + frame.h
    assert bad.state == "failed" and good.state == "completed"
    assert len(g.edges) == 1  # prep -> fan; the parallel's children have no edges between them
    assert g.width >= frame.x + frame.w and g.height >= frame.y + frame.h


def test_a_graph_is_laid_out_by_layers_with_an_edge_per_dependency() -> None:
    tasks = [t("1", "fetch", pos=0), t("2", "left", pos=1, depends_on=["fetch"]),
             t("3", "right", pos=2, depends_on=["fetch"]), t("4", "join", pos=3, depends_on=["left", "right"])]
    assert graph.layers(tasks) == {"fetch": 0, "left": 1, "right": 1, "join": 2}
    g = graph.layout(tasks)
    b = boxes(g)
    assert b["fetch"].x < b["left"].x == b["right"].x < b["join"].x
    assert len(g.edges) == 4


def test_a_cycle_unknown_dependencies_and_orphans_do_not_break_the_layout() -> None:
    tasks = [t("1", "a", depends_on=["b", "nowhere"]), t("2", "b", pos=1, depends_on=["a"]),
             t("3", "lost", parent="not-shown")]
    g = graph.layout(tasks)
    assert set(boxes(g)) == {"a", "b", "lost"}
    assert graph.layout([]).boxes == []


def test_a_subjob_links_to_its_job_and_long_names_are_cut() -> None:
    g = graph.layout([t("1", "x" * 60, kind="subjob", subjob_id="abc")])
    (box,) = g.boxes
    assert box.href == "/ui/jobs/abc" and len(box.label) == graph.MAX_LABEL and box.label.endswith("…")


def test_steps_are_a_chain_inside_their_frame() -> None:
    g = graph.layout([t("s", "job-step", kind="steps"), t("a", "pre", parent="s"), t("b", "main", parent="s", pos=1),
                      t("c", "post", parent="s", pos=2)])
    b = boxes(g)
    assert b["pre"].x < b["main"].x < b["post"].x and len(g.edges) == 2


@pytest.mark.parametrize(("text", "line", "words"), [
    ("name: x\ntasks:\n  - name: a\n    imgae: busybox\n    run: echo\n", 4, "imgae"),
    ("name: x\ntasks:\n  - name: a\n    run: echo\n    timeout: soon\n", 5, "duration"),
    ("name: x\ntasks:\n  - name: a\n   run: [\n", 4, "YAML"),
    ("tasks: 3\n", 1, "list"),
    ("- a\n- b\n", 1, "mapping"),
])
def test_each_problem_is_on_its_line(text: str, line: int, words: str) -> None:
    r = validate.check(text)
    assert not r.ok
    assert r.problems[0].line == line and words in r.problems[0].message


def test_native_and_tork_jobs_are_taken_and_the_format_is_said() -> None:
    native = validate.check("tasks:\n  - name: a\n    image: busybox\n    run: echo hi\n")
    assert native.ok and native.format == "native" and native.tasks == 1
    tork = validate.check("name: t\ntasks:\n  - name: a\n    image: busybox\n    cmd: [echo, hi]\n")
    assert tork.ok and tork.format == "tork"
    as_native = validate.check("name: t\ntasks:\n  - name: a\n    image: busybox\n    cmd: [echo, hi]\n", "native")
    assert not as_native.ok and as_native.problems[0].line == 5
    bad_tork = validate.check("name: t\ntasks:\n  - name: a\n    image: busybox\n    nope: 1\n", "tork")
    assert not bad_tork.ok and bad_tork.problems[0].line == 5 and "nope" in bad_tork.problems[0].message


def test_empty_huge_and_alias_bombs_are_refused_without_work() -> None:
    assert validate.check("   ").problems[0].message.startswith("empty")
    assert "KiB" in validate.check("a: " + "x" * (validate.MAX_TEXT + 1)).problems[0].message
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    r = validate.check(bomb)
    assert not r.ok
    with pytest.raises(ValueError):
        validate.check("tasks: []", "xml")


def test_log_lines_are_escaped() -> None:
    html = live.log_html([{"seq": 1, "task_id": "t", "stream": "stderr", "line": "<script>x</script>"}],
                         {"t": "<b>"}, prefix=True)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html and 'class="ln err"' in html


def test_a_stream_that_falls_behind_is_dropped_not_buffered() -> None:
    s = live.Stream()
    for _ in range(live.QUEUE_LIMIT + 5):
        s.push("x")
    assert len(s.items) == live.QUEUE_LIMIT and s.dropped
    assert asyncio.run(s.next()) is None


def test_the_hub_bounds_streams_sends_events_and_stops_when_none_is_open(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    coord = Coordinator(store, Settings())
    hub = live.Live(store, poll=0.02, max_streams=2, heartbeat=0.05)

    async def scenario() -> list[str]:
        a = hub.open()
        hub.open()
        with pytest.raises(live.TooManyStreams):
            hub.open()
        got: list[str] = []
        events = hub.events(a)
        got.append(await anext(events))  # the reconnect delay
        got.append(await anext(events))  # nothing changed: a keep-alive comment
        coord.submit(JobSpec.model_validate({"tasks": [{"run": "true"}]}))  # the open pages hear "jobs"
        for _ in range(100):
            item = await anext(events)
            if "jobs" in item:
                got.append(item)
                break
        await events.aclose()
        hub.streams.clear()
        assert hub._task is not None
        await asyncio.wait_for(hub._task, 2)  # no stream: the watcher ends
        return got

    got = asyncio.run(scenario())
    store.close()
    assert got[0].startswith("retry:") and got[1].startswith(":") and got[2] == "event: jobs\ndata: \n\n"


def test_a_page_opened_after_a_change_it_missed_is_told_at_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    hub = live.Live(store, poll=0.02, clock=lambda: 100.0)

    async def scenario() -> tuple[list[str], list[str]]:
        first = hub.open(since=50.0)  # the watcher was not running: it cannot know, so the page refreshes
        told_first = list(first.items)
        await asyncio.sleep(0.1)  # the watcher's baseline is taken (at 100.0)
        hub.changed["jobs"] = 120.0
        later = hub.open(job_id="abc", since=110.0)  # rendered before the last jobs change, after the rest
        told_later = list(later.items)
        hub.streams.clear()
        assert hub._task is not None
        await asyncio.wait_for(hub._task, 2)
        return told_first, told_later

    told_first, told_later = asyncio.run(scenario())
    store.close()
    assert [x.split("\n")[0] for x in told_first] == ["event: jobs", "event: nodes"]
    assert [x.split("\n")[0] for x in told_later] == ["event: jobs"]
