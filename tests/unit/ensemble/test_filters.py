"""The collection's Kubernetes filters: set labels, pruning, tolerations, the not-ready pod report."""

from __future__ import annotations

import yaml

from tests.unit.ensemble import rendering  # noqa: F401  (puts collections/ on sys.path)

k8s = __import__("ansible_collections.gorkheavy.lite.plugins.filter.k8s", fromlist=["FilterModule"])


def test_in_set_labels_a_copy_and_keeps_other_labels() -> None:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"app": "a"}}}
    (out,) = k8s.k8s_in_set([obj], "gorkheavy-models")
    assert out["metadata"]["labels"] == {
        "app": "a",
        "app.kubernetes.io/managed-by": "gorkheavy-lite",
        "gorkheavy.lite/set": "gorkheavy-models",
    }
    assert obj["metadata"]["labels"] == {"app": "a"}
    assert k8s.k8s_set_selector("x") == [
        "app.kubernetes.io/managed-by=gorkheavy-lite",
        "gorkheavy.lite/set=x",
    ]


def test_in_namespaces_splits_objects_by_their_namespace() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gorkheavy"}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "gorkheavy"}}
    other = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "default"}}
    assert k8s.k8s_in_namespaces([ns, svc, other], ["gorkheavy"], True) == [svc]
    # the rest, the cluster-scoped Namespace among them, go to the API as usual
    assert k8s.k8s_in_namespaces([ns, svc, other], ["gorkheavy"], False) == [ns, other]
    assert k8s.k8s_in_namespaces([ns, svc], [], False) == [ns, svc]


def test_unwanted_never_returns_objects_outside_the_set() -> None:
    def res(name: str, labels: dict[str, str]) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "g", "labels": labels},
        }

    ours = {"app.kubernetes.io/managed-by": "gorkheavy-lite", "gorkheavy.lite/set": "s"}
    found = [
        {
            "resources": [
                res("keep", ours),
                res("gone", ours),
                res("foreign", {"gorkheavy.lite/set": "s"}),
                res("other-set", {**ours, "gorkheavy.lite/set": "t"}),
            ]
        }
    ]
    wanted = [res("keep", {})]
    assert k8s.k8s_unwanted(found, wanted, "s") == [
        {"api_version": "v1", "kind": "Service", "name": "gone", "namespace": "g"}
    ]
    # what k8s_apply_set is told to keep beside the objects it applies: who they are, not what they hold
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keep", "namespace": "g"},
        "data": {"t": "x"},
    }
    assert k8s.k8s_ids([secret]) == [{"kind": "Secret", "name": "keep", "namespace": "g"}]
    assert k8s.k8s_unwanted(found, k8s.k8s_ids([res("keep", {})]), "s") == k8s.k8s_unwanted(
        found, wanted, "s"
    )
    assert k8s.k8s_object_label(secret) == "Secret g/keep"
    assert k8s.k8s_object_label({"kind": "Namespace", "name": "g", "namespace": None}) == "Namespace g"


def test_tolerations_tolerate_exactly_the_taints_given_as_k3s_strings_or_mappings() -> None:
    taints = [
        "node-role.kubernetes.io/control-plane:NoSchedule",
        {"key": "dedicated", "value": "ai", "effect": "NoExecute"},
    ]
    assert k8s.k8s_tolerations(taints) == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoExecute"},
    ]


POD = yaml.safe_load(
    """
metadata: {name: llama-6f9c-x2, namespace: gorkheavy}
spec: {nodeName: k3s-agent-1}
status:
  phase: Pending
  conditions:
    - {type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status:
    [ollama]"}
  initContainerStatuses:
    - name: pull
      restartCount: 2
      state: {waiting: {reason: CrashLoopBackOff, message: back-off 20s restarting failed container}}
      lastState: {terminated: {reason: Error, exitCode: 1}}
  containerStatuses:
    - {name: ollama, ready: false, restartCount: 0, state: {waiting: {reason: PodInitializing}}}
"""
)
READY = {"metadata": {"name": "qwen-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
PENDING = yaml.safe_load(
    """
metadata: {name: judge-7, namespace: gorkheavy}
status:
  phase: Pending
  conditions:
    - {type: PodScheduled, status: "False", reason: Unschedulable,
       message: "0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint."}
"""
)


def test_the_report_names_each_pod_that_is_not_ready_with_its_reasons() -> None:
    events = [
        {
            "involvedObject": {"kind": "Pod", "name": "llama-6f9c-x2"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting failed container pull",
            "count": 4,
            "lastTimestamp": "2026-12-01T10:00:00Z",
        },
        {
            "involvedObject": {"kind": "Pod", "name": "qwen-1"},
            "type": "Normal",
            "reason": "Pulled",
            "message": "x",
        },
    ]
    targets = k8s.k8s_log_targets([POD, READY, PENDING])
    assert targets == [{"pod": "llama-6f9c-x2", "namespace": "gorkheavy", "container": "pull"}]
    logs = [
        {"item": targets[0], "log_lines": ["pull: pulling llama3.2:1b", "pull: could not pull llama3.2:1b"]}
    ]
    report = k8s.k8s_pod_report([POD, READY, PENDING], events, logs)
    assert report.splitlines() == [
        "pod llama-6f9c-x2 (node: k3s-agent-1, phase: Pending) is not ready",
        "  condition Ready: ContainersNotReady containers with unready status: [ollama]",
        "  init container pull: waiting: CrashLoopBackOff (back-off 20s restarting failed container);"
        " last run ended: Error, exit code 1; 2 restart(s)",
        "  container ollama: waiting: PodInitializing",
        "  event Warning BackOff: Back-off restarting failed container pull (x4)",
        "  last log lines of pull:",
        "    pull: pulling llama3.2:1b",
        "    pull: could not pull llama3.2:1b",
        "pod judge-7 (node: not scheduled, phase: Pending) is not ready",
        "  condition PodScheduled: Unschedulable 0/3 nodes are available: 2 Insufficient memory,"
        " 1 node(s) had untolerated taint.",
    ]


def test_yaml_docs_write_scripts_as_literal_blocks() -> None:
    text = k8s.k8s_yaml_docs([{"kind": "ConfigMap", "data": {"run.sh": "set -eu\necho hi\n"}}])
    assert text == "---\nkind: ConfigMap\ndata:\n  run.sh: |\n    set -eu\n    echo hi\n"
    assert yaml.safe_load(text.removeprefix("---\n")) == {
        "kind": "ConfigMap",
        "data": {"run.sh": "set -eu\necho hi\n"},
    }
