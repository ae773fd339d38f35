"""What a user submits: the job and task specifications, validated field by field.

These are pydantic models so that one definition gives validation, clear error messages, JSON and YAML
parsing and the OpenAPI schema. They hold no I/O.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from corral.domain import dag, expr
from corral.domain.resources import (
    DEFAULT_TASK_RESOURCES,
    Resources,
    duration_schema,
    parse_duration,
    parse_size,
    size_schema,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}$")
MAX_QUEUE = 100  # a queue's name (QUEUE_RE)
QUEUE_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_QUEUE - 1}}}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Bounds on what one spec may hold. A value is at most what Linux takes as one argument (MAX_ARG_STRLEN:
# 128 KiB), and a map of them at most 1 MiB in all; the body's own size limit comes first.
MAX_VALUE = 128 * 1024
MAX_MAP = 1 << 20
MAX_KEY = 256
MAX_MAP_ITEMS = 1000
MAX_NAME = 200
MAX_TASK_NAME = 100  # tasks opened from a composite are named after it ('name[12]'), within the column's 200
MAX_TEXT = 10_000  # descriptions
MAX_EXPR = 64 * 1024  # if, output, each.list (a literal JSON list may be longer: MAX_MAP)
MAX_PATH = 4096
MAX_ARGS = 10_000
MAX_TAG = 100  # one tag of a job
MAX_SEARCH = 256  # a text to find in jobs' names and tags (GET /v1/jobs?q=, Tork's GET /jobs?q=)

_SURROGATE = re.compile("[\ud800-\udfff]")

# Schema patterns for what the validators check by hand (the OpenAPI document's nearest stricter form where
# JSON Schema cannot say it all): text that holds no expression ('{{' or '{%' start one, and an expression
# is parsed when the job is submitted), an image reference (no spaces, no expression), a script (something
# other than spaces, no expression), a clean absolute path (as _clean_path takes it).
# Whitespace as Python's str.isspace (and so str.strip) reads it, spelled out: a pattern's \s differs from it
# in JSON Schema's (ECMA 262) reading and again in Python's re.ASCII one.
WS = "\\t-\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NO_EXPR_PATTERN = r"^(?:[^{]|\{[^{%])*\{?$"
IMAGE_PATTERN = f"^(?:[^{{{WS}]|\\{{[^{{%{WS}])+\\{{?$"
SCRIPT_PATTERN = f"^[{WS}]*(?:[^{{{WS}]|\\{{[^{{%])(?:[^{{]|\\{{[^{{%])*\\{{?$"
NOT_BLANK_PATTERN = f"[^{WS}]"  # something other than spaces (searched, not anchored)
SEGMENT = r"/(?:[^/.]|\.[^/.])[^/]*"  # a path segment other than '.' and '..', not starting with '..'
PATH_PATTERN = f"^(?:{SEGMENT})+$"
_NO_EXPR = {"type": "string", "pattern": NO_EXPR_PATTERN}


def _no_expr_items(schema: dict[str, Any]) -> None:
    """A list's schema (or a list or null): its items hold no expression."""
    for alt in schema.get("anyOf", [schema]):
        if alt.get("type") == "array":
            alt["items"] = {**alt.get("items", {}), "pattern": NO_EXPR_PATTERN}


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (such as '\\ud800', which JSON can spell): such text cannot
    be encoded as UTF-8, so neither the store nor an answer could hold it."""
    return _SURROGATE.search(text) is not None


def _refuse_bool(v: Any) -> Any:
    """JSON's true and false are not numbers: lax validation would read them as 1 and 0."""
    if isinstance(v, bool):
        raise ValueError("a number is expected, not true or false")
    return v


NoBool = BeforeValidator(_refuse_bool)
Size = Annotated[str | int | float, NoBool,
                 WithJsonSchema(size_schema("Bytes, or a size such as '256Mi', '1Gi', '500M'; at most 1 PiB."))]
_DURATION_TEXT = "Seconds, or a duration such as '30s', '5m'; at most 366 days."
Duration = Annotated[str | int | float, NoBool, WithJsonSchema(duration_schema(_DURATION_TEXT))]
# The same, more than zero (a timeout, a time to live: their validators refuse zero).
PositiveDuration = Annotated[str | int | float, NoBool,
                             WithJsonSchema(duration_schema(_DURATION_TEXT + " More than zero.", positive=True))]
Value = Annotated[str, Field(max_length=MAX_VALUE)]
Key = Annotated[str, Field(max_length=MAX_KEY)]


def _where(path: str, k: Any) -> str:
    return f"{path}.{k}" if path else str(k)


