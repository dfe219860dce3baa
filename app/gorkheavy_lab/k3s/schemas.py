"""Copy the Kubernetes 1.36 strict JSON schemas the stand-in validates against out of the installed
``kubernetes-validate`` package into ``data/schemas/v1.36/``: the kinds listed below, as the package has them,
and a ``_definitions.json`` with only the definitions those kinds reach. Run from a development checkout:

    python -m gorkheavy_lab.k3s schemas            # rewrites app/gorkheavy_lab/k3s/data/schemas/v1.36/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SOURCE_DIR = "v1.36.0-local-strict"
# file stems as kubernetes-validate names them: <kind>-<group prefix>-<version> or <kind>-<version> for core
KINDS = (
    "node-v1",
    "namespace-v1",
    "lease-coordination-v1",
    "event-v1",
    "event-events-v1",
    "configmap-v1",
    "secret-v1",
    "service-v1",
    "serviceaccount-v1",
    "pod-v1",
    "persistentvolumeclaim-v1",
    "deployment-apps-v1",
    "networkpolicy-networking-v1",
    "replicaset-apps-v1",
    "binding-v1",
    "persistentvolume-v1",
    "storageclass-storage-v1",
    "endpointslice-discovery-v1",
    "endpoints-v1",
    "ingress-networking-v1",
    "ingressclass-networking-v1",
)
REF_PREFIX = "/api/_definitions.json#/$defs/"


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and "#/$defs/" in ref:
            out.add(ref.split("#/$defs/", 1)[1])
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def extract(target: Path) -> list[str]:
    import kubernetes_validate  # noqa: PLC0415 - a development dependency only

    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / SOURCE_DIR
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    target.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    written = []
    for stem in KINDS:
        schema = json.loads((source / f"{stem}.json").read_text())
        _refs(schema, wanted)
        (target / f"{stem}.json").write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
        written.append(stem)
    seen: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        more: set[str] = set()
        _refs(definitions[name], more)
        todo.extend(more - seen)
    subset = {"$defs": {name: definitions[name] for name in sorted(seen)}}
    (target / "_definitions.json").write_text(
        json.dumps(subset, sort_keys=True, separators=(",", ":")) + "\n"
    )
    return written
