"""corral.api.openapi: the rules that add every operation's error answers, and the Allow of a 405."""

from __future__ import annotations

from typing import Any

from corral.api import openapi as doc

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
