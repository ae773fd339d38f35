"""The OpenAPI document tells the truth: every answer an operation can give, in the shape its API gives it.

FastAPI documents only a route's success (and a 422 that Corral never sends: bad input is a 400). This module
adds, by rule and in one place, the answers every operation shares, each in the error shape of the API it
belongs to (problem+json for the native API, each dialect its own: see ``SHAPES``):

- from the edge (corral.api.edge) and the rate limiter, in the shape of the API that owns the path prefix
  (``edge_api``): 400 (a ``Host`` that does not name the server), 401 and 403 where a credential is
  checked (``checks_credentials``: the one place to declare it), 405, 413, 414, 415, 429;
- from the route itself, in its API's shape (``route_api``): 400 (bad parameters or body), 404 where the
  path names an object, 409 where a request changes something, 503 (overloaded, or nothing can take it).

A route documents only what is its own (another success code, a streaming media type) with ``responses=``.
``document`` is pure: it takes the document FastAPI generated and the routes, and returns the new one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import routing
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from corral.api.body import BODY_MODELS
from corral.api.edge import MAX_TARGET, PROBES, UNSAFE
from corral.domain import spec

PROBLEM = "application/problem+json"
JSON = "application/json"
_STRING = {"type": "string"}

# The error shape of each API: (component name, media type, JSON schema).
SHAPES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "native": ("Problem", PROBLEM, {
        "type": "object", "required": ["type", "title", "status", "detail"],
        "description": "RFC 9457 problem details.",
        "properties": {"type": _STRING, "title": _STRING, "status": {"type": "integer"}, "detail": _STRING,
                       "instance": _STRING,
                       "errors": {"type": "array", "description": "One entry per field that is wrong.",
                                  "items": {"type": "object", "required": ["field", "message"],
                                            "properties": {"field": _STRING, "message": _STRING}}}}}),
    "tork": ("TorkError", JSON, {"type": "object", "required": ["message"], "properties": {"message": _STRING}}),
    "nomad-lite": ("NomadLiteError", JSON, {
        "type": "object", "required": ["error"],
        "description": "`success: false` is there on a DELETE.",
        "properties": {"error": _STRING, "success": {"type": "boolean", "const": False}}}),
    "cloudai": ("CloudAIError", JSON, {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message", "details"],
                                 "properties": {"code": _STRING, "message": _STRING,
                                                "details": {"type": "object"}}}}}),
    "podling": ("PodlingError", JSON, {"type": "object", "required": ["error"], "properties": {"error": _STRING}}),
    "stacks": ("StacksError", JSON, {"type": "object", "required": ["error"], "properties": {"error": _STRING}}),
}
# A route's tag -> its API (a native router's tags are its own: jobs, pods, ...).
API_OF_TAG = {"tork": "tork", "nomad-lite": "nomad-lite", "cloudai": "cloudai", "podling": "podling",
              "stacks": "stacks"}
DESCRIPTIONS = {
    400: "Bad input: a parameter or the body is wrong (the answer names it), or the Host does not name this "
         "server",
    401: "No credential, or not a valid one",
    403: "The caller may not do this (or the request comes from a page of another site)",
    404: "No such object",
    405: "Method not allowed: the Allow header lists those the path takes",
    409: "The object is not in a state that allows this, or it conflicts with another",
    413: "The body is over the limit of this route",
    414: f"The path and query string are over {MAX_TARGET // 1024} KiB",
    415: "The body's content type is not accepted",
    429: "Over a rate limit: try again after Retry-After seconds",
    503: "Overloaded, or nothing can take this now: try again later (Retry-After)",
}
_PARAM = re.compile(r"{[^}]+}")


# What a route checks of a parameter by hand, said in its schema: (path, parameter) -> schema keywords.
_UUID = {"type": "string", "format": "uuid",
         "pattern": "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"}
# A time as corral.api.timefmt.parse_time takes it: UNIX seconds, or RFC 3339 in UTC (the nearest stricter: no
# offsets, days up to 28).
TIME_PATTERN = (r"^(?:[0-9]{1,10}(?:\.[0-9]{1,6})?|(?:19[7-9][0-9]|2[0-9]{3})-(?:0[1-9]|1[0-2])"
                r"-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z)$")
_CLOUDAI_STATES = ("pending", "queued", "running", "completed", "failed", "cancelled")  # cloudai_views.STATUS_FILTER
_JOB_STATES = "pending|scheduled|running|completed|failed|cancelled"  # corral.domain.states.JobState
_NOMAD_STATES = ("pending", "running", "completed", "failed", "cancelled")
_SELECTOR_PART = f"[^,=]*[^,={spec.WS}][^,=]*=[^,]*"
PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/jobs", "limit"): {"maximum": 1000},
    ("/api/jobs/{job_id}", "job_id"): _UUID,
    ("/api/jobs", "status"): {"enum": ["", *_NOMAD_STATES, *(f"JOB_STATUS_{s.upper()}" for s in _NOMAD_STATES)]},
    ("/queues/{name}", "name"): {"not": {"const": "default"}},  # the default queue cannot be deleted
    ("/api/tasks", "limit"): {"minimum": 1, "maximum": 1000},
    ("/api/tasks", "status"): {"anyOf": [{"type": "string", "enum": ["", *_CLOUDAI_STATES]}, {"type": "null"}]},
    # An empty value is no filter, as the route reads it.
    ("/v1/jobs", "state"): {"anyOf": [{"type": "string", "maxLength": 200,  # api/native/jobs.py MAX_STATES
                                       "pattern": f"^(?:(?:{_JOB_STATES})(?:,(?:{_JOB_STATES}))*)?$"},
                                      {"type": "null"}]},
    # key=value[,key=value...] (api/native/pods.py _selector): a key of more than spaces, no '=' or ',' in it.
    ("/v1/pods", "selector"): {"anyOf": [{"type": "string", "pattern": (
        f"^(?:{_SELECTOR_PART}(?:,{_SELECTOR_PART})*)?$")}, {"type": "null"}]},
    ("/api/tasks", "offset"): {"minimum": 0, "maximum": 1 << 31},  # api/dialects/cloudai.py MAX_OFFSET
    ("/api/jobs", "page_size"): {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
    ("/api/jobs", "created_after_ms"): {"minimum": 0},
    ("/api/jobs", "created_before_ms"): {"minimum": 0},
    ("/v1/jobs", "created_after"): {"anyOf": [{"type": "string", "pattern": f"^(?:{TIME_PATTERN[1:-1]})?$"},
                                              {"type": "null"}]},
    ("/v1/jobs", "created_before"): {"anyOf": [{"type": "string", "pattern": f"^(?:{TIME_PATTERN[1:-1]})?$"},
                                               {"type": "null"}]},
}


# A cursor (corral.store.sql.encode_cursor) is base64url, unpadded, of '{"s": N}': the document says exactly that
# language for N of 1 to 18 digits (any such N is a place in a listing; more would not fit the store's integers).
# Base64 maps each 3 bytes to 4 characters; of 3 digits, the first gives the first two characters, the second
# the third and the third the fourth; the closing '}' ends it in one of three ways.
_HEAD = "(?:M[DTjz]|N[DTjz]|O[DT])"  # a digit and the high bits of the next byte (a digit)
_FIRST = "(?:M[Tjz]|N[DTjz]|O[DT])"  # the same for the first digit: 1-9 (JSON has no leading zero)
_GROUP = "[AEIMQUYcgk][w-z0-5]"  # the second and third digits of a group of three
_END_1 = "(?:M[HXn3]|N[HXn3]|O[HX])0"  # a last digit, then '}'
_END_2 = "[BFJNRVZdhl]9"  # after a head: the last digit, then '}'
CURSOR_PATTERN = (f"^eyJzIjog(?:{_FIRST}{_GROUP}(?:{_HEAD}{_GROUP})*(?:fQ|{_END_1}|{_HEAD}{_END_2})|{_END_1}"
                  f"|{_FIRST}{_END_2})$")
_CURSOR = {"type": "string", "pattern": CURSOR_PATTERN, "maxLength": 34,
           "description": "A cursor this server handed out (next_cursor of the page before)"}
# What a route checks of a parameter by hand, by the parameter's name wherever it appears.
PARAMETERS_BY_NAME: dict[str, dict[str, Any]] = {
    # An empty cursor is the first page, as every route reads it (nomad-lite's page_token documents it so).
    "cursor": {**_CURSOR, "pattern": CURSOR_PATTERN.replace("^", "^(?:", 1).replace("$", ")?$")},
    "page_token": {**_CURSOR, "pattern": CURSOR_PATTERN.replace("^", "^(?:", 1).replace("$", ")?$")},
}


@dataclass(frozen=True)
class DocConfig:
    """What of the server's configuration the document depends on."""

    access_token: bool = False  # the edge asks every route but the probes for the access token
    agent_token: bool = False  # /v1/agent/* asks for the cluster token instead (api/native/agent.py)
    own_auth_prefixes: Sequence[str] = ()  # routes that check a credential of their own (the Stacks key)
    # (path prefix, API) in the order the edge and the rate limiter pick the shape of their refusals.
    edge_prefixes: Sequence[tuple[str, str]] = ()
    auth: bool = False  # identities on (corral.auth): every route but a public one asks for a credential
    # The operator's policy (corral.coordinator.policy): where bind mounts may come from (none: refused), the
    # networks tasks may join (none: refused).
    bind_roots: Sequence[str] = ()
    networks: Sequence[str] = ()
    escalations: Collection[str] = ()  # the kinds admins may ask for (--allow-admin-escalation); none: hardened
    node_ports: tuple[int, int] = (30000, 32767)  # a service's nodePort is one of these (--node-port-range)


