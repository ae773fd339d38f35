"""A node's pod sync at the coordinator, in process: what one sync costs when the node runs N pods whose
status has not changed (the usual sync: a heartbeat, or another pod's change), and when one of them has.

A coordinator on a fresh store (SQLite in a temporary directory, or --db URL), one node, N one-container
pods placed on it and reported running once; then --syncs syncs of the same N statuses (nothing changed),
and as many where one pod's container reports a new restart count. Prints the median and p99 of each, in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from corral.coordinator.service import Coordinator, NodeInfo, Settings
from corral.domain.agentwire import ContainerStatus, PodStatus
from corral.domain.pods import PodSpec
from corral.store.sql import Store


def run(n: int, syncs: int, db: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        store = Store(db or f"sqlite:///{d}/corral.db")
        coord = Coordinator(store, Settings())
        node = str(coord.register(NodeInfo(name="n1", hostname="n1", version="b", cpu=64, memory=2**36, disk=0,
                                           runtimes=["docker"], address="127.0.0.1"))["id"])
        for i in range(n):
            coord.pods.create(PodSpec.model_validate({"name": f"p{i}", "containers": [
                {"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}))
        coord.pods.place_once()
        placed = coord.pods.sync(node, [], [])["pods"]
        now = time.time()

        def statuses(bump: int = -1) -> list[PodStatus]:
            return [PodStatus(a["instance_id"], a["pod_id"], "running", [ContainerStatus(
                "app", "running", container_id=f"c{i}", restart_count=1 if i == bump else 0, ready=True,
                started_at=now)], now) for i, a in enumerate(placed)]

        coord.pods.sync(node, statuses(), [])

        def timed(bump: bool) -> list[float]:
            out = []
            for k in range(syncs):
                body = statuses(k % n if bump else -1)
                t = time.perf_counter()
                coord.pods.sync(node, body, [])
                out.append((time.perf_counter() - t) * 1000)
            return out

        same, one = timed(False), timed(True)
        store.close()

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"p50_ms": round(statistics.median(xs), 2), "p99_ms": round(xs[int(0.99 * (len(xs) - 1))], 2)}

    return {"benchmark": "pod sync", "pods": n, "syncs": syncs, "placed": len(placed),
            "unchanged": summary(same), "one_changed": summary(one)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=50)
    p.add_argument("--syncs", type=int, default=100)
    p.add_argument("--db", default=None, help="a database URL (default: SQLite in a temporary directory)")
    a = p.parse_args()
    print(json.dumps(run(a.pods, a.syncs, a.db), indent=2))


if __name__ == "__main__":
    main()
