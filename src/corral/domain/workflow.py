"""Workflow rules that need no I/O: what kind of task a spec is, how a composite task opens into the tasks
inside it, how a task's expressions are evaluated, and how secrets are kept out of what is shown.

A task row's ``kind`` says what the coordinator does when the task becomes ready:

- ``run``: place it on a node (the common case, and the only one the scheduler sees);
- ``template``: evaluate its ``if`` and ``{{ }}`` expressions, then place it (or skip it);
- ``parallel``, ``each``, ``steps`` (pre, the task, post), ``subjob``: open it into other tasks (or a job)
  and finish it when they have all finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.domain import expr
from corral.domain.spec import MAX_TASK_NAME, JobSpec, TaskSpec, check_queue, check_var

REDACTED = "[REDACTED]"
MAX_EACH_ITEMS = 10_000  # tasks one each may open: each is a row, written in one transaction
# Characters one evaluated task may hold in all its rendered fields (a valid task holds far less: its env,
# files and command are each at most 1 MiB); counted while rendering, so that no huge row is ever built.
MAX_RENDERED = 8 << 20
COMPOSITE = ("parallel", "each", "subjob", "steps")


# The fields of a task that are evaluated as it is about to run (with ``run``, ``command``, ``image``,
# ``env``, ``files`` and ``if``), as Tork's evaluator does: its name, the name its output is kept under
# and its queue. What they give is checked as a submitted value is.
HEADER = ("name", "var", "queue")


def needs_eval(t: TaskSpec) -> bool:
    if t.if_ is not None:
        return True
    texts = [t.name, t.var, t.queue, t.run, t.image, *t.env.values(), *(t.command or []), *t.files.values()]
    for s in t.sidecars:
        texts += [s.run, s.image, *s.env.values(), *(s.command or [])]
    return any(expr.has_expr(x) for x in texts)


def kind_of(t: TaskSpec) -> str:
    c = t.composite()
    if c is not None:
        return c
    if t.pre or t.post:
        return "steps"
    return "template" if needs_eval(t) else "run"


def context(spec: Mapping[str, Any], job: Mapping[str, Any], outputs: Mapping[str, str],
            scope: Mapping[str, Any] | None) -> dict[str, Any]:
    """What expressions see: inputs, secrets, tasks (outputs by var), job, and the each item in scope."""
    return {"inputs": dict(spec.get("inputs") or {}), "secrets": dict(spec.get("secrets") or {}),
            "tasks": dict(outputs), "job": {"id": job["id"], "name": job["name"], "state": job["state"].upper()},
            **(scope or {})}


def is_true(cond: str, ctx: Mapping[str, Any], where: str) -> bool:
    return expr.truthy(expr.evaluate(cond, ctx, where))


def render_header(spec: Mapping[str, Any], ctx: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The task with its name, var and queue evaluated (``HEADER``), each checked as a submitted one:
    a name of 1-100 characters, a variable name, a queue name. Any kind of task has them: a composite's
    are evaluated when it opens. Raises ``expr.ExprError`` naming the field."""
    out = dict(spec)
    for k in HEADER:
        value = out.get(k)
        if not isinstance(value, str) or not expr.has_expr(value):
            continue
        text = expr.render(value, ctx, f"{where}.{k}")
        try:
            if k == "name" and not 1 <= len(text) <= MAX_TASK_NAME:
                raise ValueError(f"a task name is 1-{MAX_TASK_NAME} characters")
            if k == "var":
                check_var(text)
            if k == "queue":
                check_queue(text)
        except ValueError as e:
            raise expr.ExprError(f"{where}.{k}: the expression gave '{text[:100]}', which is not valid: {e}") from None
        out[k] = text
    return out


