"""`make site` with the example inventory on a machine without an SSH key: a clear stop up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.provision import harness

pytestmark = pytest.mark.slow


def test_make_site_names_the_variable_the_missing_key_file_and_how_to_make_one(tmp_path: Path) -> None:
    home = tmp_path / "home"  # a fresh account: no ~/.ssh at all
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "PROXMOX_"))}
    env.update(HOME=str(home), PATH=f"{harness.VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(
        ["make", "--no-print-directory", "site", f"VENV={Path(sys.executable).parent.parent}"],
        cwd=harness.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    public = home / ".ssh" / "id_ed25519.pub"
    assert f"gorkheavy_ssh_public_key_files points at {public}, which does not exist" in output, output
    assert f"ssh-keygen -t ed25519 -f {home / '.ssh' / 'id_ed25519'}" in output
    assert f"gorkheavy_ssh_private_key_file points at {home / '.ssh' / 'id_ed25519'}" in output
    # it stops there, before the roles: no raw lookup failure
    assert "lookup plugin" not in output
    assert "Use -vvvvv" not in output
    assert "Check the cluster and the inventory before changing anything" not in output
    assert not (home / ".ssh").exists()