def _surrogates(v: Any, path: str, depth: int) -> None:
    """Refuse a lone surrogate (such as '\\ud800', which JSON can spell) in a string, key or value: it
    cannot be encoded as UTF-8, so the store and every answer that shows it would fail. ``depth`` levels
    of lists and maps are looked at; deeper ones are models, which look at their own."""
    if isinstance(v, str):
        if lone_surrogate(v):
            raise ValueError(f"{path}: the text holds a lone surrogate (such as \\ud800), which is not "
                             "valid Unicode")
    elif depth > 0 and isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, str) and lone_surrogate(k):
                raise ValueError(f"{path or '(body)'}: a field name holds a lone surrogate (such as "
                                 "\\ud800), which is not valid Unicode")
            _surrogates(x, _where(path, k), depth - 1)
    elif depth > 0 and isinstance(v, list):
        for i, x in enumerate(v):
            _surrogates(x, f"{path}[{i}]", depth - 1)


def _check_image(v: str) -> str:
    if not v.strip() or any(c.isspace() for c in v):
        raise ValueError("an image reference cannot be empty or contain spaces")
    return v


# A container image reference, as tasks and pods take it.
ImageRef = Annotated[str, AfterValidator(_check_image)]


_KNOWN: dict[type[BaseModel], tuple[str, ...]] = {}


def known_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a model takes: each field by its alias (what users write) and its name."""
    names = _KNOWN.get(model)
    if names is None:
        found = {n for n, f in model.model_fields.items() if not n.startswith("_")}
        found |= {f.alias for f in model.model_fields.values() if f.alias}
        names = _KNOWN[model] = tuple(sorted(found))
    return names


def did_you_mean(key: str, known: tuple[str, ...]) -> str | None:
    """The known key an unknown one was most likely meant to be (``imgae`` -> ``image``), if one is close."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75) if len(key) <= 64 else []
    return close[0] if close else None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        # This level's keys and values, and one level of lists and maps inside (command, env, inputs,
        # tags, ...); a map inside that is a model of its own, and is looked at when it is validated.
        _surrogates(data, "", 3)
        if isinstance(data, dict):
            known = known_fields(cls)
            for key in data:
                if isinstance(key, str) and key not in known:
                    meant = did_you_mean(key, known)
                    if meant is not None and meant not in data:  # else: pydantic's "unknown field", at the key
                        raise PydanticCustomError("extra_forbidden", "unknown field '{key}': did you mean '{meant}'?",
                                                  {"key": key, "meant": meant})
        return data


def _check_map(m: dict[str, str], what: str) -> dict[str, str]:
    if len(m) > MAX_MAP_ITEMS:
        raise ValueError(f"{what} holds at most {MAX_MAP_ITEMS:,} entries")
    if sum(len(k) + len(v) for k, v in m.items()) > MAX_MAP:
        raise ValueError(f"{what} holds at most {MAX_MAP:,} characters in all")
    return m


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for k in env:
        if not ENV_KEY_RE.match(k):
            raise ValueError(f"'{k}' is not a valid environment variable name")
    return _check_map(env, "env")


def _bounded_map(what: str) -> AfterValidator:
    return AfterValidator(lambda m: _check_map(m, what))


def _check_args(args: list[str] | None) -> list[str] | None:
    if args is not None and sum(len(a) for a in args) > MAX_MAP:
        raise ValueError(f"the arguments hold at most {MAX_MAP:,} characters in all")
    return args


def check_queue(q: str) -> str:
    if not QUEUE_RE.match(q):
        raise ValueError("a queue name is 1-100 letters, digits, '_', '-' or '.'")
    return q


Env = Annotated[dict[Key, Value], AfterValidator(_check_env),
                Field(json_schema_extra={"propertyNames": {"pattern": ENV_KEY_RE.pattern}})]
Args = Annotated[list[Value] | None, Field(max_length=MAX_ARGS), AfterValidator(_check_args)]
Inputs = Annotated[dict[Key, Value], _bounded_map("the map")]
Labels = Annotated[dict[Key, Annotated[str, Field(max_length=MAX_KEY)]], Field(max_length=100)]
QueueName = Annotated[str, AfterValidator(check_queue), Field(json_schema_extra={"pattern": QUEUE_RE.pattern})]


def _check_task_queue(q: str) -> str:
    return q if expr.has_expr(q) else check_queue(q)


# A task's queue may be an expression (Tork evaluates it when the task's turn comes); what it gives is
# checked then as a queue name.
TaskQueue = Annotated[str, Field(max_length=100, json_schema_extra={"pattern": QUEUE_RE.pattern}),
                     AfterValidator(_check_task_queue)]
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# Docker's own network modes, which are not networks a container is attached to: 'host' would share the
# node's network stack, 'none' takes the network away.
RESERVED_NETWORKS = frozenset({"host", "none"})


def _check_network(n: str) -> str:
    if not NETWORK_RE.match(n):
        raise ValueError(f"network '{n[:100]}' is not a Docker network name: 1-128 letters, digits, '_', '-' "
                         "or '.'")
    if n in RESERVED_NETWORKS:
        raise ValueError(f"network '{n}' is refused: a task is attached to networks the operator created, not "
                         "to the node's host network or to none")
    return n


