"""Podling's words for Corral's (domain/podling.py): ids, the task flow, Go's times, quantities."""

from __future__ import annotations

import pytest

from corral.domain import podling as pd


def test_ids_look_like_podlings() -> None:
    assert pd.new_id(1737289496.0, "abc12345") == "20250119122456-abc12345"
    ids = {pd.new_id(1737289496.0) for _ in range(100)}
    assert len(ids) == 100 and all(pd.ID_RE.match(i) and len(i) == 23 for i in ids)
    assert pd.ID_RE.match("20250119123456-pod123") and not pd.ID_RE.match("2025-pod")


@pytest.mark.parametrize("current, wanted, ok", [
    ("pending", "scheduled", True), ("pending", "failed", True), ("pending", "running", False),
    ("pending", "completed", False), ("scheduled", "running", True), ("scheduled", "completed", True),
    ("scheduled", "pending", False), ("running", "completed", True), ("running", "failed", True),
    ("running", "scheduled", False), ("running", "running", False), ("completed", "failed", False),
    ("failed", "running", False), ("running", "done", False),
])
def test_only_the_documented_flow(current: str, wanted: str, ok: bool) -> None:
    assert (pd.transition_error(current, wanted) is None) is ok


def test_corral_states_as_podlings() -> None:
    assert pd.task_status("cancelled") == "failed" and pd.task_status("scheduled") == "scheduled"
    assert set(pd.TASK_STATUS.values()) <= set(pd.TASK_STATUSES)


def test_go_times() -> None:
    assert pd.go_time(None) is None
    assert pd.go_time(1737289496.0) == "2025-01-19T12:24:56Z"
    assert pd.go_time(1737289496.25) == "2025-01-19T12:24:56.25Z"


@pytest.mark.parametrize("text, milli", [("2", 2000), ("500m", 500), ("2.5", 2500), (" 1 ", 1000)])
def test_cpu(text: str, milli: int) -> None:
    assert pd.parse_cpu(text) == milli


@pytest.mark.parametrize("text, n", [("1Gi", 1 << 30), ("512Mi", 512 << 20), ("1073741824", 1 << 30),
                                     ("1G", 10**9), ("64ki", 64 << 10)])
def test_memory(text: str, n: int) -> None:
    assert pd.parse_memory(text) == n


@pytest.mark.parametrize("bad", ["", "lots", "-1", "0", "1e3", "2000000"])
def test_bad_cpu(bad: str) -> None:
    with pytest.raises(ValueError):
        pd.parse_cpu(bad)


@pytest.mark.parametrize("bad", ["", "1Zi", "0", "Gi", "2Pi0"])
def test_bad_memory(bad: str) -> None:
    with pytest.raises(ValueError):
        pd.parse_memory(bad)


@pytest.mark.parametrize(("call", "body", "says"), [
    ("pod", {"name": "p", "containers": [{"name": [None, None], "image": "x"}]}, "containers[0].name must be a string"),
    ("pod", {"name": "p", "containers": [{"name": "a", "image": {"x": 1}}]}, "containers[0].image must be a string"),
    ("task", {"name": "t", "image": "x", "restartPolicy": {}}, "restartPolicy must be one of"),
    ("pod", {"name": "p", "namespace": {}, "containers": [{"name": "a", "image": "x"}]}, "namespace must be a string"),
])
def test_bodies_of_the_wrong_type_are_a_400_not_a_500(call: str, body: dict[str, object], says: str) -> None:
    """Found by the conformance run: a container named by a list was a 500; a restartPolicy of {} was taken."""
    from corral.api.dialects import podling
    from corral.api.dialects.base import DialectError
    with pytest.raises(DialectError) as e:
        podling.pod_spec(body) if call == "pod" else podling.task_spec(body)
    assert e.value.status == 400 and says in e.value.message


def test_a_service_ports_zero_values_are_absent_but_a_false_is_not() -> None:
    from corral.api.dialects import podling
    ports = podling._service_ports([{"name": "", "port": 80, "protocol": None, "nodePort": 0, "targetPort": False}])
    assert ports == [{"port": 80, "targetPort": False}]  # the false is left for the model to refuse
    assert podling._service_ports([{"name": 0, "port": 80}]) == [{"name": 0, "port": 80}]  # a 0 is no name
