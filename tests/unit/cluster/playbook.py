"""Run a playbook of this collection with ansible-playbook on this machine (local connection), as the cluster
stage's unit tests do: the inventory and the extra vars are JSON files in the test's temporary directory."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# The local user is named: a task that becomes that same user then runs without sudo, as Ansible skips become
# to the login user (through Mitogen only when the login user is known).
LOCAL = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "ansible_user": getpass.getuser(),
}


def run_playbook(
    tmp: Path,
    playbook: Path,
    inventory: dict[str, Any],
    extra: dict[str, Any],
    *options: str,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook [options] -i <inventory> -e @<extra> <playbook>`` from the repository root."""
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"),
    }
    argv = [
        str(BIN / "ansible-playbook"),
        *options,
        "-i",
        str(tmp / "inventory.json"),
        "-e",
        f"@{tmp / 'extra.json'}",
        str(playbook),
    ]
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
