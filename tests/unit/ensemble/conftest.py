"""Fixtures: the ensemble's manifests rendered by playbooks/render.yml, once per variant per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.ensemble.rendering import Rendered, options_vars, run_render


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory, artifact_cache: Path) -> Callable[..., Rendered]:
    """render(name, extra_vars) -> Rendered; each variant is rendered once per session."""
    done: dict[str, Rendered] = {}

    def _render(name: str = "example", extra_vars: dict[str, Any] | None = None) -> Rendered:
        if name not in done:
            done[name] = run_render(tmp_path_factory.mktemp(f"render-{name}"), artifact_cache, extra_vars)
        return done[name]

    return _render


@pytest.fixture(scope="session")
def example(render: Callable[..., Rendered]) -> Rendered:
    """The manifests of inventory/example as they are."""
    result: Rendered = render()
    return result


@pytest.fixture(scope="session")
def options(render: Callable[..., Rendered]) -> Rendered:
    """The manifests with every optional switch on (see rendering.options_vars)."""
    result: Rendered = render("options", options_vars())
    return result
