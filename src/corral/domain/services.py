"""Services: a stable name and port in front of the ready pods that match a label selector.

``ServiceSpec`` is what a user submits (Podling's field names); ``endpoints`` is the pure answer to "where
does this service send traffic now": the ready pods of its namespace that match its selector, each at its
node's public address and the node port its container's target port is published on. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from corral.domain.spec import NoBool, Strict

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")  # IANA service name: at most 15
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 64, 253, 256
MAX_PORTS = 32
LIVE_NODE = ("ready", "draining")
SERVICE_TYPES = ("ClusterIP", "NodePort")
ANY_NODE = "*"  # the pseudo node whose node_ports rows hold a NodePort service's ports on every node


def _dns_label(v: str, what: str) -> str:
    if not DNS_LABEL.match(v):
        raise ValueError(f"'{v[:80]}' is not a valid {what}: 1-63 lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit")
    return v


def _labels(m: dict[str, str]) -> dict[str, str]:
    if len(m) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for k, v in m.items():
        if not 1 <= len(k) <= MAX_LABEL_KEY or len(v) > MAX_LABEL_VALUE:
            raise ValueError(f"a label key is 1-{MAX_LABEL_KEY} characters, a value at most {MAX_LABEL_VALUE}")
    return m


LabelMap = Annotated[dict[str, str], AfterValidator(_labels), Field(json_schema_extra={
    "maxProperties": MAX_LABELS, "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_KEY},
    "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE}})]
PortNumber = Annotated[int, NoBool, Field(ge=1, le=65535, json_schema_extra={"minimum": 1, "maximum": 65535})]


class ServicePortSpec(Strict):
    name: str | None = Field(None, description="Required when the service has more than one port",
                             json_schema_extra={"pattern": PORT_NAME.pattern})
    protocol: Literal["TCP", "UDP"] = "TCP"
    port: PortNumber = Field(description="The service's port")
    targetPort: PortNumber | str | None = Field(  # noqa: N815 - Podling's field name
        None, description="The container port (number, or the name of a container port); default: port",
        json_schema_extra={"pattern": PORT_NAME.pattern})
    nodePort: PortNumber | None = Field(  # noqa: N815
        None, description="NodePort only: the port on every node (default: one allocated from the range)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not PORT_NAME.match(v):
            raise ValueError(f"'{v[:80]}' is not a valid port name: 1-15 lower-case letters, digits and '-'")
        return v

    @field_validator("targetPort")
    @classmethod
    def _target(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str) and not PORT_NAME.match(v):
            raise ValueError(f"'{v[:80]}' is neither a port number nor a port name")
        return v

    @property
    def target(self) -> int | str:
        return self.port if self.targetPort is None else self.targetPort


# What _ports checks, as the schema can say it (the nearest stricter): one port (JSON Schema cannot say that names,
# and each (port, protocol), are unique among several); a nodePort only on a NodePort service, which forwards TCP.
_SERVICE_RULES: dict[str, Any] = {"anyOf": [
    {"required": ["type"], "properties": {"type": {"const": "NodePort"},
                                          "ports": {"items": {"properties": {"protocol": {"const": "TCP"}}}}}},
    {"properties": {"type": {"const": "ClusterIP"},
                    "ports": {"items": {"properties": {"nodePort": {"type": "null"}}}}}}]}


class ServiceSpec(Strict):
    model_config = ConfigDict(json_schema_extra=_SERVICE_RULES)

    name: str = Field(json_schema_extra={"pattern": DNS_LABEL.pattern})
    namespace: str = Field("default", json_schema_extra={"pattern": DNS_LABEL.pattern})
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    selector: LabelMap = Field(default_factory=dict,
                               description="Pods with all these labels are the endpoints; empty: none")
    ports: list[ServicePortSpec] = Field(min_length=1, max_length=MAX_PORTS, json_schema_extra={"maxItems": 1},
                                         description=f"1 to {MAX_PORTS} ports, each (port, protocol) once; every "
                                                     "port named, names unique, when there are several. The schema "
                                                     "says one: JSON Schema cannot say the rest.")
    labels: LabelMap = Field(default_factory=dict)
    annotations: LabelMap = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns_label(v, "service name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return _dns_label(v, "namespace")

    @model_validator(mode="after")
    def _ports(self) -> ServiceSpec:
        if len(self.ports) > 1 and any(p.name is None for p in self.ports):
            raise ValueError("ports: every port needs a name when there is more than one")
        names = [p.name for p in self.ports if p.name is not None]
        if len(set(names)) != len(names):
            raise ValueError("ports: two ports with the same name")
        keys = [(p.port, p.protocol) for p in self.ports]
        if len(set(keys)) != len(keys):
            raise ValueError("ports: two ports with the same port and protocol")
        if self.type == "NodePort":
            if any(p.protocol != "TCP" for p in self.ports):
                raise ValueError("ports: a NodePort service forwards TCP only")
            given = [p.nodePort for p in self.ports if p.nodePort is not None]
            if len(set(given)) != len(given):
                raise ValueError("ports: two ports with the same nodePort")
        elif any(p.nodePort is not None for p in self.ports):
            raise ValueError("ports: nodePort is only for type NodePort")
        return self


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether labels carry every key of the selector with its value. An empty selector selects nothing:
    a service without one has no endpoints (as in Kubernetes, where they are managed by hand)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _published(pod: Mapping[str, Any], target: int | str, protocol: str) -> int | None:
    """The node port that the pod's target port (number or port name) is published on, if any."""
    for p in pod.get("ports") or ():
        if (p.get("protocol") or "TCP") != protocol:
            continue
        same = p.get("containerPort") == target if isinstance(target, int) else p.get("name") == target
        if same:
            port = p.get("hostPort") or p.get("nodePort")
            if isinstance(port, int) and port > 0:
                return port
    return None


