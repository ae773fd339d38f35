"""Expressions and the pure workflow rules: evaluation, the sandbox, and how composites open."""

from __future__ import annotations

import pytest

from corral.domain import expr, workflow
from corral.domain.spec import JobSpec, TaskSpec, dump_spec

CTX = {"inputs": {"n": "3", "csv": "a,b,c", "js": '{"x": [1, 2]}'}, "secrets": {"pw": "hunter2"},
       "tasks": {"a": "5"}, "job": {"id": "j1", "name": "job", "state": "RUNNING"}}


def test_values_keep_their_type_and_text_renders() -> None:
    assert expr.evaluate("{{ sequence(1, 4) }}", CTX) == [1, 2, 3]
    assert expr.evaluate("{{ split(inputs.csv, ',') }}", CTX) == ["a", "b", "c"]
    assert expr.evaluate("{{ fromJSON(inputs.js).x }}", CTX) == [1, 2]
    assert expr.evaluate('["p", "q"]', CTX) == ["p", "q"]  # plain JSON text, as Tork's each.list allows
    assert expr.render("n={{ inputs.n | int + tasks.a | int }}", CTX) == "n=8"
    assert expr.render("{{ toJSON(sequence(0, 2)) }}", CTX) == "[0,1]"
    assert expr.render("no braces here", CTX) == "no braces here"
    assert 0 <= int(expr.render("{{ randomInt(10) }}", CTX)) < 10


@pytest.mark.parametrize("value, truth", [("true", True), ("false", False), ("0", False), ("", False),
                                          ("{{ inputs.n == '3' }}", True), ("{{ inputs.n == '4' }}", False),
                                          ("{{ [] }}", False), ("no", False), ("yes", True)])
def test_conditions(value: str, truth: bool) -> None:
    assert expr.truthy(expr.evaluate(value, CTX)) is truth


@pytest.mark.parametrize("bad", [
    "{{ ().__class__.__mro__ }}", "{{ inputs.__class__ }}", "{{ inputs.update({'n': 1}) }}",
    "{{ range(10) }}", "{{ lipsum() }}", "{{ cycler }}", "{{ undefined_name }}", "{{ 1 / 0 }}",
    "{{ sequence(0, 10000000) }}", "{{ randomInt(5, 5) }}", "{{ fromJSON('nope') }}",
    "{{ 'x' * 1000000000 }}", "{{ [1] * 100000000 }}", "{{ 10 ** 100000 }}", "{{ (2 ** 1000) ** 1000 }}",
])
def test_the_sandbox_refuses_what_is_unsafe_or_wrong(bad: str) -> None:
    with pytest.raises(expr.ExprError):
        expr.evaluate(bad, CTX, "run")


def test_a_syntax_error_names_the_field_at_submit() -> None:
    with pytest.raises(ValueError, match=r"tasks\[0\]|task-1.run: the expression does not parse"):
        JobSpec.model_validate({"tasks": [{"run": "echo {{ a + }}"}]})


def test_kinds() -> None:
    def kind(d: dict[str, object]) -> str:
        return workflow.kind_of(TaskSpec.model_validate(d))

    assert kind({"run": "echo hi"}) == "run"
    assert kind({"run": "echo {{ inputs.n }}"}) == "template"
    assert kind({"run": "echo hi", "if": "true"}) == "template"
    assert kind({"run": "x", "env": {"A": "{{ secrets.pw }}"}}) == "template"
    assert kind({"parallel": {"tasks": [{"run": "x"}]}}) == "parallel"
    assert kind({"each": {"list": "[1]", "task": {"run": "x"}}}) == "each"
    assert kind({"subjob": {"tasks": [{"run": "x"}]}}) == "subjob"
    assert kind({"run": "x", "pre": [{"run": "p"}]}) == "steps"


def test_each_opens_with_items_in_scope_and_its_concurrency() -> None:
    spec = {"each": {"list": "{{ sequence(0, 5) }}", "var": "f", "concurrency": 2,
                     "task": {"run": "echo {{ f.value }}"}}}
    kids, width = workflow.children(spec, "each", "loop", CTX, None)
    assert width == 2 and len(kids) == 5
    assert kids[3][0]["name"] == "loop[3]" and kids[3][1] == {"f": {"index": 3, "value": 3}}
    with pytest.raises(expr.ExprError, match="at most 10,000"):
        workflow.children({"each": {"list": "{{ sequence(0, 20000) }}", "task": {"run": "x"}}}, "each", "e", CTX, None)
    with pytest.raises(expr.ExprError, match="must give a list"):
        workflow.children({"each": {"list": "{{ inputs.n }}", "task": {"run": "x"}}}, "each", "e", CTX, None)


