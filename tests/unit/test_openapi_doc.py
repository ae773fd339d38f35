"""corral.api.openapi: the rules that add every operation's error answers, and the Allow of a 405."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from corral.api import openapi as doc
from corral.api.body import model_body
from corral.api.dialects import podling, stacks, tork
from corral.api.dialects.cloudai import task_spec
from corral.api.dialects.nomadlite_core import job_spec
from corral.api.native.jobs import job_schemas
from corral.api.timefmt import parse_time
from corral.domain import k8s, spec
from corral.domain import schedule as cron
from corral.domain.pods import PodSpec
from corral.domain.resources import MAX_DURATION, MAX_SIZE, duration_schema, parse_duration, parse_size, size_schema
from corral.domain.services import ServiceSpec
from corral.domain.spec import JobSpec, MountSpec
from corral.store.sql import decode_cursor, encode_cursor

EDGE = (("/api/tasks", "cloudai"), ("/jobs", "tork"), ("/stacks", "stacks"))


def _schema() -> dict[str, Any]:
    ok = {"200": {"description": "ok"}, "422": {"description": "FastAPI's"}}
    return {"paths": {
        "/v1/jobs/{job_id}": {"get": {"tags": ["jobs"], "responses": dict(ok)}},
        "/jobs": {"post": {"tags": ["tork"], "responses": dict(ok)}},
        "/healthz": {"get": {"tags": ["health"], "responses": dict(ok)}},
        "/v1/agent/nodes/{node_id}/podling/tasks/{task_id}": {"get": {"tags": ["agent"], "responses": dict(ok)}},
        "/queues/{name}": {"delete": {"tags": ["tork"], "responses": dict(ok),
                                      "parameters": [{"name": "name", "in": "path", "schema": {"type": "string"}}]}},
    }, "components": {"schemas": {"HTTPValidationError": {}, "ValidationError": {}}}}


def test_every_operation_gets_the_common_answers_in_its_apis_shape() -> None:
    s = doc.document(_schema(), doc.DocConfig(access_token=True, edge_prefixes=EDGE))
    job = s["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "422" not in job and "HTTPValidationError" not in s["components"]["schemas"]
    assert {"400", "401", "404", "405", "413", "415", "429", "503"} <= set(job)
    assert "409" not in job and "403" not in job  # a read changes nothing
    assert job["404"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert job["405"]["headers"]["Allow"] and job["401"]["headers"]["WWW-Authenticate"]
    tork = s["paths"]["/jobs"]["post"]["responses"]
    assert tork["400"]["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/TorkError"}}}
    assert {"403", "409"} <= set(tork) and "404" not in tork
    assert "401" not in s["paths"]["/healthz"]["get"]["responses"]  # a probe asks for no token
    assert s["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in s["paths"]["/healthz"]["get"]


def test_an_answer_that_comes_in_two_shapes_documents_both() -> None:
    s = doc.document(_schema(), doc.DocConfig(edge_prefixes=EDGE))
    podling = s["paths"]["/v1/agent/nodes/{node_id}/podling/tasks/{task_id}"]["get"]["responses"]
    # the edge answers this path as the native API, the route as Podling: one media type each
    assert podling["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PodlingError"}
    assert podling["400"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "401" not in podling  # no access token, no cluster token: nothing checks a credential


def test_a_route_keeps_what_it_documents_and_parameters_say_what_is_checked() -> None:
    schema = _schema()
    schema["paths"]["/jobs"]["post"]["responses"]["400"] = {"description": "its own"}
    s = doc.document(schema, doc.DocConfig())
    assert s["paths"]["/jobs"]["post"]["responses"]["400"] == {"description": "its own"}
    name = s["paths"]["/queues/{name}"]["delete"]["parameters"][0]["schema"]
    assert name == {"type": "string", "not": {"const": "default"}}


def test_a_route_declares_its_own_errors_and_gets_them_in_its_apis_shape() -> None:
    schema = _schema()
    schema["paths"]["/jobs"]["post"]["responses"].update({str(k): {**v, "content": {"application/json": {}}}
                                                          for k, v in doc.own_errors(404).items()})
    s = doc.document(schema, doc.DocConfig(edge_prefixes=EDGE))
    answer = s["paths"]["/jobs"]["post"]["responses"]["404"]  # a path without a parameter: 404 by the route's word
    assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/TorkError"}}}
    assert doc.OWN not in answer and answer["description"] == doc.DESCRIPTIONS[404]


def test_allow_lists_the_methods_of_the_resource() -> None:
    paths: dict[str, dict[str, Any]] = {"/stacks": {"get": {}, "post": {}},
                                        "/stacks/{stack_id}": {"get": {}, "delete": {}},
                                        "/stacks/batch-delete": {"post": {}}}
    assert doc.allowed_methods(paths, "/stacks") == ["GET", "POST"]
    assert doc.allowed_methods(paths, "/stacks/abc") == ["GET", "DELETE"]
    assert doc.allowed_methods(paths, "/stacks/batch-delete") == ["POST"]  # the literal path, not a stack
    assert doc.allowed_methods(paths, "/nowhere") is None


# -- what a schema allows, the server accepts ------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.from_regex(doc.CURSOR_PATTERN, fullmatch=True).filter(lambda c: len(c) <= 34),
       st.integers(min_value=0, max_value=10**18 - 1))
def test_the_cursor_pattern_is_exactly_the_cursors_the_server_hands_out(cursor: str, n: int) -> None:
    assert encode_cursor(decode_cursor(cursor)) == cursor
    assert re.search(doc.CURSOR_PATTERN, encode_cursor(n)) and len(encode_cursor(n)) <= 34
    assert re.search(doc.PARAMETERS_BY_NAME["page_token"]["pattern"], "")  # nomad-lite's first page


def test_a_cursor_is_read_only_as_the_server_writes_it() -> None:
    """What the pattern leaves out, the server refuses too: a sequence number past 34 characters' worth (the run
    found one accepted), as text, unsigned or written otherwise."""
    import base64
    for raw in (b'{"s": 6189760102033466441}', b'{"s": "5"}', b'{"s":5}', b'{"s": -1}', b'{"s": 5.0}',
                b'{"s": true}'):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert not re.search(doc.CURSOR_PATTERN, cursor) or len(cursor) > 34
        with pytest.raises(ValueError):
            decode_cursor(cursor)
    assert decode_cursor(encode_cursor(10**18 - 1)) == 10**18 - 1


@settings(max_examples=40, deadline=None)
@given(st.from_regex(doc.CRON_PATTERN, fullmatch=True), st.from_regex(doc.TIME_PATTERN, fullmatch=True))
def test_cron_and_time_patterns_allow_only_what_the_server_reads(expr: str, when: str) -> None:
    cron.validate(expr)
    parse_time(when)


@settings(max_examples=40, deadline=None)
@given(st.from_regex(doc.TEXT_NO_EXPR, fullmatch=True).filter(lambda s: len(s) <= 256),
       st.from_regex(doc.IMAGE_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 1000))
def test_a_script_and_an_image_the_schemas_allow_make_a_job(run: str, image: str) -> None:
    job_spec(run, image)  # nomad-lite's submit
    task_spec({"user_id": "u", "docker_image": image, "command": run})  # CloudAI's
    tork.to_spec({"name": "j", "tasks": [{"run": run}, {"image": image}]})


class _Body(BaseModel):
    size: int = Field(ge=1)


_BodyIn = Annotated[_Body, Depends(model_body(_Body))]


def test_a_body_read_through_model_body_is_documented_from_its_model() -> None:
    app = FastAPI()

    @app.post("/things")
    async def create(body: _BodyIn) -> dict[str, int]:
        return {"size": body.size}

    s = doc.model_bodies(app.openapi(), app.routes)
    schema = s["paths"]["/things"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["size"]["minimum"] == 1 and schema["required"] == ["size"]


def test_the_models_schemas_carry_their_bounds_and_alternatives() -> None:
    pod = PodSpec.model_json_schema()["$defs"]
    assert pod["PortSpec"]["properties"]["containerPort"]["minimum"] == 1
    assert {"required": ["image"], "properties": {"image": {"type": "string"}}} in pod["ContainerSpec"]["anyOf"]
    service = ServiceSpec.model_json_schema()
    assert service["$defs"]["ServicePortSpec"]["properties"]["port"]["minimum"] == 1
    assert service["properties"]["name"]["pattern"]
    task = JobSpec.model_json_schema()["$defs"]["TaskSpec"]
    assert task["anyOf"] and task["not"]  # run, command or image (or a composite); not both run and command


def _text(schema: dict[str, Any]) -> str:
    return next(a["pattern"] for a in schema["anyOf"] if a["type"] == "string")


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_sizes_durations_and_paths_the_schemas_allow_are_read_within_their_bounds(data: st.DataObject) -> None:
    size = data.draw(st.from_regex(_text(size_schema("")), fullmatch=True))
    assert 0 <= parse_size(size) <= MAX_SIZE
    duration = data.draw(st.from_regex(_text(duration_schema("")), fullmatch=True))
    assert 0 <= parse_duration(duration) <= MAX_DURATION
    positive = data.draw(st.from_regex(_text(duration_schema("", positive=True, at_most=3600)), fullmatch=True))
    assert 0 < parse_duration(positive) <= 3600
    path = data.draw(st.from_regex(spec.PATH_PATTERN, fullmatch=True).filter(lambda p: len(p) <= 200))
    MountSpec.model_validate({"type": "volume", "target": "/x" + path})
    MountSpec.model_validate({"type": "bind", "source": path, "target": "/mnt"})
    image = data.draw(st.from_regex(spec.IMAGE_PATTERN, fullmatch=True).filter(lambda p: len(p) <= 200))
    text = data.draw(st.from_regex(spec.NO_EXPR_PATTERN, fullmatch=True).filter(lambda p: len(p) <= 200))
    JobSpec.model_validate({"output": text, "tasks": [{"image": image, "env": {"A": text}, "command": [text]}]})


def test_a_task_in_the_schema_is_one_kind_and_the_policy_narrows_mounts_and_networks() -> None:
    task = JobSpec.model_json_schema()["$defs"]["TaskSpec"]
    assert len(task["oneOf"]) == 4  # a task that runs, or one of parallel, each, subjob
    assert task["properties"]["depends_on"]["anyOf"] == [{"type": "null"}]  # the nearest stricter
    components = job_schemas()
    doc.policy_schemas(components, doc.DocConfig())
    assert "bind" not in components["MountSpec"]["properties"]["type"]["enum"]
    assert components["TaskSpec"]["properties"]["networks"]["maxItems"] == 0
    components = job_schemas()  # not changed by the call before
    doc.policy_schemas(components, doc.DocConfig(bind_roots=("/data/",), networks=("web",)))
    bind = next(b for b in components["MountSpec"]["oneOf"] if b["properties"]["type"]["const"] == "bind")
    assert re.search(bind["properties"]["source"]["pattern"], "/data/x")
    assert not re.search(bind["properties"]["source"]["pattern"], "/etc")
    assert components["TaskSpec"]["properties"]["networks"]["items"]["enum"] == ["web"]
    from corral.api.native.services import service_schemas
    components = service_schemas()
    doc.policy_schemas(components, doc.DocConfig(node_ports=(31000, 31002)))
    node_port = components["ServicePortSpec"]["properties"]["nodePort"]["anyOf"][0]
    assert (node_port["minimum"], node_port["maximum"]) == (31000, 31002)
    assert service_schemas()["ServicePortSpec"]["properties"]["nodePort"]["anyOf"][0]["minimum"] == 1  # a copy


@settings(max_examples=10, deadline=None)
@given(st.from_regex(stacks._MANIFEST, fullmatch=True))
def test_a_stacks_manifest_the_schema_allows_makes_a_pod(manifest: str) -> None:
    targets = k8s.target_ports([{"container_port": 8080, "protocol": "TCP"}])
    m = k8s.parse_manifest(manifest, targets)
    k8s.check_limits(m, k8s.LimitRange())
    PodSpec.model_validate(k8s.native_pod(m, "stk-0123456789"))


def test_podling_reads_a_whole_number_as_json_schema_does() -> None:
    assert podling._int(655.0, "capacity", 1, 1024) == 655
    assert podling._ports([{"containerPort": 80.0}])[0]["containerPort"] == 80
    with pytest.raises(podling.DialectError):
        podling._int(655.5, "capacity", 1, 1024)


def test_the_document_offers_an_escalation_only_where_the_server_allows_it(tmp_path: object) -> None:
    """The real app's document, on a hardened server and on one that lets admins add capabilities and use the
    host's PID namespace: each escalation field (tasks and pods) is there only for an allowed kind."""
    from corral.api.app import ServerConfig, create_app
    from corral.coordinator.policy import Policy
    from corral.coordinator.service import Settings

    def schemas(*kinds: str) -> dict[str, Any]:
        settings = Settings(policy=Policy(escalations=frozenset(kinds)))
        app = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path}/doc-{len(kinds)}.db", settings=settings))
        out: dict[str, Any] = app.openapi()["components"]["schemas"]
        return out

    hardened = schemas()
    assert not set(doc.ESCALATION_FIELDS["TaskSpec"]) & set(hardened["TaskSpec"]["properties"])
    assert not set(doc.ESCALATION_FIELDS["PodSpec"]) & set(hardened["PodSpec"]["properties"])
    assert "securityContext" not in hardened["ContainerSpec"]["properties"] and "SecurityContext" not in hardened
    assert hardened["TaskSpec"]["additionalProperties"] is False
    assert hardened["PodSpec"]["additionalProperties"] is False
    allowing = schemas("cap_add", "host_pid")
    assert set(doc.ESCALATION_FIELDS["TaskSpec"]) & set(allowing["TaskSpec"]["properties"]) == {"cap_add", "pid"}
    assert set(doc.ESCALATION_FIELDS["PodSpec"]) & set(allowing["PodSpec"]["properties"]) == {"hostPID"}
    assert set(allowing["SecurityContext"]["properties"]) == {"capabilities"} and "Capabilities" in allowing
    assert "securityContext" in allowing["ContainerSpec"]["properties"]
    # The models' own schemas are copied, not changed: each document has its own.
    assert "cap_add" not in hardened["TaskSpec"]["properties"] and "cap_add" in job_schemas()["TaskSpec"]["properties"]


