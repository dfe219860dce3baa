#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Apply a list of Kubernetes objects, and prune a set of them, in one connection to the API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_apply_set
short_description: Apply a list of Kubernetes objects and delete the members of their set that left it
version_added: "0.1.0"
description:
  - Applies each object of O(objects) in order, as C(kubectl apply) does (the last-applied-configuration
    annotation), after validating it strictly against the cluster's schema (kubernetes-validate); a field the
    schema does not know stops the module, naming the object and the field, before the object is sent.
  - With O(prune_set), then lists the objects of O(prune_kinds) in O(prune_namespace) that carry both labels of
    the set (C(app.kubernetes.io/managed-by=gorkheavy-lite), C(gorkheavy.lite/set=<set>)) and deletes those that
    are neither in O(objects) nor in O(keep). Deleted Deployments are waited for until they are gone.
  - Does for a whole set what M(kubernetes.core.k8s) does for one object, with the same client, apply and diff
    code, in one module run instead of one per object, so that a converged set costs one connection and one
    API discovery.
  - In check mode, objects are applied as a server-side dry run and nothing is deleted; what would be deleted is
    reported.
  - Runs where the kubeconfig is, normally on the controller (a C(localhost) play, or delegated to localhost).
options:
  objects:
    description: The objects to apply, in this order, each a mapping with apiVersion, kind and metadata.name.
    type: list
    elements: dict
    default: []
  validate:
    description: Validate each object strictly against the schema of the cluster's Kubernetes version first.
    type: bool
    default: true
  prune_set:
    description: The set whose members that are not wanted any more are deleted; empty, nothing is deleted.
    type: str
    default: ""
  prune_kinds:
    description: The kinds that are pruned, each a mapping with api_version and kind.
    type: list
    elements: dict
    default: []
  prune_namespace:
    description: The namespace the set's namespaced objects are listed in.
    type: str
    default: ""
  keep:
    description:
      - Further objects of the set that are wanted though not applied by this call (mappings with kind, name
        and namespace), for example the Secrets applied by a call whose output is hidden.
    type: list
    elements: dict
    default: []
  delete_wait_timeout:
    description: How long (seconds) to wait for a deleted Deployment to be gone.
    type: int
    default: 600
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - gorkheavy.lite.k8s_module
requirements:
  - kubernetes >= 24.2.0
  - kubernetes-validate (for O(validate))
"""

EXAMPLES = r"""
- name: Apply the models and delete the ones that left the roster
  gorkheavy.lite.k8s_apply_set:
    kubeconfig: "{{ kubeconfig }}"
    objects: "{{ objects }}"
    prune_set: gorkheavy-models
    prune_namespace: gorkheavy
    prune_kinds:
      - {api_version: apps/v1, kind: Deployment}
      - {api_version: v1, kind: Service}
"""

RETURN = r"""
applied:
  description: Each applied object, in order, and whether it changed.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "Deployment", "name": "llama", "namespace": "gorkheavy", "changed": false}]
deleted:
  description: The objects of the set that were deleted (in check mode, that would be).
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "Service", "name": "old-model", "namespace": "gorkheavy"}]
"""

import copy
import traceback
from typing import Any

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.gorkheavy.lite.plugins.module_utils.k8s_set import set_selector, unwanted
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import perform_action
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService

    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()

# What kubernetes.core's service and runner read from the module's parameters, for an apply and for a delete.
APPLY_PARAMS: dict[str, Any] = {
    "state": "present",
    "apply": True,
    "force": False,
    "wait": False,
    "wait_sleep": 5,
    "wait_timeout": 120,
    "wait_condition": None,
    "label_selectors": None,
    "append_hash": False,
    "server_side_apply": None,
    "merge_type": None,
    "delete_options": None,
    "hidden_fields": None,
}


class _Params:
    """The module as kubernetes.core's service sees it, with the parameters of one kind of action."""

    def __init__(self, module: Any, params: dict[str, Any]) -> None:
        self._module = module
        self.params = {**module.params, **params}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _ident(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"kind": obj.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}


