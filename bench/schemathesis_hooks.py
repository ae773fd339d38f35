"""Schemathesis hooks for the conformance runs (bench/openapi_conformance.sh and
tests/integration/test_openapi_conformance.py, through SCHEMATHESIS_HOOKS): the one rule of the job model that
no JSON schema can say, checked against the request itself.

Task names are unique in a job (a task without a name is ``task-N``, N its position; a pod's container names
likewise), and the server refuses a
job with two alike: ``400 two tasks are named 'x': task names must be unique in a job``. JSON Schema's
``uniqueItems`` compares whole tasks, not one of their fields, so a schema-valid job may repeat a name, and
``positive_data_acceptance`` would count that refusal. The schema's description of ``tasks`` says it; this hook
drops exactly that failure, and only where the request really has two tasks of that name. It drops one more, as
bench/schemathesis.toml does for Tork's taken user names: nomad-lite's documented 400 for cancelling a job that
has already ended (the job's state, which no schema can say), Podling's worker port refusing a task whose id is
not the path's (see ``task_id_mismatch``), a pod container whose requests are above its limits (see
``over_limit``), the Stacks API's documented 503 for a create the cluster cannot take now (see ``stacks_full``),
and Tork's refusal to delete the default queue when
the stateful phase asks for it against the parameter's schema. And it drops an unknown header accepted (see
``unknown_header``). Every other refusal of a schema-valid request, and every other acceptance of a
schema-violating one, is still a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData, ServerError
from schemathesis.openapi.checks import RejectedPositiveData

_DUPLICATE = re.compile(r"two tasks are named '(.*?)': task names must be unique in a job")
# The same rule for a pod's containers: 400 "two containers are named 'x': names are unique in a pod".
_DUPLICATE_CONTAINER = re.compile(r"two containers are named '(.*?)': names are unique in a pod")
# nomad-lite's cancel of a job that has already ended: 400 {"success": false, "error": "job is already completed"},
# as its document says; whether it has ended is the job's state, not something the request's schema can say.
_ENDED = re.compile(r"job is already (?:completed|failed|cancelled)")
# A pod container's requests above its limits: 400 "containers.N.resources: requests.cpu is more than limits.cpu".
_OVER_LIMIT = re.compile(r"containers\.(\d+)\.resources: requests\.(cpu|memory) is more than limits\.\2")


def task_names(tasks: list[Any]) -> list[str]:
    """The names the server gives a job's tasks: their own, else ``task-N``."""
    return [str(t.get("name")) if isinstance(t, dict) and t.get("name") is not None else f"task-{i + 1}"
            for i, t in enumerate(tasks)]


def task_lists(body: Any) -> Iterator[list[Any]]:
    """Every ``tasks`` list in a request body (a job, a batch's jobs, a schedule's job)."""
    if isinstance(body, dict):
        if isinstance(body.get("tasks"), list):
            yield body["tasks"]
        for value in body.values():
            yield from task_lists(value)
    elif isinstance(body, list):
        for item in body:
            yield from task_lists(item)


def repeats(body: Any, name: str) -> bool:
    """Whether some job of ``body`` has two tasks named ``name``."""
    return any(task_names(tasks).count(name) > 1 for tasks in task_lists(body))


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON answer."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings(item)


def unknown_header(failure: Any, case: Any) -> bool:
    """Whether ``failure`` is a request accepted with one more header than the operation declares. HTTP lets any
    request carry header fields its recipient does not know, which the recipient ignores (RFC 9110, section 5.1):
    no route refuses them. Schemathesis' coverage phase counts an operation that declares a header as one that
    refuses any other (its parameters as an object without additional properties)."""
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    return (isinstance(failure, AcceptedNegativeData)
            and str(getattr(getattr(data, "scenario", None), "value", "")) == "object_unexpected_properties"
            and str(getattr(getattr(data, "parameter_location", None), "value", "")) == "header")


