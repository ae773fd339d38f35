"""GPUs for real: detection through nvidia-smi and whole-GPU placement.

The first runs only on a machine with an NVIDIA GPU and nvidia-smi (CI has none: it skips there, saying so);
the second pins two GPUs with a stand-in nvidia-smi and runs everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_until
from tests.support import SMI_QUERY, stand_in_nvidia_smi

pytestmark = pytest.mark.gpu

needs_gpu = pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="NO GPU: nvidia-smi is not on this machine")


def _gpu_count() -> int:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    return len([ln for ln in out.splitlines() if ln.startswith("GPU ")])


@needs_gpu
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


def test_gpu_placement_with_a_stand_in_nvidia_smi(cluster: Cluster, tmp_path: Path) -> None:
    """Test double, said plainly: a script named nvidia-smi, first on PATH, reports two GPUs (and fails on
    any query but the worker's). What is real: the worker's detection through it, the coordinator's
    whole-GPU accounting and the CUDA_VISIBLE_DEVICES each task gets. Runs on any machine, a GPU one too."""
    bindir = tmp_path / "fakebin"
    env = stand_in_nvidia_smi(bindir, ["0, NVIDIA H100 80GB HBM3, 81559, GPU-aaaa",
                                       "1, NVIDIA H100 80GB HBM3, 81559, GPU-bbbb"])
    cluster.up("--runtime", "process", env=env)
    calls = (bindir / "calls").read_text().splitlines()
    assert calls and set(calls) == {SMI_QUERY}, calls  # the worker asked, and only the query it parses
    node = cluster.nodes()[0]
    assert node["capacity"]["gpu"] == 2
    assert [g["index"] for g in node["gpus"]] == [0, 1] and node["gpus"][0]["memory"] == 81559 * 2**20
    assert [g["uuid"] for g in node["gpus"]] == ["GPU-aaaa", "GPU-bbbb"]
    jobs = [cluster.submit({"tasks": [{"run": "echo $CUDA_VISIBLE_DEVICES; sleep 1", "resources": {"gpu": 1}}]})
            for _ in range(3)]
    both = cluster.submit({"tasks": [{"run": "echo $CUDA_VISIBLE_DEVICES", "resources": {"gpu": 2}}]})
    done = [cluster.wait_job(j["id"], timeout=30) for j in [*jobs, both]]
    assert [d["state"] for d in done] == ["completed"] * 4, done
    seen = [cluster.logs(j["id"]).strip() for j in jobs]
    given = [",".join(str(g) for g in d["tasks"][0]["executions"][0]["gpus"]) for d in done[:3]]
    assert seen == given  # each process saw exactly the GPU it was given
    assert set(seen) == {"0", "1"}
    # No GPU was held by two tasks at once (from the executions' times), the two-GPU task included.
    held = [(ex["gpus"], ex["started_at"], ex["finished_at"]) for d in done for ex in [d["tasks"][0]["executions"][0]]]
    for i, (gpus_a, start_a, end_a) in enumerate(held):
        for gpus_b, start_b, end_b in held[i + 1:]:
            if set(gpus_a) & set(gpus_b):
                assert end_a <= start_b or end_b <= start_a, f"GPU {set(gpus_a) & set(gpus_b)} held twice: {held}"
    assert cluster.logs(both["id"]).strip() == "0,1"
    too_many = cluster.submit({"tasks": [{"run": "true", "resources": {"gpu": 3}}]})
    wait_until(lambda: cluster.job(too_many["id"])["tasks"][0]["reason"] == "needs 3 GPUs; the largest node has 2",
               15, what="a GPU reason")
