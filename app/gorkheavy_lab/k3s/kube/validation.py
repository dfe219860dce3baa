"""Validation of objects against the Kubernetes 1.36 strict JSON schemas copied from kubernetes-validate
(``data/schemas/v1.36``), honouring the request's ``fieldValidation`` as the apiserver does:
``Strict`` refuses unknown fields (400 ``strict decoding error: unknown field "spec.foo"``), ``Warn`` (the
default when a client sends none) drops them and answers with a ``Warning`` header, ``Ignore`` drops them
silently. A missing required field is 422 Invalid, a wrong type 400 BadRequest, whatever fieldValidation."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from .errors import ApiError, bad_request, invalid
from .registry import Obj, ResourceType

SCHEMA_DIR = "data/schemas/v1.36"


def stem(rtype: ResourceType) -> str:
    if rtype.group:
        return f"{rtype.kind.lower()}-{rtype.group.split('.')[0]}-{rtype.version}"
    return f"{rtype.kind.lower()}-{rtype.version}"


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and "#/$defs/" in value:
                out[key] = "#/$defs/" + value.split("#/$defs/", 1)[1]
            elif key != "$id":
                out[key] = _rewrite(value)
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


@cache
def _definitions() -> dict[str, Any]:
    text = (
        resources.files(__package__.rsplit(".", 1)[0]).joinpath(f"{SCHEMA_DIR}/_definitions.json").read_text()
    )
    defs: dict[str, Any] = _rewrite(json.loads(text)["$defs"])
    return defs


@cache
def validator(stem: str) -> jsonschema.protocols.Validator | None:
    path = resources.files(__package__.rsplit(".", 1)[0]).joinpath(f"{SCHEMA_DIR}/{stem}.json")
    try:
        schema = _rewrite(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    schema.pop("$schema", None)
    schema["$defs"] = _definitions()
    return jsonschema.Draft202012Validator(schema)


def has_schema(rtype: ResourceType) -> bool:
    return validator(stem(rtype)) is not None


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _drop(obj: Any, path: list[Any], name: str) -> None:
    cur = obj
    for part in path:
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(name, None)


def validate(rtype: ResourceType, obj: Obj, field_validation: str) -> list[str]:
    """Validate (and, unless Strict, strip unknown fields of) ``obj`` in place; returns warnings."""
    check = validator(stem(rtype))
    if check is None:
        return []
    mode = field_validation or "Warn"
    if mode not in {"Strict", "Warn", "Ignore"}:
        raise bad_request(
            f'fieldValidation must be one of "Ignore", "Warn", or "Strict", got "{field_validation}"'
        )
    unknown: list[tuple[list[Any], str]] = []
    others = []
    for error in check.iter_errors(obj):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for name in sorted(set(error.instance) - known):
                unknown.append((list(error.absolute_path), name))
        else:
            others.append(error)
    name = obj.get("metadata", {}).get("name", "") if isinstance(obj.get("metadata"), dict) else ""
    handled = f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}'
    required = [e for e in others if e.validator == "required"]
    decoding = [e for e in others if e.validator != "required"]
    if decoding:
        error = decoding[0]
        raise bad_request(f"{handled}: {_field(error.absolute_path) or 'object'}: {error.message}")
    warnings = [f'unknown field "{_field([*path, field])}"' for path, field in unknown]
    if unknown and mode == "Strict":
        raise bad_request(f"{handled}: strict decoding error: {', '.join(warnings)}")
    for path, field in sorted(unknown, key=lambda u: -len(u[0])):
        _drop(obj, path, field)
    if required:
        causes = []
        for error in required:
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            causes.append((_field([*error.absolute_path, missing]), "Required value"))
        raise invalid(rtype.kind, name, causes, rtype.group)
    return warnings if mode == "Warn" else []


class Refused(ApiError):
    pass
