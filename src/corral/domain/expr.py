"""Expressions: ``{{ ... }}`` in a task's run, env, image, if, each.list and a job's output.

They are Jinja2 templates evaluated in Jinja2's immutable sandbox, never with Python's ``eval``: a template
cannot reach attributes that start with '_', call methods that change data, or touch anything outside the
names it is given (inputs, secrets, tasks, job, item). Pure logic: no I/O.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SEQUENCE = 100_000
MAX_RESULT = 1 << 20  # a rendered value longer than this is refused


class ExprError(ValueError):
    """An expression that does not parse, or that fails when it is evaluated; the message says which."""


def _sequence(start: int, stop: int) -> list[int]:
    """Tork's sequence(a, b): the integers a, a+1, ..., b-1."""
    start, stop = int(start), int(stop)
    if stop - start > MAX_SEQUENCE:
        raise ExprError(f"sequence({start}, {stop}) is longer than {MAX_SEQUENCE:,} items")
    return list(range(start, stop))


def _random_int(*args: int) -> int:
    """randomInt(), randomInt(max) or randomInt(min, max): an integer in [min, max)."""
    lo, hi = (0, 2**31) if not args else (0, int(args[0])) if len(args) == 1 else (int(args[0]), int(args[1]))
    if hi <= lo:
        raise ExprError(f"randomInt: the range [{lo}, {hi}) is empty")
    return random.randrange(lo, hi)


def _from_json(s: Any) -> Any:
    try:
        return json.loads(str(s))
    except ValueError as e:
        raise ExprError(f"fromJSON: not JSON: {e}") from None


def _to_json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


def _split(s: Any, sep: str | None = None) -> list[str]:
    return str(s).split(sep)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with '*' and '**' bounded so that one expression cannot allocate
    gigabytes ('x' * 10**9) or spin on a huge power."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 1000:
                raise ExprError(f"the power {right} is too large (at most 1000)")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > 100_000:
                raise ExprError("the power's result would be longer than 100,000 bits")
            return left**right
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_RESULT:
                raise ExprError(f"repeating a value {n:,} times gives more than {MAX_RESULT:,} items")
        return left * right


@functools.cache
def _env() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.clear()  # no range(), lipsum(), dict(), cycler(): only what is listed here
    env.globals.update(sequence=_sequence, randomInt=_random_int, fromJSON=_from_json, toJSON=_to_json,
                       split=_split)
    env.filters.update(fromJSON=_from_json, toJSON=_to_json, split=_split)
    return env


def has_expr(s: str | None) -> bool:
    return s is not None and ("{{" in s or "{%" in s)


def check(s: str, where: str) -> None:
    """Parse ``s`` (at submit time), so a syntax error is a 400 that names the field."""
    if not has_expr(s):
        return  # plain text: nothing to parse (and most fields are)
    try:
        _env().parse(s)
    except TemplateError as e:
        raise ExprError(f"{where}: the expression does not parse: {e}") from None


@functools.lru_cache(maxsize=1024)
def _compiled(s: str) -> Any:
    return _env().from_string(s)


def render(s: str, ctx: Mapping[str, Any], where: str = "expression") -> str:
    """Render a string with its ``{{ }}`` parts evaluated."""
    if not has_expr(s):
        return s
    try:
        out = str(_compiled(s).render(**ctx))
    except ExprError as e:
        raise ExprError(f"{where}: {e}") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
        raise ExprError(f"{where}: {type(e).__name__}: {e}") from None
    if len(out) > MAX_RESULT:
        raise ExprError(f"{where}: the result is longer than {MAX_RESULT:,} characters")
    return out


def _single_expression(s: str) -> str | None:
    """The inner expression when ``s`` is exactly one ``{{ expr }}``, so that it can keep its type."""
    try:
        tree = _env().parse(s)
    except TemplateError:
        return None
    if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output) and len(tree.body[0].nodes) == 1 \
            and not isinstance(tree.body[0].nodes[0], nodes.TemplateData):
        inner = s.strip()
        if inner.startswith("{{") and inner.endswith("}}"):
            return inner[2:-2]
    return None


def evaluate(s: str, ctx: Mapping[str, Any], where: str = "expression") -> Any:
    """Evaluate to a value: '{{ sequence(1, 4) }}' gives a list, not its text. A string that is not one
    expression is rendered; a rendered string that is JSON is parsed (Tork's each.list accepts both)."""
    inner = _single_expression(s)
    if inner is not None:
        try:
            value = _env().compile_expression(inner, undefined_to_none=False)(**ctx)
            if isinstance(value, Undefined):
                str(value)  # a strict undefined raises why: an unknown name, or an attribute the sandbox hides
            return value
        except ExprError as e:
            raise ExprError(f"{where}: {e}") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
            raise ExprError(f"{where}: {type(e).__name__}: {e}") from None
    text = render(s, ctx, where)
    try:
        return json.loads(text)
    except ValueError:
        return text


def truthy(v: Any) -> bool:
    """How an ``if`` reads its value: false, 0, '', 'false', 'no', '0' and an empty list are false."""
    if isinstance(v, str):
        return v.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(v)
