# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Ansible's linear strategy run through Mitogen, when the mitogen package is installed."""

from __future__ import annotations

DOCUMENTATION = """
name: mitogen_linear
short_description: The linear strategy with one long-lived Python interpreter per host (Mitogen)
description:
  - Runs plays exactly as Ansible's C(linear) strategy does (every host finishes a task before the next starts),
    but reaches each host through Mitogen: one SSH connection and one Python interpreter per host for the whole
    run, with modules imported once, instead of a new SSH session and a new interpreter for every task.
  - The connection settings are Ansible's own (user, key, port, C(ssh_args), become); the project's README
    says where Mitogen treats host key checking, passwords and reconnects differently.
  - When the C(mitogen) package is not installed on the controller it warns once and runs Ansible's own
    C(linear) strategy, so a run never depends on it.
  - Chosen per run with C(ANSIBLE_STRATEGY=gorkheavy.lite.mitogen_linear), or with C(strategy) in C(ansible.cfg).
requirements:
  - mitogen (pip, the C(ops) extra of the gorkheavy-lite package); optional
"""

import logging

from ansible.utils.display import Display

try:
    import ansible_mitogen.logging as _mitogen_logging
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError as error:  # pragma: no cover - depends on the controller's packages
    from ansible.plugins.strategy.linear import StrategyModule

    Display().warning(
        f"gorkheavy.lite.mitogen_linear: Mitogen is not usable ({error}); running the plain linear strategy. "
        "Install it with: pip install 'mitogen>=0.3.54,<0.4'"
    )
else:
    # At -vvv Mitogen logs every call it makes on a host with its arguments, the module arguments of no_log
    # tasks (tokens, passwords) included. Its loggers never go below INFO here, whatever the verbosity.
    _levels = _mitogen_logging._verbosity_to_levels

    def _without_debug(verbosity: int) -> tuple[int, ...]:
        return tuple(max(level, logging.INFO) for level in _levels(verbosity))

    _mitogen_logging._verbosity_to_levels = _without_debug

__all__ = ["StrategyModule"]
