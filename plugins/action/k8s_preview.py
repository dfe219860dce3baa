# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""The k8s_preview action: an object a run would create, as a change with the whole object as its diff."""

from __future__ import annotations

import json
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        definition = self._task.args.get("definition")
        reason = str(self._task.args.get("reason") or "")
        unknown = set(self._task.args) - {"definition", "reason"}
        if unknown:
            raise AnsibleActionFail(f"k8s_preview: unknown option(s) {', '.join(sorted(unknown))}")
        meta = definition.get("metadata") if isinstance(definition, dict) else None
        if not isinstance(meta, dict) or not meta.get("name") or not definition.get("kind"):
            raise AnsibleActionFail("k8s_preview: definition must be an object with kind and metadata.name")
        kind, name = str(definition["kind"]), str(meta["name"])
        where = f"{meta['namespace']}/{name}" if meta.get("namespace") else name
        result["changed"] = True
        result["method"] = "create"
        result["msg"] = f"{kind} {where} would be created" + (f" ({reason})" if reason else "")
        result["diff"] = {
            "before_header": f"{kind} {where} (absent)",
            "after_header": f"{kind} {where}",
            "before": "",
            "after": yaml.safe_dump(_plain(definition), sort_keys=False, default_flow_style=False),
        }
        return result


def _plain(value: Any) -> Any:
    """The object as plain JSON types (the templating engine hands over its own string and mapping types)."""
    return json.loads(json.dumps(value))
