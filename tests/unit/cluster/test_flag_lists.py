"""The roles' config-key lists and the K3s stand-in's flag lists come from the same K3s help output.

The collection ships its own copy (roles/k3s_common/vars/flags.yml: a role cannot read the lab's package), so
this test keeps the two from drifting apart: every key the roles accept is one the stand-in (and K3s) knows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("kind", ["server", "agent"])
def test_role_keys_match_the_stand_in_flags(kind: str) -> None:
    lines = yaml.safe_load((ROOT / "roles/k3s_common/vars/flags.yml").read_text())["__k3s_common_flags"]
    role = lines["1.36"]
    standin = yaml.safe_load((ROOT / "app/gorkheavy_lab/k3s/data/flags-v1.36.yaml").read_text())
    assert sorted(set(role[kind])) == sorted(role[kind]), "duplicate keys in the role's list"
    assert sorted(role[kind]) == sorted(standin[kind])
