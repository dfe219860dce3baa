"""What a K3s node's kubelet registers: the Node object with K3s's labels and annotations, addresses,
capacity, nodeInfo and conditions, and the heartbeats (a Lease in ``kube-node-lease`` renewed every 10 s,
node status with a fresh Ready condition)."""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kube.store import now_rfc3339
from .release import Release

LEASE_SECONDS = 40  # kubelet --node-lease-duration-seconds default; the lease is renewed every quarter of it
STATUS_REPORT_SECONDS = 300  # kubelet's nodeStatusReportFrequency default
CONTAINERD = "containerd://2.3.2-k3s2"  # the v1.36 line's containerd per k3s-io/docs release notes (v1.36.2)


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def default_ip(towards: str = "1.1.1.1") -> str:
    """The address of the interface the default route (or the route towards ``towards``) leaves from."""
    for target in (towards, "1.1.1.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect((target, 9))
                return str(sock.getsockname()[0])
        except OSError:
            continue
    return "127.0.0.1"


def parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect`` as kubelet's ``--register-with-taints`` takes it."""
    if ":" not in text:
        msg = f'invalid taint spec: {text}, expected "key[=value]:Effect"'
        raise ValueError(msg)
    left, effect = text.rsplit(":", 1)
    if effect not in {"NoSchedule", "PreferNoSchedule", "NoExecute"}:
        msg = f"invalid taint effect: {effect}, unsupported taint effect"
        raise ValueError(msg)
    key, _, value = left.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_label(text: str) -> tuple[str, str]:
    if "=" not in text:
        msg = f"invalid label {text!r}: expected key=value"
        raise ValueError(msg)
    key, value = text.split("=", 1)
    return key, value


@dataclass
class NodeIdentity:
    name: str
    ip: str
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    server_role: bool = False
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    lease_seconds: int = LEASE_SECONDS

    @property
    def renew_interval(self) -> float:
        """The kubelet renews its lease every quarter of the lease duration (10 s by default)."""
        return self.lease_seconds / 4

    def node_object(self, release: Release) -> dict[str, Any]:
        arch = release.arch
        labels = {
            "beta.kubernetes.io/arch": arch,
            "beta.kubernetes.io/instance-type": "k3s",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "k3s",
        }
        if self.server_role:
            # K3s dropped the master role label in v1.35 (k3s-io/k3s #12395, #14028)
            labels["node-role.kubernetes.io/control-plane"] = "true"
        labels.update(self.labels)
        annotations = {
            "alpha.kubernetes.io/provided-node-ip": self.ip,
            "k3s.io/hostname": self.hostname,
            "k3s.io/internal-ip": self.ip,
            "k3s.io/node-args": json.dumps(self.args, separators=(",", ":")),
            "k3s.io/node-env": json.dumps(self.env, separators=(",", ":")),
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        }
        spec: dict[str, Any] = {"providerID": f"k3s://{self.name}"}
        if self.taints:
            spec["taints"] = [dict(t) for t in self.taints]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": spec,
            "status": self.status(release),
        }

    def status(self, release: Release) -> dict[str, Any]:
        cpus = str(os.cpu_count() or 1)
        mem_kib = 0
        for line in _read("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        resources = {
            "cpu": cpus,
            "ephemeral-storage": "20470Mi",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            "memory": f"{mem_kib}Ki",
            "pods": "110",
        }
        stamp = now_rfc3339()

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": reason,
                "message": message,
            }

        return {
            "addresses": [
                {"type": "InternalIP", "address": self.ip},
                {"type": "Hostname", "address": self.name},
            ],
            "allocatable": resources,
            "capacity": resources,
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": release.arch,
                "bootID": _read("/proc/sys/kernel/random/boot_id", secrets.token_hex(16)),
                "containerRuntimeVersion": CONTAINERD,
                "kernelVersion": platform.release(),
                "kubeProxyVersion": "",
                "kubeletVersion": release.version,
                "machineID": _read("/etc/machine-id", secrets.token_hex(16)),
                "operatingSystem": "linux",
                "osImage": os_image(),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid", secrets.token_hex(16)),
            },
        }


def lease(name: str, holder: str, seconds: int = LEASE_SECONDS) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "renewTime": now_rfc3339().replace("Z", ".000000Z"),
        },
    }
