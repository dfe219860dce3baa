"""The ensemble's apply path (playbooks/ensemble.yml, kubernetes.core.k8s) against the K3s stand-in's API.

The stand-in runs as a local process with its own data directory and kubeconfig; the playbook runs with the
example inventory pointed at that kubeconfig. Nothing is shipped to a node here
(``orchestrator_artifact_hosts`` is empty) and the rollout wait is off: the stand-in's control plane turns
the Deployments into pods and schedules them on its one node (the server, where only the orchestrator fits),
but no kubelet runs them here, so no Deployment ever becomes available. What is checked is what the API
sees: the objects created, a second run changed=0 through the same path, ``--check --diff`` reporting a real
difference without writing it, a roster removal deleting exactly that model's objects, the real kubectl
listing them, ``kubectl rollout status`` reading the Deployments' status and the scheduler's reason for the
models' pods; and the wait's failure report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.k3s.testing import Process, build_artifact, free_port, kubectl, running

from tests.unit.ensemble.rendering import example_roster, run_ansible

BIN = Path(sys.executable).parent
MODELS = ["promptimizer", "llama", "qwen", "qwen-small", "judge"]


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
        "--node-name",
        "ens-server",
        "--node-ip",
        "127.0.0.1",
        "--write-kubeconfig",
        str(kubeconfig),
    ]
    with running(binary, root, args, ready="Annotations and labels have been set successfully") as process:
        yield process, kubeconfig


def _run(
    kubeconfig: Path, cache: Path, extra_vars: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    wanted = {
        "gorkheavy_k3s_kubeconfig_path": str(kubeconfig),
        "orchestrator_artifact_hosts": [],
        "orchestrator_artifact_cache_dir": str(cache),
        **extra_vars,
    }
    args = [str(BIN / "ansible-playbook"), "-i", "inventory/example", "playbooks/ensemble.yml"]
    return run_ansible([*args, "-e", json.dumps(wanted), *extra])


def _play(kubeconfig: Path, cache: Path, *extra: str, roster: list[Any] | None = None) -> str:
    extra_vars: dict[str, Any] = {"k8s_manifests_wait": False}
    if roster is not None:
        extra_vars["gorkheavy_models"] = roster
    result = _run(kubeconfig, cache, extra_vars, *extra)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    return result.stdout


def _recap(out: str) -> str:
    return out[out.rfind("PLAY RECAP") :]


def _names(kubeconfig: Path, resource: str) -> set[str]:
    listed = kubectl(kubeconfig, "get", resource, "-n", "gorkheavy", "-o", "json")
    return {item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_apply_second_run_check_diff_swap_and_removal(
    cluster: tuple[Process, Path], tmp_path_factory: Any
) -> None:
    """One cluster's life: apply, apply again (changed=0), preview a swap, apply it, remove a model."""
    _process, kubeconfig = cluster
    cache = tmp_path_factory.mktemp("artifacts")
    first = _play(kubeconfig, cache)
    assert "changed=0" not in _recap(first)
    assert _names(kubeconfig, "deployments") == {*MODELS, "orchestrator"}
    assert _names(kubeconfig, "services") == {*MODELS, "orchestrator"}
    assert _names(kubeconfig, "persistentvolumeclaims") == {f"{m}-store" for m in MODELS} | {
        "orchestrator-memory"
    }
    assert _names(kubeconfig, "networkpolicies") == {
        "default-deny",
        "models-ingress",
        "models-egress",
        "orchestrator-ingress",
        "orchestrator-egress",
    }
    assert _names(kubeconfig, "configmaps") == {"orchestrator-config", "orchestrator-install"}

    second = _play(kubeconfig, cache)
    assert "changed=0" in _recap(second), _recap(second)

    # What an operator types, with the real kubectl.
    table = kubectl(kubeconfig, "get", "deploy,svc,pvc,networkpolicy", "-n", "gorkheavy").stdout
    for name in (*MODELS, "orchestrator", "default-deny"):
        assert name in table
    # No kubelet runs pods here, so the rollout waits; kubectl reads the deployment controller's status.
    rollout = kubectl(
        kubeconfig, "rollout", "status", "deploy/llama", "-n", "gorkheavy", "--timeout=3s", check=False
    )
    assert rollout.returncode == 1
    assert 'Waiting for deployment "llama" rollout to finish: 0 of 1 updated replicas are available' in (
        rollout.stdout
    )
    # the models stay off the server, whose node is the only one: the scheduler says why
    events = kubectl(
        kubeconfig, "get", "events", "-n", "gorkheavy", "--field-selector", "reason=FailedScheduling"
    )
    assert "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector." in events.stdout
    orchestrator = json.loads(
        kubectl(kubeconfig, "get", "pods", "-n", "gorkheavy", "-l", "app=orchestrator", "-o", "json").stdout
    )
    assert [p["spec"]["nodeName"] for p in orchestrator["items"]] == ["ens-server"]
    # The server defaulted fields the templates leave out, and the apply path did not fight them.
    service = json.loads(kubectl(kubeconfig, "get", "svc", "llama", "-n", "gorkheavy", "-o", "json").stdout)
    assert service["spec"]["clusterIP"].startswith("10.43.")
    deployment = json.loads(
        kubectl(kubeconfig, "get", "deploy", "llama", "-n", "gorkheavy", "-o", "json").stdout
    )
    assert deployment["metadata"]["generation"] == 1
    assert deployment["spec"]["progressDeadlineSeconds"] == 600
    assert "kubectl.kubernetes.io/last-applied-configuration" in deployment["metadata"]["annotations"]

    before = json.loads(kubectl(kubeconfig, "get", "deploy", "qwen", "-n", "gorkheavy", "-o", "json").stdout)

    swapped = example_roster()
    for entry in swapped:
        if entry["name"] == "qwen":
            entry["model"] = "qwen2.5-coder:3b"
    preview = _play(kubeconfig, cache, "--check", "--diff", roster=swapped)
    assert "qwen2.5-coder:3b" in preview
    after = json.loads(kubectl(kubeconfig, "get", "deploy", "qwen", "-n", "gorkheavy", "-o", "json").stdout)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "check mode wrote"

    applied = _play(kubeconfig, cache, roster=swapped)
    recap = _recap(applied)
    assert "changed=0" not in recap, recap
    after = json.loads(kubectl(kubeconfig, "get", "deploy", "qwen", "-n", "gorkheavy", "-o", "json").stdout)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    llama = json.loads(kubectl(kubeconfig, "get", "deploy", "llama", "-n", "gorkheavy", "-o", "json").stdout)
    assert llama["metadata"]["generation"] == 1, "an untouched model is not rewritten"

    smaller = [e for e in swapped if e["name"] != "llama"]
    _play(kubeconfig, cache, roster=smaller)
    assert "llama" not in _names(kubeconfig, "deployments")
    assert "llama" not in _names(kubeconfig, "services")
    assert "llama-store" not in _names(kubeconfig, "persistentvolumeclaims")
    assert _names(kubeconfig, "deployments") == {
        "promptimizer",
        "qwen",
        "qwen-small",
        "judge",
        "orchestrator",
    }
    config = kubectl(kubeconfig, "get", "cm", "orchestrator-config", "-n", "gorkheavy", "-o", "json").stdout
    assert "llama3.2:1b" not in json.loads(config)["data"]["config.yml"]


