"""Placement and NetworkPolicy as Kubernetes decides them, for checking rendered manifests without a cluster.

``schedule`` places pods one at a time the way kube-scheduler's default filter plugins do (NodeUnschedulable,
NodeSelector and required NodeAffinity, TaintToleration, NodeResourcesFit with the init-container rule,
PodTopologySpread with ``DoNotSchedule``), scoring the feasible nodes by least allocated resources. An
unschedulable pod raises with kube-scheduler's kind of summary ("0/3 nodes are available: ...").

``connection_allowed`` evaluates NetworkPolicies (networking.k8s.io/v1) for one connection: a pod's egress is
limited only by policies that select it with type Egress, its ingress only by those with type Ingress, and a
connection needs both sides to allow it. Peers are podSelector (the policy's namespace),
namespaceSelector, both, or ipBlock (with ``except``); ports by number, protocol and ``endPort``.

Sources: the Kubernetes documentation (Scheduling Framework, Pod Topology Spread Constraints, Taints and
Tolerations, Resource Management for Pods and Containers, Network Policies) and the API reference for v1.36.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|)$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity(value: str | int | float) -> Decimal:
    """A resource.Quantity as a number (cores for CPU, bytes for memory)."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE":
        return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
    return Decimal(number) * _SUFFIX[suffix]


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: an empty selector matches everything, a null one (None) nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression(expr, labels) for expr in selector.get("matchExpressions") or [])


