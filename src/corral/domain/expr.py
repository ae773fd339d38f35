"""Expressions: ``{{ ... }}`` in a task's run, env, image, if, each.list and a job's output.

They are Jinja2 templates evaluated in Jinja2's immutable sandbox, never with Python's ``eval``: a template
cannot reach attributes that start with '_', call methods that change data, or touch anything outside the
names it is given (inputs, secrets, tasks, job, item). Pure logic: no I/O.

Every evaluation runs under a budget: no string, list or output it builds grows past ``MAX_RESULT``, and
the check comes *before* the value is allocated ('%0500000000d' % 1, 'x'|center(10**9), a ~ b doubled in
a loop are refused, not built); every loop iteration, call, attribute and operator counts against a time
budget of ``TIME_BUDGET`` seconds. Whatever an evaluation raises, MemoryError and RecursionError included,
comes out as an ``ExprError`` that says why.
"""

from __future__ import annotations

import functools
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2 import filters as jfilters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SEQUENCE = 100_000
MAX_RESULT = 1 << 20  # a rendered value (or any string or list built on the way) longer than this is refused
TIME_BUDGET = 1.0  # seconds one evaluation may take


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


# -- the budget -------------------------------------------------------------------------------------
_local = threading.local()


@contextmanager
def _budget(seconds: float, what: str = "the expression") -> Iterator[None]:
    """A deadline for the evaluation under way in this thread (an inner one keeps the outer deadline)."""
    if getattr(_local, "deadline", None) is not None:
        yield
        return
    _local.deadline = time.monotonic() + seconds
    _local.what = f"{what} ran longer than {seconds:g}s"
    try:
        yield
    finally:
        _local.deadline = None


budget = _budget  # for callers that evaluate many expressions under one deadline (all of one task's)


def _tick() -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise ExprError(getattr(_local, "what", f"the expression ran longer than {TIME_BUDGET:g}s"))


_SIZED = (str, bytes, list, tuple)


def _room(n: int, what: str = "the result") -> None:
    if n > MAX_RESULT:
        raise ExprError(f"{what} would be longer than {MAX_RESULT:,} characters or items")


def _width(n: Any) -> None:
    if isinstance(n, int) and n > MAX_RESULT:
        raise ExprError(f"a width of {n:,} is more than {MAX_RESULT:,}")


# printf-style conversions: %[(key)][flags][width][.precision]type
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?")


def _check_percent(fmt: str) -> None:
    """Widths and precisions of '%' formatting, checked before anything is formatted."""
    for width, precision in _PERCENT.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise ExprError("'*' widths are not allowed in % formatting")
            if n:
                _width(int(n) if len(n) < 10 else MAX_RESULT + 1)


def _check_format(fmt: str) -> None:
    """Widths and precisions of str.format fields, checked before anything is formatted."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec:
            if "{" in spec:
                raise ExprError("nested fields in a format specification are not allowed")
            for n in re.findall(r"\d+", spec):
                _width(int(n) if len(n) < 10 else MAX_RESULT + 1)


def _text_len(items: Iterable[Any]) -> int:
    return sum(len(x) if isinstance(x, str) else len(str(x)) for x in items)


def _str_join(seq: Iterable[Any]) -> str:
    """'a ~ b ~ c': the parts' lengths are added up before they are joined."""
    _tick()
    parts = [x if isinstance(x, str) else str(x) for x in seq]
    _room(sum(map(len, parts)))
    return "".join(parts)


def _concat(parts: Iterable[str]) -> str:
    """How Jinja joins output (a template, a block set, a macro): stops as soon as it is too long."""
    out, n = [], 0
    for i, p in enumerate(parts):
        n += len(p)
        _room(n)
        out.append(p)
        if i % 256 == 0:
            _tick()
    return "".join(out)


class _Buffer(list[Any]):
    """Where Jinja gathers the output of a block set, a macro or a filter block: refuses to grow past
    MAX_RESULT characters, so that a loop cannot pile up copies before the block is joined."""

    size = 0

    def append(self, x: Any) -> None:
        self.size += len(x) if isinstance(x, str) else len(str(x))
        _room(self.size)
        super().append(x)

    def extend(self, xs: Iterable[Any]) -> None:
        for x in xs:
            self.append(x)


def _loop(items: Any) -> Iterator[Any]:
    """What every {% for %} iterates through: each iteration counts against the time budget."""
    for x in items:
        _tick()
        yield x