POD_STATUS = {
    "phase": "Pending",
    "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {
            "type": "Ready",
            "status": "False",
            "reason": "ContainersNotReady",
            "message": "containers with unready status: [ollama]",
        },
    ],
    "initContainerStatuses": [
        {
            "name": "pull",
            "ready": False,
            "restartCount": 3,
            "image": "docker.io/ollama/ollama:0.33.3",
            "imageID": "",
            "state": {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 40s restarting failed container",
                }
            },
            "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
        }
    ],
    "containerStatuses": [
        {
            "name": "ollama",
            "ready": False,
            "restartCount": 0,
            "image": "docker.io/ollama/ollama:0.33.3",
            "imageID": "",
            "state": {"waiting": {"reason": "PodInitializing"}},
        }
    ],
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rollout_that_does_not_finish_names_the_pod_and_its_reason(
    cluster: tuple[Process, Path], tmp_path_factory: Any, tmp_path: Path
) -> None:
    """The wait and the report through the real tasks: a pod of llama, as the kubelet would report it when its
    pull step keeps failing (no kubelet runs pods here, so the test writes that pod and its event through the
    API; it carries llama's labels but not the ReplicaSet's pod-template-hash, so no ReplicaSet adopts it),
    makes the play fail after the rollout timeout with the pod's state and event, next to the ReplicaSet's
    own pod that the scheduler could not place."""
    _process, kubeconfig = cluster
    cache = tmp_path_factory.mktemp("artifacts")
    _play(kubeconfig, cache)
    deployment = json.loads(
        kubectl(kubeconfig, "get", "deploy", "llama", "-n", "gorkheavy", "-o", "json").stdout
    )
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "llama-5d8f7c9b4-x2kq8",
            "namespace": "gorkheavy",
            "labels": template["metadata"]["labels"],
        },
        "spec": {**template["spec"], "nodeName": "k3s-agent-1"},
    }
    (tmp_path / "pod.json").write_text(json.dumps(pod), encoding="utf-8")
    kubectl(kubeconfig, "create", "-f", str(tmp_path / "pod.json"))
    kubectl(
        kubeconfig,
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        "gorkheavy",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": POD_STATUS}),
    )
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "llama-5d8f7c9b4-x2kq8.backoff", "namespace": "gorkheavy"},
        "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": "gorkheavy"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container pull in pod llama-5d8f7c9b4-x2kq8",
        "type": "Warning",
        "count": 4,
        "source": {"component": "kubelet", "host": "k3s-agent-1"},
    }
    (tmp_path / "event.json").write_text(json.dumps(event), encoding="utf-8")
    kubectl(kubeconfig, "create", "-f", str(tmp_path / "event.json"))

    rollout = kubectl(
        kubeconfig, "rollout", "status", "deploy/llama", "-n", "gorkheavy", "--timeout=5s", check=False
    )
    assert (
        'Waiting for deployment "llama" rollout to finish: 0 of 1 updated replicas are available'
        in rollout.stdout
    )

    result = _run(kubeconfig, cache, {"ollama_models_wait_timeout": 2})
    out = result.stdout
    assert result.returncode == 2, out[-4000:]
    assert "did not finish within 2 s" in out
    assert "pod llama-5d8f7c9b4-x2kq8 (node: k3s-agent-1, phase: Pending) is not ready" in out
    assert "init container pull: waiting: CrashLoopBackOff" in out
    assert "last run ended: Error, exit code 1; 3 restart(s)" in out
    assert "event Warning BackOff: Back-off restarting failed container pull" in out
    assert "event Warning FailedScheduling: 0/1 nodes are available" in out
    assert "gorkheavy-orchestrator" not in out.split("Stop with the reason", 1)[1], "it stops at the models"
