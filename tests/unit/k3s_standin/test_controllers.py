"""The control plane's controllers in-process, one pass at a time, against the stand-in's own registry and
store: rolling updates within maxSurge/maxUnavailable, Recreate, the progress deadline, garbage collection
with each propagation policy, graceful pod deletion, node IPAM, ingress validation, topology and affinity
filters. (tests/unit/ensemble/test_standin_controllers.py runs the same code in a server, through kubectl.)"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from gorkheavy_lab.k3s import controllers
from gorkheavy_lab.k3s.controllers import deployments, scheduling
from gorkheavy_lab.k3s.controllers.common import stamp
from gorkheavy_lab.k3s.kube import core, workloads
from gorkheavy_lab.k3s.kube.api import ApiServer
from gorkheavy_lab.k3s.kube.errors import ApiError
from gorkheavy_lab.k3s.kube.extensions import Cluster
from gorkheavy_lab.k3s.kube.registry import Obj, Registry, ResourceType
from gorkheavy_lab.k3s.kube.store import Store


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def error(self, msg: str) -> None:
        self.lines.append(f"ERROR {msg}")


@dataclass
class Plane:
    registry: Registry
    store: Store
    manager: controllers.ControllerManager
    api: ApiServer
    log: _Log

    def rtype(self, plural: str) -> ResourceType:
        for rtype in self.registry.all():
            if rtype.plural == plural:
                return rtype
        raise KeyError(plural)

    def create(self, plural: str, obj: Obj) -> Obj:
        rtype = self.rtype(plural)
        obj = copy.deepcopy(obj)
        if rtype.on_create is not None:
            rtype.on_create(obj, self.store)
        return self.store.create(rtype, obj)

    def list(self, plural: str) -> list[Obj]:
        return self.store.list(self.rtype(plural))

    def get(self, plural: str, name: str, namespace: str = "g") -> Obj:
        rtype = self.rtype(plural)
        obj = self.store.get(rtype, namespace if rtype.namespaced else "", name)
        assert obj is not None, f"{plural}/{name} not found"
        return obj

    def update(self, plural: str, obj: Obj) -> None:
        rtype = self.rtype(plural)
        current = self.get(plural, obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
        if rtype.on_update is not None:
            rtype.on_update(current, obj, self.store)
        if rtype.uses_generation and obj.get("spec") != current.get("spec"):
            obj["metadata"]["generation"] = current["metadata"]["generation"] + 1
        self.store.replace(rtype, obj)

    def delete(self, plural: str, name: str, namespace: str = "g", **options: Any) -> None:
        self.api.delete_object(self.rtype(plural), self.get(plural, name, namespace), options)

    def sync(self, passes: int = 3) -> None:
        for _ in range(passes):
            self.manager.sync()

    def kubelet(self, ready: bool = True, finish: bool = True) -> None:
        """Every bound pod Running (and Ready), terminating ones finished, as the nodes' kubelets would."""
        for pod in self.list("pods"):
            if not pod["spec"].get("nodeName"):
                continue
            if pod["metadata"].get("deletionTimestamp"):
                if finish:
                    self.delete(
                        "pods", pod["metadata"]["name"], pod["metadata"]["namespace"], gracePeriodSeconds=0
                    )
                continue
            flag = "True" if ready else "False"
            pod["status"].update(
                phase="Running",
                podIP="10.42.0.9",
                conditions=[
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": flag, "lastTransitionTime": stamp()},
                ],
            )
            self.store.replace(self.rtype("pods"), pod)


NODE_SIZE = {"cpu": "4", "memory": "8Gi", "pods": "110"}


@pytest.fixture
def plane() -> Iterator[Plane]:
    registry, store, log = Registry(), Store(None), _Log()
    api = ApiServer(registry, store, {}, "127.0.0.1:6443")
    cluster = Cluster(registry, store, api, {"cluster-cidr": ["10.42.0.0/16"]}, log)
    for extension in (core.extension, workloads.extension, controllers.extension):
        for task in extension(cluster):
            task.close()
    manager = controllers.ControllerManager(cluster)
    plane = Plane(registry, store, manager, api, log)
    plane.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "g"}})
    for name in ("n1", "n2"):
        plane.create(
            "nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": NODE_SIZE},
            },
        )
    yield plane
    store.close()


