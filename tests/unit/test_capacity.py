"""The parser of nvidia-smi's CSV answer (src/corral/agent/capacity.py): what a worker learns of its GPUs."""

from __future__ import annotations

from corral.agent.capacity import parse_nvidia_smi

MiB = 2**20


def test_rows_become_gpus_with_index_name_memory_and_uuid() -> None:
    text = ("0, NVIDIA H100 80GB HBM3, 81559, GPU-5d2a1c3e-aaaa\n"
            "1, NVIDIA H100 80GB HBM3, 81559, GPU-5d2a1c3e-bbbb\n")
    assert parse_nvidia_smi(text) == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory": 81559 * MiB, "uuid": "GPU-5d2a1c3e-aaaa"},
        {"index": 1, "name": "NVIDIA H100 80GB HBM3", "memory": 81559 * MiB, "uuid": "GPU-5d2a1c3e-bbbb"},
    ]


def test_no_gpus_blank_lines_and_surrounding_space() -> None:
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("\n\n") == []
    assert parse_nvidia_smi("  3 ,  Tesla T4 ,  15360 , GPU-x  \n") == [
        {"index": 3, "name": "Tesla T4", "memory": 15360 * MiB, "uuid": "GPU-x"}]


def test_memory_not_a_number_is_zero_and_a_missing_uuid_is_empty() -> None:
    assert parse_nvidia_smi("0, Some GPU, [N/A]") == [{"index": 0, "name": "Some GPU", "memory": 0, "uuid": ""}]
    assert parse_nvidia_smi("0, Some GPU, 1024.0, GPU-y") == [
        {"index": 0, "name": "Some GPU", "memory": 1024 * MiB, "uuid": "GPU-y"}]


def test_lines_that_are_not_gpu_rows_are_ignored() -> None:
    text = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
            "index, name, memory.total [MiB], uuid\n"
            "x, bad, 1, GPU-z\n"
            "0, only two\n"
            "1, Good GPU, 2048, GPU-ok\n")
    assert parse_nvidia_smi(text) == [{"index": 1, "name": "Good GPU", "memory": 2048 * MiB, "uuid": "GPU-ok"}]
