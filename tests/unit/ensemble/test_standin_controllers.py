"""The ensemble's rendered manifests on the K3s stand-in's control plane, through the real kubectl 1.36.4.

A server without its own agent, and the design's three nodes (4 CPU / 8 GiB; the server labelled and tainted
as the cluster stage leaves it, the agents labelled for models) registered through the API; no kubelet runs,
so the test plays the kubelets' part through ``pods/status`` (phase, podIP from the node's podCIDR, Ready) and
by finishing the deletion of Terminating pods, as a kubelet does. What is checked is what the control plane
does with it: Deployments become ReplicaSets and Pods, the scheduler places them as the design says and binds
local-path volumes to the chosen nodes, ``kubectl rollout status`` finishes, a roster swap rolls only the
changed Deployments, EndpointSlices follow readiness, an unschedulable pod gets kube-scheduler's
FailedScheduling event, and deletion cascades as the garbage collector does it.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gorkheavy_lab.k3s.testing import Process, build_artifact, free_port, kubectl, running

from tests.unit.ensemble.rendering import Rendered, example_roster

MODELS = ["promptimizer", "llama", "qwen", "qwen-small", "judge"]
NS = "gorkheavy"
SIZE = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}


def _node(name: str, labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": SIZE,
            "allocatable": SIZE,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Path]]:
    binary = build_artifact(tmp_path_factory.mktemp("k3s-artifact"))
    root = tmp_path_factory.mktemp("k3s-server")
    kubeconfig = root / "k3s.yaml"
    args = [
        "server",
        "-d",
        str(root / "data"),
        "--https-listen-port",
        str(free_port()),
        "--disable-agent",
        "--node-ip",
        "127.0.0.1",
        "--write-kubeconfig",
        str(kubeconfig),
        # the nodes here post no heartbeats: the lifecycle controller must not mark them Unknown meanwhile
        "--kube-controller-manager-arg=node-monitor-grace-period=1h",
    ]
    with running(binary, root, args) as process:
        server_taint = [
            {"key": "node-role.kubernetes.io/control-plane", "value": "true", "effect": "NoSchedule"}
        ]
        nodes = [
            _node("k3s-server", {"node-role.kubernetes.io/control-plane": "true"}, server_taint),
            _node("k3s-agent-1", {"gorkheavy.lite/models": "true"}, []),
            _node("k3s-agent-2", {"gorkheavy.lite/models": "true"}, []),
        ]
        (root / "nodes.yaml").write_text(yaml.safe_dump_all(nodes))
        kubectl(kubeconfig, "create", "-f", str(root / "nodes.yaml"))
        yield process, kubeconfig


def _get(kubeconfig: Path, *what: str) -> Any:
    return json.loads(kubectl(kubeconfig, "get", *what, "-o", "json").stdout)


def _items(kubeconfig: Path, resource: str, *extra: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get(kubeconfig, resource, "-n", NS, *extra)["items"]
    return items


def _until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    msg = f"not within {timeout}s: {what} (last: {last!r})"
    raise AssertionError(msg)


def _pod_ip(kubeconfig: Path, node: str, index: int) -> str:
    cidr = _get(kubeconfig, "node", node)["spec"]["podCIDR"]
    return str(ipaddress.ip_network(cidr)[10 + index])


def _kubelet(kubeconfig: Path, tmp: Path, *, ready: bool = True, names: set[str] | None = None) -> None:
    """What each node's kubelet would write for its pods: Running, an address from the node's podCIDR, Ready;
    and the last word on pods being deleted (delete with grace period 0)."""
    for i, pod in enumerate(_items(kubeconfig, "pods")):
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        if not node or (names is not None and name not in names):
            continue
        if pod["metadata"].get("deletionTimestamp"):
            kubectl(
                kubeconfig, "delete", "pod", name, "-n", NS, "--grace-period=0", "--force", "--wait=false"
            )
            continue
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flag = "True" if ready else "False"
        ip = pod["status"].get("podIP") or _pod_ip(kubeconfig, node, i)
        status = {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": stamp,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
                {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": stamp}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        (tmp / "status.json").write_text(json.dumps({"status": status}))
        kubectl(
            kubeconfig,
            "patch",
            "pod",
            name,
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "--patch-file",
            str(tmp / "status.json"),
        )


def _apply(kubeconfig: Path, rendered: Rendered) -> None:
    for name in sorted(rendered.files):  # 10-namespace.yaml, 20-..., in the play's order
        kubectl(kubeconfig, "apply", "-f", str(rendered.directory / name))


def _owner(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["ownerReferences"][0]["name"])


def _rollout_ok(kubeconfig: Path, name: str) -> bool:
    done = kubectl(kubeconfig, "rollout", "status", f"deploy/{name}", "-n", NS, "--timeout=1s", check=False)
    return done.returncode == 0 and f'deployment "{name}" successfully rolled out' in done.stdout


@pytest.mark.timeout(300)
def test_the_ensemble_rolls_out_placed_as_the_design_says(
    cluster: tuple[Process, Path], example: Rendered, tmp_path: Path
) -> None:
    _process, kubeconfig = cluster
    nodes = {n["metadata"]["name"]: n for n in _get(kubeconfig, "nodes")["items"]}
    cidrs = sorted(n["spec"]["podCIDR"] for n in nodes.values())
    assert cidrs == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
    assert all(n["spec"]["podCIDRs"] == [n["spec"]["podCIDR"]] for n in nodes.values())

    _apply(kubeconfig, example)
    pods = _until(
        "six pods bound to nodes",
        lambda: (
            [p for p in _items(kubeconfig, "pods") if p["spec"].get("nodeName")]
            if len([p for p in _items(kubeconfig, "pods") if p["spec"].get("nodeName")]) == 6
            else None
        ),
    )
    where = {_owner(p).rsplit("-", 1)[0]: p["spec"]["nodeName"] for p in pods}
    assert where.pop("orchestrator") == "k3s-server"
    assert set(where) == set(MODELS)
    assert sorted(Counter(where.values()).values()) == [2, 3], where
    assert set(where.values()) == {"k3s-agent-1", "k3s-agent-2"}
    # the pods are the ReplicaSets', the ReplicaSets the Deployments'
    replicasets = {rs["metadata"]["name"]: rs for rs in _items(kubeconfig, "replicasets")}
    for pod in pods:
        rs = replicasets[_owner(pod)]
        assert pod["metadata"]["name"].startswith(rs["metadata"]["name"] + "-")
        assert pod["metadata"]["labels"]["pod-template-hash"] == rs["metadata"]["name"].rsplit("-", 1)[1]
        assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        assert pod["status"]["conditions"][0]["type"] == "PodScheduled"
    # every claim is bound to a local-path volume on the node of its pod
    volumes = {pv["metadata"]["name"]: pv for pv in _get(kubeconfig, "pv")["items"]}
    for claim in _items(kubeconfig, "pvc"):
        assert claim["status"]["phase"] == "Bound", claim
        pv = volumes[claim["spec"]["volumeName"]]
        owner = (
            "orchestrator"
            if claim["metadata"]["name"] == "orchestrator-memory"
            else claim["metadata"]["name"][: -len("-store")]
        )
        node = "k3s-server" if owner == "orchestrator" else where[owner]
        term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term == {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
        uid = claim["metadata"]["uid"]
        assert pv["metadata"]["name"] == f"pvc-{uid}"
        assert (
            pv["spec"]["hostPath"]["path"]
            == f"/var/lib/rancher/k3s/storage/pvc-{uid}_{NS}_{claim['metadata']['name']}"
        )
        assert pv["spec"]["claimRef"]["uid"] == uid
        assert pv["status"]["phase"] == "Bound"
    table = kubectl(kubeconfig, "get", "pv").stdout
    for word in ("local-path", "Bound", "RWO"):
        assert word in table

    waiting = kubectl(kubeconfig, "rollout", "status", "deploy/llama", "-n", NS, "--timeout=1s", check=False)
    assert (
        'Waiting for deployment "llama" rollout to finish: 0 of 1 updated replicas are available'
        in waiting.stdout
    )
    _kubelet(kubeconfig, tmp_path)
    for name in [*MODELS, "orchestrator"]:
        _until(f"rollout of {name}", lambda name=name: _rollout_ok(kubeconfig, name))
    deployment = _get(kubeconfig, "deploy", "llama", "-n", NS)
    status = deployment["status"]
    assert {
        k: status.get(k) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    } == dict.fromkeys(("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), 1)
    assert "unavailableReplicas" not in status
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conditions["Progressing"]["message"].startswith('ReplicaSet "llama-')
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    listed = kubectl(kubeconfig, "get", "pods", "-n", NS, "-o", "wide").stdout
    assert listed.count("Running") == 6
    assert "k3s-agent-1" in listed
    events = kubectl(kubeconfig, "get", "events", "-n", NS).stdout
    for reason in ("Scheduled", "SuccessfulCreate", "ScalingReplicaSet", "ProvisioningSucceeded"):
        assert reason in events


@pytest.mark.timeout(120)
def test_endpoint_slices_follow_the_pods_readiness(cluster: tuple[Process, Path], tmp_path: Path) -> None:
    _process, kubeconfig = cluster
    pod = next(p for p in _items(kubeconfig, "pods") if _owner(p).startswith("judge-"))

    def judge_slice() -> dict[str, Any]:
        slices = _items(kubeconfig, "endpointslices", "-l", "kubernetes.io/service-name=judge")
        assert len(slices) == 1
        return slices[0]

    ready = judge_slice()
    assert ready["addressType"] == "IPv4"
    assert ready["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert ready["ports"] == [{"name": "http", "port": 11434, "protocol": "TCP"}]
    endpoint = ready["endpoints"][0]
    assert endpoint["addresses"] == [pod["status"]["podIP"]]
    assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert endpoint["nodeName"] == pod["spec"]["nodeName"]
    assert endpoint["targetRef"]["name"] == pod["metadata"]["name"]
    endpoints = _get(kubeconfig, "endpoints", "judge", "-n", NS)
    assert endpoints["subsets"][0]["addresses"][0]["ip"] == pod["status"]["podIP"]

    _kubelet(kubeconfig, tmp_path, ready=False, names={pod["metadata"]["name"]})
    _until(
        "the slice to show judge not ready",
        lambda: judge_slice()["endpoints"][0]["conditions"]["ready"] is False,
    )
    endpoints = _get(kubeconfig, "endpoints", "judge", "-n", NS)
    assert "addresses" not in endpoints["subsets"][0]
    assert endpoints["subsets"][0]["notReadyAddresses"][0]["ip"] == pod["status"]["podIP"]
    _until(
        "judge not available",
        lambda: "unavailableReplicas" in _get(kubeconfig, "deploy", "judge", "-n", NS)["status"],
    )
    _kubelet(kubeconfig, tmp_path, names={pod["metadata"]["name"]})
    _until(
        "the slice to show judge ready again",
        lambda: judge_slice()["endpoints"][0]["conditions"]["ready"] is True,
    )


@pytest.mark.timeout(300)
def test_a_roster_swap_rolls_only_the_changed_deployments(
    cluster: tuple[Process, Path], render: Callable[..., Rendered], tmp_path: Path
) -> None:
    _process, kubeconfig = cluster
    before = {p["metadata"]["name"]: _owner(p) for p in _items(kubeconfig, "pods")}
    roster = example_roster()
    for entry in roster:
        if entry["name"] == "qwen":
            entry["model"] = "qwen2.5-coder:3b"
    _apply(kubeconfig, render("swap", {"gorkheavy_models": roster}))

    # Recreate: the old pods are deleted first (and stay Terminating until their kubelet finishes them)
    def terminating() -> list[str]:
        return [
            p["metadata"]["name"]
            for p in _items(kubeconfig, "pods")
            if p["metadata"].get("deletionTimestamp")
        ]

    gone = _until(
        "the old qwen and orchestrator pods terminating",
        lambda: sorted(terminating()) if len(terminating()) == 2 else None,
    )
    assert sorted(before[n].rsplit("-", 1)[0] for n in gone) == ["orchestrator", "qwen"]
    assert "Terminating" in kubectl(kubeconfig, "get", "pods", "-n", NS).stdout
    assert not [p for p in _items(kubeconfig, "pods") if p["metadata"]["name"] not in before], (
        "Recreate waits for the old pod"
    )
    _kubelet(kubeconfig, tmp_path)
    _until(
        "new qwen and orchestrator pods",
        lambda: (
            len(
                [
                    p
                    for p in _items(kubeconfig, "pods")
                    if p["metadata"]["name"] not in before and p["spec"].get("nodeName")
                ]
            )
            == 2
        ),
    )
    _kubelet(kubeconfig, tmp_path)
    for name in ("qwen", "orchestrator"):
        _until(f"rollout of {name}", lambda name=name: _rollout_ok(kubeconfig, name))
    after = {p["metadata"]["name"]: _owner(p) for p in _items(kubeconfig, "pods")}
    unchanged = {n: o for n, o in before.items() if o.rsplit("-", 1)[0] not in {"qwen", "orchestrator"}}
    assert {n: after.get(n) for n in unchanged} == unchanged, "only qwen and the orchestrator rolled"
    replicasets = {rs["metadata"]["name"]: rs for rs in _items(kubeconfig, "replicasets")}
    for name in ("qwen", "orchestrator"):
        mine = [rs for rs in replicasets.values() if _owner(rs) == name]
        revisions = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in mine}
        assert set(revisions) == {"1", "2"}
        assert revisions["1"]["spec"]["replicas"] == 0
        assert revisions["2"]["spec"]["replicas"] == 1
        assert (
            _get(kubeconfig, "deploy", name, "-n", NS)["metadata"]["annotations"][
                "deployment.kubernetes.io/revision"
            ]
            == "2"
        )
    for name in ("llama", "judge"):
        assert len([rs for rs in replicasets.values() if _owner(rs) == name]) == 1
    history = kubectl(kubeconfig, "rollout", "history", "deploy/qwen", "-n", NS).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]


@pytest.mark.timeout(120)
def test_a_pod_that_fits_nowhere_gets_the_schedulers_failed_scheduling_event(
    cluster: tuple[Process, Path], tmp_path: Path
) -> None:
    _process, kubeconfig = cluster
    big = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "big", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "big"}},
            "template": {
                "metadata": {"labels": {"app": "big"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "python:3.11-slim",
                            "resources": {"requests": {"cpu": "3500m"}},
                        }
                    ]
                },
            },
        },
    }
    (tmp_path / "big.json").write_text(json.dumps(big))
    kubectl(kubeconfig, "apply", "-f", str(tmp_path / "big.json"))
    message = (
        "0/3 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: true}, 2 Insufficient cpu. "
        "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )

    def failed() -> list[dict[str, Any]]:
        return [
            e
            for e in _items(kubeconfig, "events", "--field-selector", "reason=FailedScheduling")
            if e["involvedObject"]["name"].startswith("big-")
        ]

    event = _until("FailedScheduling", failed)[0]
    assert event["message"] == message
    assert (event["type"], event["source"]["component"]) == ("Warning", "default-scheduler")
    pod = next(p for p in _items(kubeconfig, "pods", "-l", "app=big"))
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", message)
    described = kubectl(kubeconfig, "describe", "pod", pod["metadata"]["name"], "-n", NS).stdout
    assert "FailedScheduling" in described
    assert "Insufficient cpu" in described

    # a smaller request fits once the template changes: a new ReplicaSet, the pending pod goes at once
    big["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "100m"
    (tmp_path / "big.json").write_text(json.dumps(big))
    kubectl(kubeconfig, "apply", "-f", str(tmp_path / "big.json"))
    placed = _until(
        "the smaller pod bound",
        lambda: [p for p in _items(kubeconfig, "pods", "-l", "app=big") if p["spec"].get("nodeName")],
    )
    assert placed[0]["spec"]["nodeName"] in {"k3s-agent-1", "k3s-agent-2"}
    # maxUnavailable 25% of one replica is 0: the old pod goes only once the new one is available
    time.sleep(1)
    assert len(_items(kubeconfig, "pods", "-l", "app=big")) == 2
    _kubelet(kubeconfig, tmp_path, names={placed[0]["metadata"]["name"]})
    _until("the old unschedulable pod gone", lambda: len(_items(kubeconfig, "pods", "-l", "app=big")) == 1)


@pytest.mark.timeout(120)
def test_deletion_cascades_to_replica_sets_and_pods(cluster: tuple[Process, Path], tmp_path: Path) -> None:
    _process, kubeconfig = cluster
    # foreground: the Deployment stays until its pods are gone, which needs the kubelet's last word
    kubectl(kubeconfig, "delete", "deploy", "big", "-n", NS, "--cascade=foreground", "--wait=false")
    deployment = _until(
        "big being deleted",
        lambda: (
            _get(kubeconfig, "deploy", "big", "-n", NS)["metadata"].get("deletionTimestamp")
            and _get(kubeconfig, "deploy", "big", "-n", NS)
        ),
    )
    assert "foregroundDeletion" in deployment["metadata"]["finalizers"]
    _until(
        "big's pod terminating",
        lambda: all(
            p["metadata"].get("deletionTimestamp") for p in _items(kubeconfig, "pods", "-l", "app=big")
        ),
    )
    time.sleep(1)
    assert _items(kubeconfig, "deployments", "--field-selector", "metadata.name=big"), (
        "kept while its pod terminates"
    )
    _kubelet(kubeconfig, tmp_path)
    _until(
        "big and its replica sets gone",
        lambda: (
            not _items(kubeconfig, "deployments", "--field-selector", "metadata.name=big")
            and not [rs for rs in _items(kubeconfig, "replicasets") if _owner(rs) == "big"]
        ),
    )

    # background (kubectl's default): the Deployment goes at once, then its ReplicaSet, then its pod
    kubectl(kubeconfig, "delete", "deploy", "judge", "-n", NS)
    _until(
        "judge's pod terminating",
        lambda: all(
            p["metadata"].get("deletionTimestamp")
            for p in _items(kubeconfig, "pods")
            if _owner(p).startswith("judge-")
        ),
    )
    assert not [rs for rs in _items(kubeconfig, "replicasets") if _owner(rs) == "judge"]
    # no kubelet finishes it here: a pod on a node whose kubelet is gone stays Terminating
    time.sleep(1.5)
    assert [p for p in _items(kubeconfig, "pods") if _owner(p).startswith("judge-")]
    _kubelet(kubeconfig, tmp_path)
    _until(
        "judge's pod gone",
        lambda: not [p for p in _items(kubeconfig, "pods") if p["metadata"]["name"].startswith("judge-")],
    )
