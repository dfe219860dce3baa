"""The K3s stand-in's workload types: what the apiserver and deployment controller write for the ensemble."""

from __future__ import annotations

import pytest
from gorkheavy_lab.k3s.kube import workloads
from gorkheavy_lab.k3s.kube.errors import ApiError
from gorkheavy_lab.k3s.kube.store import Store

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "llama", "namespace": "gorkheavy", "generation": 2},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "llama"}},
        "template": {"metadata": {"labels": {"app": "llama"}}, "spec": {"containers": []}},
    },
}


def _pod(ready: bool, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "metadata": {"name": "p", "namespace": "gorkheavy", "labels": labels or {"app": "llama"}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_status_without_pods_is_what_kubectl_rollout_status_waits_on() -> None:
    status = workloads.deployment_status(DEPLOYMENT, [])
    assert status["observedGeneration"] == 2
    assert "updatedReplicas" not in status
    assert "availableReplicas" not in status
    assert status["unavailableReplicas"] == 1
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")


def test_status_counts_matching_pods_and_their_readiness() -> None:
    unready = workloads.deployment_status(DEPLOYMENT, [_pod(False), _pod(True, {"app": "qwen"})])
    assert (unready["replicas"], unready["updatedReplicas"], unready["unavailableReplicas"]) == (1, 1, 1)
    assert "availableReplicas" not in unready
    ready = workloads.deployment_status(DEPLOYMENT, [_pod(True)])
    assert (ready["readyReplicas"], ready["availableReplicas"]) == (1, 1)
    assert "unavailableReplicas" not in ready
    progressing = next(c for c in ready["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


def test_services_get_cluster_ips_that_never_change() -> None:
    store = Store(None)
    addresses = []
    for name in ("a", "b"):
        obj = {"metadata": {"name": name, "namespace": "g"}, "spec": {"ports": [{"port": 11434}]}}
        workloads._service_create(obj, store)
        store.create(workloads.SERVICES, obj)
        addresses.append(obj["spec"]["clusterIP"])
    assert addresses == ["10.43.0.2", "10.43.0.3"]
    assert obj["spec"]["ports"] == [{"port": 11434, "protocol": "TCP", "targetPort": 11434}]
    moved = {"metadata": {"name": "b", "namespace": "g"}, "spec": {"clusterIP": "10.43.9.9", "ports": []}}
    with pytest.raises(ApiError):
        workloads._service_update(obj, moved, store)