# Each field that asks for an escalation, by the schema that holds it: the kind the operator allows it by
# (corral.coordinator.policy.ESCALATION_KINDS). Where the server does not allow the kind, the field is not in the
# document: a request with it is refused (400) whoever sends it.
ESCALATION_FIELDS: dict[str, dict[str, str]] = {
    "TaskSpec": {"privileged": "privileged", "cap_add": "cap_add", "network_mode": "host_network",
                 "pid": "host_pid", "ipc": "host_ipc", "devices": "devices"},
    "PodSpec": {"hostNetwork": "host_network", "hostPID": "host_pid", "hostIPC": "host_ipc"},
    "SecurityContext": {"privileged": "privileged", "capabilities": "cap_add"},
}


def _public(method: str, path: str) -> bool:
    """The route needs no credential in corral.auth's rule table (probes, the token exchange)."""
    from corral.auth.identity import Perm
    from corral.auth.rules import RULES

    rule = RULES.get(path, {})
    return rule.get(method.upper(), rule.get("*")) == Perm.PUBLIC


def route_api(path: str, tags: Iterable[str]) -> str:
    """The API whose error shape a route's own errors have."""
    if "/podling/" in path:  # the worker's Podling port asks through /v1/agent/.../podling: Podling's errors
        return "podling"
    return next((API_OF_TAG[t] for t in tags if t in API_OF_TAG), "native")


