"""Bounds on a job spec, the task count of a job, and the expression sandbox's budget (issue 8)."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
from pydantic import ValidationError

from corral.domain import expr
from corral.domain.resources import parse_duration, parse_size
from corral.domain.spec import JobSpec
from corral.domain.workflow import rows_of_job


def _job(**task: Any) -> dict[str, Any]:
    return {"tasks": [{"run": "true", **task}]}


@pytest.mark.parametrize(("data", "where"), [
    (_job(resources={"memory": 10**30}), "memory"),
    (_job(resources={"memory": "99999999999999999999Ti"}), "memory"),
    (_job(resources={"disk": 1e23}), "disk"),
    (_job(resources={"disk": False}), "disk"),
    (_job(resources={"cpu": True}), "cpu"),
    (_job(resources={"cpu": float("inf")}), "cpu"),
    (_job(resources={"gpu": 65}), "gpu"),
    (_job(timeout=10**12), "timeout"),
    (_job(timeout="9" * 400 + "s"), "timeout"),
    (_job(retry={"limit": True}), "limit"),
    (_job(env={"BIG": "x" * (128 * 1024 + 1)}), "env.BIG"),
    (_job(env={f"K{i}": "x" * 100_000 for i in range(11)}), "env"),
    (_job(command=["y" * (128 * 1024 + 1)]), "command"),
    (_job(run="z" * (128 * 1024 + 1)), "run"),
    (_job(name="n" * 101), "name"),
    (_job(node_selector={"k" * 300: "v"}), "node_selector"),
    ({**_job(), "tags": ["a\ud800"]}, "tags[0]"),
    ({**_job(), "inputs": {"\udc00": "x"}}, "inputs"),
    ({**_job(), "priority": False}, "priority"),
    (_job(env={"K": "\ud800"}), "env.K"),
    (_job(command=["ok", "\udfff"]), "command[1]"),
])
def test_out_of_bounds_specs_are_refused_naming_the_field(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(data)
    assert where in str(e.value)


def test_sizes_and_durations_keep_their_accepted_forms() -> None:
    assert parse_size("1Gi") == 2**30 and parse_size(2**50) == 2**50 and parse_size("2.5M") == 2_500_000
    assert parse_duration("1h30m") == 5400 and parse_duration("366d") == 366 * 86400
    spec = JobSpec.model_validate(_job(resources={"cpu": "2", "memory": 1.5e9}, timeout="30s"))
    assert spec.tasks[0].resources.resolve().memory == 1_500_000_000
    for bad in ("1e400", float("nan"), "9" * 200):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_tasks_of_a_job_are_counted_across_its_levels() -> None:
    nested = JobSpec.model_validate({"tasks": [{"each": {"list": "{{ sequence(0, 100) }}", "task": {
        "each": {"list": "{{ sequence(0, 10000) }}", "task": {"run": "true"}}}}}]})
    assert rows_of_job(nested) == 1 + 100 * (1 + 10_000)
    mixed = JobSpec.model_validate({"inputs": {"n": "5"}, "tasks": [
        {"run": "a", "pre": [{"run": "b"}]},  # the steps, pre, the task: 3
        {"each": {"list": "{{ sequence(0, inputs.n | int) }}", "task": {"run": "x"}}},  # 1 + 5
        {"each": {"list": "{{ tasks.later }}", "task": {"run": "x"}}},  # unknown until it runs: 1
        {"each": {"list": "[1, 2, 3]", "task": {"parallel": {"tasks": [{"run": "a"}, {"run": "b"}]}}}},  # 1 + 9
        {"subjob": {"tasks": [{"run": "a"}, {"run": "b"}]}}]})  # 1 + 2
    assert rows_of_job(mixed) == 3 + 6 + 1 + 10 + 3


@pytest.mark.parametrize("bomb", [
    "{{ '%0500000000d' % 1 }}",
    "{{ '%0100000000000d' % 1 }}",
    "{{ '%*d' % (1000000000, 1) }}",
    "{{ '%0500000000d'|format(1) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ 'x'|center(500000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'x'.zfill(1000000000) }}",
    "{% set x = 'a' * 1000000 %}{% set x = x ~ x %}{{ x }}",
    "{% set x = 'a' * 1000000 %}{% set x = x + x %}{{ x }}",
    "{{ ('a' * 1000)|replace('', 'b' * 10000) }}",
    "{{ ('a\\n' * 1000)|indent('b' * 2000) }}",
    "{{ (['a' * 100000] * 100)|join(',') }}",
    "{{ ','.join(['a' * 100000] * 100) }}",
    "{{ [1]|batch(10 ** 12, 0)|list }}",
    "{% for a in sequence(0, 100000) %}{% for b in sequence(0, 100000) %}{% endfor %}{% endfor %}",
    "{% set x %}{% for i in sequence(0, 100000) %}{{ ('a' * 100000)|upper }}{% endfor %}{% endset %}{{ x }}",
    "{% macro m() %}{% for i in sequence(0, 100000) %}{{ 'a' * 100000 }}{% endfor %}{% endmacro %}{{ m() }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
])
def test_expression_bombs_are_refused_before_they_allocate(bomb: str) -> None:
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(expr.ExprError):
            expr.render(bomb, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < expr.TIME_BUDGET + 1.5
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_ordinary_expressions_still_work() -> None:
    ctx = {"inputs": {"x": "c"}, "item": {"index": 2, "value": "v"}}
    text = "{{ 'ok %05d' % 3 }} {{ 'a' ~ 'b' ~ inputs.x }} {{ '{:>3}'.format(1) }}"
    assert expr.render(text, ctx) == "ok 00003 abc   1"
    assert expr.render("{% for i in sequence(0, 3) %}{{ i }}{% endfor %}|{{ [1, 2]|join(',') }}", ctx) == "012|1,2"
    assert expr.render("{% set s %}{{ item.value|upper }}{% endset %}{{ s|center(5) }}|{{ 'a b'|replace(' ', '-') }}",
                       ctx) == "  V  |a-b"
    assert expr.evaluate("{{ sequence(0, 4) }}", ctx) == [0, 1, 2, 3]
    assert expr.evaluate("{{ 2 ** 10 * 3 + 1 }}", ctx) == 3073