NetworkName = Annotated[str, AfterValidator(_check_network), Field(json_schema_extra={
    "pattern": NETWORK_RE.pattern, "not": {"enum": sorted(RESERVED_NETWORKS)}})]
# A Linux capability, as Docker takes it (with or without CAP_), and a host device 'HOST[:CONTAINER[:rwm]]'.
CapName = Annotated[str, Field(min_length=2, max_length=40, pattern=r"^[A-Za-z_]+$")]
DeviceSpec = Annotated[str, Field(min_length=2, max_length=MAX_PATH,
                                  pattern=r"^/[^:\s]+(:/[^:\s]+)?(:[rwm]{1,3})?$")]


class ResourcesSpec(Strict):
    cpu: Annotated[float | None, NoBool] = Field(None, ge=0, le=1024, allow_inf_nan=False,
                                                 description="CPU cores, fractions allowed; at most 1024.")
    memory: Size | None = None
    disk: Size | None = None
    gpu: Annotated[int | None, NoBool] = Field(None, ge=0, le=64, description="Whole GPUs; at most 64.")

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, v: str | int | float | None) -> str | int | float | None:
        if v is not None:
            parse_size(v)
        return v

    def resolve(self) -> Resources:
        d = DEFAULT_TASK_RESOURCES
        return Resources(
            cpu=d.cpu if self.cpu is None else float(self.cpu),
            memory=d.memory if self.memory is None else parse_size(self.memory),
            disk=d.disk if self.disk is None else parse_size(self.disk),
            gpu=d.gpu if self.gpu is None else int(self.gpu),
        )


