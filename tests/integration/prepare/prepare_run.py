"""Running playbooks/prepare.yml against a systemd test host, and logging in the ways an operator does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.hosts.systemd_host import REPO, SystemdHost

ADMIN = "k3sadmin"
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def keypair(directory: Path, name: str, kind: str = "ed25519", bits: str = "") -> Path:
    key = directory / name
    size = ["-b", bits] if bits else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def run_prepare(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # New test hosts get removed ones' addresses: never reuse an SSH master connection across hosts.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(inventory.parent / "ssh-control"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        # containers on this machine: connection set-up at a high load takes longer than the default 10 s
        "ANSIBLE_TIMEOUT": "60",
        # The whole output of every run, for a look after a failure (the assertions show only its end).
        "ANSIBLE_LOG_PATH": str(inventory.parent / "ansible.log"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
    }
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks/prepare.yml"), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,  # a hang guard: a run takes well under a minute, longer on a busy machine
        env=env,
        cwd=REPO,
    )


def password_login(address: str, password: str) -> subprocess.CompletedProcess[str]:
    argv = ["sshpass", "-e", "ssh", *SSH_OPTIONS.split()]
    argv += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
    argv += [f"{ADMIN}@{address}", "id -un"]
    env = {**os.environ, "SSHPASS": password}
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, env=env)


def key_login(host: SystemdHost, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A fresh key log-in as the admin user, the way an operator would try it."""
    argv = ["ssh", *SSH_OPTIONS.split(), "-o", "BatchMode=yes", "-o", "ControlPath=none", "-i", str(key)]
    argv += [f"{ADMIN}@{host.address}", command]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
