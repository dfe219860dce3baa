"""Pod placement as kube-scheduler's default profile decides it, as pure functions over nodes and pods.

``schedule_one`` runs the default filter plugins in kube-scheduler's order, each node stopping at its first
failing plugin (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit with
the init-container rule and pod overhead, VolumeBinding through a callback, PodTopologySpread with
``DoNotSchedule``, InterPodAffinity required terms), then scores the feasible nodes with the default weights
(TaintToleration 3 for PreferNoSchedule taints, NodeAffinity 2 for preferred terms, NodeResourcesFit 1 as
LeastAllocated, NodeResourcesBalancedAllocation 1, InterPodAffinity 2 for preferred terms). A pod no node
takes raises ``Unschedulable`` with kube-scheduler's message: the reasons counted over the nodes and sorted
("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: true},
2 Insufficient cpu."), then the preemption post-filter's summary ("preemption: 0/3 nodes are available: 1
Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.").

Differences from kube-scheduler, on purpose: among equally scored nodes the first by name wins (kube-scheduler
picks one at random), and preemption never evicts (there are no PriorityClasses here, so every pod has
priority 0 and preemption could never find a victim); PodTopologySpread ``ScheduleAnyway`` is not scored.

``schedule`` places a list of pods in turn (what the ensemble's placement tests use); the scheduler controller
(``scheduler.py``) calls ``schedule_one`` with the API's nodes and pods.

Sources: the Kubernetes documentation (Scheduling Framework, Scheduler Configuration's default plugins, Pod
Topology Spread Constraints, Assigning Pods to Nodes, Taints and Tolerations, Resource Management for Pods and
Containers) and the API reference for v1.36.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
# what scoring assumes for a container that requests nothing (schedutil.DefaultMilliCPURequest/MemoryRequest)
SCORING_DEFAULTS = {"cpu": Decimal("0.1"), "memory": Decimal(200 * 2**20)}
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


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
    return all(expression(expr, labels) for expr in selector.get("matchExpressions") or [])


def expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
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


@dataclass
class Node:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, Decimal]
    taints: list[Obj] = field(default_factory=list)
    unschedulable: bool = False

    @classmethod
    def from_api(cls, obj: Obj) -> Node:
        status = obj.get("status") or {}
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        spec = obj.get("spec") or {}
        return cls(
            obj["metadata"]["name"],
            dict(obj["metadata"].get("labels") or {}),
            {name: quantity(value) for name, value in allocatable.items()},
            [dict(t) for t in spec.get("taints") or []],
            bool(spec.get("unschedulable")),
        )


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    spec: Obj
    node: str | None = None
    terminating: bool = False

    @classmethod
    def from_api(cls, obj: Obj) -> Pod:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        return cls(
            meta["name"],
            meta.get("namespace", "default"),
            dict(meta.get("labels") or {}),
            spec,
            spec.get("nodeName") or None,
            bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class Status:
    """A filter plugin's failure: its reason, and whether preemption could help (Unschedulable) or not
    (UnschedulableAndUnresolvable)."""

    reason: str
    resolvable: bool = False


class Unschedulable(Exception):
    """No node passes the filters; ``message`` is kube-scheduler's (the FailedScheduling event's text)."""

    def __init__(self, pod: str, message: str) -> None:
        super().__init__(f"pod {pod}: {message}")
        self.pod = pod
        self.message = message


# (pod, node) -> a failure or None; and pod -> a pre-filter failure for every node (e.g. a missing claim)
VolumeFilter = Callable[[Pod, Node], Status | None]
VolumePreFilter = Callable[[Pod], str | None]


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


def pod_requests(
    spec: Mapping[str, Any], defaults: Mapping[str, Decimal] | None = None
) -> dict[str, Decimal]:
    """Effective requests: the larger of the containers' sum and each init container's, per resource, plus
    the pod overhead. ``defaults`` fills in what a container does not request (scoring only)."""
    effective: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, value in _requests(container, defaults).items():
            effective[name] = effective.get(name, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in _requests(container, defaults).items():
            effective[name] = max(effective.get(name, Decimal(0)), value)
    for name, value in (spec.get("overhead") or {}).items():
        effective[name] = effective.get(name, Decimal(0)) + quantity(value)
    return effective


def _requests(container: Mapping[str, Any], defaults: Mapping[str, Decimal] | None) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    # A limit without a request makes the request equal to the limit.
    for name, value in (resources.get("limits") or {}).items():
        requests.setdefault(name, value)
    out = {name: quantity(value) for name, value in requests.items()}
    for name, value in (defaults or {}).items():
        out.setdefault(name, value)
    return out


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
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


def node_affinity_ok(spec: Mapping[str, Any], node: Node) -> bool:
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required:
        # Terms are ORed; a term's expressions (and fields) are ANDed; an empty term matches nothing.
        return any(_term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])
    return True


def _term_matches(term: Mapping[str, Any], node: Node) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    field_labels = {"metadata.name": node.name}
    return all(expression(e, node.labels) for e in exprs) and all(expression(f, field_labels) for f in fields)


def untolerated(
    spec: Mapping[str, Any], node: Node, effects: Iterable[str] = ("NoSchedule", "NoExecute")
) -> list[Obj]:
    tolerations = spec.get("tolerations") or []
    wanted = set(effects)
    return [t for t in node.taints if t["effect"] in wanted and not tolerates(tolerations, t)]


def _active(pods: Iterable[Pod], node: str) -> list[Pod]:
    return [p for p in pods if p.node == node]


def _used(
    node: Node, placed: Iterable[Pod], defaults: Mapping[str, Decimal] | None = None
) -> dict[str, Decimal]:
    used: dict[str, Decimal] = {}
    for pod in _active(placed, node.name):
        for name, value in pod_requests(pod.spec, defaults).items():
            used[name] = used.get(name, Decimal(0)) + value
    return used


def _host_ports(spec: Mapping[str, Any]) -> set[tuple[str, str, int]]:
    out = set()
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.add((port.get("hostIP") or "0.0.0.0", port.get("protocol", "TCP"), int(port["hostPort"])))
    return out


def _fit(pod: Pod, node: Node, placed: list[Pod]) -> list[Status]:
    """NodeResourcesFit: every resource the node lacks is a reason of its own (pods first, then cpu, memory,
    the rest); a request larger than the whole allocatable cannot be helped by preemption."""
    failures = []
    on_node = _active(placed, node.name)
    if len(on_node) + 1 > node.allocatable.get("pods", Decimal(110)):
        failures.append(Status("Too many pods", resolvable=True))
    used = _used(node, placed)
    wants = pod_requests(pod.spec)
    order = sorted(
        wants, key=lambda n: (n not in {"cpu", "memory", "ephemeral-storage"}, n != "cpu", n != "memory", n)
    )
    for name in order:
        want = wants[name]
        if not want:
            continue
        capacity = node.allocatable.get(name, Decimal(0))
        if used.get(name, Decimal(0)) + want > capacity:
            failures.append(Status(f"Insufficient {name}", resolvable=want <= capacity))
    return failures


def _spread(pod: Pod, node: Node, nodes: list[Node], placed: list[Pod]) -> Status | None:
    constraints = [
        c
        for c in pod.spec.get("topologySpreadConstraints") or []
        if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
    ]
    keys = [c["topologyKey"] for c in constraints]
    for constraint in constraints:
        key = constraint["topologyKey"]
        if key not in node.labels:
            return Status("node(s) didn't match pod topology spread constraints (missing required label)")
        selector = _spread_selector(constraint, pod)
        # nodeAffinityPolicy defaults to Honor, nodeTaintsPolicy to Ignore: the domains are the nodes that the
        # pod's selector/affinity admit and that carry every constraint's key
        honor = constraint.get("nodeAffinityPolicy", "Honor") == "Honor"
        taints_honor = constraint.get("nodeTaintsPolicy", "Ignore") == "Honor"
        eligible = [
            n
            for n in nodes
            if all(k in n.labels for k in keys)
            and (not honor or node_affinity_ok(pod.spec, n))
            and (not taints_honor or not untolerated(pod.spec, n))
        ]
        counts = dict.fromkeys({n.labels[key] for n in eligible}, 0)
        by_name = {n.name: n for n in eligible}
        for other in placed:
            if other.terminating or other.namespace != pod.namespace or other.node not in by_name:
                continue
            if selector_matches(selector, other.labels):
                counts[by_name[other.node].labels[key]] += 1
        minimum = min(counts.values()) if counts else 0
        if len(counts) < int(constraint.get("minDomains") or 1):
            minimum = 0
        self_match = 1 if selector_matches(selector, pod.labels) else 0
        if counts.get(node.labels[key], 0) + self_match - minimum > int(constraint["maxSkew"]):
            return Status("node(s) didn't match pod topology spread constraints", resolvable=True)
    return None


def _spread_selector(constraint: Mapping[str, Any], pod: Pod) -> Obj | None:
    selector = constraint.get("labelSelector")
    keys = constraint.get("matchLabelKeys") or []
    if selector is None or not keys:
        return selector
    extra = [{"key": k, "operator": "In", "values": [pod.labels[k]]} for k in keys if k in pod.labels]
    return {**selector, "matchExpressions": [*(selector.get("matchExpressions") or []), *extra]}


def _term_pods(
    term: Mapping[str, Any],
    owner: Pod,
    placed: Iterable[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
) -> list[Pod]:
    """The pods a pod (anti-)affinity term selects: its labelSelector, in its namespaces (default: the
    owner's) or those its namespaceSelector matches."""
    allowed = set(term.get("namespaces") or [])
    ns_selector = term.get("namespaceSelector")
    out = []
    for other in placed:
        if other.terminating or other.node is None:
            continue
        in_ns = other.namespace in allowed or (
            ns_selector is not None and selector_matches(ns_selector, namespaces.get(other.namespace, {}))
        )
        if not allowed and ns_selector is None:
            in_ns = other.namespace == owner.namespace
        if in_ns and selector_matches(term.get("labelSelector"), other.labels):
            out.append(other)
    return out


def _same_domain(key: str, node: Node, other: str, by_name: Mapping[str, Node]) -> bool:
    peer = by_name.get(other)
    return peer is not None and key in node.labels and peer.labels.get(key) == node.labels[key]


def _inter_pod(
    pod: Pod, node: Node, nodes: list[Node], placed: list[Pod], namespaces: Mapping[str, Mapping[str, str]]
) -> Status | None:
    by_name = {n.name: n for n in nodes}
    affinity = pod.spec.get("affinity") or {}
    for term in (affinity.get("podAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []:
        matching = _term_pods(term, pod, placed, namespaces)
        near = any(_same_domain(term["topologyKey"], node, m.node or "", by_name) for m in matching)
        # the first pod of a group that selects itself may go anywhere the key exists
        first = (
            not matching
            and bool(_term_pods(term, pod, [pod_at(pod, node.name)], namespaces))
            and term["topologyKey"] in node.labels
        )
        if not near and not first:
            return Status("node(s) didn't match pod affinity rules")
    for term in (affinity.get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []:
        matching = _term_pods(term, pod, placed, namespaces)
        if any(_same_domain(term["topologyKey"], node, m.node or "", by_name) for m in matching):
            return Status("node(s) didn't match pod anti-affinity rules", resolvable=True)
    # existing pods' required anti-affinity against the incoming pod
    for other in placed:
        if other.terminating or other.node is None:
            continue
        anti = ((other.spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ) or []
        for term in anti:
            if _term_pods(term, other, [pod_at(pod, node.name)], namespaces) and _same_domain(
                term["topologyKey"], node, other.node, by_name
            ):
                return Status("node(s) didn't satisfy existing pods anti-affinity rules", resolvable=True)
    return None


def pod_at(pod: Pod, node: str) -> Pod:
    return Pod(pod.name, pod.namespace, pod.labels, pod.spec, node, pod.terminating)


def filter_node(
    pod: Pod,
    node: Node,
    nodes: list[Node],
    placed: list[Pod],
    *,
    volumes: VolumeFilter | None = None,
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Status]:
    """The failures of the first filter plugin the node does not pass (none: the node fits)."""
    spec = pod.spec
    if node.unschedulable and not tolerates(spec.get("tolerations") or [], UNSCHEDULABLE_TAINT):
        return [Status("node(s) were unschedulable")]
    if spec.get("nodeName") and spec["nodeName"] != node.name:
        return [Status("node(s) didn't match the requested node name")]
    taints = untolerated(spec, node)
    if taints:
        t = taints[0]
        return [Status(f"node(s) had untolerated taint {{{t['key']}: {t.get('value', '')}}}")]
    if not node_affinity_ok(spec, node):
        return [Status("node(s) didn't match Pod's node affinity/selector")]
    wanted = _host_ports(spec)
    if wanted:
        taken = set().union(*(_host_ports(p.spec) for p in _active(placed, node.name)))
        if any((ip, proto, port) in taken or ("0.0.0.0", proto, port) in taken for ip, proto, port in wanted):
            return [Status("node(s) didn't have free ports for the requested pod ports", resolvable=True)]
    fit = _fit(pod, node, placed)
    if fit:
        return fit
    if volumes is not None:
        status = volumes(pod, node)
        if status is not None:
            return [status]
    spread = _spread(pod, node, nodes, placed)
    if spread is not None:
        return [spread]
    inter = _inter_pod(pod, node, nodes, placed, namespaces or {})
    return [inter] if inter is not None else []


def _normalize(raw: dict[str, Decimal], reverse: bool = False) -> dict[str, Decimal]:
    """framework's DefaultNormalizeScore: scale to 0..100 by the highest score, reversed on request."""
    top = max(raw.values(), default=Decimal(0))
    out = {}
    for name, value in raw.items():
        if top == 0:
            out[name] = Decimal(100) if reverse else Decimal(0)
        else:
            scaled = value * 100 / top
            out[name] = Decimal(100) - scaled if reverse else scaled
    return out


def _preferred_inter_pod(
    pod: Pod, node: Node, nodes: list[Node], placed: list[Pod], namespaces: Mapping[str, Mapping[str, str]]
) -> Decimal:
    by_name = {n.name: n for n in nodes}
    affinity = pod.spec.get("affinity") or {}
    score = Decimal(0)
    for sign, kind in ((1, "podAffinity"), (-1, "podAntiAffinity")):
        for weighted in (affinity.get(kind) or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution"
        ) or []:
            term = weighted["podAffinityTerm"]
            for other in _term_pods(term, pod, placed, namespaces):
                if _same_domain(term["topologyKey"], node, other.node or "", by_name):
                    score += sign * int(weighted["weight"])
    return score


def score_nodes(
    pod: Pod,
    feasible: list[Node],
    nodes: list[Node],
    placed: list[Pod],
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Decimal]:
    """The weighted sum of the default score plugins for each feasible node."""
    prefer = {n.name: Decimal(len(untolerated(pod.spec, n, ("PreferNoSchedule",)))) for n in feasible}
    affinity = {}
    for n in feasible:
        total = Decimal(0)
        for weighted in ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution"
        ) or []:
            if _term_matches(weighted.get("preference") or {}, n):
                total += int(weighted["weight"])
        affinity[n.name] = total
    want = pod_requests(pod.spec, SCORING_DEFAULTS)
    least, balanced = {}, {}
    for n in feasible:
        used = _used(n, placed, SCORING_DEFAULTS)
        fractions, scores = [], []
        for name in ("cpu", "memory"):
            capacity = n.allocatable.get(name, Decimal(0))
            requested = used.get(name, Decimal(0)) + want.get(name, Decimal(0))
            if capacity:
                scores.append(max(capacity - requested, Decimal(0)) * 100 / capacity)
                fractions.append(min(requested / capacity, Decimal(1)))
        least[n.name] = sum(scores, Decimal(0)) / len(scores) if scores else Decimal(0)
        spread = abs(fractions[0] - fractions[1]) / 2 if len(fractions) == 2 else Decimal(0)
        balanced[n.name] = (1 - spread) * 100
    raw_inter = {n.name: _preferred_inter_pod(pod, n, nodes, placed, namespaces or {}) for n in feasible}
    low, high = min(raw_inter.values(), default=Decimal(0)), max(raw_inter.values(), default=Decimal(0))
    inter = {k: (v - low) * 100 / (high - low) if high != low else Decimal(0) for k, v in raw_inter.items()}
    taint_scores = _normalize(prefer, reverse=True)
    affinity_scores = _normalize(affinity)
    return {
        n.name: 3 * taint_scores[n.name]
        + 2 * affinity_scores[n.name]
        + least[n.name]
        + balanced[n.name]
        + 2 * inter[n.name]
        for n in feasible
    }


def _summary(total: int, counts: Counter[str]) -> str:
    return ", ".join(sorted(f"{count} {why}" for why, count in counts.items()))


def schedule_one(
    pod: Pod,
    nodes: list[Node],
    placed: list[Pod],
    *,
    volumes: VolumeFilter | None = None,
    prefilter: VolumePreFilter | None = None,
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The node kube-scheduler would bind ``pod`` to, or ``Unschedulable`` with its message."""
    total = len(nodes)
    not_helpful = (
        f"preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
    )
    if total == 0:
        raise Unschedulable(pod.name, "no nodes available to schedule pods")
    blocked = prefilter(pod) if prefilter is not None else None
    if blocked:
        raise Unschedulable(pod.name, f"0/{total} nodes are available: {blocked}. {not_helpful}")
    reasons: Counter[str] = Counter()
    preemption: Counter[str] = Counter()
    feasible = []
    for node in nodes:
        failures = filter_node(pod, node, nodes, placed, volumes=volumes, namespaces=namespaces)
        if not failures:
            feasible.append(node)
            continue
        for failure in failures:
            reasons[failure.reason] += 1
        helpful = all(f.resolvable for f in failures)
        preemption[
            "No preemption victims found for incoming pod"
            if helpful
            else "Preemption is not helpful for scheduling"
        ] += 1
    if not feasible:
        raise Unschedulable(
            pod.name,
            f"0/{total} nodes are available: {_summary(total, reasons)}. "
            f"preemption: 0/{total} nodes are available: {_summary(total, preemption)}.",
        )
    scores = score_nodes(pod, feasible, nodes, placed, namespaces)
    best = max(feasible, key=lambda n: (scores[n.name], [-ord(c) for c in n.name]))
    return best.name


def schedule(pods: Iterable[Pod], nodes: list[Node], placed: list[Pod] | None = None) -> list[Pod]:
    """Place each pod in turn (after ``placed``, pods already running); returns every pod with its node."""
    done = list(placed or [])
    for pod in pods:
        pod.node = schedule_one(pod, nodes, done)
        done.append(pod)
    return done
