"""A Kubernetes Pod manifest as the Stacks API takes it: parsed, checked and sanitized. No I/O.

The manifest is read into the Kubernetes Pod schema's own models (``lightkube-models``, generated from
the Kubernetes OpenAPI specification of the version in its name; their types are checked by ``msgspec``),
so a field of the wrong type is refused the way the API server would refuse it. On top of that, what a
shared machine must not run is refused (``hostPath`` volumes, host ports), what Corral cannot honour is
refused by name rather than dropped, and what is left is sanitized as the Stacks provisioner does:
``restartPolicy: Never``, no service account token, no service links, every container unprivileged,
without privilege escalation and under the runtime's default seccomp profile, and each container's
requests and limits made equal (the larger of the two). Host namespaces, privileged containers and added
capabilities are escalations: kept here, and refused by the coordinator's policy (coordinator/policy.py)
to everyone but an admin on a server that allows them; a container granted one keeps it in the manifest.
The sanitized manifest is written back as YAML with sorted keys, the shape ``kubectl`` and the
provisioner print.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import TYPE_CHECKING, Any

import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

if TYPE_CHECKING:
    from types import ModuleType

MAX_MANIFEST = 256 * 1024  # characters of pod_spec
MAX_TARGET_PORTS = 24
MAX_CONTAINERS = 16
MAX_DEPTH = 32  # levels of nesting in a manifest
NAMESPACE = "stacks"
MiB = 2**20

# What Corral runs of a pod spec; any other field with a value is refused by name.
POD_FIELDS = frozenset({"containers", "restartPolicy", "nodeSelector", "terminationGracePeriodSeconds",
                        "automountServiceAccountToken", "enableServiceLinks", "securityContext", "hostNetwork",
                        "hostPID", "hostIPC", "volumes"})
CONTAINER_FIELDS = frozenset({"name", "image", "imagePullPolicy", "command", "args", "env", "workingDir", "ports",
                              "resources", "livenessProbe", "readinessProbe", "securityContext",
                              "terminationMessagePath", "terminationMessagePolicy"})
PROBE_FIELDS = frozenset({"exec", "httpGet", "tcpSocket", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
                          "failureThreshold", "successThreshold"})
METADATA_FIELDS = frozenset({"name", "namespace", "labels", "annotations"})


class InvalidInput(ValueError):
    """A request the Stacks API refuses with 400 ``invalid input: ...``."""

    prefix = "invalid input"

    def __str__(self) -> str:
        return f"{self.prefix}: {super().__str__()}"


class InvalidPodSpec(InvalidInput):
    """A manifest refused with 400 ``invalid pod spec: ...`` (a LimitRange violation too)."""

    prefix = "invalid pod spec"


class QuotaExceeded(ValueError):
    """The namespace's ResourceQuota would be passed: 503 ``cluster saturated: ...``."""

    def __str__(self) -> str:
        return f"cluster saturated: {super().__str__()}"


@dataclass(frozen=True)
class TargetPort:
    container_port: int
    protocol: str  # TCP | UDP


@dataclass(frozen=True)
class ContainerRequest:
    name: str
    cpu_milli: int
    memory_bytes: int


@dataclass(frozen=True)
class Manifest:
    """A checked and sanitized manifest: its YAML, its dict, and what it reserves."""

    yaml: str
    pod: dict[str, Any]
    containers: tuple[ContainerRequest, ...]
    target_ports: tuple[TargetPort, ...]

    @property
    def cpu_milli(self) -> int:
        return sum(c.cpu_milli for c in self.containers)

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers)


@dataclass(frozen=True)
class LimitRange:
    """Per-container bounds, like a Kubernetes LimitRange of type Container (None: no bound)."""

    min_cpu_milli: int | None = None
    max_cpu_milli: int | None = None
    min_memory_bytes: int | None = None
    max_memory_bytes: int | None = None


@dataclass(frozen=True)
class Quota:
    """Totals for the namespace, like a Kubernetes ResourceQuota (None: no bound)."""

    cpu_milli: int | None = None
    memory_bytes: int | None = None
    stacks: int | None = None


