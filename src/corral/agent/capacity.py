"""What a worker machine has: CPU cores, memory, disk, and NVIDIA GPUs when nvidia-smi is present."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import psutil


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        mem = int(float(parts[2])) * 2**20 if parts[2].replace(".", "").isdigit() else 0
        gpus.append({"index": int(parts[0]), "name": parts[1], "memory": mem,
                     "uuid": parts[3] if len(parts) > 3 else ""})
    return gpus


def detect_gpus() -> list[dict[str, Any]]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return parse_nvidia_smi(out)


def detect(data_dir: str) -> dict[str, Any]:
    os.makedirs(data_dir, exist_ok=True)
    return {
        "cpu": float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1),
        "memory": int(psutil.virtual_memory().total),
        "disk": int(psutil.disk_usage(data_dir).free),
        "gpus": detect_gpus(),
    }


def usage() -> dict[str, float]:
    return {"cpu_percent": psutil.cpu_percent(interval=None),
            "memory_percent": psutil.virtual_memory().percent}


def primary_address() -> str:
    """This machine's primary IP: the source address of its default route (a UDP socket is pointed at a
    documentation address; nothing is sent), else 127.0.0.1."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
