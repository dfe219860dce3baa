"""The filters the K3s roles read K3s's formats with (plugins/filter/k3s.py)."""

from __future__ import annotations

import datetime

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.gorkheavy.lite.plugins.filter import k3s

FLAGS = ["tls-san", "node-label", "node-taint", "node-ip", "disable", "write-kubeconfig-mode", "token-file"]

# What K3s writes to /etc/rancher/k3s/k3s.yaml (certificate data shortened).
K3S_KUBECONFIG = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EgREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""


@pytest.mark.parametrize("tag", ["v1.36.4+k3s1", "v1.36.3+k3s2", "v1.37.10+k3s12"])
def test_release_tags_are_accepted(tag: str) -> None:
    assert k3s.k3s_version_valid(tag)
    assert k3s.k3s_version(tag)["tag"] == tag


@pytest.mark.parametrize(
    "tag",
    ["latest", "stable", "1.36.4+k3s1", "v1.36.4", "v1.36.4-rc1+k3s1", "v1.36+k3s1", "v1.36.4+k3s1 ", 1.36],
)
def test_anything_else_is_refused_with_the_expected_form(tag: object) -> None:
    assert not k3s.k3s_version_valid(tag)
    with pytest.raises(AnsibleFilterError, match=r"expected the form v1\.<minor>\.<patch>\+k3s<n>"):
        k3s.k3s_version(str(tag))


def test_versions_compare_by_numbers_not_text() -> None:
    assert k3s.k3s_version_compare("v1.36.3+k3s1", "v1.36.4+k3s1") == -1
    assert k3s.k3s_version_compare("v1.36.10+k3s1", "v1.36.9+k3s1") == 1
    assert k3s.k3s_version_compare("v1.36.4+k3s2", "v1.36.4+k3s1") == 1
    assert k3s.k3s_version_compare("v1.36.4+k3s1", "v1.36.4+k3s1") == 0
    assert k3s.k3s_version_compare("v1.37.0+k3s1", "v1.36.9+k3s9") == 1


def test_version_is_read_from_k3s_two_line_output() -> None:
    out = "k3s version v1.36.4+k3s1 (0a1b2c3d)\ngo version go1.24.6\n"
    assert k3s.k3s_version_output(out) == "v1.36.4+k3s1"
    assert k3s.k3s_version_output("Kubernetes v1.36.4") == ""
    assert k3s.k3s_version_output("") == ""


def test_checksum_file_is_parsed_as_sha256sum_writes_it() -> None:
    a, b = "a" * 64, "B" * 64
    sums = k3s.k3s_checksums(f"{a}  k3s\n{b} *k3s-airgap-images-amd64.tar\n\n")
    assert sums == {"k3s": a, "k3s-airgap-images-amd64.tar": b.lower()}
    with pytest.raises(AnsibleFilterError, match="line 2"):
        k3s.k3s_checksums(f"{a}  k3s\nnot-a-sum  k3s-arm64\n")


def test_unknown_config_keys_name_the_closest_valid_key() -> None:
    errors = k3s.k3s_config_key_errors(
        {"tls_san": ["a"], "node-labels": ["x=y"], "node-ip": "1.2.3.4"}, FLAGS
    )
    assert errors == [
        '"tls_san" is not a K3s option; the closest valid key is "tls-san"',
        '"node-labels" is not a K3s option; the closest valid key is "node-label"',
    ]
    assert k3s.k3s_config_key_errors({"disable+": ["traefik"], "tls-san": []}, FLAGS) == []
    assert k3s.k3s_config_key_errors({"zzzqqq": 1}, FLAGS) == ['"zzzqqq" is not a K3s option']


def test_kubeconfig_is_renamed_and_pointed_at_the_server_as_yaml() -> None:
    out = k3s.k3s_kubeconfig(K3S_KUBECONFIG, "https://192.0.2.10:6443", "lab")
    assert out["clusters"] == [
        {
            "name": "lab",
            "cluster": {"certificate-authority-data": "Q0EgREFUQQ==", "server": "https://192.0.2.10:6443"},
        }
    ]
    assert out["users"] == [
        {"name": "lab", "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}
    ]
    assert out["contexts"] == [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]
    assert out["current-context"] == "lab"
    assert out["kind"] == "Config"
    # The input is not modified and a YAML round trip gives the same document.
    assert yaml.safe_load(K3S_KUBECONFIG)["clusters"][0]["name"] == "default"
    assert yaml.safe_load(yaml.safe_dump(out)) == out


def test_kubeconfig_that_is_not_k3s_shape_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="one cluster, one user, one context"):
        k3s.k3s_kubeconfig("apiVersion: v1\nclusters: []\n", "https://x:6443", "lab")
    with pytest.raises(AnsibleFilterError, match="not a YAML mapping"):
        k3s.k3s_kubeconfig("- a\n", "https://x:6443", "lab")


