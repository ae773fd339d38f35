"""The task fields Tork evaluates (name, var, queue; a subjob's name, inputs and webhooks), a task's
registry credentials and networks: validation at submit, evaluation, and redaction. Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

import pytest

from corral.api.dialects import tork
from corral.api.dialects.base import DialectError
from corral.coordinator.flow import Flow, task_row
from corral.domain import expr, workflow
from corral.domain.spec import JobSpec, TaskSpec

CTX = {"inputs": {"q": "gpu", "n": "3"}, "secrets": {"pw": "hunter2"}, "tasks": {},
       "job": {"id": "j1", "name": "job", "state": "RUNNING"}}


def test_a_templated_var_name_and_queue_are_accepted_and_checked_when_evaluated() -> None:
    t = TaskSpec.model_validate({"name": "t {{ item.index }}", "var": "eachTask{{ item.index }}",
                                 "queue": "{{ inputs.q }}", "run": "true"})
    assert workflow.kind_of(t) == "template"  # evaluated before it is placed
    out = workflow.render_task(t.model_dump(by_alias=True, exclude_none=True), {**CTX, "item": {"index": 4}}, "t")
    assert (out["name"], out["var"], out["queue"]) == ("t 4", "eachTask4", "gpu")
    for field, value, words in [("var", "{{ inputs.q }} x", "not valid: a variable name"),
                                ("var", "{{ '' }}", "not valid"),
                                ("queue", "{{ 'a b' }}", "not valid: a queue name"),
                                ("name", "{{ 'x' * 101 }}", "not valid: a task name is 1-100")]:
        with pytest.raises(expr.ExprError, match=words):
            workflow.render_header({field: value}, CTX, "t")
    # A row's queue is the job's until its expression is known (no task waits in a queue named '{{ ... }}').
    assert task_row("j", 0, t, "default", 0, 0.0, True)["queue"] == "default"


@pytest.mark.parametrize("task, words", [
    ({"var": "1abc", "run": "x"}, "variable name"),
    ({"var": "{{ broken", "run": "x"}, "var: the expression does not parse"),
    ({"queue": "{{ nope(", "run": "x"}, "queue: the expression does not parse"),
    ({"queue": "a b", "run": "x"}, "queue name"),
    ({"networks": ["host"], "image": "busybox", "run": "x"}, "host network"),
    ({"networks": ["bad name"], "image": "busybox", "run": "x"}, "not a Docker network name"),
    ({"networks": ["n"], "run": "x"}, "need an image"),
    ({"registry": {"username": "u", "password": "p"}, "run": "x"}, "need an image"),
    ({"registry": {"password": "p"}, "image": "busybox", "run": "x"}, "username"),
    ({"each": {"list": "[1]", "task": {"run": "x"}}, "networks": ["n"]}, "takes no networks"),
    ({"image": "b", "run": "x", "sidecars": [{"image": "b", "run": "y", "networks": ["n"]}]}, "a sidecar takes no"),
    ({"subjob": {"tasks": [{"run": "x"}], "inputs": {"a": "{{ oops("}}}, "subjob.inputs.a"),
    ({"subjob": {"tasks": [{"run": "x"}], "webhooks": [{"url": "ftp://x"}]}}, "http"),
])
def test_bad_fields_are_refused_at_submit_saying_what(task: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        JobSpec.model_validate({"tasks": [task]})


def test_a_graph_task_name_cannot_be_an_expression() -> None:
    with pytest.raises(ValueError, match="depends_on.*cannot be an expression"):
        JobSpec.model_validate({"tasks": [{"name": "{{ inputs.n }}", "run": "x"},
                                          {"name": "b", "run": "x", "depends_on": ["a"]}]})


def test_each_children_keep_a_templated_name_and_var_for_their_item() -> None:
    spec = {"each": {"list": "[10, 20]", "task": {"name": "task {{ item.index }}", "var": "eachTask{{ item.index }}",
                                                  "run": "echo {{ item.value }}"}}}
    kids, _ = workflow.children(spec, "each", "loop", CTX, None)
    assert [k["name"] for k, _ in kids] == ["task {{ item.index }}"] * 2  # evaluated per item, as it runs
    plain, _ = workflow.children({"each": {"list": "[1]", "task": {"name": "x", "run": "y"}}}, "each", "loop", CTX,
                                 None)
    assert plain[0][0]["name"] == "loop[0]"


def test_a_template_row_evaluates_to_its_name_var_and_queue() -> None:
    flow = Flow()
    spec = {"name": "t {{ item.index }}", "var": "out{{ item.index }}", "queue": "{{ inputs.q }}", "run": "true"}
    row = {"id": "r1", "name": "t {{ item.index }}", "queue": "default", "kind": "template"}
    values = flow._evaluate(row, spec, {**CTX, "item": {"index": 2, "value": 0}})
    assert values["name"] == "t 2" and values["queue"] == "gpu" and values["spec"]["var"] == "out2"


def test_a_subjob_name_inputs_and_webhooks_are_evaluated_and_parent_secrets_stay_secret() -> None:
    sub = {"name": "child {{ inputs.n }}", "inputs": {"k": "{{ secrets.pw }}", "n": "{{ inputs.n }}"},
           "webhooks": [{"url": "http://hooks.example/{{ inputs.q }}", "headers": {"X-Key": "{{ inputs.n }}"}}],
           "tasks": [{"run": "x"}]}
    out = workflow.render_subjob(sub, CTX, CTX["secrets"], "t.subjob")
    assert out["name"] == "child 3" and out["inputs"] == {"k": "hunter2", "n": "3"}
    assert out["webhooks"][0]["url"] == "http://hooks.example/gpu" and out["webhooks"][0]["headers"] == {"X-Key": "3"}
    assert out["secrets"] == {"pw": "hunter2"}  # so that every view of the subjob redacts it
    JobSpec.model_validate(out)  # what it gave is a valid job
    shown = workflow.shown({"inputs": out["inputs"]}, workflow.secrets_in(out))
    assert shown == {"inputs": {"k": "[REDACTED]", "n": "3"}}
    with pytest.raises(expr.ExprError, match="evaluated again"):  # an input's text is not evaluated twice
        workflow.render_subjob({"webhooks": [{"url": "http://h/", "headers": {"A": "{{ inputs.t }}"}}]},
                               {**CTX, "inputs": {"t": "{{ secrets.pw }}"}}, {}, "t.subjob")


def test_a_registry_password_is_a_secret_in_every_view() -> None:
    spec = JobSpec.model_validate({"tasks": [{"image": "private.example/app:1", "run": "echo s3cr3t-pw",
                                              "registry": {"username": "me", "password": "s3cr3t-pw"}}]})
    stored = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert workflow.secrets_in(stored) == ("s3cr3t-pw",)
    shown = workflow.shown(stored, ())
    assert "s3cr3t-pw" not in str(shown)
    assert shown["tasks"][0]["registry"] == {"username": "me", "password": "[REDACTED]"}
    assert shown["tasks"][0]["run"] == "echo [REDACTED]"


def test_tork_paging_is_clamped_like_its_handlers() -> None:
    assert tork.page_args(0, 50, 20) == (1, 20)
    assert tork.page_args(-3, 0, 20) == (1, 1)
    assert tork.page_args(2, 7, 100) == (2, 7)
    assert tork.page_args(10**30, 5, 20) == (tork.MAX_PAGE, 5)  # an offset the store can hold


def test_tork_takes_registry_networks_and_subjob_webhooks() -> None:
    spec = tork.to_spec({"tasks": [
        {"name": "a", "image": "busybox", "run": "true", "networks": ["net1"],
         "registry": {"username": "u", "password": "p"}},
        {"name": "s", "subjob": {"name": "x", "tasks": [{"run": "true"}],
                                 "webhooks": [{"url": "http://h.example/{{ inputs.a }}"}]}}]})
    assert spec.tasks[0].networks == ["net1"] and spec.tasks[0].registry is not None
    assert spec.tasks[1].subjob is not None and len(spec.tasks[1].subjob.webhooks) == 1
    with pytest.raises(DialectError, match="tasks.0.probe.port: Field required"):
        tork.to_spec({"tasks": [{"image": "busybox", "run": "true", "probe": {"path": "/"}}]})


def test_tork_ports_and_probe_map_onto_the_task() -> None:
    spec = tork.to_spec({"tasks": [{"name": "web", "image": "busybox", "run": "httpd -f", "ports": [8080, "53/udp"],
                                    "probe": {"path": "/ready", "port": 8080, "timeout": "5s"}}]})
    t = spec.tasks[0]
    assert [(p.port, p.protocol) for p in t.ports] == [(8080, "tcp"), (53, "udp")]
    assert t.probe is not None and (t.probe.path, t.probe.port, t.probe.timeout) == ("/ready", 8080, "5s")
    shown = tork.task_spec_view(t.model_dump(by_alias=True, exclude_none=True))
    assert shown["ports"] == [8080, "53/udp"]
    assert shown["probe"] == {"path": "/ready", "port": 8080, "timeout": "5s"}
    # Tork's defaults: path '/', timeout 1m.
    d = tork.to_spec({"tasks": [{"image": "busybox", "run": "x", "probe": {"port": 80}}]}).tasks[0].probe
    assert d is not None and (d.path, d.timeout) == ("/", "1m")


@pytest.mark.parametrize(("task", "message"), [
    ({"image": "busybox", "run": "x", "ports": 8080}, "tasks[0].ports must be a list of container ports"),
    ({"image": "busybox", "run": "x", "ports": ["http"]}, "tasks[0].ports[0]: 'http' is not a port such as 8080"),
    ({"image": "busybox", "run": "x", "ports": [True]}, "tasks[0].ports[0]: 'True' is not a port"),
    ({"image": "busybox", "run": "x", "ports": [70000]}, "tasks.0.ports.0.port: Input should be less than or equal"),
    ({"image": "busybox", "run": "x", "ports": [80, "80/tcp"]}, "each (port, protocol) at most once"),
    ({"run": "x", "ports": [80]}, "ports and probe need an image"),
    ({"run": "x", "probe": {"port": 80}}, "ports and probe need an image"),
    ({"image": "busybox", "run": "x", "probe": {"port": 80, "path": "ready"}}, "a probe's path starts with '/'"),
    ({"image": "busybox", "run": "x", "probe": {"port": 80, "timeout": "2h"}}, "at most 1h"),
    ({"image": "busybox", "run": "x", "probe": {"port": 80, "scheme": "https"}}, "tasks.0.probe.scheme: Extra"),
    ({"image": "busybox", "run": "x", "sidecars": [{"image": "busybox", "run": "y", "ports": [80]}]},
     "a sidecar takes no networks, registry, ports or probe"),
])
def test_bad_ports_and_probes_are_refused_saying_why(task: dict[str, object], message: str) -> None:
    with pytest.raises((DialectError, ValueError), match=re.escape(message)):
        tork.to_spec({"tasks": [{"name": "t", **task}]})


def test_networks_are_only_those_the_operator_allows() -> None:
    from corral.coordinator.policy import Policy, PolicyError

    spec = JobSpec.model_validate({"tasks": [{"name": "t", "image": "busybox", "run": "x", "networks": ["backend"]}]})
    with pytest.raises(PolicyError, match="none is allowed; corral server --allow-network backend"):
        Policy().check(spec)
    Policy(networks=("backend",)).check(spec)
    with pytest.raises(PolicyError, match="network 'db' .*allowed: backend"):  # an evaluated task, too
        Policy(networks=("backend",)).check_task({"image": "b", "run": "x", "networks": ["db"]}, "t")