def over_limit(body: Any, index: int, what: str) -> bool:
    """Whether container ``index`` of a pod ``body`` really requests more ``what`` than its limit, read as the
    server reads quantities ('100m', 0.5, '64Mi'): a comparison of two fields that no JSON schema can say."""
    from corral.domain.pods import Quantities

    containers = body.get("containers") if isinstance(body, dict) else None
    c = containers[index] if isinstance(containers, list) and index < len(containers) else None
    resources = c.get("resources") if isinstance(c, dict) else None
    if not isinstance(resources, dict):
        return False
    try:
        req, lim = (Quantities.model_validate(resources.get(k) or {}) for k in ("requests", "limits"))
        pair = (req.cores(), lim.cores()) if what == "cpu" else (req.bytes(), lim.bytes())
    except (AttributeError, ValueError):
        return False
    return pair[0] is not None and pair[1] is not None and pair[0] > pair[1]


# The Stacks document's 503s for a create the cluster cannot take now (docs/api/stacks.md): no node with room or
# none at all ("cluster saturated: ..."), the ResourceQuota ("cluster saturated: exceeded quota ..."), no free
# node port, too many creates under way.
_STACKS_FULL = re.compile(r"cluster saturated: .*|no available nodeport: .*|\d+ stack creates are under way.*",
                          re.DOTALL)


def stacks_full(failure: Any, case: Any, response: Any) -> bool:
    """Whether ``failure`` is the Stacks API's documented 503 for a create the cluster cannot take now: what the
    run's other pods hold, which no request's schema can say (the run's pods fill its one node)."""
    if not (isinstance(failure, ServerError) and case.operation.label == "POST /stacks"
            and response.status_code == 503):
        return False
    try:
        answer = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return False
    return (isinstance(answer, dict) and set(answer) == {"error"}
            and _STACKS_FULL.fullmatch(str(answer["error"])) is not None)


POLL = "POST /v1/agent/nodes/{node_id}/poll"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A worker's poll is sent with ``wait: 0`` where it would wait (absent, or a valid number of seconds; 20
    by default): a long-poll that holds its answer while no work comes runs past --request-timeout, which is the
    tool's limit, not an answer the document misdescribes. bench/schemathesis.toml says the same, but its
    parameters do not reach the coverage phase. A value the schema refuses is sent as it is."""
    if case.operation.label == POLL and isinstance(case.body, dict):
        wait = case.body.get("wait")
        if wait is None or (isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 60):
            case.body["wait"] = 0


def task_id_mismatch(case: Any, answer: Any) -> bool:
    """Podling's worker port refuses a task whose ``taskId`` is not the path's (400 "task ID mismatch", as
    Podling's worker does): a rule between the path and the body that no JSON schema can say."""
    task = case.body.get("task") if isinstance(case.body, dict) else None
    return (case.operation.label.endswith("/tasks/{task_id}/execute") and isinstance(answer, dict)
            and "task ID mismatch" in (str(answer.get("error")), str(answer.get("message")))
            and isinstance(task, dict) and task.get("taskId") != (case.path_parameters or {}).get("task_id"))


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a schema-valid request refused (400) for what its state says, not its shape (a job
    refused for a task name it really repeats, and nomad-lite's cancel of a job that has already ended), an
    unknown header accepted, and the Stacks API's 503 for a create the cluster cannot take now."""
    if unknown_header(failure, case) or stacks_full(failure, case, response):
        return False
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    try:
        answer = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return True
    if (case.operation.label == "DELETE /api/jobs/{job_id}" and isinstance(answer, dict)
            and _ENDED.fullmatch(str(answer.get("error")))):
        return False
    # The stateful phase sends names it read from GET /queues, "default" among them, which the parameter's schema
    # excludes (not: {const: default}): a request outside the document, refused as it says.
    if (case.operation.label == "DELETE /queues/{name}" and (case.path_parameters or {}).get("name") == "default"
            and isinstance(answer, dict) and answer.get("message") == "the default queue can not be deleted"):
        return False
    if task_id_mismatch(case, answer):
        return False
    if any(over_limit(case.body, int(m.group(1)), m.group(2)) for text in strings(answer)
           for m in _OVER_LIMIT.finditer(text)):
        return False
    named = {m.group(1) for text in strings(answer) for m in _DUPLICATE.finditer(text)}
    if any(repeats(case.body, name) for name in named):
        return False
    containers = case.body.get("containers") if isinstance(case.body, dict) else None
    names = [c.get("name") for c in containers if isinstance(c, dict)] if isinstance(containers, list) else []
    twice = {m.group(1) for text in strings(answer) for m in _DUPLICATE_CONTAINER.finditer(text)}
    return not any(names.count(name) > 1 for name in twice)
