"""What agents may send (strict models at the edge), how a malformed node row is shown, how the
scheduler's views refuse one, and the node directory lock."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from corral.agent.lock import DirLocked, lock_dir, unlock
from corral.api.native.agent import HeartbeatBody, RegisterBody, ReportBody
from corral.coordinator.service import Coordinator, secret_hash
from corral.domain.nodes import safe_node
from corral.runtime.process import base_env

GOOD: dict[str, Any] = {"name": "n", "cpu": 2, "memory": 1 << 30, "gpus": [{"index": 0, "name": "g", "memory": 1}],
                        "labels": {"zone": "a"}, "runtimes": ["process"], "queues": ["default"]}


def test_a_good_registration_passes() -> None:
    body = RegisterBody.model_validate(GOOD)
    assert body.cpu == 2.0 and body.gpus[0].index == 0 and body.labels == {"zone": "a"}
    # A whole number with a zero fraction is an integer, as the document's JSON Schema counts it.
    whole = RegisterBody.model_validate({**GOOD, "disk": 0.0, "memory": 1024.0, "gpus": [{"index": 1.0}]})
    assert (whole.disk, whole.memory, whole.gpus[0].index) == (0, 1024, 1) and type(whole.memory) is int


@pytest.mark.parametrize("change", [
    {"cpu": "2"}, {"cpu": True}, {"cpu": math.inf}, {"memory": 2.5}, {"memory": 1 << 62}, {"name": ""},
    {"memory": "5"}, {"memory": True}, {"disk": 1.5},
    {"gpus": [{"name": "no index"}]}, {"gpus": [{"index": "0"}]}, {"gpus": [{"index": 0}, {"index": 0}]},
    {"gpus": [{"index": i} for i in range(257)]},
    {"labels": {"zone": "\ud800"}}, {"labels": {"\udfff": "a"}}, {"labels": {"zone": 3}},
    {"labels": {"": "a"}}, {"labels": {"k": "v" * 257}}, {"labels": {f"k{i}": "v" for i in range(65)}},
    {"version": "v" * 51}, {"runtimes": ["x"] * 9}, {"queues": ["bad queue"]}, {"id": "not-hex"},
    {"running": ["x"]},
])
def test_bad_registrations_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RegisterBody.model_validate({**GOOD, **change})


def test_heartbeat_usage_is_typed() -> None:
    assert HeartbeatBody.model_validate({"usage": {"cpu_percent": 5, "memory_percent": 1.5, "x": "y"}}).usage
    for usage in ({"cpu_percent": "abc"}, {"cpu_percent": -1}, {"memory_percent": 101}, {"cpu_percent": math.nan}):
        with pytest.raises(ValidationError):
            HeartbeatBody.model_validate({"usage": usage})


def test_reports_are_strict() -> None:
    ok = {"execution_id": "a" * 32, "state": "completed", "ts": 1.0, "exit_code": 0}
    ReportBody.model_validate({"updates": [ok]})
    for bad in ({"ts": False}, {"ts": "1"}, {"exit_code": "0"}, {"state": "done"}, {"execution_id": "x"},
                {"error": "\ud800"}, {"progress": 101}):
        with pytest.raises(ValidationError):
            ReportBody.model_validate({"updates": [{**ok, **bad}]})
    with pytest.raises(ValidationError):
        ReportBody.model_validate({"logs": [{"execution_id": "a" * 32, "stream": "stdin", "line": "x", "ts": 1}]})


def test_a_malformed_node_row_is_shown_safely() -> None:
    row = {"id": "n", "name": "a\ud800", "hostname": None, "version": 3, "state": "ready", "cpu": "x",
           "memory": None, "disk": 1.5, "gpus": [{"name": "\ud800"}, "junk"], "labels": {"\ud800": 5},
           "runtimes": "process", "queues": ["q", 1], "usage": {"cpu_percent": "abc", "memory_percent": math.nan},
           "registered_at": 1.0, "last_heartbeat": None, "secret_hash": "h"}
    n = safe_node(row)
    assert n["name"] == "a?" and n["hostname"] == "" and n["cpu"] == 0.0 and n["memory"] == 0
    assert n["gpus"] == [{"name": "?"}] and n["labels"] == {"?": "5"} and n["runtimes"] == []
    assert n["queues"] == ["q", "1"] and n["usage"] == {"cpu_percent": 0.0, "memory_percent": 0.0}
    assert "secret_hash" not in n


NODE = {"id": "n", "name": "n", "cpu": 4.0, "memory": 1 << 30, "disk": 0, "gpus": [{"index": 0}, {"index": 1}],
        "labels": {"a": "b"}, "runtimes": ["process"], "queues": ["default"]}


def test_the_scheduler_view_refuses_a_malformed_node() -> None:
    view = Coordinator._node_view(NODE, None)
    assert view.capacity.gpu == 2 and view.free_gpus == [0, 1]
    for bad in ({"gpus": [{"name": "no index"}]}, {"gpus": [{"index": True}]}, {"gpus": {"index": 0}},
                {"labels": {"a": 1}}, {"runtimes": [["x"]]}, {"queues": "default"}, {"cpu": "x"}):
        with pytest.raises((ValueError, TypeError)):
            Coordinator._node_view({**NODE, **bad}, None)


def test_secret_hash_is_sha256_hex() -> None:
    assert secret_hash("s") == "043a718774c572bd8a25adbeb1bfcd5c0256ae11cecf9f9c3f925d0e52beaf89"


def test_host_tasks_start_from_a_minimal_environment() -> None:
    assert set(base_env("/w")) == {"PATH", "HOME", "LANG"} and base_env("/w")["HOME"] == "/w"


def test_a_node_directory_has_one_owner(tmp_path: Path) -> None:
    held = lock_dir(str(tmp_path / "w"))
    with pytest.raises(DirLocked, match="in use by another Corral process"):
        lock_dir(str(tmp_path / "w"))  # another open file description: refused, even in this process
    unlock(held)
    unlock(lock_dir(str(tmp_path / "w")))  # free again once released


def test_what_the_full_conformance_run_found_in_node_bodies() -> None:
    """A drain's deadline of true was taken as one second; a registration's labels' schema let any value pass."""
    from corral.api.native.cluster import DrainBody
    with pytest.raises(ValidationError):
        DrainBody.model_validate({"deadline": True})
    assert DrainBody.model_validate({"deadline": "10m"}).deadline == "10m"
    labels = RegisterBody.model_json_schema()["properties"]["labels"]
    assert labels["additionalProperties"] == {"type": "string", "maxLength": 256}
