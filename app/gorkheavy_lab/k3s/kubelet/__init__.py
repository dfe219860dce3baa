"""The node side of the K3s stand-in: the kubelet that runs the pods bound to its node as processes, the pod
network (bridge, veth, host-gw routes), kube-proxy's Service rules and the cluster DNS. See README.md."""

from __future__ import annotations

from .kubelet import Kubelet

__all__ = ["Kubelet"]
