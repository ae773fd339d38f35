"""Services: create, read, update and delete them; their endpoints; what each node must forward.

A NodePort service holds one node port per service port, from the node port range pods use
(``Settings.node_port_range``, default 30000-32767), in the ``node_ports`` table (kind ``service``,
``pod_id`` holding the service's id):

- a row on every live node, so that a pod's node port is never given the same number on any node (the
  table's primary key makes both allocations a compare-and-set: whichever commits second gets nothing and
  tries another port);
- a row on the pseudo node ``*`` (ANY_NODE), so that two services never share a port even while no node is
  up; pod placement counts these as held on every node;
- a node that joins later, or comes back, gets its rows when it first asks for its services
  (``for_node``); a port that a pod holds there all the same is not opened on that node (and logged).

This is rather than keeping the ports only in the service row: the pods' allocator then needs to know
nothing of services but the ``*`` rows, and one primary key decides every race, however many coordinators
there are.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import time
import weakref
from typing import Any

from corral.coordinator.errors import Conflict, Invalid, NotFound, Unavailable
from corral.coordinator.service import Coordinator
from corral.domain import services as domain
from corral.domain.ids import new_id
from corral.domain.services import ANY_NODE, ServiceSpec
from corral.domain.spec import dump_spec
from corral.store.sql import Row, Tx

log = logging.getLogger("corral.coordinator")
ATTEMPTS = 8  # allocations retried after losing a race for a port
# What the nodes forward is read from the store at most this often per coordinator (seconds): a worker
# reads it every second, so endpoints reach the forwarders within about 1.25 s of the store.
SNAPSHOT_TTL = 0.25
_snapshots: weakref.WeakKeyDictionary[Coordinator, tuple[float, list[Row], dict[str, list[dict[str, Any]]]]] = \
    weakref.WeakKeyDictionary()


class _Lost(Exception):
    """A port was taken between the read and the write: try again with a fresh read."""


def port_range(coord: Coordinator) -> tuple[int, int]:
    low, high = coord.settings.node_port_range
    return int(low), int(high)


def view(row: Row) -> dict[str, Any]:
    """A stored service as the API shows it (times as UNIX seconds)."""
    spec = row["spec"]
    return {"id": row["id"], "origin": row["origin"], "name": row["name"], "namespace": row["namespace"],
            "type": row["type"], "selector": spec.get("selector") or {}, "ports": spec.get("ports") or [],
            "labels": spec.get("labels") or {}, "annotations": spec.get("annotations") or {},
            "version": row["version"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


def _stored(spec: ServiceSpec, ports: list[dict[str, Any]]) -> dict[str, Any]:
    out = dump_spec(spec)
    out.update(namespace=spec.namespace, type=spec.type, selector=dict(spec.selector), ports=ports)
    return out


class Services:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.store = coord.store

    # -- commands -------------------------------------------------------------------------------
    def create(self, spec: ServiceSpec, *, service_id: str | None = None, origin: str = "native") -> dict[str, Any]:
        """Store a service; a NodePort one gets its node ports. Conflict if its namespace has a service of
        that name (or ``service_id`` is taken, or a ``nodePort`` asked for is in use); Unavailable (503)
        when the range has no free port left."""
        sid = service_id or new_id()
        self._check_range(spec)
        for _ in range(ATTEMPTS):
            now = time.time()
            try:
                with self.store.transaction() as tx:
                    ports = self._allocate(tx, sid, spec, {})
                    row = {"id": sid, "origin": origin, "name": spec.name, "namespace": spec.namespace,
                           "type": spec.type, "spec": _stored(spec, ports), "version": 1,
                           "created_at": now, "updated_at": now}
                    if not tx.insert_service(row):
                        raise Conflict(self._taken(tx, sid, spec))
            except _Lost:
                continue
            log.info("service %s (%s/%s) created", sid, spec.namespace, spec.name)
            return view(row)
        raise Conflict("node ports were taken by others while this service was created; try again")

    def update(self, service_id: str, spec: ServiceSpec, version: int | None = None) -> dict[str, Any]:
        """Replace the service's spec (its name and namespace stay). A port that stays (same port and
        protocol) keeps its node port unless another is asked for. ``version``: refuse (409) if the
        service changed since it was read at that version."""
        self._check_range(spec)
        for _ in range(ATTEMPTS):
            row = self._row(service_id)
            if (spec.name, spec.namespace) != (row["name"], row["namespace"]):
                raise Invalid(f"a service's name and namespace cannot change (it is "
                              f"{row['namespace']}/{row['name']})")
            if version is not None and version != row["version"]:
                raise Conflict(f"service '{service_id}' is at version {row['version']}, not {version}")
            keep = {(p["port"], p.get("protocol") or "TCP"): p["nodePort"]
                    for p in row["spec"].get("ports") or () if p.get("nodePort")}
            try:
                with self.store.transaction() as tx:
                    # The compare-and-set first: it locks the row, so no node holds an old port meanwhile.
                    if not tx.cas_service(service_id, row["version"], type=spec.type, updated_at=time.time()):
                        raise _Lost
                    tx.release_service_ports(service_id)
                    ports = self._allocate(tx, service_id, spec, keep)
                    tx.set_service_spec(service_id, _stored(spec, ports))
                    new = tx.service(service_id)
            except _Lost:
                if version is not None:
                    raise Conflict(f"service '{service_id}' changed while it was updated") from None
                continue
            assert new is not None
            return view(new)
        raise Conflict(f"service '{service_id}' kept changing while it was updated; try again")

    def delete(self, service_id: str) -> None:
        """Remove the service; its node ports are free at once."""
        with self.store.transaction() as tx:
            if not tx.delete_service(service_id):
                raise NotFound(f"no service with id '{service_id}'")
        log.info("service %s deleted", service_id)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, service_id: str) -> dict[str, Any]:
        return view(self._row(service_id))

    def list(self, namespace: str | None = None, after_seq: int = 0,
             limit: int = 1000) -> builtins.list[dict[str, Any]]:
        with self.store.read() as tx:
            rows = tx.services(namespace, after_seq=after_seq, limit=limit)
        return [{**view(r), "seq": r["seq"]} for r in rows]

    def endpoints(self, service_id: str) -> builtins.list[dict[str, Any]]:
        """The service's ready endpoints now (see corral.domain.services.endpoints)."""
        with self.store.read() as tx:
            row = tx.service(service_id)
            if row is None:
                raise NotFound(f"no service with id '{service_id}'")
            spec = {**row["spec"], "namespace": row["namespace"]}
            pods = tx.ready_pods([row["namespace"]])
            nodes = {n["id"]: n for n in tx.nodes_by_ids(p["node_id"] for p in pods if p.get("node_id"))}
        return domain.endpoints(spec, pods, nodes)

    def for_node(self, node_id: str) -> builtins.list[dict[str, Any]]:
        """What a node forwards: every NodePort service with, for each port held on this node, its ready
        endpoints. Ports missing on this node (it joined after the service was made, or came back) are
        held for it first; one that a pod holds there is left out."""
        svcs, endpoints = self._forwarding()
        with self.store.read() as tx:
            held = {(r["pod_id"], r["port"]) for r in tx.service_ports_on(node_id)}
        want = [(sv, p) for sv in svcs for p in sv["spec"].get("ports") or () if p.get("nodePort")]
        missing = [(sv, p) for sv, p in want if (sv["id"], p["nodePort"]) not in held]
        if missing:
            with self.store.transaction() as tx:
                # Only what the services hold now: one deleted or changed since it was read is left alone.
                alive = tx.lock_services({sv["id"] for sv, _ in missing})
                current = {(sid, p.get("nodePort")) for sid, r in alive.items() for p in r["spec"].get("ports") or ()}
                tx.hold_node_ports([_port_row(node_id, sv["id"], p) for sv, p in missing
                                    if (sv["id"], p["nodePort"]) in current])
                held = {(r["pod_id"], r["port"]) for r in tx.service_ports_on(node_id)}
            for sv, p in missing:
                if (sv["id"], p["nodePort"]) in current and (sv["id"], p["nodePort"]) not in held:
                    log.warning("service %s: node port %s is taken on node %s; not forwarded there",
                                sv["id"], p["nodePort"], node_id)
        out = []
        for sv in svcs:
            eps = endpoints[sv["id"]]
            ports = [{"name": p.get("name"), "port": p["port"], "protocol": "TCP", "nodePort": p["nodePort"],
                      "endpoints": [{"address": e["address"], "port": e["port"], "pod_id": e["pod_id"]}
                                    for e in eps if e["service_port"] == p["port"]]}
                     for p in sv["spec"].get("ports") or () if (sv["id"], p.get("nodePort")) in held]
            if ports:
                out.append({"id": sv["id"], "name": sv["name"], "namespace": sv["namespace"], "ports": ports})
        return out

    def _forwarding(self) -> tuple[builtins.list[Row], dict[str, builtins.list[dict[str, Any]]]]:
        """The NodePort services and the endpoints of each, read at most once per SNAPSHOT_TTL by this
        coordinator, however many nodes ask each second."""
        now = time.monotonic()
        snap = _snapshots.get(self.coord)
        if snap is not None and now - snap[0] < SNAPSHOT_TTL:
            return snap[1], snap[2]
        with self.store.read() as tx:
            svcs = tx.services(type_="NodePort", limit=100_000)
            pods = tx.ready_pods({sv["namespace"] for sv in svcs}) if svcs else []
            nodes = {n["id"]: n for n in tx.nodes()} if svcs else {}
        endpoints = {sv["id"]: domain.endpoints({**sv["spec"], "namespace": sv["namespace"]}, pods, nodes)
                     for sv in svcs}
        _snapshots[self.coord] = (now, svcs, endpoints)
        return svcs, endpoints

    # -- helpers --------------------------------------------------------------------------------
    def _row(self, service_id: str) -> Row:
        with self.store.read() as tx:
            row = tx.service(service_id)
        if row is None:
            raise NotFound(f"no service with id '{service_id}'")
        return row

    def _check_range(self, spec: ServiceSpec) -> None:
        low, high = port_range(self.coord)
        for i, p in enumerate(spec.ports):
            if p.nodePort is not None and not low <= p.nodePort <= high:
                raise Invalid(f"ports[{i}].nodePort: {p.nodePort} is outside this server's node port range "
                              f"{low}-{high}")

    @staticmethod
    def _taken(tx: Tx, sid: str, spec: ServiceSpec) -> str:
        if tx.service(sid) is not None:
            return f"a service with id '{sid}' exists"
        return f"namespace '{spec.namespace}' has a service named '{spec.name}'"

    def _allocate(self, tx: Tx, sid: str, spec: ServiceSpec,
                  keep: dict[tuple[int, str], int]) -> builtins.list[dict[str, Any]]:
        """The spec's ports, each with its ``targetPort`` resolved and, for a NodePort service, its
        ``nodePort``, held in node_ports on the pseudo node and every live node. Raises _Lost if a port
        was taken meanwhile, Conflict if one asked for is in use, Unavailable if the range is full."""
        ports = [{"name": p.name, "protocol": p.protocol, "port": p.port, "targetPort": p.target}
                 for p in spec.ports]
        if spec.type != "NodePort":
            return ports
        low, high = port_range(self.coord)
        taken = tx.node_ports_taken(low, high)
        wanted: list[int | None] = []
        for i, p in enumerate(spec.ports):
            n = p.nodePort or keep.get((p.port, p.protocol))
            if p.nodePort is not None and p.nodePort in taken:
                raise Conflict(f"ports[{i}].nodePort: {p.nodePort} is in use")
            wanted.append(None if n is None or (p.nodePort is None and n in taken) else n)
        given = {n for n in wanted if n is not None}
        fresh = domain.pick_node_ports(sum(n is None for n in wanted), taken | given, low, high,
                                       secrets.randbelow(high - low + 1))
        if len(fresh) < sum(n is None for n in wanted):
            raise Unavailable(f"no free node port left in {low}-{high}")
        it = iter(fresh)
        for port, n in zip(ports, wanted, strict=True):
            port["nodePort"] = n if n is not None else next(it)
        rows = [_port_row(node, sid, p) for node in [ANY_NODE, *tx.live_node_ids()] for p in ports]
        if tx.hold_node_ports(rows) != len(rows):
            raise _Lost
        return ports


def _port_row(node_id: str, service_id: str, port: dict[str, Any]) -> Row:
    return {"node_id": node_id, "port": port["nodePort"], "protocol": "TCP", "pod_id": service_id,
            "container": port.get("name") or "", "container_port": port["port"], "kind": "service"}