class RetrySpec(Strict):
    limit: Annotated[int, NoBool] = Field(0, ge=0, le=100,
                                          description="How many times a failed attempt is tried again.")
    backoff: Duration = Field("1s", description="Wait before the first retry; doubles each time, at most 5m.")

    @field_validator("backoff")
    @classmethod
    def _duration(cls, v: str | int | float) -> str | int | float:
        parse_duration(v)
        return v

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempts count from 1)."""
        return float(min(parse_duration(self.backoff) * (2 ** max(attempt - 1, 0)), 300.0))


FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def check_var(v: str) -> str:
    if not VAR_RE.match(v):
        raise ValueError("a variable name is 1-100 letters, digits and '_', not starting with a digit")
    return v


MAX_FILES_BYTES = 1 << 20
# Where a mount may not go: over the root, or over the kernel's own file systems.
FORBIDDEN_TARGETS = ("/proc", "/sys", "/dev")


def _clean_path(p: str, what: str) -> str:
    """An absolute path with nothing that climbs out of it: '..', '.', '//' and a trailing '/' are refused
    rather than normalized, so what is stored is what is mounted."""
    if not p.startswith("/") or posixpath.normpath(p) != p or "/.." in p or p.startswith("//"):
        raise ValueError(f"{what} '{p}' must be an absolute path without '..', '.' or '//'")
    return p


_FORBIDDEN_TARGET = "^/(?:proc|sys|dev)(?:/|$)"


def _mount_schema(schema: dict[str, Any]) -> None:
    schema["properties"]["target"].update({"pattern": PATH_PATTERN, "not": {"pattern": _FORBIDDEN_TARGET}})
    schema["oneOf"] = [
        {"properties": {"type": {"const": "bind"}, "source": {"type": "string", "pattern": PATH_PATTERN}},
         "required": ["source"]},
        {"properties": {"type": {"const": "volume"},
                        "source": {"anyOf": [{"type": "string", "pattern": FILE_NAME_RE.pattern}, {"type": "null"}]}}},
        {"properties": {"type": {"const": "tmpfs"}, "source": {"type": "null"}}}]


class MountSpec(Strict):
    # What _paths checks, said in the schema: clean absolute paths, a target not over /, /proc, /sys or /dev,
    # and the source each type takes.
    model_config = ConfigDict(json_schema_extra=lambda s: _mount_schema(s))

    type: Literal["volume", "bind", "tmpfs"]
    target: str = Field(max_length=MAX_PATH, description="Where it appears in the container: an absolute path.")
    source: str | None = Field(None, max_length=MAX_PATH,
                               description="bind: an absolute host path; volume: a volume name "
                                                 "(omitted: a fresh volume, removed with the task).")
    readonly: bool = False

    @model_validator(mode="after")
    def _paths(self) -> MountSpec:
        _clean_path(self.target, "mount target")
        if self.target == "/" or any(self.target == f or self.target.startswith(f + "/") for f in FORBIDDEN_TARGETS):
            raise ValueError(f"mount target '{self.target}' is not allowed: not over /, /proc, /sys or /dev")
        if self.type == "bind":
            if not self.source:
                raise ValueError("a bind mount needs 'source', an absolute host path")
            _clean_path(self.source, "bind source")
        elif self.type == "volume":
            if self.source is not None and not FILE_NAME_RE.match(self.source):
                raise ValueError(f"volume name '{self.source}' may hold only letters, digits, '_', '-' and '.'")
        elif self.source is not None:
            raise ValueError("a tmpfs mount takes no 'source'")
        return self


class RegistrySpec(Strict):
    """Credentials for the registry a task's image is pulled from (when the node does not have it). The
    password is a secret: it is redacted from every answer, log line and webhook, like ``secrets``."""

    username: str = Field(min_length=1, max_length=1000)
    password: str = Field("", max_length=10_000)


class TaskPortSpec(Strict):
    """A container port of a task published on its node: the node port is allocated from the node-port
    range (the one pods' ports without a hostPort get) when the task is handed to its node, and released
    when that attempt ends."""

    # The schema asks for the protocol (the nearest stricter): with it, uniqueItems on a task's ports says
    # that each (port, protocol) is published once.
    model_config = ConfigDict(json_schema_extra={"required": ["port", "protocol"]})

    port: Annotated[int, NoBool] = Field(ge=1, le=65535, description="The port the container listens on.")
    protocol: Literal["tcp", "udp"] = "tcp"


class ProbeSpec(Strict):
    """Tork's probe: an HTTP GET the container must answer with a 2xx before the task counts as running. It
    is asked every second for at most ``timeout`` (default 1m); a probe that never answers fails the task."""

    path: str = Field("/", max_length=2000, json_schema_extra={"pattern": f"^/[^{WS}\\x00-\\x1f]*$"})
    port: Annotated[int, NoBool] = Field(ge=1, le=65535)
    timeout: Annotated[str | int | float, NoBool, WithJsonSchema(duration_schema(
        "How long to keep asking: seconds, or a duration such as '30s', '5m'; more than zero, at most 1h.",
        positive=True, at_most=3600))] = "1m"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() or ord(c) < 32 for c in v):
            raise ValueError("a probe's path starts with '/' and has no spaces or control characters")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | int | float) -> str | int | float:
        if not 0 < parse_duration(v) <= 3600:
            raise ValueError("a probe's timeout is longer than zero and at most 1h")
        return v


class ParallelSpec(Strict):
    tasks: list[TaskSpec] = Field(min_length=1, max_length=1000)


class EachSpec(Strict):
    list: str = Field(max_length=MAX_MAP, json_schema_extra={"pattern": NO_EXPR_PATTERN},
                      description="An expression giving the items, e.g. '{{ sequence(1, 5) }}'.")
    var: str = Field("item", description="The name each item has in the task's expressions.",
                     json_schema_extra={"pattern": VAR_RE.pattern})
    concurrency: Annotated[int | None, NoBool] = Field(None, ge=1, le=10_000, description="At most this many at once; "
                                                                        "omitted: all at once.")
    task: TaskSpec

    @field_validator("var")
    @classmethod
    def _var(cls, v: str) -> str:
        if not VAR_RE.match(v):
            raise ValueError("a variable name is letters, digits and '_', not starting with a digit")
        return v


class SubjobWebhookSpec(Strict):
    """A subjob's webhook: its url and headers may be expressions, evaluated as the subjob is created (in
    the context of the task that creates it); the result is checked as a job's webhook."""

    url: str = Field(max_length=2000, json_schema_extra={"pattern": r"^https?://(?:[^{]|\{[^{%])*\{?$"})
    headers: dict[Key, Annotated[str, Field(max_length=8192, json_schema_extra={"pattern": NO_EXPR_PATTERN})]] = \
        Field(default_factory=dict, max_length=50)
    event: Literal["job.StateChange", "task.StateChange"] = "job.StateChange"
    if_: str | None = Field(None, alias="if", max_length=MAX_EXPR, json_schema_extra={"pattern": NO_EXPR_PATTERN})

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not expr.has_expr(v) and not re.match(r"^https?://", v):
            raise ValueError("a webhook url starts with http:// or https://")
        return v


class SubjobSpec(Strict):
    name: str = Field("subjob", max_length=MAX_NAME, json_schema_extra={"pattern": NO_EXPR_PATTERN})
    description: str | None = Field(None, max_length=MAX_TEXT)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=1000)
    inputs: Inputs = Field(default_factory=dict, json_schema_extra={"additionalProperties": {
        "type": "string", "maxLength": MAX_VALUE, "pattern": NO_EXPR_PATTERN}})
    secrets: Inputs = Field(default_factory=dict)
    output: str | None = Field(None, max_length=MAX_EXPR)
    detached: bool = Field(False, description="true: the task completes as soon as the subjob is created.")
    webhooks: list[SubjobWebhookSpec] = Field(default_factory=list, max_length=20)


