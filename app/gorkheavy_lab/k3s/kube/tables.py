"""Server-side printing: the ``meta.k8s.io/v1`` Table kubectl asks for (``Accept: ...;as=Table``). Ages are
printed as the apiserver prints them (``HumanDuration``: 45s, 5m12s, 3h4m, 2d3h, ...)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .registry import Column, Obj, ResourceType


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = (s % 3600) // 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def since(stamp: str | None) -> str:
    """A timestamp as the apiserver prints its age; ``<unknown>`` when there is none."""
    if not stamp:
        return "<unknown>"
    created = dt.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return human_duration((dt.datetime.now(dt.UTC) - created).total_seconds())


def age(obj: Obj) -> str:
    return since(obj.get("metadata", {}).get("creationTimestamp"))


NAME = Column(
    "Name",
    "string",
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically.",
    lambda o: o["metadata"]["name"],
    format="name",
)
AGE = Column(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    age,
)
DEFAULT_COLUMNS = (
    NAME,
    Column("Created At", "date", AGE.description, lambda o: o["metadata"].get("creationTimestamp")),
)


def partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(rtype: ResourceType, objects: list[Obj], resource_version: str, include: str) -> dict[str, Any]:
    columns = rtype.columns or DEFAULT_COLUMNS
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [c.cell(obj) for c in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }
            for c in columns
        ],
        "rows": rows,
    }
