"""Resource types by group/version/plural, as discovery lists them. A type carries its table columns and the
hooks the API calls on create/update (defaults, admission) so that new types need no change to the routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    cell: Callable[[Obj], Any]
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = DEFAULT_VERBS
    subresources: tuple[str, ...] = ()
    # metadata.generation counts spec changes (Deployments and most workload types; not Nodes/Namespaces).
    uses_generation: bool = False
    columns: tuple[Column, ...] = ()
    # Called with (object, store) before a create is stored: defaults, admission. Raise api errors to refuse.
    on_create: Callable[[Obj, Any], None] | None = None
    # Called with (old, new, store) before an update/patch is stored.
    on_update: Callable[[Obj, Obj, Any], None] | None = None
    # Called with (object, store) after a delete (cascades such as a namespace's contents).
    on_delete: Callable[[Obj, Any], None] | None = None
    # List fields merged by key under strategic merge patch, by dotted path ("status.conditions": "type").
    merge_keys: dict[str, str] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def single(self) -> str:
        return self.singular or self.kind.lower()


class Registry:
    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}

    def register(self, rtype: ResourceType) -> ResourceType:
        key = (rtype.group, rtype.version, rtype.plural)
        if key in self._types:
            msg = f"{rtype.plural}.{rtype.group or 'core'}/{rtype.version} is already registered"
            raise ValueError(msg)
        self._types[key] = rtype
        return rtype

    def replace(self, rtype: ResourceType) -> ResourceType:
        """Swap a registered type for one with more behaviour (hooks, columns), keeping its place."""
        key = (rtype.group, rtype.version, rtype.plural)
        if key not in self._types:
            msg = f"{rtype.plural}.{rtype.group or 'core'}/{rtype.version} is not registered"
            raise KeyError(msg)
        self._types[key] = rtype
        return rtype

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        return None

    def all(self) -> Iterable[ResourceType]:
        return self._types.values()

    def groups(self) -> dict[str, list[str]]:
        """Named groups (not core) and their versions, in registration order."""
        out: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                versions = out.setdefault(rtype.group, [])
                if rtype.version not in versions:
                    versions.append(rtype.version)
        return out

    def versions(self, group: str) -> list[str]:
        return list(dict.fromkeys(t.version for t in self._types.values() if t.group == group))

    def in_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and t.version == version]
