"""The rollout wait of the ensemble's apply path and its failure report, against the K3s stand-in's API: a pod
whose pull step keeps failing stops the play with the pod's state and event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.k3s.testing import Process, kubectl

from tests.integration.ensemble.conftest import play, run_ensemble

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
    play(kubeconfig, cache)
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

    result = run_ensemble(kubeconfig, cache, {"ollama_models_wait_timeout": 2})
    out = result.stdout
    assert result.returncode == 2, out[-4000:]
    assert "did not finish within 2 s" in out
    assert "pod llama-5d8f7c9b4-x2kq8 (node: k3s-agent-1, phase: Pending) is not ready" in out
    assert "init container pull: waiting: CrashLoopBackOff" in out
    assert "last run ended: Error, exit code 1; 3 restart(s)" in out
    assert "event Warning BackOff: Back-off restarting failed container pull" in out
    assert "event Warning FailedScheduling: 0/1 nodes are available" in out
    assert "gorkheavy-orchestrator" not in out.split("Stop with the reason", 1)[1], "it stops at the models"
