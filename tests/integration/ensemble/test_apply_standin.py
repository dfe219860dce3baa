"""The ensemble's apply path (playbooks/ensemble.yml, kubernetes.core.k8s) against the K3s stand-in's API.

The stand-in runs as a local process with its own data directory and kubeconfig; the playbook runs with the
example inventory pointed at that kubeconfig. Nothing is shipped to a node here
(``orchestrator_artifact_hosts`` is empty) and the rollout wait is off: the stand-in's control plane turns
the Deployments into pods and schedules them on its one node (the server, where only the orchestrator fits),
but no kubelet runs them here, so no Deployment ever becomes available. What is checked is what the API
sees: the objects created, a second run changed=0 through the same path, ``--check --diff`` reporting a real
difference without writing it, a roster removal deleting exactly that model's objects, the real kubectl
listing them, ``kubectl rollout status`` reading the Deployments' status and the scheduler's reason for the
models' pods. The wait's failure report is test_rollout_report_standin.py's (a stand-in of its own, so the
two run side by side).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.k3s.testing import Process, kubectl

from tests.integration.ensemble.conftest import BIN, play
from tests.unit.ensemble.rendering import example_roster, run_ansible

MODELS = ["promptimizer", "llama", "qwen", "qwen-small", "judge"]


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
    # --check --diff on a cluster without the ensemble: a preview of everything, nothing written
    preview = play(kubeconfig, cache, "--check", "--diff")
    assert "changed=0" not in _recap(preview)
    for shown in (
        "kind: Namespace",
        "kind: Deployment",
        "name: orchestrator",
        "image: docker.io/ollama/ollama:0.33.3",
    ):
        assert shown in preview, shown
    missing = kubectl(kubeconfig, "get", "namespace", "gorkheavy", check=False)
    assert 'namespaces "gorkheavy" not found' in missing.stderr, "check mode wrote"
    first = play(kubeconfig, cache)
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

    second = play(kubeconfig, cache)
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
    preview = play(kubeconfig, cache, "--check", "--diff", roster=swapped)
    assert "qwen2.5-coder:3b" in preview
    after = json.loads(kubectl(kubeconfig, "get", "deploy", "qwen", "-n", "gorkheavy", "-o", "json").stdout)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "check mode wrote"

    applied = play(kubeconfig, cache, roster=swapped)
    recap = _recap(applied)
    assert "changed=0" not in recap, recap
    after = json.loads(kubectl(kubeconfig, "get", "deploy", "qwen", "-n", "gorkheavy", "-o", "json").stdout)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    llama = json.loads(kubectl(kubeconfig, "get", "deploy", "llama", "-n", "gorkheavy", "-o", "json").stdout)
    assert llama["metadata"]["generation"] == 1, "an untouched model is not rewritten"

    smaller = [e for e in swapped if e["name"] != "llama"]
    play(kubeconfig, cache, roster=smaller)
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


def test_an_unknown_field_is_refused_before_anything_is_sent(
    cluster: tuple[Process, Path], tmp_path: Path
) -> None:
    """The apply path validates each object strictly against the cluster's schema: a misspelt field stops the
    run naming it, and the object is not created (the API server alone would only warn and drop it)."""
    _process, kubeconfig = cluster
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "typo", "namespace": "default"},
            "data": {"a": "b"},
            "datta": {"c": "d"},
        }
    ]
    playbook = tmp_path / "apply.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Apply one object",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "roles": [
                        {
                            "role": "gorkheavy.lite.k8s_manifests",
                            "k8s_manifests_set": "typo-test",
                            "k8s_manifests_namespace": "default",
                            "k8s_manifests_kubeconfig": str(kubeconfig),
                            "k8s_manifests_objects": objects,
                            "k8s_manifests_prune": False,
                            "k8s_manifests_wait": False,
                        }
                    ],
                }
            ]
        )
    )
    result = run_ansible([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)])
    assert result.returncode == 2, result.stdout[-3000:]
    assert "'datta' was unexpected" in result.stdout, result.stdout[-3000:]
    listed = kubectl(kubeconfig, "get", "configmap", "typo", "-n", "default", check=False)
    assert 'configmaps "typo" not found' in listed.stderr