def test_the_conformance_hook_drops_only_a_job_refused_for_a_name_it_repeats() -> None:
    """bench/schemathesis_hooks.py: the one rule no schema can say (task names unique in a job), checked
    against the request; any other refusal of a schema-valid request stays a failure."""
    from types import SimpleNamespace

    pytest.importorskip("schemathesis")
    from bench.schemathesis_hooks import filter_failure, repeats
    from schemathesis.openapi.checks import RejectedPositiveData

    assert repeats({"tasks": [{"name": "task-2"}, {"image": "x"}]}, "task-2")  # the second's own name is task-2
    assert repeats({"jobs": [{"tasks": [{"name": "a"}]}, {"tasks": [{"name": "b"}, {"name": "b"}]}]}, "b")
    assert not repeats({"tasks": [{"name": "a"}, {"name": "b"}]}, "a")
    failure = RejectedPositiveData(operation="POST /v1/jobs", message="", status_code=400, allowed_statuses=["2xx"])

    def kept(body: Any, detail: str, status: int = 400, what: Any = failure, op: str = "POST /v1/jobs",
             key: str = "detail") -> bool:
        answer = SimpleNamespace(status_code=status, content=json.dumps({key: detail}).encode())
        return filter_failure(None, what, SimpleNamespace(body=body, operation=SimpleNamespace(label=op)), answer)

    dup = "tasks: two tasks are named 'a\"b': task names must be unique in a job"
    assert not kept({"tasks": [{"name": 'a"b'}, {"name": 'a"b'}]}, dup)
    assert kept({"tasks": [{"name": "a"}, {"name": "c"}]}, dup)  # the request does not repeat it
    assert kept({"tasks": [{"name": 'a"b'}, {"name": 'a"b'}]}, "tasks.0.image: bad")  # refused for another reason
    assert kept({"tasks": [{"name": 'a"b'}, {"name": 'a"b'}]}, dup, status=500)
    assert kept({"tasks": [{"name": 'a"b'}, {"name": 'a"b'}]}, dup, what=SimpleNamespace(code="ST202"))
    # nomad-lite's documented 400 for cancelling a job that has ended: its state, not its shape.
    cancel = "DELETE /api/jobs/{job_id}"
    assert not kept(None, "job is already failed", op=cancel, key="error")
    assert kept(None, "job is already failed", op="DELETE /v1/jobs/{job_id}", key="error")
    assert kept(None, "job id is not a UUID", op=cancel, key="error")
    twice = "(body): two containers are named 'a': names are unique in a pod"
    assert not kept({"containers": [{"name": "a"}, {"name": "a"}]}, twice, op="POST /v1/pods")
    assert kept({"containers": [{"name": "a"}, {"name": "b"}]}, twice, op="POST /v1/pods")
    # A container's requests above its limits (a comparison of two fields), read as the server reads quantities.
    over = "containers.1.resources: requests.cpu is more than limits.cpu"
    pod = {"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "2m"},
                                                                   "limits": {"cpu": 2.2e-308}}}]}
    assert not kept(pod, over, op="POST /v1/pods")
    assert kept(pod, over.replace("cpu", "memory"), op="POST /v1/pods")  # its memory is not over
    assert kept({"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": 0.001},
                                                                        "limits": {"cpu": "1m"}}}]}, over)
    assert kept({"containers": [{"name": "a"}]}, over, op="POST /v1/pods")  # no such container
    # Podling's worker port: a task whose id is not the path's (a rule between path and body).
    execute = "POST /v1/agent/nodes/{node_id}/podling/tasks/{task_id}/execute"

    def kept_execute(task_id: str, error: str) -> bool:
        answer = SimpleNamespace(status_code=400, content=json.dumps({"error": error}).encode())
        case = SimpleNamespace(body={"task": {"taskId": task_id}}, path_parameters={"task_id": "t1"},
                               operation=SimpleNamespace(label=execute))
        return filter_failure(None, failure, case, answer)
    assert not kept_execute("t2", "task ID mismatch")
    assert kept_execute("t1", "task ID mismatch")  # they match: that refusal is wrong
    assert kept_execute("t2", "invalid request")
    # A worker's poll goes with wait 0 where it would wait; a value the schema refuses goes as it is.
    from bench.schemathesis_hooks import POLL, before_call
    for body, sent in (({}, 0), ({"wait": 20}, 0), ({"wait": -1}, -1), ({"wait": "x"}, "x"), ({"wait": True}, True)):
        case = SimpleNamespace(body=dict(body), operation=SimpleNamespace(label=POLL))
        before_call(None, case, {})
        assert case.body["wait"] == sent, body
    # A header the operation does not declare, accepted: HTTP lets a request carry one (the coverage phase's).
    from bench.schemathesis_hooks import unknown_header
    from schemathesis.core.failures import AcceptedNegativeData
    accepted = AcceptedNegativeData(operation="POST /v1/agent/register", message="", status_code=200,
                                    expected_statuses=["400"])

    def coverage(scenario: str, where: str) -> Any:
        data = SimpleNamespace(scenario=SimpleNamespace(value=scenario),
                               parameter_location=SimpleNamespace(value=where))
        return SimpleNamespace(meta=SimpleNamespace(phase=SimpleNamespace(data=data)))
    assert unknown_header(accepted, coverage("object_unexpected_properties", "header"))
    assert not unknown_header(accepted, coverage("object_unexpected_properties", "body"))
    assert not unknown_header(failure, coverage("object_unexpected_properties", "header"))
    # The Stacks API's documented 503 for a create the cluster cannot take now; any other 5xx stays a failure.
    from schemathesis.core.failures import ServerError
    server_error = ServerError(operation="POST /stacks", status_code=503)
    full = "cluster saturated: waiting for capacity: none of the 1 eligible node has cpu 0.001, memory 1Mi free"
    for text in (full, "no available nodeport: waiting for ports", "16 stack creates are under way, the most"):
        assert not kept(None, text, status=503, what=server_error, op="POST /stacks", key="error")
    assert kept(None, full, status=500, what=server_error, op="POST /stacks", key="error")
    assert kept(None, "database is locked", status=503, what=server_error, op="POST /stacks", key="error")
    assert kept(None, full, status=503, what=server_error, op="POST /v1/pods", key="error")


