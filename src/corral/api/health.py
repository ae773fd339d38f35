"""/healthz, /readyz and /metrics (Prometheus text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from corral import __version__
from corral.api import openapi as api_doc
from corral.api.deps import Services, services
from corral.coordinator.service import Coordinator

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


_HEALTHZ = json.dumps({"status": "ok", "version": __version__}, separators=(",", ":")).encode()


@router.get("/healthz", summary="The process is up", response_model=None)
async def healthz() -> Response:
    # On the event loop, answered from bytes made once: a probe costs no thread hop and no serialization.
    return Response(_HEALTHZ, media_type="application/json")


@router.get("/readyz", summary="The store answers, a leader is known, and this coordinator is not draining")
def readyz(svc: Svc) -> Response:
    if not svc.coord.store.ping():
        return JSONResponse({"status": "store unreachable"}, status_code=503)
    try:
        state = svc.coord.cluster_status()
    except Exception:
        return JSONResponse({"status": "store unreachable"}, status_code=503)
    me = state.member(state.me)
    if me is not None and me.draining:
        return JSONResponse({"status": "draining", "leader_id": state.leader_id}, status_code=503)
    if state.leader_id is None:
        return JSONResponse({"status": "no leader"}, status_code=503)
    return JSONResponse({"status": "ready", "leader_id": state.leader_id, "epoch": state.epoch})


class CorralCollector(Collector):
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    def collect(self) -> Iterator[Any]:
        for key, value in self.coord.stats.items():
            c = CounterMetricFamily(f"corral_{key}", f"Count of {key.replace('_', ' ')} since start")
            c.add_metric([], value)
            yield c
        for key, value in self.coord.pods.stats.items():
            c = CounterMetricFamily(f"corral_{key}", f"Count of {key.replace('_', ' ')} since start")
            c.add_metric([], value)
            yield c
        with self.coord.store.read() as tx:
            jobs = tx.count_jobs_by_state()
            tasks = tx.count_tasks_by_queue_state()
            nodes = tx.nodes()
            pods = tx.count_pods_by_state()
        g = GaugeMetricFamily("corral_jobs", "Jobs stored, by state", labels=["state"])
        for state, n in sorted(jobs.items()):
            g.add_metric([state], n)
        yield g
        t = GaugeMetricFamily("corral_tasks", "Unfinished tasks, by queue and state", labels=["queue", "state"])
        for q, state, n in tasks:
            t.add_metric([q, state], n)
        yield t
        nd = GaugeMetricFamily("corral_nodes", "Worker nodes, by state", labels=["state"])
        for state in ("ready", "draining", "down"):
            nd.add_metric([state], sum(1 for n in nodes if n["state"] == state))
        yield nd
        pg = GaugeMetricFamily("corral_pods", "Pods stored, by state", labels=["state"])
        for state, n in sorted(pods):
            pg.add_metric([state], n)
        yield pg


def metrics_router(coord: Coordinator) -> APIRouter:
    registry = CollectorRegistry()
    registry.register(CorralCollector(coord))
    r = APIRouter(tags=["health"])

    @r.get("/metrics", summary="Prometheus metrics",
           responses=api_doc.text_answer("Prometheus' text exposition format (version 0.0.4)", "text/plain"))
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return r