def endpoints(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]],
              nodes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The service's endpoints: for each of its ports, each pod that is running and ready, in the service's
    namespace, matching its selector, on a live node, and that publishes the port's target (a number:
    its ``containerPort``; a name: the container port of that name) on its node. Each endpoint is
    ``{pod_id, node_id, address, port, port_name, service_port}``, ``address:port`` being where it answers
    (the node's public address and the published port). Sorted by service port, then pod.

    ``service``: the stored service (``namespace``, ``selector``, ``ports`` as in ServiceSpec).
    ``pods``: pods as the store gives them (``id``, ``namespace``, ``labels``, ``state``, ``ready``,
    ``node_id``, ``ports`` [{containerPort, protocol, hostPort or nodePort, name?}]).
    ``nodes``: node rows by id (``state``, ``address``, ``hostname``)."""
    ns, selector = service.get("namespace") or "default", service.get("selector") or {}
    chosen = []
    for pod in pods:
        node = nodes.get(pod.get("node_id") or "")
        if (pod.get("namespace") or "default") != ns or not matches(selector, pod.get("labels") or {}):
            continue
        if pod.get("state") != "running" or not pod.get("ready") or node is None:
            continue
        if node.get("state") not in LIVE_NODE:
            continue
        address = node.get("address") or node.get("hostname")
        if address:
            chosen.append((str(pod["id"]), str(pod["node_id"]), str(address), pod))
    chosen.sort(key=lambda c: c[0])
    out: list[dict[str, Any]] = []
    for sp in service.get("ports") or ():
        target = sp.get("targetPort") or sp["port"]
        protocol = sp.get("protocol") or "TCP"
        for pod_id, node_id, address, pod in chosen:
            port = _published(pod, target, protocol)
            if port is not None:
                out.append({"pod_id": pod_id, "node_id": node_id, "address": address, "port": port,
                            "port_name": sp.get("name"), "service_port": sp["port"]})
    return out


def pick_node_ports(wanted: int, taken: set[int], low: int, high: int, start: int = 0) -> list[int]:
    """``wanted`` free ports of [low, high] not in ``taken``, searched from ``low + start`` (round the
    range), so that concurrent allocations starting apart rarely collide. Fewer if the range is full."""
    size = high - low + 1
    out: list[int] = []
    for i in range(size if wanted > 0 else 0):
        p = low + (start + i) % size
        if p not in taken:
            out.append(p)
            if len(out) == wanted:
                break
    return out