def test_the_models_components_do_not_share_a_name() -> None:
    """Jobs', pods' and services' schemas go under one components map: a name two of them used (a task's and a
    pod's ProbeSpec did) made one model's fields refer to the other's schema."""
    from corral.api.native.pods import pod_schemas
    from corral.api.native.services import service_schemas
    parts = [job_schemas(), pod_schemas(), service_schemas()]
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            assert [k for k in set(a) & set(b) if a[k] != b[k]] == []


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.from_regex(doc.PARAMETERS[("/v1/pods", "selector")]["anyOf"][0]["pattern"], fullmatch=True),
                 st.text(alphabet=" =,a\t", max_size=8)))
def test_a_pod_selector_the_schema_allows_is_one_the_route_reads(text: str) -> None:
    from corral.api.errors import BadInput
    from corral.api.native.pods import _selector
    allowed = re.search(doc.PARAMETERS[("/v1/pods", "selector")]["anyOf"][0]["pattern"], text) is not None
    try:
        _selector(text)
        read = True
    except BadInput:
        read = False
    assert read == allowed, text


@pytest.mark.parametrize("body", [
    {"name": "s", "ports": [{"port": 80, "nodePort": 30080}]},  # a nodePort on a ClusterIP service
    {"name": "s", "type": "NodePort", "ports": [{"port": 53, "protocol": "UDP"}]},  # a NodePort forwards TCP only
    {"name": "s", "ports": [{"port": 80}, {"port": 81}]},  # several ports need names, unique: the schema says one
])
def test_a_service_the_schema_allows_is_one_the_server_takes(body: dict[str, Any]) -> None:
    """What ServiceSpec refuses, its schema refuses too (the run found a nodePort on a ClusterIP service
    schema-valid); what it allows, the model takes."""
    from pydantic import ValidationError
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = ServiceSpec.model_json_schema()
    with pytest.raises(ValidationError):
        ServiceSpec.model_validate(body)
    assert not jsonschema_rs.validator_for(schema).is_valid(body)
    for ok in ({"name": "s", "ports": [{"port": 80}]}, {"name": "s", "type": "ClusterIP", "ports": [{"port": 80}]},
               {"name": "s", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}):
        assert jsonschema_rs.validator_for(schema).is_valid(ok)
        ServiceSpec.model_validate(ok)


