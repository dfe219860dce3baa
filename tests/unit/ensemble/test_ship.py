"""Shipping the wheelhouse to a node (the orchestrator role's ship.yml), run on this machine as the node.

The real tasks copy the build's tar file, unpack it once, verify its SHA256SUMS, and remove builds beyond the
ones kept (the current one and the newest older one by default); a second run changes nothing.
"""

from __future__ import annotations

import getpass
import os
import tarfile
from pathlib import Path

import yaml

from tests.unit.ensemble.rendering import BIN, Rendered, run_ansible


def _ship(node_dir: Path, archive: Path, tmp_path: Path, *extra: str) -> str:
    play = [
        {
            "name": "Ship the wheelhouse to this machine as a node",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {
                # become to root is no sudo when this machine's user is root (tests/unit/cluster/playbook.py)
                "ansible_user": getpass.getuser(),
                "orchestrator_artifact_node_dir": str(node_dir),
                "orchestrator_artifact_keep": 2,
                "orchestrator__artifact": {
                    "name": archive.name.removesuffix(".tar"),
                    "archive": str(archive),
                },
            },
            "tasks": [
                {
                    "ansible.builtin.include_role": {
                        "name": "gorkheavy.lite.orchestrator",
                        "tasks_from": "ship.yml",
                    },
                    "vars": {"orchestrator__node": "localhost"},
                }
            ],
        }
    ]
    path = tmp_path / "ship.yml"
    path.write_text(yaml.safe_dump(play), encoding="utf-8")
    result = run_ansible(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example", str(path), *extra], timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout[result.stdout.rfind("PLAY RECAP") :]


def test_ship_unpacks_verifies_keeps_two_builds_and_is_idempotent(example: Rendered, tmp_path: Path) -> None:
    (archive,) = (example.directory / "artifacts").glob("orchestrator-*.tar")
    name = archive.name.removesuffix(".tar")
    node = tmp_path / "node"
    for old, age in (("orchestrator-0.0.8-aaaa", 2), ("orchestrator-0.0.9-bbbb", 1)):
        (node / old).mkdir(parents=True)
        (node / f"{old}.tar").write_bytes(b"")
        stamp = 1_700_000_000 - age * 86_400
        os.utime(node / f"{old}.tar", (stamp, stamp))
    # check mode on a node that has nothing yet: the copy would change, nothing to unpack or verify yet
    fresh = tmp_path / "fresh"
    preview = _ship(fresh, archive, tmp_path, "--check", "--diff")
    assert "failed=0" in preview, preview
    assert "changed=0" not in preview, preview
    assert not fresh.exists()
    first = _ship(node, archive, tmp_path)
    assert "failed=0" in first
    assert sorted(p.name for p in node.iterdir()) == sorted(
        [name, f"{name}.tar", "orchestrator-0.0.9-bbbb", "orchestrator-0.0.9-bbbb.tar"]
    )
    with tarfile.open(archive) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
            f"{name}/{p.name}" for p in (node / name).iterdir()
        )
    second = _ship(node, archive, tmp_path)
    assert "changed=0" in second, second
