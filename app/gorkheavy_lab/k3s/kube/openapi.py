"""``/openapi/v3``: the index of group/versions and one OpenAPI 3.0 document per group/version, generated from
the registry and the bundled 1.36 schemas. kubectl reads it before ``apply``/``create``/``replace`` to learn
that the server validates fields itself (the ``fieldValidation`` query parameter on the type's operations,
matched by ``x-kubernetes-group-version-kind``) and for ``kubectl explain``."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from . import validation
from .registry import Registry, ResourceType

QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _to_openapi3(node: Any) -> Any:
    """JSON-schema 2020-12 as kubernetes-validate has it -> OpenAPI 3.0 schema objects."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = "#/components/schemas/" + value.split("/$defs/", 1)[-1]
            elif key == "type" and isinstance(value, list):
                types = [t for t in value if t != "null"]
                out[key] = types[0] if len(types) == 1 else types
                if "null" in value:
                    out["nullable"] = True
            elif key in {"$defs", "$schema", "$id"}:
                continue
            else:
                out[key] = _to_openapi3(value)
        return out
    if isinstance(node, list):
        return [_to_openapi3(v) for v in node]
    return node


def _name(rtype: ResourceType) -> str:
    """The definition name Kubernetes gives a kind, e.g. io.k8s.api.coordination.v1.Lease."""
    package = rtype.group.split(".")[0] if rtype.group else "core"
    return f"io.k8s.api.{package}.{rtype.version}.{rtype.kind}"


def _operation(rtype: ResourceType, verb: str, action: str) -> dict[str, Any]:
    gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
    params = [{"name": q, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for q in QUERY]
    ref = {"$ref": f"#/components/schemas/{_name(rtype)}"}
    op: dict[str, Any] = {
        "operationId": f"{verb}{rtype.kind}",
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if verb in {"create", "replace", "patch"}:
        types = (
            [
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
            if verb == "patch"
            else ["application/json"]
        )
        op["requestBody"] = {"content": {t: {"schema": ref} for t in types}, "required": True}
    return op


def document(registry: Registry, group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    for rtype in registry.in_version(group, version):
        check = validation.validator(validation.stem(rtype))
        if check is not None:
            schema = copy.deepcopy(check.schema)
            for name, definition in schema.pop("$defs", {}).items():
                schemas.setdefault(name, _to_openapi3(definition))
            schema["x-kubernetes-group-version-kind"] = [
                {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
            ]
            schemas[_name(rtype)] = _to_openapi3(schema)
        collection = (
            f"{base}/namespaces/{{namespace}}/{rtype.plural}"
            if rtype.namespaced
            else f"{base}/{rtype.plural}"
        )
        paths[collection] = {
            "get": _operation(rtype, "list", "list"),
            "post": _operation(rtype, "create", "post"),
        }
        paths[f"{collection}/{{name}}"] = {
            "get": _operation(rtype, "read", "get"),
            "put": _operation(rtype, "replace", "put"),
            "patch": _operation(rtype, "patch", "patch"),
            "delete": _operation(rtype, "delete", "delete"),
        }
        for sub in rtype.subresources:
            paths[f"{collection}/{{name}}/{sub}"] = {
                "get": _operation(rtype, "read", "get"),
                "put": _operation(rtype, "replace", "put"),
                "patch": _operation(rtype, "patch", "patch"),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.4+k3s1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_text(registry: Registry, group: str, version: str) -> str:
    return json.dumps(document(registry, group, version), sort_keys=True)


def index(registry: Registry) -> dict[str, Any]:
    paths = {}
    versions = [("", v) for v in registry.versions("")]
    versions += [(g, v) for g, vs in registry.groups().items() for v in vs]
    for group, version in versions:
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        digest = hashlib.sha512(document_text(registry, group, version).encode()).hexdigest().upper()[:128]
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}