def edge_api(path: str, config: DocConfig) -> str:
    """The API whose error shape the edge's and the rate limiter's refusals on ``path`` have."""
    return next((api for prefix, api in config.edge_prefixes if path.startswith(prefix)), "native")


# -- who checks a credential: the one place to declare it -----------------------------------------------------
def checks_credentials(method: str, path: str, config: DocConfig) -> bool:
    """Whether the operation asks for a credential: a 401 without or with a bad one, in its API's shape.

    The auth package declares its rules here (and only here): the document follows."""
    if path.startswith("/v1/agent/") and config.agent_token:
        return True
    if config.auth:
        return not _public(method, path)
    if any(path == p or path.startswith(p + "/") for p in config.own_auth_prefixes):
        return True
    return config.access_token and path not in PROBES


def may_forbid(method: str, path: str, config: DocConfig) -> bool:
    """Whether the operation can answer 403: a known caller without the right, or (a request that changes
    something) from a page of another site (the edge's Origin check)."""
    if config.auth and not _public(method, path):
        return True  # a caller whose role lacks the right
    return method.upper() in UNSAFE or (path.startswith("/v1/agent/") and config.agent_token)


# -- the rules ------------------------------------------------------------------------------------------------
OWN = "x-corral-own-error"  # marks an error answer a route declares with ``own_errors`` (removed from the document)


