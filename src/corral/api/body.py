"""The one body reader every route goes through: content type, size while reading, parsing, nesting.

``read_body(request, yaml=...)`` checks the content type before reading anything (JSON, ``+json``, and
YAML where the route documents it; anything else is a 415), reads the body as it streams in (the size
limit itself is enforced by ``corral.api.edge`` while the bytes arrive, per route), and parses it off
the event loop when it is big. ``parse`` is pure: JSON or YAML to Python values, refusing documents
nested deeper than ``MAX_DEPTH`` and YAML whose aliases expand past ``MAX_ALIAS_NODES`` nodes (a
"billion laughs") or refer to themselves, each with a ``BadBody`` that names the limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from fastapi import Depends, Request
from pydantic import BaseModel

from corral.coordinator.errors import ServiceError

MAX_DEPTH = 64  # levels of nesting (objects and lists) in a body
MAX_ALIAS_NODES = 100_000  # nodes YAML aliases may add to a document, counted as if expanded
THREAD_ABOVE = 64 * 1024  # bodies bigger than this are parsed (and validated) in a worker thread
JSON_TYPES = ("application/json", "text/json")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
M = TypeVar("M", bound=BaseModel)


class BadBody(ServiceError):
    """A body that cannot be read: 400 (malformed, too deep), 413 (too large) or 415 (content type)."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status
        self.title = {413: "Payload too large", 415: "Unsupported media type"}.get(status, "Bad request")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def kind_of(content_type: str | None, yaml_ok: bool) -> str:
    """'json' or 'yaml' for an accepted content type; a 415 naming what is accepted otherwise."""
    ctype = media_type(content_type)
    if ctype in JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json")):
        return "json"
    if yaml_ok and ctype in YAML_TYPES:
        return "yaml"
    accepted = "application/json or application/yaml (text/yaml)" if yaml_ok else "application/json"
    given = f"content type '{ctype}' is" if ctype else "a body without a Content-Type is"
    raise BadBody(f"{given} not accepted here: send {accepted}", 415)


# -- parsing (pure) ---------------------------------------------------------------------------------
def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """A BadBody if ``data`` has more than ``limit`` levels of objects and lists; iterative."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise BadBody(f"the body is nested more than {limit} levels deep (the limit)")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, used in two steps: compose the node graph, check it, then construct. Its
    scanner stops at the first level past the limit: its work on nested flow collections grows with the
    square of their depth, and its composer recurses once per level."""

    depth_limit = MAX_DEPTH

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 (PyYAML's name)
        if self.flow_level >= self.depth_limit:
            raise BadBody(f"the body is nested more than {self.depth_limit} levels deep (the limit)")
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) > 2 * self.depth_limit:  # a mapping in a sequence can take two indents a level
            raise BadBody(f"the body is nested more than {self.depth_limit} levels deep (the limit)")
        pushed: bool = super().add_indent(column)
        return pushed


def _check_yaml_graph(root: yaml.Node, depth_limit: int, alias_budget: int) -> None:
    """Walks the composed graph once (iteratively, each node once): its depth counted as expanded, the
    nodes its aliases add, and aliases that contain themselves."""
    size: dict[int, int] = {}  # node -> nodes in it when expanded
    height: dict[int, int] = {}
    own = 0  # nodes in the document as written
    open_: set[int] = set()
    seen_once: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > depth_limit + 1:  # a mapping's keys sit one level below it, like its values
                raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)")
            continue
        if key in size:
            continue
        if key in open_:
            raise BadBody("the YAML has an alias inside the node it refers to (a loop): not accepted")
        if key not in seen_once:
            seen_once.add(key)
            own += 1
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
        if len(open_) > depth_limit + 2:
            raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)")
    if size[id(root)] - own > alias_budget:
        raise BadBody(f"the YAML's aliases expand it by {size[id(root)] - own} nodes; at most "
                      f"{alias_budget} are accepted (the alias expansion limit)")


_CLoader: Any = getattr(yaml, "CSafeLoader", None)  # libyaml, when PyYAML was built with it


