"""Filters for applying a set of Kubernetes objects: labelling a set, finding what left it, explaining pods.

They run on the controller and only reshape data the Kubernetes modules returned; they never talk to a
cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from ansible_collections.gorkheavy.lite.plugins.filter.k3s import k3s_parse_taint
from ansible_collections.gorkheavy.lite.plugins.module_utils.k8s_set import (
    MANAGED_LABEL,
    MANAGER,
    SET_LABEL,
    set_selector,
    unwanted,
)


def k8s_in_set(objects: Iterable[Mapping[str, Any]], set_name: str) -> list[dict[str, Any]]:
    """The objects, each labelled as a member of ``set_name`` and as managed by this collection."""
    out = []
    for obj in objects:
        item = _plain(obj)
        metadata = item.setdefault("metadata", {})
        labels = dict(metadata.get("labels") or {})
        labels[MANAGED_LABEL] = MANAGER
        labels[SET_LABEL] = set_name
        metadata["labels"] = labels
        out.append(item)
    return out


def _plain(obj: Any) -> Any:
    """A copy made of plain JSON types (the templating engine's string and mapping types left behind)."""
    return json.loads(json.dumps(obj))


def k8s_in_namespaces(
    objects: Iterable[Mapping[str, Any]], namespaces: Iterable[str], inside: bool
) -> list[dict[str, Any]]:
    """The objects whose namespace is one of ``namespaces`` (``inside``), or all the others (cluster-scoped
    objects included)."""
    names = set(namespaces)
    return [
        _plain(o)
        for o in objects
        if (((o.get("metadata") or {}).get("namespace") or None) in names) is inside
    ]


def k8s_ids(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Who the objects are (kind, name, namespace) without what they hold: to name Secrets safely."""
    return [
        {
            "kind": o["kind"],
            "name": o["metadata"]["name"],
            "namespace": (o.get("metadata") or {}).get("namespace"),
        }
        for o in objects
    ]


def k8s_object_label(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` of an object, or of a mapping with kind, name and namespace."""
    meta = obj.get("metadata") or obj
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


def k8s_set_selector(set_name: str) -> list[str]:
    """Label selectors that match exactly the objects of one set managed by this collection."""
    return set_selector(set_name)


def k8s_unwanted(
    found: Iterable[Mapping[str, Any]], wanted: Iterable[Mapping[str, Any]], set_name: str
) -> list[dict[str, Any]]:
    """Objects listed by ``k8s_info`` (one result per kind) of the set that are not wanted any more.

    An object is only ever returned when it carries both labels of the set, whatever the listing matched.
    """
    return unwanted([res for result in found for res in result.get("resources") or []], wanted, set_name)


def k8s_match_labels(obj: Mapping[str, Any]) -> list[str]:
    """A workload's ``spec.selector.matchLabels`` as ``key=value`` selectors."""
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _containers(pod: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    status = pod.get("status") or {}
    out: list[tuple[str, str, Mapping[str, Any]]] = []
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for cs in status.get(key) or []:
            out.append((kind, cs.get("name", "?"), cs))
    return out


def k8s_unready_pods(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods that are not Ready (and not being deleted for a rollout)."""
    return [p for p in pods if not _ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")]


def k8s_log_targets(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """(pod, container) pairs to read logs from: each started container of a pod that is not ready."""
    out = []
    for pod in k8s_unready_pods(pods):
        meta = pod.get("metadata") or {}
        for _kind, name, cs in _containers(pod):
            state = cs.get("state") or {}
            started = "running" in state or "terminated" in state or cs.get("lastState", {}).get("terminated")
            if started:
                out.append(
                    {"pod": meta.get("name", "?"), "namespace": meta.get("namespace", ""), "container": name}
                )
    return out


def _state_text(cs: Mapping[str, Any]) -> str:
    state = cs.get("state") or {}
    if "waiting" in state:
        waiting = state["waiting"] or {}
        text = f"waiting: {waiting.get('reason', 'unknown')}"
        if waiting.get("message"):
            text += f" ({waiting['message']})"
    elif "terminated" in state:
        term = state["terminated"] or {}
        text = f"terminated: {term.get('reason', 'unknown')}, exit code {term.get('exitCode')}"
    elif "running" in state:
        text = "running" + ("" if cs.get("ready") else ", not ready")
    else:
        text = "no state yet"
    last = (cs.get("lastState") or {}).get("terminated")
    if last:
        text += f"; last run ended: {last.get('reason', 'unknown')}, exit code {last.get('exitCode')}"
    restarts = cs.get("restartCount") or 0
    if restarts:
        text += f"; {restarts} restart(s)"
    return text


def k8s_pod_report(
    pods: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    logs: Iterable[Mapping[str, Any]],
    max_events: int = 5,
) -> str:
    """One block per pod that is not ready: phase, conditions, each container's state, events, last log lines.

    ``logs`` holds results of ``k8s_log`` registered in a loop over ``k8s_log_targets`` (``item`` and
    ``log_lines``).
    """
    by_pod: dict[str, list[Mapping[str, Any]]] = {}
    for ev in events:
        obj = ev.get("involvedObject") or {}
        if obj.get("kind") == "Pod":
            by_pod.setdefault(obj.get("name", ""), []).append(ev)
    log_by: dict[tuple[str, str], list[str]] = {}
    for result in logs:
        item = result.get("item") or {}
        lines = result.get("log_lines") or []
        log_by[(item.get("pod", ""), item.get("container", ""))] = [str(line) for line in lines]
    blocks = []
    for pod in k8s_unready_pods(pods):
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        name = meta.get("name", "?")
        node = (pod.get("spec") or {}).get("nodeName") or "not scheduled"
        lines = [f"pod {name} (node: {node}, phase: {status.get('phase', 'unknown')}) is not ready"]
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True" and (cond.get("reason") or cond.get("message")):
                reason = f"{cond.get('reason', '')} {cond.get('message', '')}".strip()
                lines.append(f"  condition {cond.get('type')}: {reason}")
        for kind, cname, cs in _containers(pod):
            lines.append(f"  {kind} {cname}: {_state_text(cs)}")
        evs = sorted(
            by_pod.get(name, []),
            key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
        )
        for ev in evs[-max_events:]:
            count = f" (x{ev['count']})" if (ev.get("count") or 1) > 1 else ""
            lines.append(
                f"  event {ev.get('type', '')} {ev.get('reason', '')}: {ev.get('message', '')}{count}"
            )
        for _kind, cname, _cs in _containers(pod):
            tail = log_by.get((name, cname))
            if tail:
                lines.append(f"  last log lines of {cname}:")
                lines.extend(f"    {line}" for line in tail)
        blocks.append("\n".join(lines))
    if not blocks:
        return "no pod is reported as not ready; the Deployment's status did not converge in time"
    return "\n".join(blocks)


def k8s_tolerations(taints: Iterable[str | Mapping[str, str]]) -> list[dict[str, str]]:
    """Tolerations for exactly these taints: K3s ``node-taint`` strings or taint mappings."""
    out = []
    for item in taints:
        taint = k3s_parse_taint(item) if isinstance(item, str) else item
        if "value" in taint:
            out.append(
                {"key": taint["key"], "operator": "Equal", "value": taint["value"], "effect": taint["effect"]}
            )
        else:
            out.append({"key": taint["key"], "operator": "Exists", "effect": taint["effect"]})
    return out


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (scripts, config files) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data and not any(line != line.rstrip() for line in data.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def k8s_yaml_docs(objects: Iterable[Mapping[str, Any]]) -> str:
    """The objects as one YAML stream (a document each, keys in the order they were written)."""
    docs = []
    for obj in objects:
        docs.append(
            yaml.dump(
                _plain(obj),
                Dumper=_Dumper,
                sort_keys=False,
                default_flow_style=False,
                width=120,
                allow_unicode=True,
            )
        )
    return "".join(f"---\n{doc}" for doc in docs)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "k8s_in_set": k8s_in_set,
            "k8s_in_namespaces": k8s_in_namespaces,
            "k8s_ids": k8s_ids,
            "k8s_object_label": k8s_object_label,
            "k8s_set_selector": k8s_set_selector,
            "k8s_unwanted": k8s_unwanted,
            "k8s_match_labels": k8s_match_labels,
            "k8s_unready_pods": k8s_unready_pods,
            "k8s_log_targets": k8s_log_targets,
            "k8s_pod_report": k8s_pod_report,
            "k8s_yaml_docs": k8s_yaml_docs,
            "k8s_tolerations": k8s_tolerations,
        }
