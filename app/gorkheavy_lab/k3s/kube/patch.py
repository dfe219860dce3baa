"""The patch types the apiserver takes: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge
patch (lists merged by the field's patchMergeKey where the type declares one; ``$patch: delete``/``replace``
directives) and server-side apply, modelled as a strategic merge of the applied configuration."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
APPLY_CBOR = "application/apply-patch+cbor"
TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, merge_keys: dict[str, str], path: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and sub in merge_keys and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, merge_keys[sub], merge_keys, sub)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key), value, merge_keys, sub)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(
    current: list[Any], patch: list[Any], merge_key: str, merge_keys: dict[str, str], path: str
) -> list[Any]:
    out = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"unable to find api field in struct for the merge key {merge_key!r} in {path}")
        index = next((i for i, old in enumerate(out) if old.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            out[index] = strategic_merge(out[index], item, merge_keys, path)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: "
                f'doc is missing path: "/{"/".join(parts)}"',
            )
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json patch: the patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch: every operation needs op and path")
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind in {"add", "replace", "test"} and "value" not in op:
            raise bad_request(f"json patch: {kind} needs a value")
        if kind == "test":
            if _walk(doc, parts) != op["value"]:
                raise ApiError(422, "Invalid", f"json patch: testing value {op['path']} failed")
            continue
        value: Any
        if kind in {"move", "copy"}:
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, src))
            if kind == "move":
                _remove(doc, src)
        elif kind == "remove":
            _remove(doc, parts)
            continue
        else:
            value = copy.deepcopy(op["value"])
        if not parts:
            doc = value
            continue
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif last.isdigit() and int(last) <= len(parent):
                if kind == "replace":
                    if int(last) >= len(parent):
                        _walk(doc, parts)
                    parent[int(last)] = value
                else:
                    parent.insert(int(last), value)
            else:
                _walk(doc, parts)
        elif isinstance(parent, dict):
            if kind == "replace" and last not in parent:
                _walk(doc, parts)
            parent[last] = value
        else:
            _walk(doc, parts)
    return doc


def _remove(doc: Any, parts: list[str]) -> None:
    if not parts:
        raise bad_request("json patch: cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    _walk(doc, parts)
    if isinstance(parent, list):
        parent.pop(int(parts[-1]))
    else:
        del parent[parts[-1]]


def apply(content_type: str, current: Any, patch: Any, merge_keys: dict[str, str]) -> Any:
    if content_type == JSON_PATCH:
        return json_patch(current, patch)
    if content_type == MERGE_PATCH:
        return merge_patch(current, patch)
    if content_type in {STRATEGIC, APPLY}:
        return strategic_merge(current, patch, merge_keys)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted "
        f"media types include: {', '.join(TYPES)}",
    )