def _check_str_call(owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of a string that can build a long one, checked before they run."""
    arg0 = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        _width(arg0)
    elif name == "expandtabs":
        size = 8 if arg0 is None else arg0
        if isinstance(size, int):
            _room(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * size)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
        old, new = args[0], args[1]
        count = len(owner) + 1 if not old else owner.count(old)
        _room(len(owner) + count * max(len(new) - len(old), 0))


class _Codegen(CodeGenerator):
    """Jinja's code generator, with every loop going through the budget and '~' through a join that checks
    the length first."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "corral_loop", [], [], None, None, lineno=loop.lineno)
        super().visit_Template(node, frame)

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.corral_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.corral_str_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox under a budget: '*', '**', '+' and '%' bounded so that one expression
    cannot allocate gigabytes ('x' * 10**9, '%0500000000d' % 1) or spin on a huge power; string methods,
    str.format and the filters that build long strings checked before they run; every call, attribute,
    operator and loop iteration counted against the time budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _Codegen
    concat = staticmethod(_concat)
    corral_str_join = staticmethod(_str_join)
    corral_buffer = _Buffer

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 1000:
                raise ExprError(f"the power {right} is too large (at most 1000)")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > 100_000:
                raise ExprError("the power's result would be longer than 100,000 bits")
            return left**right
        if operator == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                _room(len(left) + len(right))
            return left + right
        if operator == "%":
            if isinstance(left, str):
                _check_percent(left)
            return left % right
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and isinstance(n, int) and len(seq) * n > MAX_RESULT:
                raise ExprError(f"repeating a value {n:,} times gives more than {MAX_RESULT:,} items")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 100_000:
            raise ExprError("the product would be longer than 100,000 bits")
        return left * right

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes) and not isinstance(owner, type):
            name = getattr(__obj, "__name__", "")
            if name == "join" and args:
                items = list(args[0])
                _room(_text_len(items) + len(owner) * max(len(items) - 1, 0))
                args = (items, *args[1:])
            else:
                _check_str_call(owner, name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        fmt = super().wrap_str_format(value)
        if fmt is not None:
            _check_format(str(value.__self__))
        return fmt


def _filter(orig: Any, check: Callable[..., Any]) -> Any:
    """A Jinja filter with ``check(value, *args, **kwargs)`` run first (after the context argument that
    some filters take, which the wrapper keeps: functools.wraps copies Jinja's marker)."""
    passes = hasattr(orig, "jinja_pass_arg")

    @functools.wraps(orig)
    def f(*args: Any, **kwargs: Any) -> Any:
        _tick()
        check(*(args[1:] if passes else args), **kwargs)
        return orig(*args, **kwargs)

    return f


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _indent_check(s: Any, *a: Any, **k: Any) -> None:
    width = _arg(a, k, 0, "width", 4)
    w = width if isinstance(width, int) else len(str(width))
    text = str(s)
    _room(len(text) + (text.count("\n") + 1) * w)


def _wordwrap_check(s: Any, *a: Any, **k: Any) -> None:
    text = str(s)
    width = _arg(a, k, 0, "width", 79)
    wrap = _arg(a, k, 2, "wrapstring", None) or "\n"
    lines = len(text) // max(int(width), 1) + text.count("\n") + 1 if isinstance(width, int) else len(text)
    _room(len(text) + lines * len(str(wrap)))


def _replace_check(s: Any, *a: Any, **k: Any) -> None:
    text, old, new = str(s), str(_arg(a, k, 0, "old", "")), str(_arg(a, k, 1, "new", ""))
    count = len(text) + 1 if not old else text.count(old)
    _room(len(text) + count * max(len(new) - len(old), 0))


def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is not None:
        getter = jfilters.make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(x) for x in items]
    _room(_text_len(items) + len(str(d)) * max(len(items) - 1, 0))
    return str(jfilters.sync_do_join(eval_ctx, items, d))


def _count_check(_value: Any, *a: Any, **k: Any) -> None:
    n = _arg(a, k, 0, "linecount", None)
    if isinstance(n, int) and n > MAX_SEQUENCE:
        raise ExprError(f"{n:,} is more than {MAX_SEQUENCE:,}")


_BOUNDED_FILTERS: dict[str, Any] = {
    "center": _filter(jfilters.do_center, lambda v, *a, **k: _width(_arg(a, k, 0, "width", 80))),
    "indent": _filter(jfilters.do_indent, _indent_check),
    "wordwrap": _filter(jfilters.do_wordwrap, _wordwrap_check),
    "replace": _filter(jfilters.do_replace, _replace_check),
    "format": _filter(jfilters.do_format, lambda v, *a, **k: _check_percent(str(v))),
    "join": _filter(jfilters.sync_do_join, lambda *a, **k: None),
    "batch": _filter(jfilters.do_batch, _count_check),
    "slice": _filter(jfilters.sync_do_slice, _count_check),
}
_BOUNDED_FILTERS["join"] = functools.wraps(jfilters.sync_do_join)(_join)


@functools.cache
def _env() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.clear()  # no range(), lipsum(), dict(), cycler(): only what is listed here
    env.globals.update(sequence=_sequence, randomInt=_random_int, fromJSON=_from_json, toJSON=_to_json,
                       split=_split)
    env.filters.update(fromJSON=_from_json, toJSON=_to_json, split=_split, corral_loop=_loop, **_BOUNDED_FILTERS)
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


@functools.lru_cache(maxsize=1024)
def _compiled_expression(s: str) -> Any:
    return _env().compile_expression(s, undefined_to_none=False)


def render(s: str, ctx: Mapping[str, Any], where: str = "expression") -> str:
    """Render a string with its ``{{ }}`` parts evaluated."""
    if not has_expr(s):
        return s
    try:
        with _budget(TIME_BUDGET):
            out = str(_compiled(s).render(**ctx))
    except ExprError as e:
        raise ExprError(f"{where}: {e}") from None
    except Exception as e:  # MemoryError and RecursionError too: one expression fails, nothing else
        raise ExprError(f"{where}: {_why(e)}") from None
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
            with _budget(TIME_BUDGET):
                value = _compiled_expression(inner)(**ctx)
                if isinstance(value, Undefined):
                    str(value)  # a strict undefined raises why: an unknown name, or an attribute the sandbox hides
            return value
        except ExprError as e:
            raise ExprError(f"{where}: {e}") from None
        except Exception as e:  # MemoryError and RecursionError too: one expression fails, nothing else
            raise ExprError(f"{where}: {_why(e)}") from None
    text = render(s, ctx, where)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _why(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "MemoryError: the expression needs more memory than there is"
    if isinstance(e, RecursionError):
        return "RecursionError: the expression nests or recurses too deeply"
    return f"{type(e).__name__}: {str(e)[:500]}"


def truthy(v: Any) -> bool:
    """How an ``if`` reads its value: false, 0, '', 'false', 'no', '0' and an empty list are false."""
    if isinstance(v, str):
        return v.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(v)