def own_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """What a route answers beyond the rules below, for its ``responses=``: a credential checked in its body (the
    token exchange's 401), an object named in its body rather than its path (a leadership transfer's 404). The
    document gives each in the shape of the route's API, as the answers made by rule."""
    return {status: {"description": DESCRIPTIONS[status], OWN: True} for status in statuses}


def common_statuses(method: str, path: str, config: DocConfig, own: Iterable[int] = ()) -> tuple[set[int], set[int]]:
    """(statuses the edge or the rate limiter may answer, statuses the route itself may answer: by rule, and
    ``own``, those it declares with ``own_errors``)."""
    edge = {400, 405, 413, 414, 415, 429}
    if checks_credentials(method, path, config):
        edge.add(401)
    if may_forbid(method, path, config):
        edge.add(403)
    route = {400, 503}
    if path.startswith("/v1/agent/nodes/"):
        route.add(403)  # node_guard: a call about a node without that node's secret, in the route's shape
    if _PARAM.search(path):
        route.add(404)
    if method.upper() in UNSAFE:
        route.add(409)
    route |= set(own)
    return edge, route


def _ref(api: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{SHAPES[api][0]}"}


def _content(apis: Iterable[str]) -> dict[str, Any]:
    """The content of an error answer that may come in the shapes of ``apis``: by media type, anyOf when two
    shapes share one."""
    by_type: dict[str, list[str]] = {}
    for api in sorted(set(apis)):
        by_type.setdefault(SHAPES[api][1], []).append(api)
    return {mt: {"schema": _ref(a[0]) if len(a) == 1 else {"anyOf": [_ref(x) for x in a]}}
            for mt, a in by_type.items()}


def _headers(status: int) -> dict[str, Any]:
    integer = {"schema": {"type": "integer"}}
    if status == 405:
        return {"Allow": {"description": "The methods the path takes", "schema": _STRING}}
    if status in (429, 503):
        return {"Retry-After": {"description": "Seconds to wait before trying again", **integer}}
    if status == 401:
        return {"WWW-Authenticate": {"description": "The scheme to authenticate with", "schema": _STRING}}
    return {}


def operation_responses(method: str, path: str, tags: Iterable[str], config: DocConfig,
                        own: Iterable[int] = ()) -> dict[str, Any]:
    """The error answers of one operation: by rule, and ``own`` (declared by the route with ``own_errors``)."""
    edge, route = common_statuses(method, path, config, own)
    shapes: dict[int, set[str]] = {}
    for status in edge:
        shapes.setdefault(status, set()).add(edge_api(path, config))
    for status in route:
        shapes.setdefault(status, set()).add(route_api(path, tags))
    out: dict[str, Any] = {}
    for status in sorted(shapes):
        answer: dict[str, Any] = {"description": DESCRIPTIONS[status], "content": _content(shapes[status])}
        if headers := _headers(status):
            answer["headers"] = headers
        out[str(status)] = answer
    return out


def policy_schemas(components: dict[str, Any], config: DocConfig) -> None:
    """The job, pod and service models' schemas (MountSpec, TaskSpec, PodSpec, ...) narrowed to what the operator's
    policy lets a job or a pod ask for: bind mounts only from under the allowed directories, only the allowed
    networks, only the escalations the server allows (to admins: the field's description says so), a service's
    nodePort only in the server's node port range."""
    # Copies: the models' schemas may be shared by every app of the process.
    for name in ("MountSpec", "TaskSpec", "ContainerSpec", "ServicePortSpec", *ESCALATION_FIELDS):
        if name in components:
            components[name] = copy.deepcopy(components[name])
    node_port = components.get("ServicePortSpec", {}).get("properties", {}).get("nodePort", {})
    for alt in node_port.get("anyOf", ()):  # a service's nodePort: in the server's range
        if alt.get("type") == "integer":
            alt.update(minimum=config.node_ports[0], maximum=config.node_ports[1])
    for name, fields in ESCALATION_FIELDS.items():
        props = components.get(name, {}).get("properties", {})
        for field, kind in fields.items():
            if kind not in config.escalations:
                props.pop(field, None)
    security = components.get("SecurityContext", {}).get("properties")
    if security is not None and "capabilities" not in security:
        components.pop("Capabilities", None)
    if security is not None and not security:  # nothing of it is allowed: no container takes one
        del components["SecurityContext"]
        components.get("ContainerSpec", {}).get("properties", {}).pop("securityContext", None)
    mount, task = components.get("MountSpec"), components.get("TaskSpec")
    if mount is not None:
        binds = [b for b in mount.get("oneOf", []) if b["properties"]["type"].get("const") == "bind"]
        if not config.bind_roots:
            mount["oneOf"] = [b for b in mount["oneOf"] if b not in binds]
            mount["properties"]["type"]["enum"] = [t for t in mount["properties"]["type"]["enum"] if t != "bind"]
        for b in binds if config.bind_roots else ():
            roots = "|".join(re.escape(r.rstrip("/")) for r in config.bind_roots)
            b["properties"]["source"].update(minLength=1, pattern=f"^(?:{roots})(?:{spec.SEGMENT})*$")
    if task is not None and "networks" in task.get("properties", {}):
        nets = task["properties"]["networks"]
        if config.networks:
            nets["items"] = {**nets.get("items", {}), "enum": sorted(config.networks)}
        else:
            nets["maxItems"] = 0


def document(schema: dict[str, Any], config: DocConfig) -> dict[str, Any]:
    """``schema`` (as FastAPI generated it) with every operation's error answers and the shapes they use."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    policy_schemas(components, config)
    for name, _, shape in SHAPES.values():
        components[name] = shape
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422: Corral answers bad input with a 400
        components.pop(name, None)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            own = [int(code) for code, answer in list(responses.items()) if answer.get(OWN)]
            for code in own:
                del responses[str(code)]
            for param in op.get("parameters", []):
                if extra := PARAMETERS.get((path, param.get("name", ""))) or PARAMETERS_BY_NAME.get(
                        param.get("name", "")):
                    param["schema"] = {**param.get("schema", {}), **extra}
            for status, answer in operation_responses(method, path, op.get("tags", []), config, own).items():
                responses.setdefault(status, answer)  # a route's own documentation of a status wins
    if config.access_token:
        components_root = schema["components"]
        components_root.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "The server's access token"}
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                if checks_credentials(method, path, config):
                    op.setdefault("security", [{"bearer": []}])
    return schema


# -- bodies read through corral.api.body.model_body -----------------------------------------------------------
def _body_model(dependant: Any) -> type[BaseModel] | None:
    for dep in getattr(dependant, "dependencies", ()):
        model = BODY_MODELS.get(dep.call) if dep.call is not None else None
        if model is None:
            model = _body_model(dep)
        if model is not None:
            return model
    return None


def model_bodies(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """``schema`` with the body of each route that reads it through ``model_body`` (a dependency, where FastAPI
    sees no body): the model's JSON schema, inline (two routes' models may share a name), its parts under
    components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for route in routing.iter_route_contexts(list(routes)):  # included routers' routes too, as get_openapi
        model = _body_model(getattr(route, "dependant", None))
        ops = schema.get("paths", {}).get(getattr(route, "path_format", ""), {})
        if model is None or not ops:
            continue
        for method in getattr(route, "methods", None) or ():
            op = ops.get(method.lower())
            if op is None or "requestBody" in op:
                continue
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(full.pop("$defs", {}))
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": full}}}
    return schema