def _deployment(name: str = "web", replicas: int = 4, strategy: Obj | None = None, image: str = "a:1") -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "g"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "c", "image": image, "resources": {"requests": {"cpu": "100m"}}}]
                },
            },
        },
    }


def _rs_replicas(plane: Plane, name: str = "web") -> dict[str, int]:
    return {
        rs["metadata"]["annotations"][deployments.REVISION]: rs["spec"]["replicas"]
        for rs in plane.list("replicasets")
        if rs["metadata"]["ownerReferences"][0]["name"] == name
    }


def test_node_ipam_gives_each_node_the_next_free_slash_24(plane: Plane) -> None:
    plane.sync(1)
    assert [n["spec"]["podCIDRs"] for n in plane.list("nodes")] == [["10.42.0.0/24"], ["10.42.1.0/24"]]
    plane.delete("nodes", "n1", "")
    plane.create(
        "nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n3"},
            "status": {"allocatable": NODE_SIZE},
        },
    )
    plane.sync(1)
    assert plane.get("nodes", "n3", "")["spec"]["podCIDR"] == "10.42.0.0/24", (
        "a deleted node's range is free again"
    )


def test_a_rolling_update_keeps_within_max_surge_and_max_unavailable(plane: Plane) -> None:
    plane.create("deployments", _deployment())
    plane.sync()
    plane.kubelet()
    plane.sync()
    status = plane.get("deployments", "web")["status"]
    assert (status["replicas"], status["availableReplicas"]) == (4, 4)
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }
    deployment = plane.get("deployments", "web")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2"
    plane.update("deployments", deployment)
    plane.sync()
    # one above (maxSurge 1) and one below (maxUnavailable 1) the four wanted, while nothing new is ready
    assert _rs_replicas(plane) == {"1": 3, "2": 2}
    pods = [p for p in plane.list("pods") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 5
    status = plane.get("deployments", "web")["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (5, 2, 3)
    assert status["unavailableReplicas"] == 2
    assert (
        next(c for c in status["conditions"] if c["type"] == "Progressing")["reason"] == "ReplicaSetUpdated"
    )
    for _ in range(6):
        plane.kubelet()
        plane.sync()
    assert _rs_replicas(plane) == {"1": 0, "2": 4}
    status = plane.get("deployments", "web")["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (4, 4, 4)
    assert (
        next(c for c in status["conditions"] if c["type"] == "Progressing")["reason"]
        == "NewReplicaSetAvailable"
    )
    assert plane.get("deployments", "web")["metadata"]["annotations"][deployments.REVISION] == "2"


def test_recreate_waits_until_the_old_pods_are_gone(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=2, strategy={"type": "Recreate"}))
    plane.sync()
    plane.kubelet()
    plane.sync()
    deployment = plane.get("deployments", "web")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2"
    plane.update("deployments", deployment)
    plane.sync()
    assert _rs_replicas(plane) == {"1": 0}, "no new ReplicaSet while old pods run"
    assert all(p["metadata"].get("deletionTimestamp") for p in plane.list("pods")), "old pods terminating"
    plane.kubelet()  # the kubelets finish them
    plane.sync()
    assert _rs_replicas(plane) == {"1": 0, "2": 2}
    plane.kubelet()
    plane.sync()
    assert plane.get("deployments", "web")["status"]["availableReplicas"] == 2


def test_a_rollout_that_makes_no_progress_exceeds_its_deadline(plane: Plane) -> None:
    spec = _deployment(replicas=1)
    spec["spec"]["progressDeadlineSeconds"] = 5
    plane.create("deployments", spec)
    plane.sync()
    deployment = plane.get("deployments", "web")
    for cond in deployment["status"]["conditions"]:
        cond["lastUpdateTime"] = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10))
    plane.store.replace(plane.rtype("deployments"), deployment)
    plane.sync()
    cond = next(
        c for c in plane.get("deployments", "web")["status"]["conditions"] if c["type"] == "Progressing"
    )
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cond["message"].startswith('ReplicaSet "web-')
    assert cond["message"].endswith('" has timed out progressing.')


