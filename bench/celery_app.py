"""The Celery side of the throughput comparison: one task that runs `sh -c 'echo hi'` through subprocess.

The worker is started by bench/celery_side.py as `celery -A bench.celery_app worker`; the broker and the
result backend (both Redis) come from BENCH_REDIS_URL.
"""

from __future__ import annotations

import os
import subprocess

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]
def echo() -> str:
    """The same work as a Corral process task `run: echo hi`."""
    return subprocess.run(["sh", "-c", "echo hi"], capture_output=True, check=True).stdout.decode()