def _check_events(raw: bytes, depth_limit: int) -> None:
    """libyaml's parser is not recursive, but its composer is and its scanner slows down with the square
    of the depth of nested flow collections: its events are read first, and the first level past the
    limit stops it (the events come one at a time, so the rest is never scanned)."""
    depth = 0
    for event in yaml.parse(raw, Loader=_CLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > depth_limit:
                raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)")
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


def parse_yaml(raw: bytes, depth_limit: int = MAX_DEPTH, alias_budget: int = MAX_ALIAS_NODES,
               fast: bool = _CLoader is not None) -> Any:
    """YAML through PyYAML's safe loader: libyaml's when ``fast`` (ten times quicker), else the pure
    Python one. Composed, checked (depth, aliases), then constructed."""
    try:
        if fast:
            _check_events(raw, depth_limit)
            loader = _CLoader(raw)
        else:
            loader = _Loader(raw)
            loader.depth_limit = depth_limit
    except RecursionError as e:
        raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)") from e
    except yaml.YAMLError as e:
        raise BadBody(f"the body is not valid YAML: {e}".replace("\n", " ")) from e
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node, depth_limit, alias_budget)
        return loader.construct_document(node)
    except RecursionError as e:
        raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)") from e
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:  # a value's constructor refused it
        raise BadBody(f"the body is not valid YAML: {e}".replace("\n", " ")) from e
    finally:
        loader.dispose()


def parse(raw: bytes, kind: str, depth_limit: int = MAX_DEPTH) -> Any:
    """JSON or YAML (``kind``) to Python values, checked for nesting; BadBody when it cannot be."""
    if not raw.strip():
        raise BadBody("the body is empty: send a JSON object" if kind == "json" else "the body is empty")
    if kind == "yaml":
        data = parse_yaml(raw, depth_limit)
    else:
        try:
            data = json.loads(raw)
        except RecursionError as e:
            raise BadBody(f"the body is nested more than {depth_limit} levels deep (the limit)") from e
        except ValueError as e:  # malformed, not UTF-8, or a number of more than 4,300 digits
            raise BadBody(f"the body is not valid JSON: {e}") from e
    check_depth(data, depth_limit)
    return data


# -- reading ----------------------------------------------------------------------------------------
def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


async def read_raw(request: Request) -> bytes:
    """The body's bytes. The edge middleware counts them as they arrive and stops a body over the
    route's limit with a 413 (``BodyTooLarge``) before it is all read."""
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, yaml: bool = False, then: Callable[[Any], Any] | None = None) -> Any:
    """The request's body parsed as JSON (or YAML where ``yaml``), with ``then`` (a validation) applied
    to it; both in a worker thread when the body is big, so the event loop keeps answering."""
    if not _has_body(request) and not request.headers.get("content-type"):
        raise BadBody("the body is empty: send a JSON object")
    kind = kind_of(request.headers.get("content-type"), yaml)
    raw = await read_raw(request)

    def work() -> Any:
        data = parse(raw, kind)
        return then(data) if then is not None else data

    if len(raw) > THREAD_ABOVE:
        return await asyncio.to_thread(work)
    return work()


# The dependencies model_body made, and the model each reads: FastAPI sees no body in them, the document does.
BODY_MODELS: dict[Callable[..., Any], type[BaseModel]] = {}


def model_body(model: type[M], guard: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A FastAPI dependency that reads ``model`` from a JSON body through ``read_body`` (for routes
    whose body is a pydantic model); a field error is a 400 like any other.

    With ``guard`` (a dependency that authenticates the caller), the body depends on it: the guard runs
    first, whatever the order of the route's parameters, and a caller it refuses has nothing read or
    parsed. FastAPI caches a dependency per request, so a route that also names the guard runs it once.
    """

    async def dep(request: Request) -> M:
        result: M = await read_body(request, then=model.model_validate)
        return result

    BODY_MODELS[dep] = model  # for the OpenAPI document (corral.api.openapi.model_bodies)
    if guard is None:
        return dep

    # A default, not an Annotated hint: hints are strings here (PEP 563), and FastAPI cannot resolve a
    # local name such as ``guard`` in one.
    async def guarded(request: Request, _: Any = Depends(guard)) -> M:  # noqa: B008
        return await dep(request)

    BODY_MODELS[guarded] = model
    return guarded