def test_garbage_collection_by_propagation_policy(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=1))
    plane.sync()
    plane.delete("deployments", "web", propagationPolicy="Orphan")
    plane.sync()
    assert [rs["metadata"].get("ownerReferences") for rs in plane.list("replicasets")] == [None]
    assert not plane.list("deployments")
    plane.create("deployments", _deployment("db", replicas=1))
    plane.sync()
    plane.delete("deployments", "db", propagationPolicy="Foreground")
    db = plane.get("deployments", "db")
    assert db["metadata"]["deletionTimestamp"]
    assert db["metadata"]["finalizers"] == ["foregroundDeletion"]
    plane.sync()
    # the pod is not bound (no fitting node? it is: n1/n2), so it goes at once or terminates first
    plane.kubelet()
    plane.sync()
    assert not [d for d in plane.list("deployments") if d["metadata"]["name"] == "db"]
    assert not [p for p in plane.list("pods") if p["metadata"]["labels"]["app"] == "db"]


def test_a_bound_pod_terminates_gracefully_an_unbound_one_goes_at_once(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=1))
    plane.sync()
    pod = plane.list("pods")[0]
    assert pod["spec"]["nodeName"] in {"n1", "n2"}
    plane.delete("pods", pod["metadata"]["name"])
    gone = plane.get("pods", pod["metadata"]["name"])
    assert gone["metadata"]["deletionGracePeriodSeconds"] == 30
    plane.delete("pods", pod["metadata"]["name"], gracePeriodSeconds=10)
    assert plane.get("pods", pod["metadata"]["name"])["metadata"]["deletionGracePeriodSeconds"] == 10
    plane.sync()
    assert len(plane.list("pods")) == 2, "the ReplicaSet replaces it while it terminates"
    plane.delete("pods", pod["metadata"]["name"], gracePeriodSeconds=0)
    assert pod["metadata"]["name"] not in [p["metadata"]["name"] for p in plane.list("pods")]
    lone = plane.create(
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "lone", "namespace": "g"},
            "spec": {"schedulerName": "other", "containers": [{"name": "c", "image": "a:1"}]},
        },
    )
    assert lone["spec"]["tolerations"][0]["key"] == "node.kubernetes.io/not-ready"
    plane.delete("pods", "lone")
    assert "lone" not in [p["metadata"]["name"] for p in plane.list("pods")]


def test_a_required_anti_affinity_keeps_replicas_apart() -> None:
    nodes = [
        scheduling.Node(
            n,
            {"kubernetes.io/hostname": n},
            {"cpu": scheduling.quantity("4"), "memory": scheduling.quantity("8Gi")},
        )
        for n in ("a", "b")
    ]
    term = {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}
    spec = {
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}},
        "containers": [{"name": "c"}],
    }
    pods = [scheduling.Pod(f"x-{i}", "g", {"app": "x"}, spec) for i in range(3)]
    with pytest.raises(scheduling.Unschedulable) as excinfo:
        scheduling.schedule(pods, nodes)
    assert excinfo.value.message == (
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. "
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    )
    assert {p.node for p in pods[:2]} == {"a", "b"}


def test_an_ingress_is_validated_like_the_apiserver_and_gets_the_default_class(plane: Plane) -> None:
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "g"},
        "spec": {
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                            }
                        ]
                    }
                }
            ]
        },
    }
    created = plane.create("ingresses", ingress)
    assert created["spec"]["ingressClassName"] == "traefik"
    assert plane.get("ingressclasses", "traefik", "")["spec"]["controller"] == "traefik.io/ingress-controller"
    bad = copy.deepcopy(ingress)
    bad["metadata"]["name"] = "bad"
    path = bad["spec"]["rules"][0]["http"]["paths"][0]
    path["path"] = "api"
    path["backend"]["service"]["port"] = {"name": "http", "number": 80}
    with pytest.raises(ApiError) as excinfo:
        plane.create("ingresses", bad)
    message = excinfo.value.status()["message"]
    assert excinfo.value.code == 422
    assert 'spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path' in message
    assert "spec.rules[0].http.paths[0].backend.service.port: Invalid value" in message


