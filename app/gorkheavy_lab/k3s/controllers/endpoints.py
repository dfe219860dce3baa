"""The EndpointSlice controller and the (deprecated) Endpoints controller of kube-controller-manager, for
Services with a selector.

EndpointSlice (discovery.k8s.io/v1): one slice per Service (``generateName: <service>-``, labels
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by:
endpointslice-controller.k8s.io`` plus the Service's own, a controller owner reference to the Service, so it
goes with it), ``addressType: IPv4``, ports as the Service's with ``targetPort`` resolved to the pods'
container port (by name or number), one endpoint per pod that has a ``podIP``: ``conditions.ready`` = the
pod's Ready condition and not terminating, ``serving`` = Ready, ``terminating`` = being deleted (a terminating
pod stays listed, not ready), ``nodeName``, ``targetRef`` to the Pod, ``zone`` from the node's
``topology.kubernetes.io/zone``. A Service without pods has a slice without endpoints or ports.

Endpoints (v1): ``subsets`` with ``addresses`` (ready) and ``notReadyAddresses``, the resolved ports,
the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation left out; terminating pods are left out
as the Endpoints controller does. ``publishNotReadyAddresses`` makes every pod ready in both."""

from __future__ import annotations

from typing import Any

from ..kube.registry import Column, Obj, Registry, ResourceType
from ..kube.tables import AGE, NAME
from .common import Context, owned_by, owner_reference, pod_ready, terminal
from .scheduling import selector_matches

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
SERVICE_NAME = "kubernetes.io/service-name"


def _slice_ports(o: Obj) -> str:
    ports = o.get("ports")
    if not ports:
        return "<unset>"
    return ",".join(str(p.get("port")) for p in ports)


def _slice_endpoints(o: Obj) -> str:
    addresses = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def _endpoints_column(o: Obj) -> str:
    out = []
    for subset in o.get("subsets") or []:
        for address in subset.get("addresses") or []:
            for port in subset.get("ports") or [{"port": None}]:
                out.append(f"{address['ip']}:{port['port']}" if port.get("port") else address["ip"])
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


ENDPOINTSLICES = ResourceType(
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
    namespaced=True,
    columns=(
        NAME,
        Column("AddressType", "string", "", lambda o: o.get("addressType", "")),
        Column("Ports", "string", "", _slice_ports),
        Column("Endpoints", "string", "", _slice_endpoints),
        AGE,
    ),
)
ENDPOINTS = ResourceType(
    "",
    "v1",
    "Endpoints",
    "endpoints",
    namespaced=True,
    singular="endpoints",
    short_names=("ep",),
    columns=(NAME, Column("Endpoints", "string", "", _endpoints_column), AGE),
)


def register(registry: Registry) -> None:
    for rtype in (ENDPOINTSLICES, ENDPOINTS):
        if registry.get(rtype.group, rtype.version, rtype.plural) is None:
            registry.register(rtype)


def _resolve(target: Any, pod: Obj) -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


