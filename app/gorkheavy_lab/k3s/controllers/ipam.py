"""Node IPAM as kube-controller-manager's range allocator does it for K3s (``--allocate-node-cidrs``,
``--cluster-cidr`` from the server's ``cluster-cidr``, 10.42.0.0/16 by default, ``--node-cidr-mask-size`` 24):
every Node without ``spec.podCIDR`` gets the lowest free /24 (10.42.0.0/24 for the first, 10.42.1.0/24 for
the next, ...) in ``spec.podCIDR`` and ``spec.podCIDRs``; CIDRs of existing nodes stay theirs, a deleted
node's CIDR becomes free again. When the range is used up the node gets a ``CIDRNotAvailable`` event."""

from __future__ import annotations

import ipaddress

from .common import Context

COMPONENT = "cidrAllocator"


class NodeIpam:
    def __init__(self, ctx: Context, cluster_cidr: str, mask: int = 24) -> None:
        self.ctx = ctx
        self.nodes = ctx.rtype("", "v1", "nodes")
        network = ipaddress.ip_network(cluster_cidr, strict=False)
        self.network = network
        self.mask = max(mask, network.prefixlen)

    def sync(self) -> None:
        store = self.ctx.store
        nodes = store.list(self.nodes)
        taken = {
            str((n.get("spec") or {}).get("podCIDR")) for n in nodes if (n.get("spec") or {}).get("podCIDR")
        }
        for node in sorted(
            nodes, key=lambda n: (n["metadata"].get("creationTimestamp", ""), n["metadata"]["name"])
        ):
            spec = node.setdefault("spec", {})
            if spec.get("podCIDR"):
                continue
            free = next(
                (str(s) for s in self.network.subnets(new_prefix=self.mask) if str(s) not in taken), None
            )
            name = node["metadata"]["name"]
            if free is None:
                self.ctx.event(
                    node,
                    "Node",
                    "CIDRNotAvailable",
                    f"Node {name} status is now: CIDRNotAvailable",
                    COMPONENT,
                )
                continue
            spec["podCIDR"] = free
            spec["podCIDRs"] = [free]
            store.replace(self.nodes, node)
            taken.add(free)
            self.ctx.log.info(f"Set node {name} PodCIDR to [{free}]")