def render_task(spec: Mapping[str, Any], ctx: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The task with its name, var, queue, run, command, image, env, files and sidecars evaluated, and 'if'
    dropped (it was decided). Raises ``expr.ExprError`` naming the field that failed, or when the rendered
    fields hold more than ``MAX_RENDERED`` characters in all (checked as they are rendered)."""
    out = render_header(spec, ctx, where)
    out.pop("if", None)
    total = 0

    def render(s: str, at: str) -> str:
        nonlocal total
        text = expr.render(s, ctx, at)
        total += len(text)
        if total > MAX_RENDERED:
            raise expr.ExprError(f"{at}: the evaluated task would hold more than {MAX_RENDERED:,} characters")
        return text

    def one(d: dict[str, Any], at: str) -> None:
        for k in ("run", "image"):
            if isinstance(d.get(k), str):
                d[k] = render(d[k], f"{at}.{k}")
        if d.get("command"):
            d["command"] = [render(c, f"{at}.command[{i}]") for i, c in enumerate(d["command"])]
        for k in ("env", "files"):
            if d.get(k):
                d[k] = {n: render(v, f"{at}.{k}.{n}") for n, v in d[k].items()}

    one(out, where)
    if out.get("sidecars"):
        out["sidecars"] = [dict(s) for s in out["sidecars"]]
        for i, s in enumerate(out["sidecars"]):
            one(s, f"{where}.sidecars[{i}]")
    return out


def _once(text: str, where: str) -> str:
    """An evaluated webhook header, which is rendered again when the hook is sent: it may not give an
    expression (an input's value would otherwise be evaluated as one)."""
    if expr.has_expr(text):
        raise expr.ExprError(f"{where}: the evaluated value holds '{{{{' or '{{%': it would be evaluated again")
    return text


def render_subjob(sub: Mapping[str, Any], ctx: Mapping[str, Any], secrets: Mapping[str, str],
                  where: str) -> dict[str, Any]:
    """A subjob's spec with its name, inputs and webhooks (url and headers) evaluated in the context of the
    task that opens it, as Tork does. A secret of the parent job (``secrets``) that an evaluated value
    holds is given to the subjob as a secret too (under its name, or ``parent_<name>`` if the subjob has
    its own of that name), so that every view of the subjob redacts it. Raises ``expr.ExprError``."""
    out = dict(sub)
    if isinstance(out.get("name"), str):
        out["name"] = expr.render(out["name"], ctx, f"{where}.name")
    if out.get("inputs"):
        out["inputs"] = {k: expr.render(v, ctx, f"{where}.inputs.{k}") for k, v in out["inputs"].items()}
    if out.get("webhooks"):
        hooks = []
        for i, w in enumerate(out["webhooks"]):
            hook = {**w, "url": expr.render(w["url"], ctx, f"{where}.webhooks[{i}].url")}
            if w.get("headers"):
                hook["headers"] = {k: _once(expr.render(v, ctx, at := f"{where}.webhooks[{i}].headers.{k}"), at)
                                   for k, v in w["headers"].items()}
            hooks.append(hook)
        out["webhooks"] = hooks
    texts = [out.get("name"), *(out.get("inputs") or {}).values()]
    texts += [x for w in out.get("webhooks") or () for x in (w["url"], *(w.get("headers") or {}).values())]
    own = dict(out.get("secrets") or {})
    for name, value in secrets.items():
        if value and value not in own.values() and any(isinstance(t, str) and value in t for t in texts):
            own[name if name not in own else f"parent_{name}"] = value
    if own:
        out["secrets"] = own
    return out


def each_items(spec: Mapping[str, Any], ctx: Mapping[str, Any], where: str) -> list[Any]:
    value = expr.evaluate(spec["each"]["list"], ctx, f"{where}.each.list")
    if isinstance(value, str):
        raise expr.ExprError(f"{where}.each.list must give a list, not the text '{value[:80]}'")
    try:
        items = list(value)
    except TypeError:
        raise expr.ExprError(f"{where}.each.list must give a list, not {type(value).__name__}") from None
    if len(items) > MAX_EACH_ITEMS:
        raise expr.ExprError(f"{where}.each.list gives {len(items):,} items; an each runs at most "
                             f"{MAX_EACH_ITEMS:,}")
    return items


def static_items(each_list: str, ctx: Mapping[str, Any]) -> int | None:
    """How many items an each's list gives, when that is known before the job runs (a literal list, or an
    expression over the job's inputs alone, such as '{{ sequence(0, 100) }}'); None when it is not."""
    try:
        return len(each_items({"each": {"list": each_list}}, ctx, "each"))
    except expr.ExprError as e:
        if "an each runs at most" in str(e):
            return MAX_EACH_ITEMS + 1
        return None


def rows_of(t: TaskSpec, ctx: Mapping[str, Any]) -> int:
    """The task rows ``t`` becomes, counting every level that is known before it runs: its own row, the
    tasks a parallel, pre/post or subjob opens, and an each's items times its task when the list is known
    (an each whose list is known only when it runs counts one row: the rest is checked when it opens)."""
    n = 1
    if t.parallel:
        n += sum(rows_of(c, ctx) for c in t.parallel.tasks)
    if t.each:
        items = static_items(t.each.list, ctx)
        if items:
            n += items * rows_of(t.each.task, ctx)
    if t.subjob:
        sub = {"inputs": dict(t.subjob.inputs), "secrets": dict(t.subjob.secrets)}
        n += sum(rows_of(c, sub) for c in t.subjob.tasks)
    if t.pre or t.post:
        n += 1 + sum(rows_of(c, ctx) for c in (*t.pre, *t.post))  # the steps open into pre, the task, post
    return n


def rows_of_job(spec: JobSpec) -> int:
    """The task rows a job holds across all its levels, as far as they are known at submit time."""
    ctx = {"inputs": dict(spec.inputs), "secrets": dict(spec.secrets)}
    return sum(rows_of(t, ctx) for t in spec.tasks)


def rows_of_spec(spec: Mapping[str, Any]) -> int:
    """``rows_of`` for a stored task spec (about to be opened): an each whose list is not known yet
    counts one row."""
    return rows_of(TaskSpec.model_validate(spec), {})


def children(spec: Mapping[str, Any], kind: str, name: str, ctx: Mapping[str, Any],
             scope: Mapping[str, Any] | None) -> tuple[list[tuple[dict[str, Any], dict[str, Any] | None]], int]:
    """The tasks a composite opens into, each with the scope (each's item) its expressions see, and how
    many of them start at once (the rest start one by one as others finish)."""
    kids: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    if kind == "parallel":
        kids = [(dict(c), dict(scope) if scope else None) for c in spec["parallel"]["tasks"]]
        return kids, len(kids)
    if kind == "each":
        each = spec["each"]
        items = each_items(spec, ctx, name)
        var = each.get("var") or "item"
        for i, v in enumerate(items):
            child = dict(each["task"])
            if not expr.has_expr(child.get("name")):  # a name that is an expression is evaluated per item
                child["name"] = f"{name}[{i}]"
            kids.append((child, {**(scope or {}), var: {"index": i, "value": v}}))
        return kids, min(int(each.get("concurrency") or len(kids) or 1), max(len(kids), 1))
    if kind == "steps":
        main = {k: v for k, v in spec.items() if k not in ("pre", "post", "if", "depends_on")}
        steps: list[dict[str, Any]] = [*(dict(c) for c in spec.get("pre") or []), main,
                                       *(dict(c) for c in spec.get("post") or [])]
        return [(k, dict(scope) if scope else None) for k in steps], 1
    raise ValueError(f"a {kind} task has no child tasks")


def redact(value: Any, secrets: Mapping[str, str] | list[str] | tuple[str, ...]) -> Any:
    """``value`` with every secret's text replaced by [REDACTED], in strings at any depth."""
    texts = sorted({s for s in (secrets.values() if isinstance(secrets, Mapping) else secrets) if s},
                   key=len, reverse=True)
    if not texts:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in texts:
                if s in v:
                    v = v.replace(s, REDACTED)
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def secrets_in(spec: Any) -> tuple[str, ...]:
    """The text of every secret ``spec`` holds: its own ``secrets`` and those of every subjob in it, at any
    depth (a parent's views show its subjobs' specs, and their outputs), and every task's registry
    password."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "secrets" and isinstance(x, dict):
                    found.update(s for s in x.values() if isinstance(s, str) and s)
                elif k == "registry" and isinstance(x, dict) and isinstance(x.get("password"), str) and x["password"]:
                    found.add(x["password"])  # a task's registry password is a secret like these
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(spec)
    return tuple(sorted(found))


def shown(out: Mapping[str, Any], secrets: Mapping[str, str] | tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What an API answer (or a webhook body) may show of ``out``: the text of every secret (``secrets``,
    and any found in ``out`` itself) replaced by [REDACTED], every ``secrets`` map in it, at any depth,
    reduced to its names, and every registry password and webhook header value [REDACTED]."""
    given = secrets.values() if isinstance(secrets, Mapping) else secrets
    texts = {*(s for s in given if s), *secrets_in(dict(out))}

    def hook(w: Any) -> Any:  # a webhook's header values are credentials: their names only
        if isinstance(w, dict) and isinstance(w.get("headers"), dict):
            return {**mask(w), "headers": {n: REDACTED for n in w["headers"]}}
        return mask(w)

    def mask(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {n: REDACTED for n in x} if k == "secrets" and isinstance(x, dict)
                    else {**x, "password": REDACTED} if k == "registry" and isinstance(x, dict) and "password" in x
                    else [hook(w) for w in x] if k == "webhooks" and isinstance(x, list)
                    else mask(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mask(x) for x in v]
        return v

    return dict(mask(redact(dict(out), tuple(texts))))