def test_pods_leave_an_unreachable_node_after_their_toleration(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=1))
    plane.sync()
    pod = plane.list("pods")[0]
    lost = pod["spec"]["nodeName"]
    node = plane.get("nodes", lost, "")
    # what the node lifecycle controller writes for a node whose kubelet went silent
    added = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=100))
    node["spec"]["taints"] = [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": added},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": added},
    ]
    plane.store.replace(plane.rtype("nodes"), node)
    plane.sync()
    assert not plane.get("pods", pod["metadata"]["name"])["metadata"].get("deletionTimestamp"), (
        "300 s tolerated"
    )
    node = plane.get("nodes", lost, "")
    for taint in node["spec"]["taints"]:
        taint["timeAdded"] = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301))
    plane.store.replace(plane.rtype("nodes"), node)
    plane.sync()
    evicted = plane.get("pods", pod["metadata"]["name"])
    assert evicted["metadata"]["deletionTimestamp"], "evicted, and Terminating while its kubelet is gone"
    cond = next(c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert cond["reason"] == "DeletionByTaintManager"
    replacement = [p for p in plane.list("pods") if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["nodeName"] for p in replacement] == ["n2" if lost == "n1" else "n1"]


def test_rolling_back_revives_the_old_replica_set_as_the_next_revision(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=1, image="a:1"))
    plane.sync()
    deployment = plane.get("deployments", "web")
    first = copy.deepcopy(deployment["spec"]["template"])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2"
    plane.update("deployments", deployment)
    plane.sync()
    # what kubectl rollout undo sends: the old ReplicaSet's template as Go serialises it
    deployment = plane.get("deployments", "web")
    back = copy.deepcopy(first)
    back["metadata"]["creationTimestamp"] = None
    back["spec"]["containers"][0]["ports"] = []
    deployment["spec"]["template"] = back
    plane.update("deployments", deployment)
    plane.sync()
    revisions = _rs_replicas(plane)
    assert sorted(revisions) == ["2", "3"], "revision 1's ReplicaSet became revision 3"
    assert revisions["3"] == 1
    assert plane.get("deployments", "web")["metadata"]["annotations"][deployments.REVISION] == "3"


def _claim(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "g"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def test_a_claim_in_use_waits_for_its_pod_and_its_volume_goes_with_it(plane: Plane) -> None:
    plane.create("persistentvolumeclaims", _claim("data"))
    spec = _deployment(replicas=1, strategy={"type": "Recreate"})
    spec["spec"]["template"]["spec"]["volumes"] = [
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}
    ]
    plane.create("deployments", spec)
    plane.sync()
    claim = plane.get("persistentvolumeclaims", "data")
    assert claim["spec"]["storageClassName"] == "local-path", "the default class"
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    pv = plane.get("persistentvolumes", claim["spec"]["volumeName"], "")
    pod = plane.list("pods")[0]
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0][
        "values"
    ] == [pod["spec"]["nodeName"]]
    plane.delete("persistentvolumeclaims", "data")
    plane.sync()
    assert plane.get("persistentvolumeclaims", "data")["metadata"]["deletionTimestamp"], "kept while in use"
    plane.delete("deployments", "web")
    plane.sync()
    plane.kubelet()  # the pod's kubelet finishes it
    plane.sync()
    assert not plane.list("persistentvolumeclaims")
    assert not plane.list("persistentvolumes"), "reclaim policy Delete"


def test_a_cordoned_node_takes_no_new_pods(plane: Plane) -> None:
    for name in ("n1", "n2"):
        node = plane.get("nodes", name, "")
        node.setdefault("spec", {})["unschedulable"] = True
        plane.store.replace(plane.rtype("nodes"), node)
    plane.create("deployments", _deployment(replicas=1))
    plane.sync()
    pod = plane.list("pods")[0]
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["message"] == (
        "0/2 nodes are available: 2 node(s) were unschedulable. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    )
    node = plane.get("nodes", "n2", "")
    node["spec"]["unschedulable"] = False
    plane.store.replace(plane.rtype("nodes"), node)
    plane.sync()
    assert plane.list("pods")[0]["spec"]["nodeName"] == "n2"


def test_a_pods_spec_changes_only_where_the_apiserver_allows(plane: Plane) -> None:
    plane.create("deployments", _deployment(replicas=1))
    plane.sync()
    pod = plane.list("pods")[0]
    pod["spec"]["containers"][0]["image"] = "a:2"
    pod["spec"]["tolerations"].append({"key": "k", "operator": "Exists"})
    plane.update("pods", copy.deepcopy(pod))
    pod = plane.get("pods", pod["metadata"]["name"])
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    with pytest.raises(ApiError) as excinfo:
        plane.update("pods", pod)
    assert excinfo.value.code == 422
    assert "pod updates may not change fields other than `spec.containers[*].image`" in str(
        excinfo.value.status()["message"]
    )
