"""One scheduling pass in process on PostgreSQL: 5,000 nodes inserted in one transaction, N pending one-task
jobs, one ``schedule_once()`` with its steps fixed at 64 tasks (as before) or growing (as now).

    .venv/bin/python -m bench.schedule_pass 5000 growing
    .venv/bin/python -m bench.schedule_pass 5000 fixed
"""

from __future__ import annotations

import random
import sys
import time
import uuid

import corral.coordinator.scheduling as scheduling
from bench.scale import database, node_body
from corral.coordinator.service import Coordinator
from corral.domain.spec import JobSpec
from corral.store.sql import Store

PG = "postgresql://corral:corral@127.0.0.1:5432/corral_test"


def main() -> None:
    n, fixed = int(sys.argv[1]), sys.argv[2] == "fixed"
    with database(PG) as url:
        store = Store(url)
        coord = Coordinator(store)
        rng = random.Random(1)
        now = time.time()
        with store.transaction() as tx:
            for i in range(5000):
                b = node_body(i, rng)
                tx.insert_node({**{k: b[k] for k in ("name", "hostname", "cpu", "memory", "disk", "gpus", "labels",
                                                     "runtimes", "queues")},
                                "id": uuid.uuid4().hex, "version": "b", "state": "ready", "usage": {},
                                "registered_at": now, "last_heartbeat": now, "address": None, "secret_hash": "x"})
        specs = [JobSpec.model_validate({"tasks": [{"run": "x", "resources": {"cpu": rng.choice([0.1, 0.5, 1.0])}}]})
                 for _ in range(n)]
        for i in range(0, n, 1000):
            coord.submit_many(specs[i:i + 1000])
        if fixed:
            scheduling.MAX_STEP = 64
        c, w = time.process_time(), time.perf_counter()
        placed = coord.schedule_once()
        c, w = time.process_time() - c, time.perf_counter() - w
        print(f"{'fixed 64' if fixed else 'growing'}: placed {placed} in {w:.2f} s wall, {c:.2f} s CPU: "
              f"{placed / c:.0f}/s per CPU second, {placed / w:.0f}/s wall")
        store.close()


if __name__ == "__main__":
    main()
