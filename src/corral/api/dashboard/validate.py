"""A job's YAML checked as the server would take it, each error on its line: for the dashboard's Submit
page, as the user types. Pure: no I/O.

The text is parsed by the API's one YAML reader (corral.api.body: its depth and alias limits), validated as a
native job (``JobSpec``) or as a Tork job (the Tork dialect's translation), and each error's field path is
looked up in PyYAML's node tree for the line it is on (a missing field: the line of the object it is
missing from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from corral.api.body import BadBody, parse_yaml
from corral.api.errors import field_errors

FORMATS = ("auto", "native", "tork")
MAX_TEXT = 256 * 1024  # bytes of YAML the page may check at a time
_UNKNOWN = re.compile(r"unknown field '([^']+)'")
_TORK_PATH = re.compile(r"^([A-Za-z_][\w\-]*(?:\[\d+\]|\.[A-Za-z_][\w\-]*|\.\d+)*)(?::| is | must )")


@dataclass(frozen=True)
class Problem:
    line: int | None  # 1-based; None: the document as a whole
    field: str
    message: str


@dataclass(frozen=True)
class Result:
    format: str  # the format the text was checked as
    problems: tuple[Problem, ...]
    tasks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(text: str, fmt: str = "auto") -> Result:
    """The problems of ``text`` as a job of format ``fmt`` (``auto``: native, or Tork when only Tork takes it)."""
    if fmt not in FORMATS:
        raise ValueError(f"format is one of {', '.join(FORMATS)}")
    raw = text.encode()
    if len(raw) > MAX_TEXT:
        return Result(fmt, (Problem(None, "", f"the text is over {MAX_TEXT // 1024} KiB, the most checked here"),))
    if not text.strip():
        return Result(fmt, (Problem(None, "", "empty: a job needs at least 'tasks'"),))
    try:
        data = parse_yaml(raw, fast=False)
    except BadBody as e:
        line, problem = _yaml_error(text)
        return Result(fmt, (Problem(line, "", problem or str(e)),))
    root = _compose(text)
    if not isinstance(data, dict):
        return Result(fmt, (Problem(1, "", "a job is a mapping with at least 'tasks'"),))
    if fmt in ("auto", "native"):
        native = _native(data)
        if not native or fmt == "native":
            return _located("native", native, root, data)
    tork = _tork(data)
    if fmt == "auto" and tork:
        return _located("native", native, root, data)  # taken by neither: the native errors say more
    return _located("tork", tork, root, data)


def _located(fmt: str, errs: list[tuple[str, str]], root: yaml.Node | None, data: dict[str, Any]) -> Result:
    tasks = data.get("tasks")
    return Result(fmt, tuple(Problem(line_of(root, _key_path(f, m)), f, m) for f, m in errs),
                  len(tasks) if isinstance(tasks, list) else 0)


def _native(data: dict[str, Any]) -> list[tuple[str, str]]:
    from corral.domain.spec import JobSpec

    if "schedule" in data:  # a scheduled job: the job without its schedule is validated
        data = {k: v for k, v in data.items() if k != "schedule"}
    try:
        JobSpec.model_validate(data)
    except ValidationError as e:
        return [(x["field"] if x["field"] != "(body)" else "", x["message"]) for x in field_errors(e)]
    return []


def _tork(data: dict[str, Any]) -> list[tuple[str, str]]:
    from corral.api.dialects import tork
    from corral.api.dialects.base import DialectError

    try:
        tork.to_spec(data)
    except DialectError as e:
        m = _TORK_PATH.match(e.message)
        path = re.sub(r"\[(\d+)\]", r".\1", m.group(1)) if m else ""
        return [(path, e.message)]
    except (ValidationError, ValueError, TypeError) as e:
        return [("", str(e))]
    return []


def _key_path(path: str, message: str) -> str:
    """The path of the key an "unknown field 'x'" message names (the message is about the object)."""
    m = _UNKNOWN.search(message)
    return f"{path}.{m.group(1)}" if m else path


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)  # parse_yaml has already checked its limits
    except yaml.YAMLError:
        return None


def _yaml_error(text: str) -> tuple[int | None, str | None]:
    """The line of a YAML syntax error and PyYAML's words for it (None: not a syntax error)."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        words = " ".join(x for x in (e.context, e.problem) if x)
        return (mark.line + 1 if mark is not None else None), f"not valid YAML: {words}"
    except yaml.YAMLError:
        return None, None
    return None, None


def line_of(root: yaml.Node | None, path: str) -> int | None:
    """The 1-based line of the value at ``path`` (``tasks.0.image``): of its key in a mapping; where a part
    is missing, of the deepest node found."""
    node = root
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in [p for p in path.split(".") if p]:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if hit is None:
                return line
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line
