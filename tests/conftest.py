"""How the suite is split across parallel workers (pytest-xdist; scripts/pytest.sh runs it that way).

A group of tests always runs in one worker, in file order: a module's tests share module fixtures (a converged
test host, a running stand-in) and some build on the state the previous test left. A group is one test module,
or a whole package for the packages in ``SHARED_PACKAGES``, whose modules share session fixtures (rendering
the ensemble's manifests once per session is what makes those tests cheap). Groups never share state with each
other: every test host, container, port and directory is made unique per test run.

The groups are handed out longest first, so that the long real-host modules do not start last and keep one
worker busy alone at the end: first the groups with tests on real systemd hosts (``hosts``), then those with
``slow`` tests, then the rest, each by its number of tests. Without xdist nothing here changes the order.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

SHARED_PACKAGES = ("tests/unit/ensemble/",)
# What a test of each kind costs roughly, relative to a plain unit test; only the order of the groups uses it.
COST = {"hosts": 40.0, "slow": 8.0}


def group_of(nodeid: str) -> str:
    """The group of a test: its module's path, or the package's for a package in SHARED_PACKAGES."""
    path = nodeid.split("::", 1)[0]
    return next((package for package in SHARED_PACKAGES if path.startswith(package)), path)


def _cost(item: pytest.Item) -> float:
    return max((COST[mark.name] for mark in item.iter_markers() if mark.name in COST), default=1.0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: order the groups longest first (every worker sorts the same way)."""
    if not hasattr(config, "workerinput"):
        return
    cost: dict[str, float] = {}
    for item in items:
        group = group_of(item.nodeid)
        cost[group] = cost.get(group, 0.0) + _cost(item)
    # A stable sort: the tests of a group keep their order and stay together.
    items.sort(key=lambda item: -cost[group_of(item.nodeid)])


class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """xdist's scope scheduling with our groups as the scopes."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> GroupScheduling | None:
    """``--dist loadscope`` hands out our groups, in collection order (scripts/pytest.sh passes
    ``--no-loadscope-reorder``, or xdist would reorder them by their number of tests)."""
    if config.getoption("dist") != "loadscope":
        return None
    return GroupScheduling(config, log)