def test_steps_open_pre_task_post_in_order() -> None:
    spec = {"name": "t", "run": "main", "if": "true", "pre": [{"run": "a"}], "post": [{"run": "z"}]}
    kids, width = workflow.children(spec, "steps", "t", CTX, None)
    assert width == 1 and [k["run"] for k, _ in kids] == ["a", "main", "z"]
    assert "if" not in kids[1][0] and "pre" not in kids[1][0]


def test_render_and_redact() -> None:
    spec = {"name": "t", "run": "login {{ secrets.pw }}", "env": {"A": "{{ inputs.n }}"}, "if": "true",
            "sidecars": [{"name": "s", "image": "busybox", "run": "echo {{ tasks.a }}"}]}
    out = workflow.render_task(spec, CTX, "t")
    assert out["run"] == "login hunter2" and out["env"] == {"A": "3"} and "if" not in out
    assert out["sidecars"][0]["run"] == "echo 5"
    assert workflow.redact(out, CTX["secrets"])["run"] == "login [REDACTED]"
    shown = workflow.shown({"secrets": {"pw": "hunter2"}, "tasks": [{"run": "echo hunter2"}]}, {"pw": "hunter2"})
    assert shown == {"secrets": {"pw": "[REDACTED]"}, "tasks": [{"run": "echo [REDACTED]"}]}


def test_defaults_fill_nested_tasks_but_stop_at_a_subjob() -> None:
    job = JobSpec.model_validate({"defaults": {"retry": {"limit": 2}, "queue": "gpu", "timeout": "5s"}, "tasks": [
        {"parallel": {"tasks": [{"run": "x"}, {"run": "y", "retry": {"limit": 0}}]}},
        {"subjob": {"tasks": [{"run": "z"}]}}]})
    par = job.tasks[0].parallel
    assert par is not None
    assert [t.retry.limit for t in par.tasks] == [2, 0] and par.tasks[0].queue == "gpu"
    assert par.tasks[0].timeout == "5s" and job.tasks[0].timeout is None  # a composite has no timeout of its own
    sub = job.tasks[1].subjob
    assert sub is not None and sub.tasks[0].retry.limit == 0 and sub.tasks[0].queue is None


@pytest.mark.parametrize("mount, words", [
    ({"type": "tmpfs", "target": "relative"}, "absolute"),
    ({"type": "tmpfs", "target": "/a/../b"}, ".."),
    ({"type": "tmpfs", "target": "/"}, "not allowed"),
    ({"type": "tmpfs", "target": "/proc/x"}, "not allowed"),
    ({"type": "bind", "target": "/x"}, "needs 'source'"),
    ({"type": "bind", "source": "rel", "target": "/x"}, "absolute"),
    ({"type": "volume", "source": "a/b", "target": "/x"}, "volume name"),
    ({"type": "tmpfs", "source": "x", "target": "/x"}, "takes no 'source'"),
    ({"type": "nfs", "target": "/x"}, "Input should be"),
])
def test_mounts_that_escape_are_refused(mount: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        TaskSpec.model_validate({"image": "busybox", "run": "x", "mounts": [mount]})


def test_a_subjobs_secrets_are_hidden_in_its_parents_views() -> None:
    job = JobSpec.model_validate({"secrets": {"a": "top-secret"}, "tasks": [
        {"each": {"list": "[1]", "task": {"subjob": {"secrets": {"pw": "hunter2"}, "tasks": [
            {"subjob": {"secrets": {"k": "deep-key"}, "tasks": [{"run": "echo $PW"}]}}]}}}}]})
    spec = dump_spec(job)
    assert set(workflow.secrets_in(spec)) == {"top-secret", "hunter2", "deep-key"}
    out = workflow.shown({**spec, "output": "got hunter2 and deep-key"}, workflow.secrets_in(spec))
    text = repr(out)
    assert "hunter2" not in text and "deep-key" not in text and "top-secret" not in text
    inner = out["tasks"][0]["each"]["task"]["subjob"]
    assert inner["secrets"] == {"pw": "[REDACTED]"}
    assert inner["tasks"][0]["subjob"]["secrets"] == {"k": "[REDACTED]"}
    assert out["output"] == "got [REDACTED] and [REDACTED]"
    # Given only the top-level secrets (as the views passed them), the nested maps are still masked.
    assert "hunter2" not in repr(workflow.shown(spec, {"a": "top-secret"}))


def test_webhook_bodies_redact_a_subjobs_secrets_too() -> None:
    from corral.coordinator.webhooks import JobHooks

    hooks = JobHooks.from_spec({"secrets": {"a": "x1"}, "tasks": [{"subjob": {"secrets": {"b": "y2"}}}]})
    assert set(hooks.hidden) == {"x1", "y2"}
