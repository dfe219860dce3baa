"""A deterministic instance of a JSON schema: what a model constrained by ``format`` would answer.

Covers what structured-output schemas use: ``type`` (one or a list), ``enum``, ``const``, ``properties``
with ``required``, ``items`` / ``prefixItems`` with ``minItems`` / ``maxItems``, numeric bounds (``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``), string ``minLength`` /
``maxLength`` and a few ``format`` values, ``anyOf`` / ``oneOf`` (first branch), ``allOf`` (merged),
``$ref`` into ``$defs`` / ``definitions``, and ``default`` / ``examples`` when given. Every property is
filled, not only the required ones, as models do.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["instance_for_schema"]

_MAX_DEPTH = 12

_STRING_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "model@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
}


def instance_for_schema(schema: Any, seed: str = "") -> Any:
    """A value valid against ``schema``; ``seed`` (e.g. model and prompt) varies strings and numbers."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Generator(root, seed).value(root, "answer", 0)


class _Generator:
    def __init__(self, root: Mapping[str, Any], seed: str) -> None:
        self.root = root
        self.seed = seed

    def _number(self, name: str) -> int:
        digest = hashlib.blake2b(f"{self.seed}\x00{name}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def _resolve(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema and seen < _MAX_DEPTH:
            ref = schema["$ref"]
            target: Any = None
            if isinstance(ref, str) and ref.startswith("#"):
                target = self.root
                for raw_part in ref[1:].split("/"):
                    if not raw_part:
                        continue
                    part = raw_part.replace("~1", "/").replace("~0", "~")
                    target = target.get(part) if isinstance(target, Mapping) else None
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, Mapping) else rest
            seen += 1
        if "allOf" in schema and isinstance(schema["allOf"], list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for branch in schema["allOf"]:
                if isinstance(branch, Mapping):
                    resolved = self._resolve(branch, depth + 1)
                    for key, val in resolved.items():
                        if key == "properties" and isinstance(val, Mapping):
                            merged["properties"] = {**merged.get("properties", {}), **val}
                        elif key == "required" and isinstance(val, list):
                            merged["required"] = [*merged.get("required", []), *val]
                        else:
                            merged.setdefault(key, val)
            schema = merged
        return schema

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return f"{name} value"
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        examples = schema.get("examples")
        if isinstance(examples, list) and examples:
            return examples[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                non_null = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
                branch = (non_null or branches)[0]
                rest = {k: v for k, v in schema.items() if k != key}
                merged = {**rest, **branch} if isinstance(branch, Mapping) else rest
                return self.value(merged, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if kinds else "null"
        if kind is None:
            if "properties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if depth >= _MAX_DEPTH:
            return {"object": {}, "array": [], "integer": 0, "number": 0, "boolean": False, "null": None}.get(
                kind, ""
            )
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "string":
            return self._string(schema, name)
        if kind in ("integer", "number"):
            return self._numeric(schema, name, integer=kind == "integer")
        if kind == "boolean":
            return self._number(name) % 2 == 0
        return None

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        out: dict[str, Any] = {}
        for key, sub in props.items():
            out[key] = self.value(sub, key, depth + 1)
        required = schema.get("required")
        if isinstance(required, list):
            extra = schema.get("additionalProperties")
            for key in required:
                if isinstance(key, str) and key not in out:
                    out[key] = self.value(extra if isinstance(extra, Mapping) else {}, key, depth + 1)
        min_props = schema.get("minProperties")
        if isinstance(min_props, int):
            extra = schema.get("additionalProperties")
            i = 0
            while len(out) < min_props:
                out[f"key{i}"] = self.value(extra if isinstance(extra, Mapping) else {}, f"key{i}", depth + 1)
                i += 1
        return out

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        min_items = schema.get("minItems", 1)
        max_items = schema.get("maxItems")
        count = max(int(min_items) if isinstance(min_items, int) else 1, 1)
        if isinstance(max_items, int):
            count = min(count, max_items)
        out: list[Any] = []
        if isinstance(prefix, list):
            out = [self.value(sub, f"{name}{i}", depth + 1) for i, sub in enumerate(prefix)]
            if isinstance(max_items, int):
                out = out[:max_items]
        if isinstance(items, list):  # draft-04 tuple form
            out = [self.value(sub, f"{name}{i}", depth + 1) for i, sub in enumerate(items)]
            return out
        if items is False:
            return out
        while len(out) < count:
            item_schema = items if isinstance(items, Mapping) else {}
            out.append(self.value(item_schema, f"{name}{len(out)}", depth + 1))
        if schema.get("uniqueItems") and len(out) > 1 and len({repr(v) for v in out}) < len(out):
            out = out[:1]
            if isinstance(min_items, int) and min_items > 1:
                out = [f"{name} {i}" for i in range(count)]
        return out

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        text = f"{name} {self._number(name) % 1000}"
        min_len = schema.get("minLength")
        max_len = schema.get("maxLength")
        if isinstance(min_len, int) and len(text) < min_len:
            text = text + "x" * (min_len - len(text))
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len]
        return text

    def _numeric(self, schema: Mapping[str, Any], name: str, *, integer: bool) -> int | float:
        lo, hi = _num(schema.get("minimum")), _num(schema.get("maximum"))
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if xlo is True:  # draft-04: a boolean beside minimum
            xlo, lo = lo, None
        if xhi is True:
            xhi, hi = hi, None
        low, high = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)
        strict_low = strict_high = False
        exclusive_low, exclusive_high = _num(xlo), _num(xhi)
        if exclusive_low is not None and exclusive_low >= low:
            low, strict_low = exclusive_low, True
        if exclusive_high is not None and exclusive_high <= high:
            high, strict_high = exclusive_high, True
        step = _num(schema.get("multipleOf"))
        unit: float = step if step is not None and step > 0 else (1 if integer else 0.5)
        # a deterministic multiple of `unit` inside the bounds
        span_lo = low if low != -math.inf else (high - 10 * unit if high != math.inf else 0)
        span_hi = high if high != math.inf else span_lo + 10 * unit
        first = math.ceil(span_lo / unit)
        last = math.floor(span_hi / unit)
        candidates = list(range(first, min(last, first + 999) + 1)) or [first]
        inside = [
            k
            for k in candidates
            if not (strict_low and k * unit <= low) and not (strict_high and k * unit >= high)
        ]
        chosen = (inside or candidates)[self._number(name) % len(inside or candidates)]
        value = chosen * unit
        if integer or (isinstance(unit, int) and float(value).is_integer()):
            return round(value)
        return float(value)


def _num(value: Any) -> float | None:
    """A JSON number (not a boolean), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None