def _node(
    labels: dict[str, str], taints: list[dict[str, str]], annotations: dict[str, str]
) -> dict[str, object]:
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": {"taints": taints}}


def _apply(node: dict[str, object], patch: dict[str, object]) -> dict[str, object]:
    """Apply a JSON merge patch (RFC 7386), as the API server does."""

    def merge(target: object, change: object) -> object:
        if not isinstance(change, dict):
            return change
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in change.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value)
        return out

    result = merge(node, patch)
    assert isinstance(result, dict)
    return result


def test_node_patch_sets_wanted_labels_and_taints_and_keeps_foreign_ones() -> None:
    foreign_taint = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
    node = _node({"kubernetes.io/hostname": "a"}, [foreign_taint], {})
    patch = k3s.k3s_node_patch(
        node, {"gorkheavy.lite/models": "true"}, ["dedicated=models:NoSchedule"], "gorkheavy.lite"
    )
    after = _apply(node, patch)
    meta, spec = after["metadata"], after["spec"]
    assert isinstance(meta, dict)
    assert isinstance(spec, dict)
    assert meta["labels"] == {"kubernetes.io/hostname": "a", "gorkheavy.lite/models": "true"}
    assert spec["taints"] == [foreign_taint, {"key": "dedicated", "value": "models", "effect": "NoSchedule"}]
    assert meta["annotations"]["gorkheavy.lite/managed-labels"] == "gorkheavy.lite/models"
    # Idempotent: once applied, nothing more to do.
    assert (
        k3s.k3s_node_patch(
            after, {"gorkheavy.lite/models": "true"}, ["dedicated=models:NoSchedule"], "gorkheavy.lite"
        )
        == {}
    )


def test_node_patch_removes_what_it_managed_and_no_longer_wants() -> None:
    node = _apply(
        _node({"kubernetes.io/hostname": "a"}, [], {}),
        k3s.k3s_node_patch(
            _node({"kubernetes.io/hostname": "a"}, [], {}), {"a": "1", "b": "2"}, ["t:NoSchedule"], "p"
        ),
    )
    patch = k3s.k3s_node_patch(node, {"a": "1"}, [], "p")
    after = _apply(node, patch)
    meta, spec = after["metadata"], after["spec"]
    assert isinstance(meta, dict)
    assert isinstance(spec, dict)
    assert meta["labels"] == {"kubernetes.io/hostname": "a", "a": "1"}
    assert spec["taints"] == []
    assert k3s.k3s_node_patch(after, {"a": "1"}, [], "p") == {}


@pytest.mark.parametrize("bad", ["no-effect", "key=value:Sometimes", ":NoSchedule"])
def test_malformed_taints_are_refused(bad: str) -> None:
    with pytest.raises(AnsibleFilterError, match="not a taint"):
        k3s.k3s_node_patch({}, {}, [bad], "p")


def test_node_conditions_are_summarised() -> None:
    node = {
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "x"}]
        }
    }
    assert k3s.k3s_node_conditions(node) == {"Ready": "False"}
    assert k3s.k3s_node_conditions_text(node) == "Ready=False (KubeletNotReady: x)"
    assert k3s.k3s_node_conditions_text({}) == "no conditions reported"


def test_ready_counts_only_when_reported_after_the_service_started() -> None:
    node = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-01T09:00:10Z"}]
        }
    }
    started = datetime.datetime(2026, 12, 1, 9, 0, 10, tzinfo=datetime.UTC).timestamp()
    assert k3s.k3s_node_ready_since(node, started)
    assert k3s.k3s_node_ready_since(node, started + 0.9)
    assert not k3s.k3s_node_ready_since(node, started + 1)
    assert not k3s.k3s_node_ready_since(
        {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}, 0
    )
    assert not k3s.k3s_node_ready_since({}, 0)
