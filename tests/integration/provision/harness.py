"""Runs playbooks/provision.yml and playbooks/reset.yml against the Proxmox VE stand-in.

The stand-in serves HTTPS on 127.0.0.1 with its own CA; the playbooks run as a subprocess with the token
secret in the environment (PROXMOX_TOKEN_SECRET), exactly as an operator runs them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
TOKEN_ID = "gorkheavy@pve!ansible"
SECRET = "5f1c2b9e-7d4a-4c2e-9b1f-0a6d3e8c7b21"
IMAGE_URL = "https://cloud-images.example.invalid/noble/noble-server-cloudimg-amd64.img"
IMAGE_BYTES = b"QFI\xfb" + b"\x00" * 4092
IMAGE_SHA256 = hashlib.sha256(IMAGE_BYTES).hexdigest()
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvUu0p0a7QxH1mJp9t4W2zYxFQk3L8nRr6sD5eG7hKq operator@laptop"

# A loopback port nothing listens on (tcpmux): an SSH connection to it is refused at once.
UNREACHABLE_SSH_PORT = 1

VMS = {
    "k3s-server": {"node": "pve1", "vmid": 201, "address": "192.168.1.201", "group": "k3s_server"},
    "k3s-agent-1": {"node": "pve2", "vmid": 202, "address": "192.168.1.202", "group": "k3s_agents"},
    "k3s-agent-2": {"node": "pve3", "vmid": 203, "address": "192.168.1.203", "group": "k3s_agents"},
}
TEMPLATES = [{"node": "pve1", "vmid": 9001}, {"node": "pve2", "vmid": 9002}, {"node": "pve3", "vmid": 9003}]

RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(host["failed"] for host in self.recap.values())


def write_inventory(
    directory: Path,
    server_url: str,
    ca_path: str,
    *,
    vms: dict[str, dict[str, Any]] | None = None,
    group_vars: dict[str, Any] | None = None,
    host_vars: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """An inventory like inventory/example, pointed at the stand-in."""
    vms = vms if vms is not None else VMS
    host, port = server_url.removeprefix("https://").rsplit(":", 1)
    inventory = directory / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (inventory / "host_vars").mkdir(exist_ok=True)
    groups: dict[str, dict[str, Any]] = {"k3s_server": {"hosts": {}}, "k3s_agents": {"hosts": {}}}
    for name, vm in vms.items():
        groups[vm["group"]]["hosts"][name] = None
    hosts = {"all": {"children": {"k3s_cluster": {"children": groups}}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    settings: dict[str, Any] = {
        "gorkheavy_admin_user": "k3sadmin",
        "gorkheavy_ssh_public_keys": [SSH_KEY],
        "gorkheavy_network_gateway": "192.168.1.1",
        "gorkheavy_network_prefix": 24,
        "gorkheavy_network_nameservers": ["192.168.1.1", "1.1.1.1"],
        "gorkheavy_network_search_domain": "lan",
        "gorkheavy_proxmox_api_host": host,
        "gorkheavy_proxmox_api_port": int(port),
        "gorkheavy_proxmox_api_user": TOKEN_ID.split("!", maxsplit=1)[0],
        "gorkheavy_proxmox_api_token_id": TOKEN_ID.split("!", maxsplit=1)[1],
        "gorkheavy_proxmox_api_token_secret": "{{ lookup('ansible.builtin.env', 'PROXMOX_TOKEN_SECRET') }}",
        "gorkheavy_proxmox_validate_certs": True,
        "gorkheavy_proxmox_ca_path": ca_path,
        "gorkheavy_proxmox_templates": TEMPLATES,
        "gorkheavy_proxmox_image_url": IMAGE_URL,
        "gorkheavy_proxmox_image_checksum": IMAGE_SHA256,
        "gorkheavy_proxmox_image_checksum_algorithm": "sha256",
        "gorkheavy_proxmox_image_storage": "local",
        "gorkheavy_proxmox_vm_storage": "local-lvm",
        "gorkheavy_proxmox_bridge": "vmbr0",
        # No SSH servers behind the stand-in's VMs: wait on the guest agent's address, learn no host keys.
        "gorkheavy_proxmox_wait_for": "agent",
        "gorkheavy_ssh_known_hosts_file": "",
    }
    settings.update(group_vars or {})
    (inventory / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    for name, vm in vms.items():
        values = {
            "gorkheavy_vm_node": vm["node"],
            "gorkheavy_vm_id": vm["vmid"],
            "gorkheavy_vm_address": vm["address"],
            # Nothing answers SSH there: reset.yml's K3s play finds the nodes unreachable at once, on loopback
            # (the VMs' addresses are in a private range this machine must not send traffic to).
            "ansible_host": "127.0.0.1",
            "ansible_port": UNREACHABLE_SSH_PORT,
        }
        values.update((host_vars or {}).get(name, {}))
        (inventory / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump(values, sort_keys=False))
    return inventory


def run_playbook(
    playbook: str,
    inventory: Path,
    *args: str,
    secret: str | None = SECRET,
    timeout: int = 600,  # a hang guard, not a time limit: the suite runs playbooks side by side
    extra_env: dict[str, str] | None = None,
) -> Run:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "PROXMOX_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    if secret is not None:
        env["PROXMOX_TOKEN_SECRET"] = secret
    env.update(extra_env or {})
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / playbook), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(proc.stdout)
    }
    return Run(proc.returncode, proc.stdout, proc.stderr, recap)


MUTATING = ("POST", "PUT", "DELETE")


def mutating_requests(standin: Any, since: int = 0) -> list[Any]:
    """Requests after index ``since`` that could change the cluster (tickets excluded)."""
    return [r for r in standin.requests[since:] if r.method in MUTATING and r.path != "/access/ticket"]