def test_a_pod_probe_in_the_schema_has_exactly_one_action() -> None:
    """Found by the run: a probe of three null actions was schema-valid and refused."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    from corral.domain.pods import PodProbeSpec
    valid = jsonschema_rs.validator_for(PodProbeSpec.model_json_schema()).is_valid
    assert valid({"exec": {"command": ["true"]}, "httpGet": None})
    assert not valid({"exec": None, "httpGet": None, "tcpSocket": None})
    assert not valid({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})
    assert not valid({"tcpSocket": {"port": 0}}) and not valid({"tcpSocket": {"port": "Not A Name"}})
    assert valid({"tcpSocket": {"port": 65535}}) and not valid({"httpGet": {"port": "http"}})  # a name: not said


@pytest.mark.parametrize("body", [
    {"name": "p", "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "command": ["true"]}]},
    {"name": "p", "containers": [{"name": "a", "image": None, "command": ["true"]}, {"name": "b", "image": "x"}]},
    {"name": "p", "hostPID": True, "containers": [{"name": "a", "command": ["true"]}]},
    {"name": "p", "containers": [{"name": "a", "command": ["true"], "securityContext": {"privileged": True}}]},
    {"name": "p", "containers": [{"name": "a", "command": ["true"], "securityContext": {"capabilities": {}}}]},
])
def test_a_pod_the_schema_allows_is_all_images_or_all_host_processes(body: dict[str, Any]) -> None:
    """Found by the full run: a pod mixing image and host process containers was schema-valid and refused.
    The schema says the rule (and that a host process takes no escalation); what it allows, the model takes."""
    from pydantic import ValidationError
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    valid = jsonschema_rs.validator_for(PodSpec.model_json_schema()).is_valid
    with pytest.raises(ValidationError):
        PodSpec.model_validate(body)
    assert not valid(body)
    for ok in ({"name": "p", "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "x"}]},
               {"name": "p", "containers": [{"name": "a", "command": ["true"]}, {"name": "b", "image": None,
                                                                                "args": ["x"]}]},
               {"name": "p", "hostPID": False, "containers": [{"name": "a", "command": ["true"],
                                                               "securityContext": {"privileged": False}}]},
               {"name": "p", "hostPID": True, "containers": [{"name": "a", "image": "busybox",
                                                              "securityContext": {"capabilities": {}}}]}):
        assert valid(ok), ok
        PodSpec.model_validate(ok)