def _expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], list(expr.get("values") or [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in {"Gt", "Lt"}:  # node selector requirements only
        if key not in labels or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    raise ValueError(f"unknown operator {op!r}")


# ---------------------------------------------------------------------------------------------------
# scheduling


@dataclass
class Node:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, Decimal]
    taints: list[Obj] = field(default_factory=list)
    unschedulable: bool = False


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    spec: Obj
    node: str | None = None


class Unschedulable(Exception):
    """No node passes the filters; the message summarises why, per reason, as kube-scheduler does."""


def pods_of(workload: Mapping[str, Any]) -> list[Pod]:
    """The pods a Deployment (or a bare Pod) creates, named like the ReplicaSet's pods would be."""
    meta = workload["metadata"]
    if workload["kind"] == "Pod":
        return [
            Pod(
                meta["name"],
                meta.get("namespace", "default"),
                dict(meta.get("labels") or {}),
                workload["spec"],
            )
        ]
    template = workload["spec"]["template"]
    replicas = int(workload["spec"].get("replicas", 1))
    labels = dict(template["metadata"].get("labels") or {})
    return [
        Pod(f"{meta['name']}-{i}", meta.get("namespace", "default"), labels, template["spec"])
        for i in range(replicas)
    ]


def pod_requests(spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """Effective requests: the larger of the containers' sum and each init container's, per resource."""
    total: Counter[str] = Counter()
    for container in spec.get("containers") or []:
        for name, value in _requests(container).items():
            total[name] += value
    effective = dict(total)
    for container in spec.get("initContainers") or []:
        for name, value in _requests(container).items():
            effective[name] = max(effective.get(name, Decimal(0)), value)
    for name, value in (spec.get("overhead") or {}).items():
        effective[name] = effective.get(name, Decimal(0)) + quantity(value)
    return effective


def _requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    # A limit without a request makes the request equal to the limit.
    for name, value in (resources.get("limits") or {}).items():
        requests.setdefault(name, value)
    return {name: quantity(value) for name, value in requests.items()}


def _tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint["effect"]:
            continue
        op = tol.get("operator", "Equal")
        if not tol.get("key"):
            if op == "Exists":
                return True
            continue
        if tol["key"] != taint["key"]:
            continue
        if op == "Exists" or tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _affinity_ok(spec: Mapping[str, Any], node: Node) -> bool:
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required:
        terms = required.get("nodeSelectorTerms") or []
        # Terms are ORed; a term's expressions (and fields) are ANDed; an empty term matches nothing.
        ok = False
        for term in terms:
            exprs = term.get("matchExpressions") or []
            fields = term.get("matchFields") or []
            if not exprs and not fields:
                continue
            field_labels = {"metadata.name": node.name}
            if all(_expression(e, node.labels) for e in exprs) and all(
                _expression(f, field_labels) for f in fields
            ):
                ok = True
                break
        if not ok:
            return False
    return True


def _untolerated(spec: Mapping[str, Any], node: Node) -> list[Obj]:
    tolerations = spec.get("tolerations") or []
    return [
        t
        for t in node.taints
        if t["effect"] in {"NoSchedule", "NoExecute"} and not _tolerates(tolerations, t)
    ]


def _used(node: Node, placed: Iterable[Pod]) -> Counter[str]:
    used: Counter[str] = Counter()
    for pod in placed:
        if pod.node == node.name:
            for name, value in pod_requests(pod.spec).items():
                used[name] += value
    return used


def _spread_ok(pod: Pod, node: Node, nodes: list[Node], placed: list[Pod]) -> str | None:
    for constraint in pod.spec.get("topologySpreadConstraints") or []:
        if constraint.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
            continue
        key = constraint["topologyKey"]
        if key not in node.labels:
            return "didn't match pod topology spread constraints (missing required label)"
        selector = constraint.get("labelSelector")
        # nodeAffinityPolicy defaults to Honor: only nodes the pod's selector/affinity admit are domains.
        honor = constraint.get("nodeAffinityPolicy", "Honor") == "Honor"
        taints_honor = constraint.get("nodeTaintsPolicy", "Ignore") == "Honor"
        eligible = [
            n
            for n in nodes
            if key in n.labels
            and (not honor or _affinity_ok(pod.spec, n))
            and (not taints_honor or not _untolerated(pod.spec, n))
        ]
        domains = {n.labels[key] for n in eligible}
        counts = dict.fromkeys(domains, 0)
        by_name = {n.name: n for n in nodes}
        for other in placed:
            if (
                other.namespace != pod.namespace
                or not other.node
                or not selector_matches(selector, other.labels)
            ):
                continue
            domain = by_name[other.node].labels.get(key)
            if domain in counts:
                counts[domain] += 1
        self_match = 1 if selector_matches(selector, pod.labels) else 0
        minimum = min(counts.values()) if counts else 0
        if counts.get(node.labels[key], 0) + self_match - minimum > int(constraint["maxSkew"]):
            return "didn't match pod topology spread constraints"
    return None


def _filter(pod: Pod, node: Node, nodes: list[Node], placed: list[Pod]) -> str | None:
    """None when the node fits, else the reason in kube-scheduler's words."""
    if node.unschedulable:
        return "were unschedulable"
    if not _affinity_ok(pod.spec, node):
        return "didn't match Pod's node affinity/selector"
    untolerated = _untolerated(pod.spec, node)
    if untolerated:
        t = untolerated[0]
        value = f"={t['value']}" if t.get("value") else ""
        return f"had untolerated taint {{{t['key']}{value}: {t['effect']}}}"
    used = _used(node, placed)
    for name, want in pod_requests(pod.spec).items():
        if used[name] + want > node.allocatable.get(name, Decimal(0)):
            return f"Insufficient {name}"
    return _spread_ok(pod, node, nodes, placed)


def _score(pod: Pod, node: Node, placed: list[Pod]) -> Decimal:
    used = _used(node, placed)
    want = pod_requests(pod.spec)
    score = Decimal(0)
    for name in ("cpu", "memory"):
        capacity = node.allocatable.get(name, Decimal(0))
        if capacity:
            score += (capacity - used[name] - want.get(name, Decimal(0))) / capacity
    return score


def schedule(pods: Iterable[Pod], nodes: list[Node], placed: list[Pod] | None = None) -> list[Pod]:
    """Place each pod in turn (after ``placed``, pods already running); returns every pod with its node."""
    done = list(placed or [])
    for pod in pods:
        reasons: Counter[str] = Counter()
        feasible = []
        for node in nodes:
            reason = _filter(pod, node, nodes, done)
            if reason:
                reasons[reason] += 1
            else:
                feasible.append(node)
        if not feasible:
            summary = ", ".join(f"{count} node(s) {why}" for why, count in sorted(reasons.items()))
            raise Unschedulable(f"pod {pod.name}: 0/{len(nodes)} nodes are available: {summary}.")
        best = max(feasible, key=lambda n: (_score(pod, n, done), n.name))
        pod.node = best.name
        done.append(pod)
    return done


# ---------------------------------------------------------------------------------------------- network
# policy


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (namespace None)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def _ports_match(ports: list[Obj] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        want = entry.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            raise ValueError("named ports are not used by this project's policies")
        end = entry.get("endPort", want)
        if int(want) <= port <= int(end):
            return True
    return False


def _peer_matches(
    peer: Mapping[str, Any], policy_ns: str, other: Endpoint, namespaces: Mapping[str, Mapping[str, str]]
) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        net = ipaddress.ip_network(block["cidr"])
        if address.version != net.version or address not in net:
            return False
        return not any(
            address.version == ipaddress.ip_network(e).version and address in ipaddress.ip_network(e)
            for e in block.get("except") or []
        )
    if other.namespace is None:  # selectors only ever match pods
        return False
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is not None:
        if not selector_matches(ns_selector, namespaces.get(other.namespace, {})):
            return False
    elif other.namespace != policy_ns:
        return False
    return pod_selector is None or selector_matches(pod_selector, other.labels)


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _side_allows(
    policies: Iterable[Mapping[str, Any]],
    *,
    direction: str,
    selected: Endpoint,
    other: Endpoint,
    port: int,
    protocol: str,
    namespaces: Mapping[str, Mapping[str, str]],
) -> bool:
    if selected.namespace is None:  # outside the cluster: no policy applies there
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == selected.namespace
        and direction in _types(p)
        and selector_matches(p["spec"].get("podSelector", {}), selected.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            ns = policy["metadata"]["namespace"]
            if peers and not any(_peer_matches(peer, ns, other, namespaces) for peer in peers):
                continue
            if _ports_match(rule.get("ports"), port, protocol):
                return True
    return False


def connection_allowed(
    policies: Iterable[Mapping[str, Any]],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    *,
    protocol: str = "TCP",
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> bool:
    """Whether ``source`` may open a connection to ``destination``:``port`` under the policies."""
    policies = list(policies)
    known = {
        name: {**labels, "kubernetes.io/metadata.name": name} for name, labels in (namespaces or {}).items()
    }
    egress = _side_allows(
        policies,
        direction="Egress",
        selected=source,
        other=destination,
        port=port,
        protocol=protocol,
        namespaces=known,
    )
    return egress and _side_allows(
        policies,
        direction="Ingress",
        selected=destination,
        other=source,
        port=port,
        protocol=protocol,
        namespaces=known,
    )
