"""Filters the K3s roles read K3s's own formats with: release tags, checksum files, config keys, kubeconfigs.

They live in Python rather than in Jinja so that each one is a plain function with unit tests
(tests/unit/cluster/test_k3s_filters.py) and YAML is handled as data, never with regular expressions.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import math
import re
from typing import Any

import yaml

try:  # pragma: no cover - exercised only inside Ansible
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - the unit tests run without Ansible's error types being needed

    class AnsibleFilterError(Exception):  # type: ignore[no-redef]
        """Stand-in so that the module imports without Ansible."""


# A K3s release tag: v<major>.<minor>.<patch>+k3s<n>, e.g. v1.36.4+k3s1 (the tags of github.com/k3s-io/k3s).
VERSION_RE = re.compile(r"^v(?P<major>1)\.(?P<minor>\d{1,3})\.(?P<patch>\d{1,3})\+k3s(?P<build>\d{1,3})$")
# First line of "k3s --version": "k3s version v1.36.4+k3s1 (0123abcd)".
VERSION_OUTPUT_RE = re.compile(r"^k3s version (?P<tag>v\S+) \((?P<commit>[0-9a-f]{8})\)$", re.MULTILINE)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def k3s_version(tag: str) -> dict[str, Any]:
    """Split a release tag into its numbers; raise with the expected form when it is not one."""
    found = VERSION_RE.match(str(tag))
    if not found:
        msg = f"{tag!r} is not a K3s release tag; expected the form v1.<minor>.<patch>+k3s<n> (v1.36.4+k3s1)"
        raise AnsibleFilterError(msg)
    parts = {k: int(v) for k, v in found.groupdict().items()}
    return {
        **parts,
        "tag": str(tag),
        "minor_line": f"{parts['major']}.{parts['minor']}",
        "key": [parts["major"], parts["minor"], parts["patch"], parts["build"]],
    }


def k3s_version_valid(tag: object) -> bool:
    """True when ``tag`` is a K3s release tag."""
    return isinstance(tag, str) and VERSION_RE.match(tag) is not None


def k3s_version_compare(installed: str, wanted: str) -> int:
    """-1 when ``installed`` is older than ``wanted`` (upgrade), 0 when equal, 1 when newer (downgrade)."""
    a, b = k3s_version(installed)["key"], k3s_version(wanted)["key"]
    return (a > b) - (a < b)


def k3s_version_output(text: str) -> str:
    """The release tag in the output of ``k3s --version``, or "" when the output is not K3s's."""
    found = VERSION_OUTPUT_RE.search(str(text))
    return found.group("tag") if found else ""


def k3s_checksums(text: str) -> dict[str, str]:
    """Parse a release's sha256sum-<arch>.txt (``<hex>  <asset>`` per line, as sha256sum writes it)."""
    sums: dict[str, str] = {}
    for number, raw in enumerate(str(text).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if not SHA256_RE.match(digest.lower()) or not name:
            msg = f"line {number} of the checksum file is not '<sha256>  <file name>': {raw!r}"
            raise AnsibleFilterError(msg)
        sums[name] = digest.lower()
    return sums


def k3s_config_key_errors(config: dict[str, Any], flags: list[str]) -> list[str]:
    """One message per key of ``config`` that the flag list lacks, naming the closest valid key.

    Keys are flag names without the leading dashes; ``key+`` (append to a list set by an earlier file)
    counts as ``key``, as in K3s's config files.
    """
    if not isinstance(config, dict):
        msg = f"the K3s configuration must be a mapping, got {type(config).__name__}"
        raise AnsibleFilterError(msg)
    valid = sorted(set(flags))
    errors: list[str] = []
    for key in config:
        name = str(key)
        base = name[:-1] if name.endswith("+") else name
        if base in valid:
            continue
        candidates = difflib.get_close_matches(base.replace("_", "-"), valid, n=1, cutoff=0.6)
        hint = f'; the closest valid key is "{candidates[0]}"' if candidates else ""
        errors.append(f'"{name}" is not a K3s option{hint}')
    return errors


def k3s_kubeconfig(text: str, server: str, name: str) -> dict[str, Any]:
    """K3s's kubeconfig, pointed at ``server``, with its cluster, user and context renamed ``name``.

    K3s writes one cluster, one user and one context, all called "default", with the server
    https://127.0.0.1:6443. The result keeps every other field (certificate data included) as it was.
    """
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        msg = "the kubeconfig is not a YAML mapping"
        raise AnsibleFilterError(msg)
    out = copy.deepcopy(data)
    clusters, users, contexts = out.get("clusters") or [], out.get("users") or [], out.get("contexts") or []
    if len(clusters) != 1 or len(users) != 1 or len(contexts) != 1:
        msg = (
            "expected the kubeconfig K3s writes (one cluster, one user, one context); found "
            f"{len(clusters)} clusters, {len(users)} users and {len(contexts)} contexts"
        )
        raise AnsibleFilterError(msg)
    clusters[0]["name"] = name
    clusters[0].setdefault("cluster", {})["server"] = server
    users[0]["name"] = name
    contexts[0]["name"] = name
    contexts[0].setdefault("context", {}).update({"cluster": name, "user": name})
    out["current-context"] = name
    return out


def k3s_node_conditions(node: dict[str, Any]) -> dict[str, str]:
    """``{type: status}`` of a Node object's conditions (empty when it has none yet)."""
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): str(c.get("status")) for c in conditions if isinstance(c, dict)}


