"""The Stacks API's Pod manifests: parsed into the Kubernetes schema, refused, sanitized (domain/k8s.py)."""

from __future__ import annotations

import pytest
import yaml

from corral.domain import k8s
from corral.domain.k8s import InvalidInput, InvalidPodSpec, LimitRange, Quota, QuotaExceeded, TargetPort

# The document's example, byte for byte: what it sends and what it answers.
SEED_SPEC = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: challenge\nspec:\n  containers:\n    - name: app\n"
             "      image: nginx:stable\n      ports:\n        - containerPort: 80\n          protocol: TCP\n"
             "      resources:\n        requests:\n          cpu: \"100m\"\n          memory: \"128Mi\"\n"
             "        limits:\n          cpu: \"100m\"\n          memory: \"128Mi\"")
SEED_SANITIZED = (
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: challenge\nspec:\n  automountServiceAccountToken: false\n"
    "  containers:\n  - image: nginx:stable\n    name: app\n    ports:\n    - containerPort: 80\n      protocol: TCP\n"
    "    resources:\n      limits:\n        cpu: 100m\n        memory: 128Mi\n      requests:\n        cpu: 100m\n"
    "        memory: 128Mi\n    securityContext:\n      allowPrivilegeEscalation: false\n      privileged: false\n"
    "      seccompProfile:\n        type: RuntimeDefault\n  enableServiceLinks: false\n  restartPolicy: Never\n"
    "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\nstatus: {}\n")
TCP80 = (TargetPort(80, "TCP"),)


def manifest(spec: dict[str, object] | None = None, container: dict[str, object] | None = None,
             **top: object) -> str:
    c: dict[str, object] = {"name": "app", "image": "busybox", "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}
    c.update(container or {})
    s: dict[str, object] = {"containers": [c]}
    s.update(spec or {})
    doc: dict[str, object] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": s}
    doc.update(top)
    return yaml.safe_dump(doc)


def test_the_documents_example_is_sanitized_byte_for_byte() -> None:
    m = k8s.parse_manifest(SEED_SPEC, TCP80)
    assert m.yaml == SEED_SANITIZED
    assert (m.cpu_milli, m.memory_bytes) == (100, 134217728)


def test_requests_and_limits_become_equal_and_sum_over_containers() -> None:
    text = manifest(container={"resources": {"requests": {"cpu": 0.25, "memory": "1Gi"}, "limits": {"cpu": "500m"}}})
    doc = yaml.safe_load(text)
    doc["spec"]["containers"].append({"name": "side", "image": "busybox",
                                      "resources": {"requests": {"cpu": "1", "memory": "1000"}}})
    m = k8s.parse_manifest(yaml.safe_dump(doc), TCP80)
    assert (m.cpu_milli, m.memory_bytes) == (1500, 2**30 + 1000)
    out = yaml.safe_load(m.yaml)["spec"]["containers"]
    assert out[0]["resources"] == {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "500m",
                                                                                             "memory": "1Gi"}}
    assert out[1]["resources"]["limits"] == {"cpu": "1", "memory": "1000"}