# -- 405 with an Allow header that lists the methods of the resource -----------------------------------------
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + _PARAM.sub("[^/]+", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$")


def allowed_methods(paths: dict[str, dict[str, Any]], path: str) -> list[str] | None:
    """The methods the document gives the resource at ``path``: of the path templates that match it, those with
    the fewest parameters (``/stacks/batch-delete`` is that resource, not a stack called so); None when no
    documented path matches."""
    matching = [(len(_PARAM.findall(t)), t) for t in paths if _template(t).match(path)]
    if not matching:
        return None
    fewest = min(n for n, _ in matching)
    methods = {m.upper() for n, t in matching if n == fewest for m in paths[t]}
    return [m for m in METHODS if m in methods]


def routed_methods(routes: Iterable[BaseRoute], scope: dict[str, Any]) -> list[str]:
    """The methods some route takes on the request's path (for a path the document does not list)."""
    return [m for m in METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]


def method_not_allowed(paths: Callable[[], dict[str, dict[str, Any]]], routes: Callable[[], Iterable[BaseRoute]],
                       render: Callable[[str], Callable[..., Response]]) -> Callable[[Request, Exception], Response]:
    """An exception handler for 405 (Starlette's lists only the first route's methods in Allow): Allow from the
    document (``paths()``), the body in the shape of the API that owns the path (``render(path)``)."""

    def handle(request: Request, e: Exception) -> Response:
        path = request.url.path
        methods = allowed_methods(paths(), path)
        if methods is None:
            methods = routed_methods(routes(), dict(request.scope))
        allow = ", ".join(methods)
        message = f"{request.method} is not allowed on {path}: it takes {allow}"
        return render(path)(405, message, {"Allow": allow})

    return handle


# -- what a route documents of its own (responses=) ------------------------------------------------------------
def text_answer(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """A 200 that is text, not JSON (a route's ``responses=``): log lines, Prometheus metrics."""
    return {200: {"description": description, "content": {mt: {"schema": _STRING} for mt in media_types}}}


LOG_LINES = text_answer("The lines: text, or one JSON object per line with format=ndjson", "text/plain",
                        "application/x-ndjson")


# -- schema fragments for bodies read by hand (a dialect's openapi_extra) -----------------------------------
# Each is what the server accepts, or, where no JSON schema can say it, the nearest stricter.
# (Whitespace spelled out as Python's str.isspace reads it, not \s: see corral.domain.spec.WS.)
WS = spec.WS
NOT_BLANK = spec.NOT_BLANK_PATTERN  # something other than spaces (the pattern is searched, not anchored)
# Text with something in it and no expression ('{{' or '{%' start one; a plain '{' does not): what a field that
# is parsed as an expression when it holds one accepts without parsing it.
TEXT_NO_EXPR = spec.SCRIPT_PATTERN
# An image reference: no spaces, no expression (corral.domain.spec._check_image).
IMAGE_PATTERN = spec.IMAGE_PATTERN
# A cron expression (corral.domain.schedule): the nearest stricter schema, five fields of a '*' or a number in
# range (a day of the month up to 28: every month has it), or an alias.
_CRON_FIELDS = (r"[1-5]?[0-9]", r"1?[0-9]|2[0-3]", r"[1-9]|1[0-9]|2[0-8]", r"[1-9]|1[0-2]", r"[0-6]")
CRON_PATTERN = (r"^\s*(?:@(?:[Hh]ourly|[Dd]aily|[Ww]eekly|[Mm]onthly|[Yy]early)|"
                + r"\s+".join(f"(?:\\*|{f})" for f in _CRON_FIELDS) + r")\s*$")
# A job's name (corral.domain.spec.NAME_RE).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}$"


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null: a key the server reads as absent when it is null."""
    return {"anyOf": [schema, {"type": "null"}]}


def json_body(schema: dict[str, Any], *, yaml: bool = False) -> dict[str, Any]:
    """A route's ``openapi_extra`` for a required body of ``schema`` (JSON, and YAML where ``yaml``)."""
    types = ["application/json", *(["application/yaml"] if yaml else [])]
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in types}}}