def _label(ident: dict[str, Any]) -> str:
    where = f"{ident['namespace']}/" if ident.get("namespace") else ""
    return f"{ident['kind']} {where}{ident['name']}"


def _apply(module: Any, client: Any, objects: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[str]]:
    svc = K8sService(client, _Params(module, APPLY_PARAMS))
    applied, diffs, warnings = [], [], []
    for obj in objects:
        ident = _ident(obj)
        if not ident["kind"] or not ident["name"] or not obj.get("apiVersion"):
            module.fail_json(
                msg=f"an object without apiVersion, kind or metadata.name: {ident}", applied=applied
            )
        if module.params["validate"]:
            found, errors = client.validate(obj, None, True)
            if errors:
                module.fail_json(
                    msg="\n".join(f"{_label(ident)}: {error}" for error in errors), applied=applied
                )
            warnings += [f"{_label(ident)}: {w}" for w in found]
        try:
            result = perform_action(svc, copy.deepcopy(obj), APPLY_PARAMS)
        except CoreException as exc:
            module.fail_json(msg=f"{_label(ident)}: {exc}", applied=applied)
        warnings += result.get("warnings") or []
        applied.append({**ident, "changed": bool(result["changed"])})
        if result["changed"] and module._diff:
            diff = result.get("diff") or {"before": {}, "after": result.get("result") or {}}
            diffs.append(
                {
                    "before": diff.get("before") or {},
                    "after": diff.get("after") or {},
                    "before_header": _label(ident),
                    "after_header": _label(ident),
                }
            )
    return applied, diffs, warnings


def _prune(module: Any, client: Any, wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    params = module.params
    lister = K8sService(client, _Params(module, APPLY_PARAMS))
    found: list[dict[str, Any]] = []
    for kind in params["prune_kinds"]:
        listed = lister.find(
            kind["kind"],
            kind["api_version"],
            namespace=params["prune_namespace"] or None,
            label_selectors=set_selector(params["prune_set"]),
        )
        found += listed["resources"]
    gone = unwanted(found, wanted, params["prune_set"])
    for item in gone:
        definition = {
            "apiVersion": item["api_version"],
            "kind": item["kind"],
            "metadata": {"name": item["name"], "namespace": item["namespace"]},
        }
        waits = item["kind"] == "Deployment"
        delete = {
            **APPLY_PARAMS,
            "state": "absent",
            "wait": waits,
            "wait_timeout": params["delete_wait_timeout"],
        }
        try:
            perform_action(K8sService(client, _Params(module, delete)), definition, delete)
        except CoreException as exc:
            module.fail_json(msg=f"deleting {_label(item)}: {exc}", deleted=gone)
    return [{k: item[k] for k in ("kind", "name", "namespace")} for item in gone]


def main() -> None:
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        objects=dict(type="list", elements="dict", default=[]),
        validate=dict(type="bool", default=True),
        prune_set=dict(type="str", default=""),
        prune_kinds=dict(type="list", elements="dict", default=[]),
        prune_namespace=dict(type="str", default=""),
        keep=dict(type="list", elements="dict", default=[]),
        delete_wait_timeout=dict(type="int", default=600),
    )
    module = AnsibleK8SModule(
        module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True
    )
    if IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=IMPORT_ERROR)
    if module.params["validate"]:
        module.requires("kubernetes-validate")
    try:
        client = get_api_client(module)
        applied, diffs, warnings = _apply(module, client, module.params["objects"])
        deleted = []
        if module.params["prune_set"]:
            deleted = _prune(module, client, [*module.params["objects"], *module.params["keep"]])
    except CoreException as exc:
        module.fail_from_exception(exc)
    for warning in warnings:
        module.warn(warning)
    result: dict[str, Any] = {
        "changed": any(a["changed"] for a in applied) or bool(deleted),
        "applied": applied,
        "deleted": deleted,
    }
    if module._diff:
        for item in deleted:
            diffs.append(
                {"before": item, "after": {}, "before_header": _label(item), "after_header": "(deleted)"}
            )
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
