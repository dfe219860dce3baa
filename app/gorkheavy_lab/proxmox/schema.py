"""The Proxmox VE API schema (API viewer data) as a route table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gorkheavy_lab.proxmox import validation

DATA_DIR = Path(__file__).resolve().parent / "data"
SCHEMA_FILE = DATA_DIR / "pve-api-schema-9.1.json"


@dataclass(frozen=True)
class Endpoint:
    """One method of one path of the schema."""

    path: str
    method: str
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.info.get("name", ""))

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.info.get("parameters") or {})

    @property
    def returns(self) -> dict[str, Any]:
        return dict(self.info.get("returns") or {})

    @property
    def permissions(self) -> dict[str, Any]:
        return dict(self.info.get("permissions") or {})

    @property
    def allowtoken(self) -> bool:
        return bool(int(self.info.get("allowtoken", 1) or 0))


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    params: dict[str, _Node] = field(default_factory=dict)
    methods: dict[str, Endpoint] = field(default_factory=dict)
    path: str | None = None


class ApiSchema:
    """Route table built from every ``path`` and method of the schema file."""

    def __init__(self, tree: list[dict[str, Any]]) -> None:
        self._root = _Node()
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        stack = list(tree)
        while stack:
            node = stack.pop()
            stack.extend(node.get("children") or [])
            path = node["path"]
            for method, info in (node.get("info") or {}).items():
                endpoint = Endpoint(path=path, method=method, info=info)
                self.endpoints[(method, path)] = endpoint
                self._insert(path, endpoint)
        self._register_named_drive_formats()

    @classmethod
    def load(cls, path: Path | str = SCHEMA_FILE) -> ApiSchema:
        return _load_cached(str(path))

    def _insert(self, path: str, endpoint: Endpoint) -> None:
        node = self._root
        for segment in [s for s in path.split("/") if s]:
            if segment.startswith("{") and segment.endswith("}"):
                node = node.params.setdefault(segment[1:-1], _Node())
            else:
                node = node.literal.setdefault(segment, _Node())
        node.path = path
        node.methods[endpoint.method] = endpoint

    def resolve(self, path: str) -> tuple[str | None, dict[str, Endpoint], dict[str, str]]:
        """Find the schema path for a request path: (schema path, methods, path parameters)."""
        segments = [s for s in path.split("/") if s]
        # storage content is mounted with an empty fragment delimiter: {volume} takes the rest of the path
        if (
            len(segments) > 6
            and segments[0] == "nodes"
            and segments[2] == "storage"
            and segments[4] == "content"
        ):
            segments = [*segments[:5], "/".join(segments[5:])]

        def walk(node: _Node, index: int, params: dict[str, str]) -> tuple[_Node, dict[str, str]] | None:
            if index == len(segments):
                return (node, params) if node.path is not None else None
            segment = segments[index]
            child = node.literal.get(segment)
            if child is not None:
                found = walk(child, index + 1, params)
                if found:
                    return found
            for name, child in node.params.items():
                found = walk(child, index + 1, {**params, name: segment})
                if found:
                    return found
            return None

        found = walk(self._root, 0, {})
        if found is None:
            return None, {}, {}
        node, params = found
        return node.path, node.methods, params

    def endpoint(self, method: str, path: str) -> Endpoint:
        return self.endpoints[(method, path)]

    def _register_named_drive_formats(self) -> None:
        config = self.endpoints.get(("POST", "/nodes/{node}/qemu/{vmid}/config"))
        if config is None:
            return
        ide = config.parameters.get("properties", {}).get("ide[n]", {})
        if isinstance(ide.get("format"), dict):
            validation.register_drive_format("pve-qm-ide", ide["format"])

    def drive_format(self, bus: str) -> dict[str, Any]:
        config = self.endpoints[("POST", "/nodes/{node}/qemu/{vmid}/config")]
        schema = config.parameters["properties"].get(f"{bus}[n]") or config.parameters["properties"][bus]
        fmt = schema["format"]
        assert isinstance(fmt, dict)
        return fmt

    def property_format(self, key: str) -> dict[str, Any] | None:
        """The property-string format of a qemu config key (``net0`` -> the ``net[n]`` format)."""
        config = self.endpoints[("POST", "/nodes/{node}/qemu/{vmid}/config")]
        found = validation.property_key_schema(config.parameters["properties"], key)
        if found is None:
            return None
        fmt = found[1].get("format")
        if isinstance(fmt, dict):
            return fmt
        if isinstance(fmt, str):
            return validation.NAMED_PROPERTY_FORMATS.get(fmt)
        return None


@cache
def _load_cached(path: str) -> ApiSchema:
    with open(path, encoding="utf-8") as handle:
        tree = json.load(handle)
    return ApiSchema(tree)