# -- quantities -----------------------------------------------------------------------------------
@cache
def _lightkube() -> tuple[ModuleType, ModuleType, Any]:
    # Imported on first use: the lightkube package pulls in its HTTP client, a third of a second.
    from lightkube.models import core_v1, meta_v1
    from lightkube.utils.quantity import parse_quantity
    return core_v1, meta_v1, parse_quantity


def quantity(value: Any, what: str) -> Decimal:
    """A Kubernetes quantity ("100m", "128Mi", 0.5, "1e3") as a Decimal, or InvalidPodSpec."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidPodSpec(f"{what}: a quantity is a number or a string such as '100m' or '128Mi'")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPodSpec(f"{what}: '{value}' is not a quantity")
    text = str(value).strip()
    if len(text) > 64:
        raise InvalidPodSpec(f"{what}: a quantity is at most 64 characters")
    try:
        q = _lightkube()[2](text)
    except (ValueError, InvalidOperation):
        raise InvalidPodSpec(f"{what}: '{text}' is not a quantity (such as 100m, 0.5, 128Mi, 1G)") from None
    if q is None or q < 0 or not q.is_finite():
        raise InvalidPodSpec(f"{what}: '{text}' is not a quantity of zero or more")
    return Decimal(q)


def format_cpu(milli: int) -> str:
    """Millicores as Kubernetes prints them: ``100m``, ``1``, ``1500m``."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def format_memory(n: int) -> str:
    """Bytes as Kubernetes prints a binary quantity: ``128Mi``, ``1Gi``, ``1000`` when no unit fits."""
    for unit, exp in (("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if n and n % (1 << exp) == 0:
            return f"{n >> exp}{unit}"
    return str(n)


# -- target ports -----------------------------------------------------------------------------------
def target_ports(value: Any) -> tuple[TargetPort, ...]:
    """The request's ``target_port`` list, checked: 1-24 entries of {container_port, protocol}, no repeats."""
    if value is None:
        raise InvalidInput("target_port is required")
    if not isinstance(value, list):
        raise InvalidInput("target_port must be a list of {container_port, protocol}")
    if not value:
        raise InvalidInput("target_port is required")
    if len(value) > MAX_TARGET_PORTS:
        raise InvalidInput(f"target_port exceeds limit ({MAX_TARGET_PORTS})")
    out: list[TargetPort] = []
    for i, item in enumerate(value):
        where = f"target_port[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object {{container_port, protocol}}")
        extra = set(item) - {"container_port", "protocol"}
        if extra:
            raise InvalidInput(f"{where}: unknown field {sorted(extra)[0]!r}")
        port = item.get("container_port")
        if isinstance(port, bool) or not isinstance(port, int):
            raise InvalidInput(f"{where}.container_port must be a whole number")
        if not 1 <= port <= 65535:
            raise InvalidInput(f"{where}.container_port is out of range (1-65535)")
        proto = item.get("protocol")
        if proto is None or (isinstance(proto, str) and not proto.strip()):
            raise InvalidInput(f"{where}.protocol is required")
        if not isinstance(proto, str) or proto.strip().upper() not in ("TCP", "UDP"):
            raise InvalidInput(f"{where}.protocol must be TCP or UDP")
        tp = TargetPort(port, proto.strip().upper())
        if tp in out:
            raise InvalidInput(f"duplicate target_port entry {port}/{tp.protocol}")
        out.append(tp)
    return tuple(out)


# -- the manifest ---------------------------------------------------------------------------------
def _load(text: Any) -> dict[str, Any]:
    if text is None or (isinstance(text, str) and not text.strip()):
        raise InvalidPodSpec("pod_spec is required")
    if not isinstance(text, str):
        raise InvalidPodSpec("pod_spec must be a string holding a YAML Pod manifest")
    if len(text) > MAX_MANIFEST:
        raise InvalidPodSpec(f"pod_spec is over {MAX_MANIFEST} characters")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                raise InvalidPodSpec("YAML aliases are not accepted in pod_spec")
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InvalidPodSpec(f"pod_spec is nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except InvalidInput:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidPodSpec(f"yaml parse failed{where}") from None
    except (RecursionError, ValueError, TypeError, OverflowError):
        raise InvalidPodSpec("yaml parse failed") from None
    if len(docs) != 1:
        raise InvalidPodSpec("pod_spec must hold exactly one YAML document")
    doc = docs[0]
    if not isinstance(doc, dict):
        raise InvalidPodSpec("pod_spec must be a YAML mapping (a Pod manifest)")
    return doc


def _model(cls: Any, data: Any, where: str) -> Any:
    """``data`` read into a lightkube model class, or InvalidPodSpec naming the field."""
    import msgspec
    try:
        return cls.from_dict(data)
    except (msgspec.ValidationError, TypeError, ValueError) as e:
        msg = str(e)
        m = re.search(r" - at `\$(.*)`$", msg)
        if m:
            path = f"{where}{m.group(1)}"
            msg = msg[:m.start()]
            raise InvalidPodSpec(f"{path}: {msg}") from None
        raise InvalidPodSpec(f"{where}: {msg}") from None


def _set(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The keys of a model's dict that hold a value (not None, not empty)."""
    return {k: v for k, v in (obj or {}).items() if v not in (None, [], {}, "")}


def _refuse_unknown(d: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    for k in sorted(_set(d)):
        if k not in allowed:
            raise InvalidPodSpec(f"{where}.{k} is not supported by this server")


def _security(sc: dict[str, Any] | None, where: str, pod_level: bool) -> None:
    """A given securityContext may only say what the sanitizing sets anyway."""
    sc = _set(sc)
    if not sc:
        return
    # privileged and capabilities.add are escalations: the coordinator's policy decides (an admin's, where the
    # server allows them; coordinator/policy.py).
    caps = _set(sc.get("capabilities"))
    if sc.get("allowPrivilegeEscalation") is True and sc.get("privileged") is not True:
        raise InvalidPodSpec(f"{where}.allowPrivilegeEscalation: privilege escalation is forbidden")
    seccomp = _set(sc.get("seccompProfile"))
    if seccomp and seccomp.get("type") != "RuntimeDefault":
        raise InvalidPodSpec(f"{where}.seccompProfile: only RuntimeDefault is allowed")
    allowed = {"seccompProfile"} if pod_level else {"privileged", "allowPrivilegeEscalation", "seccompProfile",
                                                    "capabilities"}
    for k in sorted(sc):
        if k not in allowed or (k == "capabilities" and set(caps) - {"add"}):
            field = k if k != "capabilities" else "capabilities.drop"
            raise InvalidPodSpec(f"{where}.{field} is set by the server and cannot be given")


def _resources(c: dict[str, Any], where: str) -> ContainerRequest:
    res = _set(c.get("resources"))
    for k in sorted(res):
        if k not in ("requests", "limits"):
            raise InvalidPodSpec(f"{where}.resources.{k} is not supported by this server")
    amounts: dict[str, Decimal] = {}
    for part in ("requests", "limits"):
        for name, value in _set(res.get(part)).items():
            if name not in ("cpu", "memory"):
                raise InvalidPodSpec(f"{where}.resources.{part}.{name}: only cpu and memory can be asked for")
            q = quantity(value, f"{where}.resources.{part}.{name}")
            amounts[name] = max(amounts.get(name, Decimal(0)), q)
    cpu = int((amounts.get("cpu", Decimal(0)) * 1000).to_integral_value(rounding="ROUND_CEILING"))
    memory = int(amounts.get("memory", Decimal(0)).to_integral_value(rounding="ROUND_CEILING"))
    if cpu <= 0 or memory <= 0:
        raise InvalidPodSpec(f"{where}.resources: a cpu and a memory request or limit must be set")
    if cpu > 1024 * 1000 or memory > 2**50:
        raise InvalidPodSpec(f"{where}.resources: more than any node has")
    return ContainerRequest(str(c.get("name")), cpu, memory)


def _probe(p: dict[str, Any] | None, where: str) -> None:
    p = _set(p)
    if not p:
        return
    _refuse_unknown(p, PROBE_FIELDS, where)
    for action in ("httpGet", "tcpSocket"):
        a = _set(p.get(action))
        allowed = {"path", "port", "scheme", "host"} if action == "httpGet" else {"port", "host"}
        for k in sorted(a):
            if k not in allowed:
                raise InvalidPodSpec(f"{where}.{action}.{k} is not supported by this server")


def parse_manifest(text: Any, targets: tuple[TargetPort, ...]) -> Manifest:
    """The request's ``pod_spec``, parsed into the Kubernetes Pod schema, checked against ``targets`` and
    sanitized; InvalidPodSpec (or InvalidInput) says what is wrong."""
    core_v1, meta_v1, _ = _lightkube()
    doc = _load(text)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(kind, str) or kind.lower() != "pod":
        raise InvalidPodSpec("kind must be Pod")
    if api_version != "v1":
        raise InvalidPodSpec("apiVersion must be v1")
    for k in sorted(doc):
        if k not in ("apiVersion", "kind", "metadata", "spec", "status"):
            raise InvalidPodSpec(f"{k}: not a field of a Pod")
    meta = _model(meta_v1.ObjectMeta, doc.get("metadata") or {}, "metadata").to_dict()
    for k in sorted(_set(meta)):
        if k not in METADATA_FIELDS:
            raise InvalidPodSpec(f"metadata.{k} is set by the server and cannot be given")
    if meta.get("namespace") not in (None, "", NAMESPACE):
        raise InvalidPodSpec(f"metadata.namespace: stacks run in namespace '{NAMESPACE}'")
    if "spec" not in doc or doc["spec"] is None:
        raise InvalidPodSpec("spec is required")
    spec = _model(core_v1.PodSpec, doc["spec"], "spec").to_dict()

    # What a shared machine must not run (hostNetwork, hostPID, hostIPC, a privileged container and added
    # capabilities are escalations, left to the coordinator's policy).
    for i, v in enumerate(spec.get("volumes") or []):
        if v.get("hostPath") is not None:
            raise InvalidPodSpec(f"spec.volumes[{i}]: hostPath volume is forbidden")
    if spec.get("volumes"):
        raise InvalidPodSpec("spec.volumes are not supported by this server")
    if spec.get("initContainers") or spec.get("ephemeralContainers"):
        raise InvalidPodSpec("initContainers/ephemeralContainers are not supported by this server")
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        raise InvalidPodSpec("serviceAccount is forbidden in input")
    if spec.get("nodeName") or spec.get("runtimeClassName"):
        raise InvalidPodSpec("nodeName/runtimeClassName are forbidden in input")
    _refuse_unknown(spec, POD_FIELDS, "spec")
    _security(spec.get("securityContext"), "spec.securityContext", pod_level=True)

    containers = spec.get("containers") or []
    if not containers:
        raise InvalidPodSpec("at least one container is required")
    if len(containers) > MAX_CONTAINERS:
        raise InvalidPodSpec(f"at most {MAX_CONTAINERS} containers")
    requests: list[ContainerRequest] = []
    exposed: set[tuple[int, str]] = set()
    for i, c in enumerate(containers):
        where = f"spec.containers[{i}]"
        if not str(c.get("name") or "").strip():
            raise InvalidPodSpec(f"{where}: container name is required")
        if not str(c.get("image") or "").strip():
            raise InvalidPodSpec(f"{where}: container image is required")
        _security(c.get("securityContext"), f"{where}.securityContext", pod_level=False)
        for j, p in enumerate(c.get("ports") or []):
            if p.get("hostPort") or p.get("hostIP"):
                raise InvalidPodSpec(f"{where}.ports[{j}]: hostPort/hostIP are forbidden")
            port, proto = p.get("containerPort"), p.get("protocol") or "TCP"
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidPodSpec(f"{where}.ports[{j}]: invalid container port")
            if proto not in ("TCP", "UDP"):
                raise InvalidPodSpec(f"{where}.ports[{j}]: protocol must be TCP or UDP")
            exposed.add((port, proto))
        for n, e in enumerate(c.get("env") or []):
            if e.get("valueFrom") is not None:
                raise InvalidPodSpec(f"{where}.env[{n}].valueFrom is not supported by this server: give a value")
        if c.get("envFrom"):
            raise InvalidPodSpec(f"{where}.envFrom is not supported by this server")
        _refuse_unknown(c, CONTAINER_FIELDS, where)
        _probe(c.get("livenessProbe"), f"{where}.livenessProbe")
        _probe(c.get("readinessProbe"), f"{where}.readinessProbe")
        requests.append(_resources(c, where))
    if not exposed:
        raise InvalidPodSpec("at least one exposed container port is required")
    for t in targets:
        if (t.container_port, t.protocol) not in exposed:
            raise InvalidPodSpec(f"target_port {t.container_port}/{t.protocol} must exist in container ports")

    # Sanitize, as the provisioner does.
    for c, r in zip(containers, requests, strict=True):
        equal = {"cpu": format_cpu(r.cpu_milli), "memory": format_memory(r.memory_bytes)}
        c["resources"] = {"limits": dict(equal), "requests": dict(equal)}
        asked = _set(c.get("securityContext"))
        privileged = asked.get("privileged") is True
        c["securityContext"] = {"allowPrivilegeEscalation": privileged, "privileged": privileged,
                                "seccompProfile": {"type": "RuntimeDefault"}}
        if add := _set(asked.get("capabilities")).get("add"):
            c["securityContext"]["capabilities"] = {"add": list(add)}
    spec["restartPolicy"] = "Never"
    spec["automountServiceAccountToken"] = False
    spec["enableServiceLinks"] = False
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(k) is not True:
            spec.pop(k, None)
    spec["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    meta.pop("namespace", None)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": _set(meta), "spec": spec, "status": {}}
    return Manifest(dump_yaml(pod), pod, tuple(requests), targets)


def dump_yaml(pod: dict[str, Any]) -> str:
    """YAML with sorted keys and lists flush with their key, as Kubernetes' own tools print it."""
    return yaml.safe_dump(pod, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 30)


# -- the namespace's policies ---------------------------------------------------------------------
def check_limits(m: Manifest, lr: LimitRange) -> None:
    """InvalidPodSpec naming the first container outside the LimitRange, in Kubernetes' words."""
    for c in m.containers:
        checks = (("cpu", c.cpu_milli, lr.min_cpu_milli, lr.max_cpu_milli, format_cpu),
                  ("memory", c.memory_bytes, lr.min_memory_bytes, lr.max_memory_bytes, format_memory))
        for what, value, lo, hi, fmt in checks:
            if hi is not None and value > hi:
                raise InvalidPodSpec(f"LimitRange violation: maximum {what} usage per Container is {fmt(hi)}, "
                                     f"but limit is {fmt(value)} (container '{c.name}')")
            if lo is not None and value < lo:
                raise InvalidPodSpec(f"LimitRange violation: minimum {what} usage per Container is {fmt(lo)}, "
                                     f"but request is {fmt(value)} (container '{c.name}')")


def check_quota(m: Manifest, q: Quota, used_cpu_milli: int, used_memory_bytes: int, used_stacks: int) -> None:
    """QuotaExceeded if this manifest would take the namespace past its ResourceQuota."""
    if q.stacks is not None and used_stacks + 1 > q.stacks:
        raise QuotaExceeded(f"exceeded quota: requested: pods=1, used: pods={used_stacks}, limited: pods={q.stacks}")
    if q.cpu_milli is not None and used_cpu_milli + m.cpu_milli > q.cpu_milli:
        raise QuotaExceeded(f"exceeded quota: requested: cpu={format_cpu(m.cpu_milli)}, used: "
                            f"cpu={format_cpu(used_cpu_milli)}, limited: cpu={format_cpu(q.cpu_milli)}")
    if q.memory_bytes is not None and used_memory_bytes + m.memory_bytes > q.memory_bytes:
        raise QuotaExceeded(f"exceeded quota: requested: memory={format_memory(m.memory_bytes)}, used: "
                            f"memory={format_memory(used_memory_bytes)}, limited: "
                            f"memory={format_memory(q.memory_bytes)}")


# -- to the core ----------------------------------------------------------------------------------
def _probe_to_native(p: dict[str, Any] | None) -> dict[str, Any] | None:
    p = _set(p)
    if not p:
        return None
    out = {k: v for k, v in p.items() if k in PROBE_FIELDS}
    for action in ("httpGet", "tcpSocket"):
        if action in out:
            out[action] = {k: v for k, v in _set(out[action]).items() if k != "scheme" or v in ("HTTP", "HTTPS")}
    return out


def native_pod(m: Manifest, stack_id: str, ttl_seconds: float | None = None) -> dict[str, Any]:
    """The native pod spec (domain.pods.PodSpec's fields) that runs the manifest, in namespace ``stacks``."""
    meta, spec = m.pod["metadata"], m.pod["spec"]
    containers = []
    for c in spec["containers"]:
        out: dict[str, Any] = {"name": c["name"], "image": c["image"]}
        for k in ("command", "args", "workingDir"):
            if c.get(k):
                out[k] = c[k]
        if c.get("env"):
            out["env"] = [{"name": e["name"], "value": e.get("value") or ""} for e in c["env"]]
        # Only the target ports are published (each takes a node port), and those a probe names.
        named = {str(a.get("port")) for k in ("livenessProbe", "readinessProbe")
                 for a in ((c.get(k) or {}).get("httpGet"), (c.get(k) or {}).get("tcpSocket")) if a}
        targets = {(t.container_port, t.protocol) for t in m.target_ports}
        out["ports"] = [{**({"name": p["name"]} if p.get("name") else {}), "containerPort": p["containerPort"],
                         "protocol": p.get("protocol") or "TCP"} for p in c.get("ports") or []
                        if (p["containerPort"], p.get("protocol") or "TCP") in targets or p.get("name") in named]
        out["resources"] = c["resources"]
        sc = c["securityContext"]
        if sc["privileged"] or sc.get("capabilities"):  # an escalation: the policy checks the caller
            out["securityContext"] = {**({"privileged": True} if sc["privileged"] else {}),
                                      **({"capabilities": sc["capabilities"]} if sc.get("capabilities") else {})}
        for k in ("livenessProbe", "readinessProbe"):
            probe = _probe_to_native(c.get(k))
            if probe:
                out[k] = probe
        containers.append(out)
    pod: dict[str, Any] = {"name": stack_id, "namespace": NAMESPACE,
                           "labels": {**(meta.get("labels") or {}), "corral.stack": stack_id},
                           "annotations": meta.get("annotations") or {},
                           "containers": containers, "restartPolicy": "Never"}
    if spec.get("nodeSelector"):
        pod["nodeSelector"] = spec["nodeSelector"]
    if spec.get("terminationGracePeriodSeconds") is not None:
        pod["terminationGracePeriodSeconds"] = spec["terminationGracePeriodSeconds"]
    pod |= {k: True for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)}
    if ttl_seconds is not None:
        pod["ttl"] = f"{ttl_seconds:g}s"
    return pod


# -- the operator's settings ----------------------------------------------------------------------
def _settings(items: tuple[str, ...] | list[str], keys: tuple[str, ...], what: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in items:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in keys:
                raise ValueError(f"'{part.strip()}': a {what} entry is KEY=QUANTITY with KEY one of {', '.join(keys)}")
            try:
                out[key] = quantity(value.strip(), key)
            except InvalidPodSpec as e:
                raise ValueError(str(e).removeprefix("invalid pod spec: ")) from None
    return out


def parse_limit_range(items: tuple[str, ...] | list[str]) -> LimitRange:
    """``min.cpu=100m,max.cpu=2,min.memory=64Mi,max.memory=4Gi`` (any of them) -> LimitRange."""
    d = _settings(items, ("min.cpu", "max.cpu", "min.memory", "max.memory"), "limit range")
    milli = {k: int(v * 1000) for k, v in d.items() if k.endswith("cpu")}
    size = {k: int(v) for k, v in d.items() if k.endswith("memory")}
    lr = LimitRange(milli.get("min.cpu"), milli.get("max.cpu"), size.get("min.memory"), size.get("max.memory"))
    for lo, hi, name in ((lr.min_cpu_milli, lr.max_cpu_milli, "cpu"),
                         (lr.min_memory_bytes, lr.max_memory_bytes, "memory")):
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min.{name} is more than max.{name}")
    return lr


def parse_quota(items: tuple[str, ...] | list[str]) -> Quota:
    """``cpu=8,memory=16Gi,pods=50`` (any of them) -> Quota."""
    d = _settings(items, ("cpu", "memory", "pods"), "quota")
    return Quota(None if "cpu" not in d else int(d["cpu"] * 1000),
                 None if "memory" not in d else int(d["memory"]),
                 None if "pods" not in d else int(d["pods"]))
