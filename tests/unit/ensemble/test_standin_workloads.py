"""The K3s stand-in's workload types: what the apiserver writes for the ensemble's Services."""

from __future__ import annotations

import pytest
from gorkheavy_lab.k3s.kube import workloads
from gorkheavy_lab.k3s.kube.errors import ApiError
from gorkheavy_lab.k3s.kube.store import Store


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
