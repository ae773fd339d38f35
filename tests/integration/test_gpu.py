"""GPUs for real: detection through nvidia-smi and whole-GPU placement.

These run only on a machine with an NVIDIA GPU and nvidia-smi (CI has none: they skip there, saying so).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is None,
                                reason="NO GPU: nvidia-smi is not on this machine")


def _gpu_count() -> int:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    return len([ln for ln in out.splitlines() if ln.startswith("GPU ")])


def test_worker_detects_gpus_and_places_whole_gpus(cluster: Cluster) -> None:
    cluster.up("--runtime", "process")
    count = _gpu_count()
    node = cluster.nodes()[0]
    assert node["capacity"]["gpu"] == count
    assert node["gpus"][0]["name"] and node["gpus"][0]["memory"] > 0
    job = cluster.submit({"tasks": [{"run": "echo gpus=$CUDA_VISIBLE_DEVICES; nvidia-smi -L",
                                     "resources": {"gpu": 1}}]})
    done = cluster.wait_job(job["id"], timeout=60)
    assert done["state"] == "completed", done
    lines = cluster.logs(job["id"]).splitlines()
    assert lines[0] == f"gpus={done['tasks'][0]['executions'][0]['gpus'][0]}"
    assert any(node["gpus"][0]["name"] in ln for ln in lines[1:])  # the task reached the GPU
    too_many = cluster.submit({"tasks": [{"run": "true", "resources": {"gpu": count + 1}}]})
    want = f"needs {count + 1} GPUs; the largest node has {count}"
    wait_until(lambda: cluster.job(too_many["id"])["tasks"][0]["reason"] == want, 15, what="a GPU reason")
