#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Documentation of the k8s_preview action (it runs on the controller only: plugins/action/k8s_preview.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_preview
short_description: Show a Kubernetes object that a run would create, as a diff, without calling the API
version_added: "0.1.0"
description:
  - Reports O(definition) as an object to be created, with the whole object as the diff (C(--diff)), and
    always reports a change. It sends nothing to any cluster.
  - Meant for check mode when the object's namespace does not exist yet. The API server refuses even a dry
    run of a create in a missing namespace, while the real run would create the namespace first.
  - Runs on the controller only; it has no module part that runs on a host.
options:
  definition:
    description: The object, a mapping with apiVersion, kind and metadata.name.
    type: dict
    required: true
  reason:
    description: Why the object is shown rather than sent, added to the message.
    type: str
    default: ""
extends_documentation_fragment:
  - gorkheavy.lite.k8s_module
"""

EXAMPLES = r"""
- name: Show the objects of a namespace that this run creates
  gorkheavy.lite.k8s_preview:
    definition: "{{ item }}"
    reason: its namespace does not exist yet
  loop: "{{ objects_in_new_namespaces }}"
"""

RETURN = r"""
msg:
  description: What would be created.
  returned: always
  type: str
  sample: Deployment gorkheavy/orchestrator would be created (its namespace does not exist yet)
"""
