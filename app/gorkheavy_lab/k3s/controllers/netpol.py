"""NetworkPolicy (networking.k8s.io/v1) as a policy engine decides one connection, for checking the
ensemble's policies against its pods' labels (and for an enforcing network layer of the lab, should one use
it).

``connection_allowed``: a pod's egress is limited only by policies that select it with type Egress, its
ingress only by those with type Ingress, and a connection needs both sides to allow it. Peers are podSelector
(the policy's namespace), namespaceSelector, both, or ipBlock (with ``except``); ports by number, protocol and
``endPort``. Source: the Kubernetes documentation (Network Policies) and the API reference for v1.36.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .scheduling import selector_matches

Obj = dict[str, Any]


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
        end = entry.get("endPort") or want
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
