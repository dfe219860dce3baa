"""Every module of the collection has documentation that ansible-doc renders: valid YAML, its fragments found,
its examples and return values parsed. (A plain scalar with ": " in it makes the whole page unreadable, and
nothing else in the suite reads it.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.ensemble.rendering import BIN, ROOT, run_ansible

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def test_every_module_file_is_listed() -> None:
    assert {"k8s_apply_set", "k8s_preview", "proxmox_cloud_vm"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_the_module(module: str) -> None:
    name = f"gorkheavy.lite.{module}"
    result = run_ansible([str(BIN / "ansible-doc"), "--json", name], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr, result.stderr
    doc = json.loads(result.stdout)[name]
    assert doc["doc"]["short_description"], doc
    assert doc["doc"].get("author"), "no author (the gorkheavy.lite.k8s_module fragment, or its own)"
    assert doc["examples"].strip(), "no examples"
    assert Path(doc["doc"]["filename"]).name == f"{module}.py"
