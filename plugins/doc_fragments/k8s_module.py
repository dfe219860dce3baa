# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Documentation shared by this collection's Kubernetes modules."""

from __future__ import annotations


class ModuleDocFragment:
    """What the Kubernetes modules support and who wrote them."""

    DOCUMENTATION = r"""
---
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - gorkheavy-lite contributors
"""
