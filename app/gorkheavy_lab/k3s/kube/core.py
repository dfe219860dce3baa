"""The resource types of the cluster stage: namespaces, nodes (with their status subresource), leases, and
the events and pods ``kubectl describe node`` reads (pods are stored, never scheduled or run).

What the apiserver and the controllers do for them that the roles can see is modelled here: namespace
``kubernetes.io/metadata.name`` labels and phase, node name validation, node table columns
(``kubectl get nodes -o wide``), and the node lifecycle controller's NotReady/Unknown marking."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

from .errors import ApiError, invalid
from .extensions import Cluster, Controller
from .registry import Column, Obj, Registry, ResourceType
from .store import Store, now_rfc3339
from .tables import AGE, NAME, since

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _check_name(kind: str, name: str, label: bool, group: str = "") -> None:
    pattern, limit = (DNS1123_LABEL, 63) if label else (DNS1123_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        what = "RFC 1123 label" if label else "RFC 1123 subdomain"
        raise invalid(
            kind,
            name,
            [
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
                    "characters, '-'" + ("" if label else " or '.'") + ", and must start and end with an "
                    "alphanumeric character",
                )
            ],
            group,
        )


def _namespace_create(obj: Obj, _store: Store) -> None:
    name = obj["metadata"]["name"]
    _check_name("Namespace", name, label=True)
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def _namespace_update(old: Obj, new: Obj, _store: Store) -> None:
    new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]
    new["status"] = old.get("status", {"phase": "Active"})


def _namespace_delete(obj: Obj, store: Store) -> None:
    if obj["metadata"]["name"] in SYSTEM_NAMESPACES:
        raise ApiError(
            403,
            "Forbidden",
            f'namespaces "{obj["metadata"]["name"]}" is forbidden: this namespace may not be deleted',
            {"name": obj["metadata"]["name"], "kind": "namespaces"},
        )
    namespace = obj["metadata"]["name"]
    for key, _child in store.items():
        if key[2] == namespace:
            store.delete_key(key)


def _node_create(obj: Obj, _store: Store) -> None:
    _check_name("Node", obj["metadata"]["name"], label=False)


def _node_update(_old: Obj, new: Obj, _store: Store) -> None:
    _check_name("Node", new["metadata"]["name"], label=False)


def _ready(node: Obj) -> dict[str, Any] | None:
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def node_status(node: Obj) -> str:
    cond = _ready(node)
    status = "Unknown"
    if cond is not None:
        status = {"True": "Ready", "False": "NotReady"}.get(cond.get("status", ""), "Unknown")
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return status


def node_roles(node: Obj) -> str:
    roles = set()
    for key, value in (node["metadata"].get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.split("/", 1)[1]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _address(node: Obj, kind: str) -> str:
    for addr in node.get("status", {}).get("addresses", []) or []:
        if addr.get("type") == kind:
            return str(addr.get("address"))
    return "<none>"


def _info(node: Obj, key: str) -> str:
    return str(node.get("status", {}).get("nodeInfo", {}).get(key) or "<unknown>")


NODE_COLUMNS = (
    NAME,
    Column("Status", "string", "The status of the node", node_status),
    Column("Roles", "string", "The roles of the node", node_roles),
    AGE,
    Column(
        "Version", "string", "Kubelet Version reported by the node.", lambda n: _info(n, "kubeletVersion")
    ),
    Column(
        "Internal-IP",
        "string",
        "List of internal IPs for the node.",
        lambda n: _address(n, "InternalIP"),
        priority=1,
    ),
    Column(
        "External-IP",
        "string",
        "List of external IPs for the node.",
        lambda n: _address(n, "ExternalIP"),
        priority=1,
    ),
    Column(
        "OS-Image",
        "string",
        "OS image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        lambda n: _info(n, "osImage"),
        priority=1,
    ),
    Column(
        "Kernel-Version",
        "string",
        "Kernel version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        lambda n: _info(n, "kernelVersion"),
        priority=1,
    ),
    Column(
        "Container-Runtime",
        "string",
        "Container runtime version reported by the node through runtime "
        "remote API (e.g. containerd://1.4.2).",
        lambda n: _info(n, "containerRuntimeVersion"),
        priority=1,
    ),
)
NAMESPACE_COLUMNS = (
    NAME,
    Column("Status", "string", "The status of the namespace", lambda o: o.get("status", {}).get("phase", "")),
    AGE,
)
LEASE_COLUMNS = (
    NAME,
    Column("Holder", "string", "holderIdentity", lambda o: o.get("spec", {}).get("holderIdentity", "")),
    AGE,
)

NAMESPACES = ResourceType(
    "",
    "v1",
    "Namespace",
    "namespaces",
    namespaced=False,
    short_names=("ns",),
    verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    subresources=("status",),
    columns=NAMESPACE_COLUMNS,
    on_create=_namespace_create,
    on_update=_namespace_update,
    on_delete=_namespace_delete,
)
NODES = ResourceType(
    "",
    "v1",
    "Node",
    "nodes",
    namespaced=False,
    short_names=("no",),
    subresources=("status",),
    columns=NODE_COLUMNS,
    on_create=_node_create,
    on_update=_node_update,
    merge_keys={"status.conditions": "type", "status.addresses": "type", "status.images": "names"},
)
LEASES = ResourceType(
    "coordination.k8s.io",
    "v1",
    "Lease",
    "leases",
    namespaced=True,
    columns=LEASE_COLUMNS,
)


EVENT_COLUMNS = (
    Column(
        "Last Seen",
        "string",
        "Time when this Event was last observed.",
        lambda o: since(o.get("lastTimestamp") or o.get("eventTime")),
    ),
    Column("Type", "string", "Type of this event (Normal, Warning).", lambda o: o.get("type", "")),
    Column("Reason", "string", "Why the action was taken.", lambda o: o.get("reason", "")),
    Column(
        "Object",
        "string",
        "The object that this event is about.",
        lambda o: (
            f"{o.get('involvedObject', {}).get('kind', '').lower()}/"
            f"{o.get('involvedObject', {}).get('name', '')}"
        ),
    ),
    Column(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
        lambda o: o.get("message", ""),
    ),
)
# Stored and listed, never scheduled or run: there is no scheduler and no container runtime (README.md).
PODS = ResourceType(
    "",
    "v1",
    "Pod",
    "pods",
    namespaced=True,
    short_names=("po",),
    categories=("all",),
    subresources=("status",),
    merge_keys={"spec.containers": "name", "status.conditions": "type"},
)
EVENTS = ResourceType(
    "", "v1", "Event", "events", namespaced=True, short_names=("ev",), columns=EVENT_COLUMNS
)


def register(registry: Registry) -> None:
    for rtype in (NAMESPACES, NODES, LEASES, PODS, EVENTS):
        registry.register(rtype)


def seed(store: Store) -> None:
    for name in SYSTEM_NAMESPACES:
        if store.get(NAMESPACES, "", name) is None:
            obj: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            _namespace_create(obj, store)
            store.create(NAMESPACES, obj)


def _parse_time(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    try:
        return dt.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


UNREACHABLE_TAINTS = (
    {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
)


def mark_stale_nodes(store: Store, grace_seconds: float) -> list[str]:
    """The node lifecycle controller: a node whose kubelet has not renewed its lease nor posted status within
    the grace period gets its conditions set to Unknown (``NodeStatusUnknown``, "Kubelet stopped posting node
    status.") and the ``node.kubernetes.io/unreachable`` taints. Returns the names it marked."""
    now = dt.datetime.now(dt.UTC)
    marked = []
    for node in store.list(NODES):
        name = node["metadata"]["name"]
        cond = _ready(node)
        if cond is None or cond.get("status") == "Unknown":
            continue
        beats = [_parse_time(cond.get("lastHeartbeatTime"))]
        lease = store.get(LEASES, "kube-node-lease", name)
        if lease is not None:
            beats.append(_parse_time(lease.get("spec", {}).get("renewTime")))
        last = max((b for b in beats if b is not None), default=None)
        if last is not None and (now - last).total_seconds() <= grace_seconds:
            continue
        stamp = now_rfc3339()
        for c in node["status"].get("conditions", []):
            c.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=stamp,
            )
        taints = node.setdefault("spec", {}).setdefault("taints", [])
        for taint in UNREACHABLE_TAINTS:
            if not any(t.get("key") == taint["key"] and t.get("effect") == taint["effect"] for t in taints):
                taints.append({**taint, "timeAdded": stamp})
        store.replace(NODES, node)
        marked.append(name)
    return marked