def _given(key: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON schema: ``key`` is there and not null (and, with ``schema``, matches it)."""
    return {"required": [key], "properties": {key: schema or {"not": {"type": "null"}}}}


_NULL = {"type": "null"}
_COMPOSITES = ("parallel", "each", "subjob")
_CONTAINER_ONLY = ("mounts", "sidecars", "networks", "registry", "ports", "probe")
_LEAF = ("run", "command", "image", "entrypoint", "pre", "post", "files", *_CONTAINER_ONLY)
# A field that is not there (as _what_to_run reads it: absent, null or empty).
_EMPTY: dict[str, dict[str, Any]] = {
    **{k: _NULL for k in ("run", "image", "registry", "probe")},
    **{k: {"anyOf": [_NULL, {"type": "array", "maxItems": 0}]} for k in ("command", "entrypoint")},
    **{k: {"type": "array", "maxItems": 0} for k in ("pre", "post", "sidecars", "mounts", "networks", "ports")},
    "files": {"type": "object", "maxProperties": 0}}
_SIDECAR = {"properties": {"networks": _EMPTY["networks"], "registry": _NULL, "ports": _EMPTY["ports"],
                           "probe": _NULL,  # and no escalation (coordinator/policy.py: never on a sidecar)
                           "privileged": {"enum": [None, False]}, "network_mode": _NULL, "pid": _NULL, "ipc": _NULL,
                           **{k: {"anyOf": [_NULL, {"type": "array", "maxItems": 0}]} for k in ("cap_add", "devices")}}}


_TASK_RULES: dict[str, Any] = {
    "not": {"allOf": [_given("run"), _given("command")]},
    "anyOf": [_given("run"), _given("command", {"type": "array", "minItems": 1}),
              _given("image", {"type": "string", "minLength": 1}),
              _given("parallel"), _given("each"), _given("subjob")],
    "oneOf": [
        {"properties": {k: _NULL for k in _COMPOSITES},
         "anyOf": [_given("image"), {"properties": {k: _EMPTY[k] for k in _CONTAINER_ONLY}}]},
        *({**_given(c), "properties": {**{k: _NULL for k in _COMPOSITES if k != c},
                                       **{k: _EMPTY[k] for k in _LEAF}, c: {"not": _NULL}}}
          for c in _COMPOSITES)]}


def _sidecars(schema: dict[str, Any]) -> None:
    """A sidecar takes no networks, registry, ports or probe (_prepare), and no escalation."""
    schema["items"] = {"allOf": [schema["items"], _SIDECAR]}


class TaskSpec(Strict):
    # What _what_to_run checks, said in the schema: 'run' and 'command' are not both given; a task gives one of
    # run, command (not empty), image, or is a composite (parallel, each, subjob).
    # A composite is one of the three and takes nothing that runs; mounts, sidecars, networks, registry, ports
    # and probe need an image.
    model_config = ConfigDict(json_schema_extra=lambda s: s.update(_TASK_RULES))

    name: str | None = Field(None, min_length=1, max_length=MAX_TASK_NAME,
                             description="Unique within the job; defaults to task-<n>.",
                             json_schema_extra={"pattern": NO_EXPR_PATTERN})
    description: str | None = Field(None, max_length=MAX_TEXT)
    image: ImageRef | None = Field(None, max_length=1000, description="Container image; omitted: a host process.",
                                   json_schema_extra={"pattern": IMAGE_PATTERN})
    run: str | None = Field(None, max_length=MAX_VALUE, description="A script run with 'sh -c' (at most 128 KiB).",
                            json_schema_extra={"pattern": SCRIPT_PATTERN})
    command: Args = Field(None, description="An argv list, run as is.", json_schema_extra=_no_expr_items)
    entrypoint: Args = None
    env: Env = Field(default_factory=dict, json_schema_extra={"additionalProperties": {
        "type": "string", "maxLength": MAX_VALUE, "pattern": NO_EXPR_PATTERN}})
    workdir: str | None = Field(None, max_length=MAX_PATH, json_schema_extra={"pattern": PATH_PATTERN})
    resources: ResourcesSpec = Field(default_factory=lambda: ResourcesSpec())
    timeout: PositiveDuration | None = None
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec())
    queue: TaskQueue | None = None
    node_selector: Labels = Field(default_factory=dict)
    depends_on: list[Annotated[str, Field(max_length=MAX_TASK_NAME)]] | None = Field(
        None, max_length=1000,
        description="Names of tasks of this job that must complete first. Once any task of a job names "
                    "depends_on, the job is a graph: a task without it waits for nothing. Only a job's top-level "
                    "tasks take it, each name one of the job's tasks, without a cycle: rules JSON Schema cannot "
                    "say, so this schema says only null (the nearest stricter).",
        json_schema_extra=lambda s: s.update({"anyOf": [{"type": "null"}]}))
    if_: str | None = Field(None, alias="if", max_length=MAX_EXPR,
                            description="An expression; when it is false the task is skipped.",
                            json_schema_extra={"pattern": NO_EXPR_PATTERN})
    var: str | None = Field(None, max_length=MAX_EXPR, json_schema_extra={"pattern": VAR_RE.pattern},
                            description="Keep the task's output under this name: tasks.<var>. May be an "
                                        "expression, such as 'eachTask{{ item.index }}'.")
    parallel: ParallelSpec | None = None
    each: EachSpec | None = None
    subjob: SubjobSpec | None = None
    pre: list[TaskSpec] = Field(default_factory=list, max_length=100)
    post: list[TaskSpec] = Field(default_factory=list, max_length=100)
    sidecars: list[TaskSpec] = Field(default_factory=list, max_length=20, json_schema_extra=_sidecars)
    mounts: list[MountSpec] = Field(default_factory=list, max_length=50)
    files: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ITEMS,
                                  description="File name -> content, written into the task's working directory; "
                                              "at most 1 MiB in all (the schema: 16 files of 16,384 characters).",
                                  json_schema_extra={
                                      "maxProperties": 16, "additionalProperties": {"type": "string",
                                                                                    "maxLength": 16384},
                                      "propertyNames": {"pattern": FILE_NAME_RE.pattern,
                                                        "not": {"enum": [".", ".."]}}})
    networks: list[NetworkName] = Field(default_factory=list, max_length=20,
                                        description="Docker networks (existing on the node) the container joins.")
    registry: RegistrySpec | None = Field(None, description="Credentials to pull the image with.")
    ports: list[TaskPortSpec] = Field(default_factory=list, max_length=20,
                                      description="Container ports published on node ports while it runs; each "
                                                  "(port, protocol) once.", json_schema_extra={"uniqueItems": True})
    probe: ProbeSpec | None = Field(None, description="An HTTP probe that must answer before it counts as "
                                                      "running.")
    # Escalations (coordinator/policy.py): refused with a 400 unless the caller is an admin and the operator
    # allowed that kind (corral server --allow-admin-escalation); never on a sidecar.
    privileged: bool | None = Field(None, description="Run the container privileged (admins only, where the "
                                                      "server allows it: --allow-admin-escalation privileged).")
    cap_add: list[CapName] | None = Field(None, max_length=50, description="Linux capabilities to add (admins "
                                          "only, where the server allows it: --allow-admin-escalation cap_add).")
    network_mode: Literal["host"] | None = Field(None, description="'host': the host's network (admins only, "
                                                 "--allow-admin-escalation host_network).")
    pid: Literal["host"] | None = Field(None, description="'host': the host's PID namespace (admins only, "
                                        "--allow-admin-escalation host_pid).")
    ipc: Literal["host"] | None = Field(None, description="'host': the host's IPC namespace (admins only, "
                                        "--allow-admin-escalation host_ipc).")
    devices: list[DeviceSpec] | None = Field(None, max_length=50, description="Host devices, as 'HOST[:CONTAINER"
                                             "[:rwm]]' (admins only, --allow-admin-escalation devices).")

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[TaskPortSpec]) -> list[TaskPortSpec]:
        seen = [(p.port, p.protocol) for p in v]
        if len(set(seen)) != len(seen):
            raise ValueError("a port is published once: each (port, protocol) at most once")
        return v

    @field_validator("var")
    @classmethod
    def _var(cls, v: str | None) -> str | None:
        if v is not None and not expr.has_expr(v):  # an expression is checked when it has been evaluated
            check_var(v)
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not FILE_NAME_RE.match(name) or name in (".", ".."):
                raise ValueError(f"file name '{name}' must be a plain name: letters, digits, '_', '-', '.'")
        if sum(len(c.encode()) for c in v.values()) > MAX_FILES_BYTES:
            raise ValueError("files may hold at most 1 MiB in all")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        return v if v is None else _clean_path(v, "workdir")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | int | float | None) -> str | int | float | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("a timeout must be longer than zero")
        return v

    def composite(self) -> str | None:
        """'parallel', 'each' or 'subjob' for a task made of other tasks; None for one that runs."""
        return "parallel" if self.parallel else "each" if self.each else "subjob" if self.subjob else None

    @model_validator(mode="after")
    def _what_to_run(self) -> TaskSpec:
        kinds = [k for k in ("parallel", "each", "subjob") if getattr(self, k) is not None]
        if kinds:
            if len(kinds) > 1:
                raise ValueError(f"a task is one of parallel, each or subjob, not {' and '.join(kinds)}")
            leaf = [k for k in ("run", "command", "image", "entrypoint", "pre", "post", "sidecars", "mounts",
                                "files", "networks", "registry", "ports", "probe") if getattr(self, k)]
            if leaf:
                raise ValueError(f"a {kinds[0]} task runs other tasks: it takes no {', '.join(leaf)}")
            return self
        if (self.mounts or self.sidecars or self.networks or self.registry or self.ports or self.probe) \
                and not self.image:
            raise ValueError("mounts, sidecars, networks, registry, ports and probe need an image: they are for "
                             "container tasks")
        if self.run is not None and self.command is not None:
            raise ValueError("give either 'run' (a script) or 'command' (an argv list), not both")
        if self.run is None and not self.command and not self.image:
            # A container task may give neither: it runs its image's own entrypoint and command.
            raise ValueError("a task needs 'run' (a script) or 'command' (an argv list), or an image")
        if self.run is not None and not self.run.strip():
            raise ValueError("'run' cannot be empty")
        return self

    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)

    def argv(self) -> list[str]:
        """The command line the runtime executes (after the entrypoint, if any)."""
        return argv_of({"run": self.run, "command": self.command})


class DefaultsSpec(Strict):
    """What a task of the job gets when it does not say."""

    retry: RetrySpec | None = None
    resources: ResourcesSpec | None = None
    timeout: Duration | None = None
    queue: QueueName | None = None
    priority: Annotated[int | None, NoBool] = Field(None, ge=0, le=9)


class WebhookSpec(Strict):
    url: str = Field(pattern=r"^https?://", max_length=2000)
    headers: dict[Key, Annotated[str, Field(max_length=8192, json_schema_extra={"pattern": NO_EXPR_PATTERN})]] = \
        Field(default_factory=dict, max_length=50)
    event: Literal["job.StateChange", "task.StateChange"] = "job.StateChange"
    if_: str | None = Field(None, alias="if", max_length=MAX_EXPR,
                            description="An expression over job (and task); false: not sent.",
                            json_schema_extra={"pattern": NO_EXPR_PATTERN})


class AutoDeleteSpec(Strict):
    after: PositiveDuration = Field(description="Delete the job this long after it finished.")

    @field_validator("after")
    @classmethod
    def _after(cls, v: str | int | float) -> str | int | float:
        if parse_duration(v) <= 0:
            raise ValueError("autoDelete.after must be longer than zero")
        return v


class JobSpec(Strict):
    name: str = Field("job", description="A label for people; need not be unique.",
                      json_schema_extra={"pattern": NAME_RE.pattern})
    description: str | None = Field(None, max_length=10_000)
    inputs: Inputs = Field(default_factory=dict, description="Values the expressions see as inputs.<k>.")
    secrets: Inputs = Field(default_factory=dict, description="Like inputs (secrets.<k>), and redacted "
                                                              "from logs and every API response.")
    defaults: DefaultsSpec | None = None
    output: str | None = Field(None, max_length=MAX_EXPR,
                               description="An expression: the job's result, e.g. '{{ tasks.sum }}'.",
                               json_schema_extra={"pattern": NO_EXPR_PATTERN})
    webhooks: list[WebhookSpec] = Field(default_factory=list, max_length=20)
    auto_delete: AutoDeleteSpec | None = Field(None, alias="autoDelete")
    tasks: list[TaskSpec] = Field(min_length=1, max_length=1000, description=(
        "Task names are unique in a job (a task without a name is task-N, N its position from 1): two alike are a "
        "400 'two tasks are named ...'. JSON Schema cannot say this (uniqueItems compares whole tasks)."))
    queue: QueueName = "default"
    priority: Annotated[int, NoBool] = Field(0, ge=0, le=9, description="0-9; higher runs first.")
    tags: list[str] = Field(default_factory=list, max_length=50,
                            json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG}})
    env: Env = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("a name is 1-200 letters, digits, spaces, '_', '-' or '.'")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t or len(t) > MAX_TAG:
                raise ValueError(f"a tag is 1-{MAX_TAG} characters")
        return v

    @model_validator(mode="after")
    def _names(self) -> JobSpec:
        seen: set[str] = set()
        for i, t in enumerate(self.tasks):
            if t.name is None:
                t.name = f"task-{i + 1}"
            if t.name in seen:
                raise ValueError(f"two tasks are named '{t.name}': task names must be unique in a job")
            seen.add(t.name)
        if self.is_dag():
            for t in self.tasks:
                if expr.has_expr(t.name):
                    raise ValueError(f"task '{t.name}': in a job whose tasks use depends_on, a task's name is "
                                     "what others depend on, so it cannot be an expression")
            for t in self.tasks:
                if t.depends_on is None:
                    t.depends_on = []  # stored, so that every task of the job says it is in a graph
            dag.check(self.dependencies())
        if self.defaults is not None and self.defaults.priority is not None and "priority" not in self.model_fields_set:
            self.priority = self.defaults.priority
        for t in self.tasks:
            _prepare(t, self.defaults, str(t.name), top=True)
        for k in ("output",):
            if self.output is not None:
                expr.check(self.output, k)
        for i, w in enumerate(self.webhooks):
            for where, v in [(f"webhooks[{i}].if", w.if_), *((f"webhooks[{i}].headers.{k}", h)
                                                              for k, h in w.headers.items())]:
                if v is not None:
                    expr.check(v, where)
        return self

    def is_dag(self) -> bool:
        """Whether any task names ``depends_on``; if none does, the tasks run one after the other."""
        return any(t.depends_on is not None for t in self.tasks)

    def dependencies(self) -> dict[str, list[str]]:
        return {str(t.name): list(t.depends_on or []) for t in self.tasks}


def argv_of(spec: Mapping[str, Any]) -> list[str]:
    """What a task (a spec, or its stored dict: no need to validate it again) runs: ``run`` through
    ``sh -c``, or ``command`` as is."""
    if spec.get("run") is not None:
        return ["sh", "-c", spec["run"]]
    return list(spec.get("command") or [])


def children(t: TaskSpec) -> list[tuple[str, TaskSpec]]:
    """The tasks inside ``t``, each with where it sits (for error messages)."""
    out: list[tuple[str, TaskSpec]] = []
    if t.parallel:
        out += [(f"parallel.tasks[{i}]", c) for i, c in enumerate(t.parallel.tasks)]
    if t.each:
        out.append(("each.task", t.each.task))
    out += [(f"pre[{i}]", c) for i, c in enumerate(t.pre)]
    out += [(f"post[{i}]", c) for i, c in enumerate(t.post)]
    out += [(f"sidecars[{i}]", c) for i, c in enumerate(t.sidecars)]
    return out


def _prepare(t: TaskSpec, defaults: DefaultsSpec | None, where: str, top: bool) -> None:
    """Fill a task (and those inside it) from the job's defaults, name the unnamed ones inside, and check
    that each expression parses. A subjob is a job of its own: the defaults stop at it."""
    if not top and t.depends_on is not None:
        raise ValueError(f"{where}: depends_on is for a job's top-level tasks")
    if defaults is not None:
        given = t.model_fields_set
        if defaults.retry is not None and "retry" not in given:
            t.retry = defaults.retry.model_copy()
        if defaults.resources is not None and "resources" not in given:
            t.resources = defaults.resources.model_copy()
        if defaults.timeout is not None and t.timeout is None and t.composite() is None:
            t.timeout = defaults.timeout
        if defaults.queue is not None and t.queue is None:
            t.queue = defaults.queue
    fields = [("run", t.run), ("image", t.image), ("if", t.if_), ("each.list", t.each.list if t.each else None),
              ("name", t.name), ("var", t.var), ("queue", t.queue)]
    fields += [(f"env.{k}", v) for k, v in t.env.items()]
    fields += [(f"command[{i}]", v) for i, v in enumerate(t.command or [])]
    for name, value in fields:
        if value is not None:
            expr.check(value, f"{where}.{name}")
    for i, (at, c) in enumerate(children(t)):
        if at.startswith("sidecars") and (c.networks or c.registry or c.ports or c.probe):
            raise ValueError(f"{where}.{at}: a sidecar takes no networks, registry, ports or probe (it shares "
                             "the task's network; give them on the task)")
        if c.name is None:
            c.name = f"{t.name}.{at.split('[')[0].split('.')[0]}-{i + 1}" if not t.each else f"{t.name}.item"
        _prepare(c, defaults, f"{where}.{at}", top=False)
    if t.subjob is not None:
        sub = t.subjob
        texts: list[tuple[str, str | None]] = [("name", sub.name), *((f"inputs.{k}", v) for k, v in sub.inputs.items())]
        for i, w in enumerate(sub.webhooks):
            texts += [(f"webhooks[{i}].url", w.url), (f"webhooks[{i}].if", w.if_),
                      *((f"webhooks[{i}].headers.{k}", h) for k, h in w.headers.items())]
        for name, value in texts:
            if value is not None:
                expr.check(value, f"{where}.subjob.{name}")
        for j, c in enumerate(t.subjob.tasks):
            if c.name is None:
                c.name = f"task-{j + 1}"
            _prepare(c, None, f"{where}.subjob.tasks[{j}]", top=True)


# Left out of a stored spec when empty: they are the defaults, and most tasks have none of them.
_EMPTY_DROPPED = frozenset({"pre", "post", "sidecars", "mounts", "files", "webhooks", "inputs", "secrets",
                            "node_selector", "resources", "tags"})


def _prune(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _prune(x) for k, x in v.items() if not (k in _EMPTY_DROPPED and x in ({}, []))}
    if isinstance(v, list):
        return [_prune(x) for x in v]
    return v


def dump_spec(model: BaseModel) -> dict[str, Any]:
    """The stored form of a spec: JSON types, Tork's spelling of 'if' and 'autoDelete', no empty extras."""
    return dict(_prune(model.model_dump(mode="json", exclude_none=True, by_alias=True)))
