"""A systemd test host (Debian 12, sshd) of its own for the node system variants, and a way to converge it.

The host comes from the shared test image (scripts/build-test-image.sh) and is started with
tests/hosts/run-test-host.sh, so it has no CAP_SYS_TIME, CAP_SYS_MODULE or CAP_SYS_ADMIN: even when a test
lets a role act on the kernel or the clock, nothing can reach the machine running the tests. That is checked
before any playbook runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(__file__).with_name("converge.yml")
IMAGE = "localhost/gorkheavy-testhost:bookworm"
# Capability bits that would let a container change the machine it runs on: the clock, modules, swap.
CAP_SYS_MODULE, CAP_SYS_ADMIN, CAP_SYS_TIME = 16, 21, 25
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass
class Run:
    rc: int
    output: str

    @property
    def changed(self) -> int:
        found = RECAP.findall(self.output)
        assert found, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return sum(int(m[1]) for m in found)


@dataclass
class NodeHost:
    name: str
    address: str
    key: Path
    workdir: Path

    def ssh_args(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host as root over a fresh SSH connection (no shared master)."""
        return subprocess.run(
            ["ssh", *self.ssh_args(), "-o", "ControlMaster=no", f"root@{self.address}", command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def out(self, command: str) -> str:
        done = self.run(command)
        assert done.returncode == 0, f"{command!r} failed ({done.returncode}): {done.stderr}"
        return done.stdout

    def converge(self, variables: dict[str, Any], *, check: bool = False) -> Run:
        inventory = self.workdir / "inventory.yml"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {
                            self.name: {
                                "ansible_host": self.address,
                                "ansible_user": "root",
                                "ansible_ssh_private_key_file": str(self.key),
                                "ansible_ssh_common_args": SSH_OPTIONS,
                            }
                        }
                    }
                }
            )
        )
        extra = self.workdir / "vars.json"
        extra.write_text(json.dumps(variables))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
            # fresh hosts with fresh host keys, as SSH_OPTIONS says (no known-hosts file)
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            # containers on this machine: connection set-up at a high load takes longer than the default 10 s
            "ANSIBLE_TIMEOUT": "60",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
        argv = ["ansible-playbook", "-i", str(inventory), "-e", f"@{extra}", str(PLAYBOOK)]
        if check:
            argv.append("--check")
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        return Run(done.returncode, done.stdout + done.stderr)


def controller_address(host: NodeHost) -> str:
    """The address this machine's SSH connections come from, as the host sees it."""
    return host.out("echo $SSH_CLIENT").split()[0]


def _capabilities(name: str) -> int:
    status = subprocess.run(
        ["podman", "exec", name, "cat", "/proc/1/status"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^CapBnd:\s*([0-9a-f]+)$", status, re.MULTILINE)
    assert found, status
    return int(found.group(1), 16)


@pytest.fixture(scope="module")
def testhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHost]:
    """A host as the prepare stage leaves a node: IPv4 forwarding on (k3s_prereqs sets it on a VM; inside a
    test host /proc/sys is read-only, so the host is started with it)."""
    yield from _node_host(tmp_path_factory, ip_forward="1")


@pytest.fixture(scope="module")
def fresh_testhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHost]:
    """A host as a fresh VM is before k3s_prereqs ran: IPv4 forwarding off."""
    yield from _node_host(tmp_path_factory, ip_forward="0")


def _node_host(tmp_path_factory: pytest.TempPathFactory, *, ip_forward: str) -> Iterator[NodeHost]:
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.skip("needs podman as root (see tests/hosts/README.md)")
    subprocess.run([str(ROOT / "scripts/build-test-image.sh"), IMAGE], check=True, capture_output=True)
    workdir = tmp_path_factory.mktemp("node-system")
    (workdir / "cp").mkdir()
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"gorkheavy-nodesys-{uuid.uuid4().hex[:8]}"
    try:
        started = subprocess.run(
            [str(ROOT / "tests/hosts/run-test-host.sh"), name, f"{key}.pub"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "IMAGE": IMAGE, "TESTHOST_IP_FORWARD": ip_forward},
        )
        caps = _capabilities(name)
        for bit, what in ((CAP_SYS_TIME, "the clock"), (CAP_SYS_MODULE, "modules"), (CAP_SYS_ADMIN, "swap")):
            assert not caps >> bit & 1, f"the test host could change this machine's {what}; refusing to run"
        yield NodeHost(name, started.stdout.strip().splitlines()[-1], key, workdir)
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--ignore", "--time", "5", name], capture_output=True, check=False
        )