def clear_unreachable(node: Obj) -> None:
    taints = node.get("spec", {}).get("taints")
    if taints:
        node["spec"]["taints"] = [t for t in taints if t.get("key") != "node.kubernetes.io/unreachable"]
        if not node["spec"]["taints"]:
            del node["spec"]["taints"]


DEFAULT_GRACE = 50.0  # kube-controller-manager --node-monitor-grace-period default since Kubernetes 1.32
LIFECYCLE_PERIOD = 5.0  # --node-monitor-period


def go_seconds(text: str) -> float:
    """A Go duration (``40s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(ms|h|m|s)?", text):
        total += float(number) * units[unit or "s"]
    return total


def extension(cluster: Cluster) -> list[Controller]:
    """The cluster stage's API: namespaces, nodes, leases, events, pods; the system namespaces; the node
    lifecycle controller."""
    register(cluster.registry)
    seed(cluster.store)
    args = cluster.component_args("kube-controller-manager-arg")
    grace_seconds = (
        go_seconds(args["node-monitor-grace-period"])
        if "node-monitor-grace-period" in args
        else DEFAULT_GRACE
    )
    period = go_seconds(args["node-monitor-period"]) if "node-monitor-period" in args else LIFECYCLE_PERIOD

    async def node_lifecycle() -> None:
        while True:
            await asyncio.sleep(period)
            for name in mark_stale_nodes(cluster.store, grace_seconds):
                cluster.log.info(f"Node {name} is NotReady: Kubelet stopped posting node status.")

    return [node_lifecycle()]
