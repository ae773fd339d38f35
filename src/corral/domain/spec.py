"""What a user submits: the job and task specifications, validated field by field.

These are pydantic models so that one definition gives validation, clear error messages, JSON and YAML
parsing and the OpenAPI schema. They hold no I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.domain import dag
from corral.domain.resources import DEFAULT_TASK_RESOURCES, Resources, parse_duration, parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Size = Annotated[str | int, Field(description="Bytes, or a size such as '256Mi', '1Gi', '500M'.")]
Duration = Annotated[str | int | float, Field(description="Seconds, or a duration such as '30s', '5m'.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for k in env:
        if not ENV_KEY_RE.match(k):
            raise ValueError(f"'{k}' is not a valid environment variable name")
    return env


def _check_queue(q: str) -> str:
    if not QUEUE_RE.match(q):
        raise ValueError("a queue name is 1-100 letters, digits, '_', '-' or '.'")
    return q


Env = Annotated[dict[str, str], AfterValidator(_check_env)]
QueueName = Annotated[str, AfterValidator(_check_queue)]


class ResourcesSpec(Strict):
    cpu: float | None = Field(None, ge=0, le=1024, description="CPU cores, fractions allowed.")
    memory: Size | None = None
    disk: Size | None = None
    gpu: int | None = Field(None, ge=0, le=64, description="Whole GPUs.")

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
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
    limit: int = Field(0, ge=0, le=100, description="How many times a failed attempt is tried again.")
    backoff: Duration = Field("1s", description="Wait before the first retry; doubles each time, at most 5m.")

    @field_validator("backoff")
    @classmethod
    def _duration(cls, v: str | int | float) -> str | int | float:
        parse_duration(v)
        return v

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempts count from 1)."""
        return float(min(parse_duration(self.backoff) * (2 ** max(attempt - 1, 0)), 300.0))


class TaskSpec(Strict):
    name: str | None = Field(None, description="Unique within the job; defaults to task-<n>.")
    image: str | None = Field(None, description="Container image; omitted: a host process.")
    run: str | None = Field(None, description="A script run with 'sh -c'.")
    command: list[str] | None = Field(None, description="An argv list, run as is.")
    entrypoint: list[str] | None = None
    env: Env = Field(default_factory=dict)
    workdir: str | None = None
    resources: ResourcesSpec = Field(default_factory=lambda: ResourcesSpec())
    timeout: Duration | None = None
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec())
    queue: QueueName | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] | None = Field(
        None, max_length=1000,
        description="Names of tasks of this job that must complete first. Once any task of a job names "
                    "depends_on, the job is a graph: a task without it waits for nothing.")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | int | float | None) -> str | int | float | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("a timeout must be longer than zero")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() for c in v)):
            raise ValueError("an image reference cannot be empty or contain spaces")
        return v

    @model_validator(mode="after")
    def _what_to_run(self) -> TaskSpec:
        if self.run is not None and self.command is not None:
            raise ValueError("give either 'run' (a script) or 'command' (an argv list), not both")
        if self.run is None and not self.command and not (self.image and self.entrypoint):
            raise ValueError("a task needs 'run' (a script) or 'command' (an argv list)")
        if self.run is not None and not self.run.strip():
            raise ValueError("'run' cannot be empty")
        return self

    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else parse_duration(self.timeout)

    def argv(self) -> list[str]:
        """The command line the runtime executes (after the entrypoint, if any)."""
        if self.run is not None:
            return ["sh", "-c", self.run]
        return list(self.command or [])


class JobSpec(Strict):
    name: str = Field("job", description="A label for people; need not be unique.")
    tasks: list[TaskSpec] = Field(min_length=1, max_length=1000)
    queue: QueueName = "default"
    priority: int = Field(0, ge=0, le=9, description="0-9; higher runs first.")
    tags: list[str] = Field(default_factory=list, max_length=50)
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
            if not t or len(t) > 100:
                raise ValueError("a tag is 1-100 characters")
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
                if t.depends_on is None:
                    t.depends_on = []  # stored, so that every task of the job says it is in a graph
            dag.check(self.dependencies())
        return self

    def is_dag(self) -> bool:
        """Whether any task names ``depends_on``; if none does, the tasks run one after the other."""
        return any(t.depends_on is not None for t in self.tasks)

    def dependencies(self) -> dict[str, list[str]]:
        return {str(t.name): list(t.depends_on or []) for t in self.tasks}


def dump_spec(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
