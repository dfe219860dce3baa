"""The stand-in refuses exactly what ``kubernetes_validate.validate(obj, "1.36", strict=True)`` refuses, for
hand-written objects of every bundled kind and for an unknown field inserted at every object path of the
valid ones; and it applies the apiserver's fieldValidation modes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from gorkheavy_lab.k3s.kube import validation
from gorkheavy_lab.k3s.kube.errors import ApiError
from gorkheavy_lab.k3s.kube.registry import ResourceType

POD_SPEC = {
    "containers": [{"name": "ollama", "image": "ollama/ollama:0.33.3", "ports": [{"containerPort": 11434}]}]
}
VALID: list[dict[str, Any]] = [
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"a": "b"}},
        "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
    },
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gorkheavy"}},
    {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "n1", "namespace": "x"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40},
    },
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}},
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "type": "Opaque",
        "stringData": {"k": "v"},
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 11434, "targetPort": 11434}]},
    },
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": POD_SPEC},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": POD_SPEC},
        },
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    },
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "pvc"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    },
]
INVALID: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": "yes"}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": 1}}},
    {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l"},
        "spec": {"leaseDurationSeconds": "forty"},
    },
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "x"}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {}}},
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule", "timeAdded": 5}]},
    },
]


def rtype_of(obj: dict[str, Any]) -> ResourceType:
    group, _, version = obj["apiVersion"].rpartition("/")
    return ResourceType(group, version, obj["kind"], obj["kind"].lower() + "s", namespaced=True)


def upstream_refuses(obj: dict[str, Any]) -> bool:
    try:
        kubernetes_validate.validate(obj, "1.36", strict=True)
    except kubernetes_validate.ValidationError:
        return True
    return False


def standin_refuses(obj: dict[str, Any], mode: str = "Strict") -> bool:
    try:
        validation.validate(rtype_of(obj), copy.deepcopy(obj), mode)
    except ApiError:
        return True
    return False


def with_unknown_fields(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A copy of ``obj`` with ``bogusField`` added to each nested object in turn (label/annotation/data maps
    take any key, so they are skipped)."""
    free_maps = {"labels", "annotations", "data", "stringData", "matchLabels", "selector", "requests"}

    def paths(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            if not path or path[-1] not in free_maps:
                yield path
            for key, value in node.items():
                yield from paths(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from paths(value, (*path, i))

    for path in paths(obj, ()):
        mutated = copy.deepcopy(obj)
        target = mutated
        for part in path:
            target = target[part]
        target["bogusField"] = "x"
        yield "/".join(map(str, path)) or "(root)", mutated


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_valid_objects_pass_both(obj: dict[str, Any]) -> None:
    assert validation.has_schema(rtype_of(obj))
    assert not upstream_refuses(obj)
    assert not standin_refuses(obj)


@pytest.mark.parametrize(
    "obj", INVALID, ids=lambda o: f"{o['kind']}-{sorted(o.get('spec', {}) or o['metadata'])}"
)
def test_invalid_objects_refused_by_both(obj: dict[str, Any]) -> None:
    assert upstream_refuses(obj)
    assert standin_refuses(obj)
    assert standin_refuses(obj, "Ignore")  # type errors and missing required fields are refused in every mode


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_unknown_field_anywhere_refused_by_both(obj: dict[str, Any]) -> None:
    checked = 0
    for where, mutated in with_unknown_fields(obj):
        assert upstream_refuses(mutated), where
        assert standin_refuses(mutated), where
        checked += 1
    assert checked >= 2


def test_strict_error_and_warn_mode_as_the_apiserver() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"bogus": 1}}
    rtype = rtype_of(node)
    with pytest.raises(ApiError) as refused:
        validation.validate(rtype, copy.deepcopy(node), "Strict")
    assert refused.value.code == 400
    assert refused.value.message == (
        'Node in version "v1" cannot be handled as a Node: strict decoding error: unknown field "spec.bogus"'
    )
    kept = copy.deepcopy(node)
    assert validation.validate(rtype, kept, "") == ['unknown field "spec.bogus"']  # Warn is the default
    assert kept["spec"] == {}
    kept = copy.deepcopy(node)
    assert validation.validate(rtype, kept, "Ignore") == []
    assert kept["spec"] == {}
    with pytest.raises(ApiError, match="fieldValidation"):
        validation.validate(rtype, copy.deepcopy(node), "Loose")
