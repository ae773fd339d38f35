"""What a user asks for when work should stay up: a pod (containers placed together on one node, sharing a
network namespace and a lifecycle), validated field by field, with Podling's (and Kubernetes') camelCase
field names. No I/O.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.config import JsonDict

from corral.domain.resources import DEFAULT_TASK_RESOURCES, Resources, parse_duration, parse_size, size_schema
from corral.domain.spec import MAX_PATH, WS, Args, CapName, Env, ImageRef, Labels, NoBool, PositiveDuration, Strict

# DNS-1123: a label (container names, namespaces) and a subdomain (pod names).
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,198}[a-z0-9])?$")
PORT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME: at most 15 characters
CPU_RE = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
MAX_CONTAINERS = 16
MAX_PORTS = 32  # per container
MAX_GRACE = 3600.0
DEFAULT_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a pod is stopped


class PodState(StrEnum):
    PENDING = "pending"  # not placed yet (``reason`` says why)
    SCHEDULED = "scheduled"  # placed on a node that has not started it yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATING = "terminating"  # deleted: its containers are being stopped
    TERMINATED = "terminated"  # deleted, and its containers are gone; the record stays until purged
    UNKNOWN = "unknown"  # its node is silent


class ContainerState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


FINAL_POD_STATES = frozenset({PodState.SUCCEEDED, PodState.FAILED, PodState.TERMINATED})
# A pod in one of these holds capacity (and its ports) on its node.
PLACED_POD_STATES = frozenset({PodState.SCHEDULED, PodState.RUNNING, PodState.UNKNOWN, PodState.TERMINATING})
RESTART_POLICIES = ("Always", "OnFailure", "Never")
RestartPolicy = Literal["Always", "OnFailure", "Never"]


def _dns(rx: re.Pattern[str], what: str, v: str) -> str:
    if not rx.match(v):
        raise ValueError(f"'{v[:100]}' is not a valid {what}: lower-case letters, digits and '-', starting and "
                         "ending with a letter or digit")
    return v


def parse_cpu(value: str | int | float) -> float:
    """Cores in a Kubernetes CPU quantity: ``"100m"``, ``0.5``, ``"2"``."""
    if isinstance(value, bool):
        raise ValueError("a CPU quantity is a number of cores or a string such as '100m'")
    if isinstance(value, int | float):
        cores = float(value)
    else:
        m = CPU_RE.match(value.strip()) if len(value) <= 50 else None
        if not m:
            raise ValueError(f"'{value[:50]}' is not a CPU quantity: use cores (0.5, 2) or millicores ('100m')")
        cores = float(m.group(1)) / (1000 if m.group(2) else 1)
    if cores != cores or cores < 0 or cores > 1024:
        raise ValueError("a CPU quantity is 0 to 1024 cores")
    return cores


# parse_cpu's and parse_size's input as JSON Schema: a number in bounds, or text of the nearest stricter form.
Cpu = Annotated[str | int | float, NoBool, WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0, "maximum": 1024},
              {"type": "string", "pattern": r"^(?:[0-9]{1,3}(?:\.[0-9]{1,3})?|[0-9]{1,6}(?:\.[0-9]{1,3})?m)$"}],
    "description": "Cores (0.5, 2) or millicores ('100m'); at most 1024 cores."})]
Memory = Annotated[str | int | float, NoBool,
                   WithJsonSchema(size_schema("Bytes, or a size such as '256Mi', '1Gi'; at most 1 PiB."))]
PortNumber = Annotated[int, NoBool, Field(ge=1, le=65535, json_schema_extra={"minimum": 1, "maximum": 65535})]


class Quantities(Strict):
    cpu: Cpu | None = None
    memory: Memory | None = None

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: Cpu | None) -> Cpu | None:
        if v is not None:
            parse_cpu(v)
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: Memory | None) -> Memory | None:
        if v is not None:
            parse_size(v)
        return v

    def cores(self) -> float | None:
        return None if self.cpu is None else parse_cpu(self.cpu)

    def bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory)


class ResourceRequirements(Strict):
    requests: Quantities = Field(default_factory=lambda: Quantities())
    limits: Quantities = Field(default_factory=lambda: Quantities())

    def reserved(self) -> Resources:
        """What the container reserves on its node: its requests, else its limits, else what a task that
        asks for nothing reserves."""
        d = DEFAULT_TASK_RESOURCES
        cpu = self.requests.cores()
        cpu = self.limits.cores() if cpu is None else cpu
        mem = self.requests.bytes()
        mem = self.limits.bytes() if mem is None else mem
        return Resources(d.cpu if cpu is None else cpu, d.memory if mem is None else mem, 0, 0)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for what, req, lim in (("cpu", self.requests.cores(), self.limits.cores()),
                               ("memory", self.requests.bytes(), self.limits.bytes())):
            if req is not None and lim is not None and req > lim:
                raise ValueError(f"requests.{what} is more than limits.{what}")
        return self


class ExecAction(Strict):
    command: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=100)


# _probe_port's input as JSON Schema, the nearest stricter: a port number (a port's name must be one of the
# container's ports' names, which JSON Schema cannot say).
ProbePort = Annotated[int | str, NoBool, WithJsonSchema({
    "type": "integer", "minimum": 1, "maximum": 65535,
    "description": "A port number, or the name of one of the container's ports (not in the schema)"})]


def _probe_port(v: int | str) -> int | str:
    if isinstance(v, int):
        if not 1 <= v <= 65535:
            raise ValueError("a port is 1 to 65535")
    elif not PORT_NAME_RE.match(v):
        raise ValueError(f"'{v[:50]}' is neither a port number nor a port name")
    return v


class HTTPGetAction(Strict):
    path: str = Field("/", max_length=2048, json_schema_extra={"pattern": f"^/[^{WS}]*$"})
    port: ProbePort
    host: str | None = Field(None, max_length=255)
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | str) -> int | str:
        return _probe_port(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("a probe path starts with '/' and holds no spaces")
        return v


class TCPSocketAction(Strict):
    port: ProbePort
    host: str | None = Field(None, max_length=255)

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | str) -> int | str:
        return _probe_port(v)


class PodProbeSpec(Strict):
    # What _one_action checks, said in the schema: exactly one action, given as an object.
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": [k], "properties": {k: {"type": "object"}}} for k in ("exec", "httpGet", "tcpSocket")]})

    exec: ExecAction | None = None
    httpGet: HTTPGetAction | None = None
    tcpSocket: TCPSocketAction | None = None
    initialDelaySeconds: Annotated[int, NoBool] = Field(0, ge=0, le=3600)
    periodSeconds: Annotated[int, NoBool] = Field(10, ge=1, le=3600)
    timeoutSeconds: Annotated[int, NoBool] = Field(1, ge=1, le=3600)
    failureThreshold: Annotated[int, NoBool] = Field(3, ge=1, le=1000)
    successThreshold: Annotated[int, NoBool] = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_action(self) -> PodProbeSpec:
        given = [k for k in ("exec", "httpGet", "tcpSocket") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a probe has exactly one of exec, httpGet or tcpSocket"
                             + (f", not {' and '.join(given)}" if given else ""))
        return self

    def named_port(self) -> str | None:
        action = self.httpGet or self.tcpSocket
        return action.port if action is not None and isinstance(action.port, str) else None


class PortSpec(Strict):
    name: str | None = Field(None, max_length=15, json_schema_extra={"pattern": PORT_NAME_RE.pattern})
    containerPort: PortNumber
    protocol: Literal["TCP", "UDP"] = "TCP"
    hostPort: PortNumber | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not PORT_NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a valid port name: at most 15 lower-case letters, digits and '-'")
        return v


class Capabilities(Strict):
    add: list[CapName] = Field(default_factory=list, max_length=50,
                               description="Linux capabilities to add, such as NET_ADMIN (admins only, where the "
                                           "server allows it: --allow-admin-escalation cap_add).")


class SecurityContext(Strict):
    """What of Kubernetes' container securityContext Corral takes: the escalations an admin may be given
    (coordinator/policy.py); a container is hardened otherwise."""

    privileged: bool | None = Field(None, description="Run the container privileged (admins only, where the server "
                                                      "allows it: --allow-admin-escalation privileged).")
    capabilities: Capabilities | None = None


def _env_list(v: Any) -> Any:
    """Kubernetes writes env as a list of {name, value}: take that too."""
    if isinstance(v, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(v):
            if not isinstance(item, dict) or set(item) - {"name", "value"} or not isinstance(item.get("name"), str):
                raise ValueError(f"env[{i}]: an entry of an env list is {{name, value}}")
            value = item.get("value", "")
            if not isinstance(value, str):
                raise ValueError(f"env[{i}].value: a string is expected")
            out[item["name"]] = value
        return out
    return v


class ContainerSpec(Strict):
    # What _ports checks, said in the schema: a container without an image is a host process, with a command.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["image"], "properties": {"image": {"type": "string"}}},
        {"required": ["command"], "properties": {"command": {"type": "array", "minItems": 1}}},
        {"required": ["args"], "properties": {"args": {"type": "array", "minItems": 1}}}]})

    name: Annotated[str, Field(max_length=63, json_schema_extra={"pattern": DNS_LABEL_RE.pattern})]
    image: ImageRef | None = Field(None, max_length=1000, json_schema_extra={"pattern": f"^[^{WS}]+$"},
                                   description="Container image; omitted: a host process "
                                                                  "on a node with the process runtime.")
    command: Args = Field(None, description="The entrypoint (argv list); omitted: the image's.")
    args: Args = Field(None, description="Arguments to the command; omitted: the image's.")
    env: Annotated[Env, BeforeValidator(_env_list)] = Field(default_factory=dict)
    workingDir: str | None = Field(None, max_length=MAX_PATH, json_schema_extra={"pattern": "^/"})
    ports: list[PortSpec] = Field(default_factory=list, max_length=MAX_PORTS, json_schema_extra={"maxItems": 1},
                                  description=f"At most {MAX_PORTS}, each (containerPort, protocol) and name once; "
                                              "the schema says one (the nearest stricter: JSON Schema cannot say "
                                              "that a field is unique among several).")
    resources: ResourceRequirements = Field(default_factory=lambda: ResourceRequirements())
    livenessProbe: PodProbeSpec | None = None
    readinessProbe: PodProbeSpec | None = None
    securityContext: SecurityContext | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns(DNS_LABEL_RE, "container name", v)

    @field_validator("workingDir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("workingDir is an absolute path")
        return v

    @model_validator(mode="after")
    def _ports(self) -> ContainerSpec:
        names = [p.name for p in self.ports if p.name]
        if len(set(names)) != len(names):
            raise ValueError("two ports with the same name")
        keys = [(p.containerPort, p.protocol) for p in self.ports]
        if len(set(keys)) != len(keys):
            raise ValueError("the same containerPort and protocol listed twice")
        if self.image is None and not (self.command or self.args):
            raise ValueError("a container without an image is a host process: give its 'command'")
        for which, probe in (("livenessProbe", self.livenessProbe), ("readinessProbe", self.readinessProbe)):
            named = probe.named_port() if probe else None
            if named is not None and named not in names:
                raise ValueError(f"{which}: no port of this container is named '{named}'")
        return self


_NOT_ESCALATED: JsonDict = {"enum": [False, None]}


class PodSpec(Strict):
    # What _containers checks, said in the schema: every container has an image (docker), or none has (host
    # processes), and host processes take no escalation (securityContext, hostNetwork, hostPID, hostIPC).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"containers": {"items": {"required": ["image"], "properties": {"image": {"type": "string"}}}}}},
        {"properties": {
            "containers": {"items": {"properties": {
                "image": {"type": "null"},
                "securityContext": {"anyOf": [{"type": "null"}, {"properties": {
                    "privileged": _NOT_ESCALATED, "capabilities": {"type": "null"}}}]}}}},
            "hostNetwork": _NOT_ESCALATED, "hostPID": _NOT_ESCALATED, "hostIPC": _NOT_ESCALATED}}]})

    name: Annotated[str, Field(max_length=200, json_schema_extra={"pattern": DNS_NAME_RE.pattern})]
    namespace: Annotated[str, Field(max_length=63, json_schema_extra={"pattern": DNS_LABEL_RE.pattern})] = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    containers: list[ContainerSpec] = Field(min_length=1, max_length=MAX_CONTAINERS)
    restartPolicy: RestartPolicy = "Always"
    ttl: PositiveDuration | None = Field(None, description="Delete the pod this long after it is created ('2h').")
    node_selector: Labels = Field(default_factory=dict, alias="nodeSelector")
    terminationGracePeriodSeconds: Annotated[float | None, NoBool] = Field(
        None, ge=0, le=MAX_GRACE, allow_inf_nan=False,
        description="Seconds between SIGTERM and SIGKILL when the pod is stopped (default 10).")
    # Escalations (coordinator/policy.py), as the container's securityContext: a 400 unless the caller is an
    # admin and the operator allowed that kind (corral server --allow-admin-escalation).
    hostNetwork: bool | None = Field(None, description="The host's network (admins only, where the server allows "
                                                       "it: --allow-admin-escalation host_network).")
    hostPID: bool | None = Field(None, description="The host's PID namespace (admins only, where the server allows "
                                                   "it: --allow-admin-escalation host_pid).")
    hostIPC: bool | None = Field(None, description="The host's IPC namespace (admins only, where the server allows "
                                                   "it: --allow-admin-escalation host_ipc).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns(DNS_NAME_RE, "pod name", v)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return _dns(DNS_LABEL_RE, "namespace", v)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: PositiveDuration | None) -> PositiveDuration | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("a ttl must be longer than zero")
        return v

    @model_validator(mode="after")
    def _containers(self) -> PodSpec:
        names = [c.name for c in self.containers]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"two containers are named '{dup}': names are unique in a pod")
        with_image = {c.image is not None for c in self.containers}
        if len(with_image) > 1:
            raise ValueError("a pod's containers are either all images (docker) or all host processes "
                             "(no image), not a mix")
        if with_image == {False} and (self.hostNetwork or self.hostPID or self.hostIPC or any(
                c.securityContext and (c.securityContext.privileged or c.securityContext.capabilities)
                for c in self.containers)):
            raise ValueError("securityContext, hostNetwork, hostPID and hostIPC apply to containers with an image, "
                             "not to host processes")
        # The containers share one network namespace: a port may be listened on once.
        seen: set[tuple[int, str]] = set()
        hosts: set[tuple[int, str]] = set()
        for c in self.containers:
            for p in c.ports:
                if (p.containerPort, p.protocol) in seen:
                    raise ValueError(f"containerPort {p.containerPort}/{p.protocol} is in two containers; they "
                                     "share one network namespace")
                seen.add((p.containerPort, p.protocol))
                if p.hostPort is not None:
                    if (p.hostPort, p.protocol) in hosts:
                        raise ValueError(f"hostPort {p.hostPort}/{p.protocol} is asked for twice")
                    hosts.add((p.hostPort, p.protocol))
        return self

    # -- what the coordinator derives from a spec --------------------------------------------------
    @property
    def runtime(self) -> str:
        return "process" if self.containers[0].image is None else "docker"

    def requests(self) -> Resources:
        """What the pod reserves on its node: the sum of its containers' (see ``reserved``)."""
        total = Resources()
        for c in self.containers:
            total = total + c.resources.reserved()
        return total

    def ttl_seconds(self) -> float | None:
        return None if self.ttl is None else parse_duration(self.ttl)

    def grace(self) -> float:
        g = self.terminationGracePeriodSeconds
        return DEFAULT_GRACE if g is None else float(g)


def dump_pod(spec: PodSpec) -> dict[str, Any]:
    """The stored form of a spec (what ``PodSpec.model_validate`` reads back)."""
    return spec.model_dump(mode="json", exclude_none=True)
