# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""What makes an object a member of a set of Kubernetes objects that this collection manages, and which
listed members are no longer wanted. Shared by the filter plugins (controller) and the k8s_apply_set module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SET_LABEL = "gorkheavy.lite/set"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "gorkheavy-lite"


def set_selector(set_name: str) -> list[str]:
    """Label selectors that match exactly the objects of one set managed by this collection."""
    return [f"{MANAGED_LABEL}={MANAGER}", f"{SET_LABEL}={set_name}"]


def object_key(kind: str, namespace: str | None, name: str) -> tuple[str, str, str]:
    return (kind, namespace or "", name)


def unwanted(
    found: Iterable[Mapping[str, Any]], wanted: Iterable[Mapping[str, Any]], set_name: str
) -> list[dict[str, Any]]:
    """Of the listed objects ``found`` (Kubernetes objects), those of the set ``set_name`` that are not among
    ``wanted`` (objects, or mappings with kind, name and namespace). An object is only ever returned when it
    carries both labels of the set, whatever the listing matched."""
    keep = set()
    for obj in wanted:
        meta = obj.get("metadata")
        if meta is None:
            keep.add(object_key(obj["kind"], obj.get("namespace"), obj["name"]))
        else:
            keep.add(object_key(obj["kind"], meta.get("namespace"), meta["name"]))
    out = []
    for res in found:
        meta = res.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_LABEL) != MANAGER or labels.get(SET_LABEL) != set_name:
            continue
        if object_key(res["kind"], meta.get("namespace"), meta["name"]) in keep:
            continue
        out.append(
            {
                "api_version": res["apiVersion"],
                "kind": res["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
            }
        )
    return out