class Endpoints:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.services = ctx.rtype("", "v1", "services")
        self.pods = ctx.rtype("", "v1", "pods")
        self.nodes = ctx.rtype("", "v1", "nodes")

    def sync(self) -> None:
        store = self.ctx.store
        zones = {
            n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get("topology.kubernetes.io/zone")
            for n in store.list(self.nodes)
        }
        pods = store.list(self.pods)
        slices = store.list(ENDPOINTSLICES)
        for svc in store.list(self.services):
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue
            ns = svc["metadata"]["namespace"]
            mine = [
                p
                for p in pods
                if p["metadata"].get("namespace") == ns
                and (p.get("status") or {}).get("podIP")
                and not terminal(p)
                and selector_matches({"matchLabels": selector}, p["metadata"].get("labels") or {})
            ]
            mine.sort(key=lambda p: p["metadata"]["name"])
            self._sync_slice(svc, mine, [s for s in slices if owned_by(s, svc)], zones)
            self._sync_endpoints(svc, mine)

    def _ports(self, svc: Obj, pods: list[Obj]) -> list[Obj]:
        out = []
        for port in (svc.get("spec") or {}).get("ports") or []:
            number = None
            for pod in pods:
                number = _resolve(port.get("targetPort", port.get("port")), pod)
                if number is not None:
                    break
            if number is None:
                continue
            entry: Obj = {
                "name": port.get("name", ""),
                "port": number,
                "protocol": port.get("protocol", "TCP"),
            }
            if port.get("appProtocol"):
                entry["appProtocol"] = port["appProtocol"]
            out.append(entry)
        return out

    def _sync_slice(
        self, svc: Obj, pods: list[Obj], existing: list[Obj], zones: dict[str, str | None]
    ) -> None:
        store = self.ctx.store
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        endpoints = []
        for pod in pods:
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            ready = pod_ready(pod) or publish
            endpoint: Obj = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {
                    "ready": ready and not terminating,
                    "serving": ready,
                    "terminating": terminating,
                },
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod["metadata"]["namespace"],
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                endpoint["nodeName"] = node
                if zones.get(node):
                    endpoint["zone"] = zones[node]
            endpoints.append(endpoint)
        ports = self._ports(svc, pods) if pods else []
        labels = {
            **(svc["metadata"].get("labels") or {}),
            SERVICE_NAME: svc["metadata"]["name"],
            MANAGED_BY: CONTROLLER,
        }
        wanted: Obj = {"addressType": "IPv4", "endpoints": endpoints or None, "ports": ports or None}
        if existing:
            current = existing[0]
            for extra in existing[1:]:
                store.delete(ENDPOINTSLICES, extra["metadata"]["namespace"], extra["metadata"]["name"])
            changed = {k: current.get(k) for k in wanted} != wanted or (
                current["metadata"].get("labels") or {}
            ) != labels
            if changed:
                current.update(wanted)
                current["metadata"]["labels"] = labels
                for key in [k for k, v in wanted.items() if v is None]:
                    current.pop(key, None)
                store.replace(ENDPOINTSLICES, current)
            return
        body: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{svc['metadata']['name']}-",
                "namespace": svc["metadata"]["namespace"],
                "labels": labels,
                "ownerReferences": [owner_reference(svc, self.services)],
            },
            **{k: v for k, v in wanted.items() if v is not None},
        }
        self.ctx.create(ENDPOINTSLICES, body)

    def _sync_endpoints(self, svc: Obj, pods: list[Obj]) -> None:
        store = self.ctx.store
        meta = svc["metadata"]
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            address: Obj = {
                "ip": pod["status"]["podIP"],
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod["metadata"]["namespace"],
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            if (pod.get("spec") or {}).get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            (ready if pod_ready(pod) or publish else not_ready).append(address)
        subsets = []
        if ready or not_ready:
            subset: Obj = {
                "ports": [{k: v for k, v in p.items() if k != "appProtocol"} for p in self._ports(svc, pods)]
            }
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subsets.append(subset)
        current = store.get(ENDPOINTS, meta["namespace"], meta["name"])
        labels = dict(meta.get("labels") or {})
        if current is None:
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            }
            if labels:
                body["metadata"]["labels"] = labels
            if subsets:
                body["subsets"] = subsets
            self.ctx.create(ENDPOINTS, body)
        elif (
            current.get("subsets") != (subsets or None) or (current["metadata"].get("labels") or {}) != labels
        ):
            if subsets:
                current["subsets"] = subsets
            else:
                current.pop("subsets", None)
            if labels:
                current["metadata"]["labels"] = labels
            store.replace(ENDPOINTS, current)

    def collect(self) -> None:
        """Endpoints have no owner reference: the controller deletes those whose Service is gone."""
        store = self.ctx.store
        for ep in store.list(ENDPOINTS):
            meta = ep["metadata"]
            svc = store.get(self.services, meta["namespace"], meta["name"])
            if svc is None:
                store.delete(ENDPOINTS, meta["namespace"], meta["name"])
