"""Each Proxmox module's DOCUMENTATION matches the options it takes (names, types, defaults, choices)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

MODULES = ["proxmox_preflight", "proxmox_cloud_template", "proxmox_cloud_vm", "proxmox_vm_address"]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"ansible_collections.gorkheavy.lite.plugins.modules.{name}")


def documented_options(documentation: dict[str, Any]) -> dict[str, Any]:
    """The module's own options merged with those of its documentation fragments, as ansible-doc does."""
    options: dict[str, Any] = {}
    for fragment in documentation.get("extends_documentation_fragment", []):
        collection, _, fragment_name = fragment.rpartition(".")
        assert collection == "gorkheavy.lite", f"unexpected fragment {fragment}"
        holder = importlib.import_module(
            f"ansible_collections.gorkheavy.lite.plugins.doc_fragments.{fragment_name}"
        ).ModuleDocFragment
        options.update(yaml.safe_load(holder.DOCUMENTATION)["options"])
    options.update(documentation["options"])
    return options


def compare(documented: dict[str, Any], spec: dict[str, Any], where: str) -> list[str]:
    problems = []
    if set(documented) != set(spec):
        problems.append(
            f"{where}: documented {sorted(set(documented) - set(spec))} "
            f"but not in the spec, in the spec {sorted(set(spec) - set(documented))} but not documented"
        )
    for option in sorted(set(documented) & set(spec)):
        doc, arg = documented[option], spec[option]
        for key in ("type", "default", "choices", "elements"):
            doc_value, arg_value = doc.get(key), arg.get(key)
            if key == "type":
                arg_value = arg_value or "str"
            if doc_value != arg_value:
                problems.append(
                    f"{where}.{option}: {key} is {doc_value!r} in the docs, {arg_value!r} in the spec"
                )
        if bool(doc.get("required")) != bool(arg.get("required")):
            problems.append(f"{where}.{option}: required differs")
        if not doc.get("description"):
            problems.append(f"{where}.{option}: no description")
        if "options" in arg:
            problems.extend(compare(doc.get("suboptions", {}), arg["options"], f"{where}.{option}"))
    return problems


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name: str) -> None:
    module = load(name)
    documentation = yaml.safe_load(module.DOCUMENTATION)
    assert documentation["module"] == name
    assert compare(documented_options(documentation), module.build_argument_spec(), name) == []
    assert yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_secrets_are_never_logged(name: str) -> None:
    spec = load(name).build_argument_spec()
    assert spec["api_token_secret"]["no_log"] is True
    assert spec["api_password"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True


ROOT = Path(__file__).resolve().parents[3]


def pveum_grants(text: str) -> list[str]:
    """The pveum lines that grant privileges (role add, aclmod), comments and spacing left out."""
    return [
        " ".join(line.split("#")[0].split())
        for line in text.splitlines()
        if re.match(r"^\s*pveum (aclmod|role add) ", line)
    ]


@pytest.mark.parametrize("role", ["proxmox_template", "proxmox_vm"])
def test_the_role_readme_grants_what_the_quick_start_grants(role: str) -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start on real Proxmox") :].split("\n## ")[0]
    wanted = pveum_grants(quick_start)
    assert wanted, "the quick start grants nothing"
    assert pveum_grants((ROOT / "roles" / role / "README.md").read_text()) == wanted