def test_sanitizing_overrides_what_the_manifest_says() -> None:
    text = manifest(spec={"restartPolicy": "Always", "automountServiceAccountToken": True,
                          "enableServiceLinks": True, "hostNetwork": False},
                    container={"securityContext": {"privileged": False, "allowPrivilegeEscalation": False}})
    pod = yaml.safe_load(k8s.parse_manifest(text, TCP80).yaml)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["enableServiceLinks"] is False
    assert "hostNetwork" not in pod["spec"]
    assert pod["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["spec"]["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize(("spec", "container", "message"), [
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, None, "hostPath volume is forbidden"),
    (None, {"securityContext": {"capabilities": {"drop": ["ALL"]}}}, "capabilities.drop is set by the server"),
    (None, {"securityContext": {"allowPrivilegeEscalation": True}}, "privilege escalation is forbidden"),
    (None, {"ports": [{"containerPort": 80, "hostPort": 80}]}, "hostPort/hostIP are forbidden"),
    (None, {"ports": [{"containerPort": 80, "hostIP": "0.0.0.0"}]}, "hostPort/hostIP are forbidden"),
    ({"serviceAccountName": "admin"}, None, "serviceAccount is forbidden"),
    ({"nodeName": "n1"}, None, "nodeName/runtimeClassName are forbidden"),
    ({"securityContext": {"runAsUser": 0}}, None, "spec.securityContext.runAsUser is set by the server"),
    ({"volumes": [{"name": "d", "emptyDir": {}}]}, None, "spec.volumes are not supported"),
    ({"initContainers": [{"name": "i", "image": "busybox"}]}, None, "initContainers"),
    ({"dnsPolicy": "None"}, None, "spec.dnsPolicy is not supported"),
    (None, {"volumeMounts": [{"name": "v", "mountPath": "/v"}]}, "containers[0].volumeMounts is not supported"),
    (None, {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "valueFrom is not supported"),
    (None, {"resources": {}}, "a cpu and a memory request or limit must be set"),
    (None, {"resources": {"limits": {"cpu": "1"}}}, "a cpu and a memory request or limit must be set"),
    (None, {"resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1}}}, "only cpu and memory"),
    (None, {"resources": {"limits": {"cpu": "lots", "memory": "1Gi"}}}, "'lots' is not a quantity"),
    (None, {"resources": {"limits": {"cpu": True, "memory": "1Gi"}}}, "a quantity is a number"),
    (None, {"ports": [{"containerPort": "eighty"}]}, "spec.containers[0].ports[0].containerPort: Expected `int`"),
    (None, {"ports": [{"containerPort": 80, "protocol": "SCTP"}]}, "protocol must be TCP or UDP"),
    (None, {"ports": []}, "at least one exposed container port is required"),
    (None, {"ports": [{"containerPort": 8080}]}, "target_port 80/TCP must exist in container ports"),
    (None, {"image": ""}, "container image is required"),
    ({"containers": []}, None, "at least one container is required"),
    ({"containers": "app"}, None, "spec.containers: Expected `array`"),
])
def test_refused(spec: dict[str, object] | None, container: dict[str, object] | None, message: str) -> None:
    with pytest.raises(InvalidPodSpec) as e:
        k8s.parse_manifest(manifest(spec, container), TCP80)
    assert message in str(e.value)
    assert str(e.value).startswith("invalid pod spec: ")


@pytest.mark.parametrize(("text", "message"), [
    ("", "pod_spec is required"),
    (None, "pod_spec is required"),
    ("   ", "pod_spec is required"),
    ("a: [", "yaml parse failed"),
    ("- 1\n- 2\n", "must be a YAML mapping"),
    ("apiVersion: v1\nkind: Deployment\nspec: {}\n", "kind must be Pod"),
    ("apiVersion: v2\nkind: Pod\nspec: {}\n", "apiVersion must be v1"),
    ("apiVersion: v1\nkind: Pod\n", "spec is required"),
    ("apiVersion: v1\nkind: Pod\nspec: {}\n", "spec: Object missing required field `containers`"),
    ("apiVersion: v1\nkind: Pod\nspec: {}\n---\napiVersion: v1\nkind: Pod\nspec: {}\n", "exactly one YAML document"),
    ("apiVersion: v1\nkind: Pod\nmetadata: &m {name: a}\nx: *m\nspec: {}\n", "aliases are not accepted"),
    ("apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: kube-system\nspec: {}\n", "namespace 'stacks'"),
    ("apiVersion: v1\nkind: Pod\nmetadata:\n  ownerReferences: [{}]\nspec: {}\n", "metadata.ownerReferences"),
    ("apiVersion: v1\nkind: Pod\nspec:\n" + "  " + "[" * 40 + "]" * 40 + "\n", "nested more than"),
])
def test_bad_manifests(text: str | None, message: str) -> None:
    with pytest.raises(InvalidPodSpec) as e:
        k8s.parse_manifest(text, TCP80)
    assert message in str(e.value)


def test_a_manifest_that_is_not_a_string() -> None:
    with pytest.raises(InvalidPodSpec, match="must be a string"):
        k8s.parse_manifest({"kind": "Pod"}, TCP80)


@pytest.mark.parametrize(("value", "message"), [
    (None, "target_port is required"),
    ([], "target_port is required"),
    (80, "must be a list"),
    ([80], "target_port[0] must be an object"),
    ([{"container_port": 0, "protocol": "TCP"}], "out of range"),
    ([{"container_port": "80", "protocol": "TCP"}], "must be a whole number"),
    ([{"container_port": 80}], "target_port[0].protocol is required"),
    ([{"container_port": 80, "protocol": "SCTP"}], "protocol must be TCP or UDP"),
    ([{"container_port": 80, "protocol": "TCP"}, {"container_port": 80, "protocol": "tcp"}], "duplicate"),
    ([{"container_port": 80, "protocol": "TCP", "node_port": 30000}], "unknown field 'node_port'"),
    ([{"container_port": p, "protocol": "TCP"} for p in range(1, 26)], "exceeds limit"),
])
def test_bad_target_ports(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        k8s.target_ports(value)
    assert message in str(e.value)
    assert str(e.value).startswith("invalid input: ")


def test_target_ports_are_normalized() -> None:
    assert k8s.target_ports([{"container_port": 53, "protocol": " udp "}]) == (TargetPort(53, "UDP"),)


def test_limit_range_names_the_violation() -> None:
    m = k8s.parse_manifest(manifest(container={"resources": {"limits": {"cpu": "2", "memory": "64Mi"}}}), TCP80)
    k8s.check_limits(m, LimitRange(max_cpu_milli=2000))
    with pytest.raises(InvalidPodSpec, match=r"maximum cpu usage per Container is 1, but limit is 2 \(container"):
        k8s.check_limits(m, LimitRange(max_cpu_milli=1000))
    with pytest.raises(InvalidPodSpec, match="minimum memory usage per Container is 128Mi, but request is 64Mi"):
        k8s.check_limits(m, LimitRange(min_memory_bytes=128 * 2**20))


def test_quota() -> None:
    m = k8s.parse_manifest(manifest(), TCP80)  # 100m, 64Mi
    k8s.check_quota(m, Quota(cpu_milli=1000, memory_bytes=2**30, stacks=2), 900, 2**30 - 64 * 2**20, 1)
    with pytest.raises(QuotaExceeded, match="cluster saturated: exceeded quota: requested: cpu=100m"):
        k8s.check_quota(m, Quota(cpu_milli=1000), 901, 0, 0)
    with pytest.raises(QuotaExceeded, match="memory"):
        k8s.check_quota(m, Quota(memory_bytes=2**30), 0, 2**30 - 1, 0)
    with pytest.raises(QuotaExceeded, match="pods"):
        k8s.check_quota(m, Quota(stacks=1), 0, 0, 1)


def test_native_pod() -> None:
    text = manifest(spec={"nodeSelector": {"zone": "a"}},
                    container={"command": ["httpd"], "args": ["-f"], "env": [{"name": "A", "value": "1"}],
                               "readinessProbe": {"httpGet": {"port": 80, "path": "/"}, "periodSeconds": 1}})
    m = k8s.parse_manifest(text, TCP80)
    pod = k8s.native_pod(m, "stack-00000000000000ab", ttl_seconds=60)
    assert pod["name"] == "stack-00000000000000ab" and pod["namespace"] == "stacks"
    assert pod["restartPolicy"] == "Never" and pod["ttl"] == "60s"
    assert pod["nodeSelector"] == {"zone": "a"}
    c = pod["containers"][0]
    assert c["command"] == ["httpd"] and c["args"] == ["-f"] and c["env"] == [{"name": "A", "value": "1"}]
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["readinessProbe"] == {"httpGet": {"port": 80, "path": "/"}, "periodSeconds": 1}


@pytest.mark.parametrize(("milli", "text"), [(100, "100m"), (1000, "1"), (1500, "1500m"), (0, "0")])
def test_format_cpu(milli: int, text: str) -> None:
    assert k8s.format_cpu(milli) == text


@pytest.mark.parametrize(("n", "text"), [(134217728, "128Mi"), (2**30, "1Gi"), (1000, "1000"), (1536, "1536"),
                                         (3 * 1024, "3Ki")])
def test_format_memory(n: int, text: str) -> None:
    assert k8s.format_memory(n) == text


def test_operator_settings() -> None:
    assert k8s.parse_limit_range(["min.cpu=100m,max.cpu=2", "max.memory=1Gi"]) == LimitRange(100, 2000, None, 2**30)
    assert k8s.parse_quota(["cpu=8,memory=16Gi", "pods=3"]) == Quota(8000, 16 * 2**30, 3)
    assert k8s.parse_quota([]) == Quota()
    for bad, call in ((["cpu=1"], k8s.parse_limit_range), (["max.cpu"], k8s.parse_limit_range),
                      (["min.cpu=2,max.cpu=1"], k8s.parse_limit_range), (["pods=many"], k8s.parse_quota),
                      (["gpu=1"], k8s.parse_quota)):
        with pytest.raises(ValueError):
            call(bad)


def test_only_target_ports_and_probed_ports_are_published() -> None:
    text = manifest(container={"ports": [{"containerPort": 80}, {"containerPort": 443},
                                         {"containerPort": 9000, "name": "health"}],
                               "livenessProbe": {"httpGet": {"port": "health"}}})
    pod = k8s.native_pod(k8s.parse_manifest(text, TCP80), "stack-00000000000000ab")
    assert pod["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"},
                                             {"name": "health", "containerPort": 9000, "protocol": "TCP"}]
    # Every port stays in the stored manifest.
    assert len(yaml.safe_load(k8s.parse_manifest(text, TCP80).yaml)["spec"]["containers"][0]["ports"]) == 3


def test_escalations_are_left_to_the_policy_and_kept_in_the_manifest() -> None:
    """privileged, capabilities.add and host namespaces pass the manifest's checks (the coordinator's policy
    decides who may have them) and reach the native pod."""
    text = manifest(spec={"hostPID": True, "hostIPC": False},
                    container={"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}})
    m = k8s.parse_manifest(text, TCP80)
    spec = yaml.safe_load(m.yaml)["spec"]
    assert spec["hostPID"] is True and "hostIPC" not in spec
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"add": ["NET_ADMIN"]}, "privileged": False,
        "seccompProfile": {"type": "RuntimeDefault"}}
    pod = k8s.native_pod(m, "s1")
    assert pod["hostPID"] is True and "hostIPC" not in pod
    assert pod["containers"][0]["securityContext"] == {"capabilities": {"add": ["NET_ADMIN"]}}
    privileged = k8s.parse_manifest(manifest(container={"securityContext": {"privileged": True}}), TCP80)
    assert yaml.safe_load(privileged.yaml)["spec"]["containers"][0]["securityContext"]["privileged"] is True
    assert k8s.native_pod(privileged, "s2")["containers"][0]["securityContext"] == {"privileged": True}
    # What the sanitizing sets stays the server's.
    assert "securityContext" not in k8s.native_pod(k8s.parse_manifest(manifest(), TCP80), "s3")["containers"][0]
