"""Bounded output: the agent's log buffer and the coordinator's stored log cap (pure, no I/O)."""

from __future__ import annotations

from corral.agent.logbuf import LINE_OVERHEAD, LogBuffer, drop_marker, wire_size
from corral.coordinator.service import LogLine, cap_logs, truncation_marker


def _lines(batch: list[dict[str, object]]) -> list[object]:
    return [r["line"] for r in batch]


def test_lines_come_out_in_order_in_bounded_batches() -> None:
    buf = LogBuffer()
    for i in range(5000):
        assert buf.add("e1", "stdout", f"line {i}", float(i))
    first = buf.take(max_lines=2000)
    assert _lines(first) == [f"line {i}" for i in range(2000)]
    second = buf.take(max_lines=2000, max_bytes=50 * (len("line 2000") + LINE_OVERHEAD))
    assert _lines(second) == [f"line {i}" for i in range(2000, 2050)]
    rest = buf.take(max_lines=10_000)
    assert len(rest) == 2950 and not buf and buf.size == 0 and not buf.pending("e1")


def test_a_batch_holds_at_least_one_line_even_a_long_one() -> None:
    buf = LogBuffer()
    buf.add("e1", "stdout", "x" * 100_000, 0.0)
    assert _lines(buf.take(max_bytes=10)) == ["x" * 100_000]


def test_a_full_execution_drops_and_then_says_how_much() -> None:
    per = 10 * (1 + LINE_OVERHEAD)
    buf = LogBuffer(per_execution=per, total=100 * per)
    kept = [buf.add("e1", "stdout", "y", 0.0) for _ in range(25)]
    assert kept == [True] * 10 + [False] * 15
    assert buf.size <= per and buf.dropped_lines == 15
    assert buf.add("e2", "stdout", "other", 0.0)  # another execution has room of its own
    buf.take(max_lines=5)
    assert not buf.add("e1", "stdout", "y", 0.5)  # still dropping: until half of its room is free
    buf.take(max_lines=2)  # half free again: the marker goes first, then the new line
    assert buf.add("e1", "stdout", "after", 1.0)
    rest = _lines(buf.take(max_lines=100))
    assert rest == ["y"] * 3 + ["other", drop_marker(16, 32), "after"]
    assert drop_marker(15, 30) == "[corral: 15 lines (30 B) dropped: output faster than it could be shipped]"


def test_the_total_bounds_all_executions_and_the_end_brings_the_marker() -> None:
    per = 100 * (1 + LINE_OVERHEAD)
    buf = LogBuffer(per_execution=per, total=per)
    for _ in range(60):
        buf.add("e1", "stdout", "a", 0.0)
    for _ in range(60):
        buf.add("e2", "stdout", "b", 0.0)
    assert buf.size <= per
    assert buf.pending("e2")
    buf.close("e2", 2.0)  # e2 ended: its marker goes in whatever the room
    lines = _lines(buf.take(max_lines=1000))
    assert lines.count("a") == 60 and lines.count("b") == 40
    assert lines[-1] == drop_marker(20, 40)
    buf.close("e1", 3.0)
    assert not buf  # e1 owed nothing


def test_marker_sizes_read_well() -> None:
    assert drop_marker(12345, 67_000_000) == (
        "[corral: 12345 lines (67.0 MB) dropped: output faster than it could be shipped]")
    assert "(1.5 kB)" in drop_marker(1, 1500)


def test_a_batch_put_back_goes_first_and_forget_clears_an_execution() -> None:
    buf = LogBuffer()
    for i in range(4):
        buf.add("e1", "stdout", str(i), 0.0)
    buf.add("e2", "stdout", "x", 0.0)
    batch = buf.take(max_lines=2)
    buf.put_back(batch)
    assert _lines(buf.take(max_lines=3)) == ["0", "1", "2"]
    buf.forget({"e1"})
    assert _lines(buf.take()) == ["x"] and buf.size == 0


def test_the_stored_cap_keeps_a_prefix_then_one_marker() -> None:
    logs = [LogLine("e1", "stdout", "x" * 9, float(i)) for i in range(30)]  # 10 bytes each with its newline
    logs += [LogLine("e2", "stdout", "short", 0.0), LogLine("gone", "stdout", "?", 0.0)]
    kept, sizes = cap_logs(logs, {"e1": 0, "e2": 0}, 100)
    e1 = [ln.line for ln in kept if ln.execution_id == "e1"]
    assert e1 == ["x" * 9] * 10 + [truncation_marker(100)]
    assert sizes == {"e1": 101, "e2": 6}
    # A later batch adds nothing to e1, not even a second marker.
    kept, sizes = cap_logs([LogLine("e1", "stdout", "more", 9.0)], {"e1": 101}, 100)
    assert kept == [] and sizes == {}
    # Bytes, not characters.
    kept, sizes = cap_logs([LogLine("e3", "stdout", "é" * 10, 0.0)], {"e3": 80}, 100)
    assert [ln.line for ln in kept] == [truncation_marker(100)]


def test_an_execution_is_behind_before_it_drops() -> None:
    per = 100 * (1 + LINE_OVERHEAD)
    buf = LogBuffer(per_execution=per, total=10 * per)
    behind = []
    for _ in range(30):
        buf.add("e1", "stdout", "y", 0.0)
        behind.append(buf.behind("e1"))
    assert behind == [False] * 25 + [True] * 5 and buf.dropped_lines == 0
    assert not buf.behind("e2")
    buf.take(max_lines=10)
    assert not buf.behind("e1")


def test_a_line_costs_at_least_its_size_in_json() -> None:
    import json

    for text in ("plain", 'say "hi"', "back\\slash", "tab\there", "\x1b[31mred\x1b[0m", "é" * 10, "雪" * 10,
                 "🐎" * 10, "\ufffd"):
        assert wire_size(text) == len(json.dumps(text)) - 2, text