def k3s_node_ready_since(node: dict[str, Any], since: float) -> bool:
    """True when the Node is Ready and its Ready condition was reported at or after ``since`` (Unix time).

    Right after a restart the Node object still shows what the previous run of the agent reported; only a
    heartbeat of the restarted agent says that this run joined.
    """
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if not isinstance(condition, dict) or condition.get("type") != "Ready":
            continue
        if condition.get("status") != "True":
            return False
        stamp = str(condition.get("lastHeartbeatTime") or "")
        try:
            seen = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False
        # Kubernetes timestamps have whole seconds.
        return seen >= math.floor(since)
    return False


def k3s_node_conditions_text(node: dict[str, Any]) -> str:
    """The Node's conditions as one line each: type, status, reason and message."""
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    lines = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}: {c.get('message', '')})"
        for c in conditions
        if isinstance(c, dict)
    ]
    return "; ".join(lines) if lines else "no conditions reported"


def k3s_parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` (the form of K3s's node-taint) as a Kubernetes taint."""
    spec, sep, effect = str(text).rpartition(":")
    if not sep or effect not in {"NoSchedule", "PreferNoSchedule", "NoExecute"} or not spec:
        msg = (
            f"{text!r} is not a taint; expected key=value:Effect or key:Effect"
            " (NoSchedule, PreferNoSchedule, NoExecute)"
        )
        raise AnsibleFilterError(msg)
    key, _, value = spec.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def k3s_node_patch(
    node: dict[str, Any], labels: dict[str, str], taints: list[str], annotation_prefix: str
) -> dict[str, Any]:
    """A JSON merge patch giving the Node exactly the labels and taints the roles manage ({} if it has them).

    Labels and taints this collection set earlier are recorded in two annotations; those no longer wanted are
    removed, everything else on the Node (set by K3s, Kubernetes or other tools) is kept.
    """
    meta = (node or {}).get("metadata") or {}
    spec = (node or {}).get("spec") or {}
    annotations = meta.get("annotations") or {}
    current_labels = meta.get("labels") or {}
    label_note, taint_note = f"{annotation_prefix}/managed-labels", f"{annotation_prefix}/managed-taints"
    before_labels = [k for k in str(annotations.get(label_note, "")).split(",") if k]
    before_taints = [k for k in str(annotations.get(taint_note, "")).split(",") if k]

    wanted_taints = [k3s_parse_taint(t) for t in taints]
    wanted_keys = [(t["key"], t["effect"]) for t in wanted_taints]
    label_patch: dict[str, str | None] = {}
    for key in before_labels:
        if key not in labels and key in current_labels:
            label_patch[key] = None
    for key, value in labels.items():
        if current_labels.get(key) != str(value):
            label_patch[key] = str(value)

    current_taints = [dict(t) for t in spec.get("taints") or []]
    dropped = {tuple(k.rsplit(":", 1)) for k in before_taints}
    kept = [
        t
        for t in current_taints
        if (t.get("key"), t.get("effect")) not in dropped
        and (t.get("key"), t.get("effect")) not in wanted_keys
    ]
    new_taints = kept + wanted_taints

    def _norm(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return sorted((str(t.get("key")), str(t.get("value", "")), str(t.get("effect"))) for t in items)

    label_keys = ",".join(sorted(labels))
    taint_keys = ",".join(sorted(f"{k}:{e}" for k, e in wanted_keys))
    patch: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if label_patch:
        metadata["labels"] = label_patch
    note_patch = {}
    if annotations.get(label_note, "") != label_keys:
        note_patch[label_note] = label_keys
    if annotations.get(taint_note, "") != taint_keys:
        note_patch[taint_note] = taint_keys
    if note_patch:
        metadata["annotations"] = note_patch
    if metadata:
        patch["metadata"] = metadata
    if _norm(current_taints) != _norm(new_taints):
        patch["spec"] = {"taints": new_taints}
    return patch


class FilterModule:
    """K3s filters of the gorkheavy.lite collection."""

    def filters(self) -> dict[str, Any]:
        return {
            "k3s_version": k3s_version,
            "k3s_version_valid": k3s_version_valid,
            "k3s_version_compare": k3s_version_compare,
            "k3s_version_output": k3s_version_output,
            "k3s_checksums": k3s_checksums,
            "k3s_config_key_errors": k3s_config_key_errors,
            "k3s_kubeconfig": k3s_kubeconfig,
            "k3s_node_conditions": k3s_node_conditions,
            "k3s_node_conditions_text": k3s_node_conditions_text,
            "k3s_node_ready_since": k3s_node_ready_since,
            "k3s_node_patch": k3s_node_patch,
        }
