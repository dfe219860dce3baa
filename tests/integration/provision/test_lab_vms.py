"""The provision stage against the Proxmox VE stand-in whose VMs are real systemd test hosts (podman).

A VM the play creates boots as a container on a podman network with the address, MAC, hostname, cloud-init
user, keys and sudo the VM's config gives it; the play records the VM's SSH host keys in a known-hosts file,
and a play that logs in afterwards checks them (host key checking on, the settings of inventory/example). A VM
destroyed and created again at the same address gets its new keys recorded in place of the old ones. A
container that dies is a stopped VM. A VM whose guest hangs at boot stops the play with an error naming it.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from gorkheavy_lab.proxmox import ProxmoxStandin
from gorkheavy_lab.proxmox.podman import PodmanBackend
from proxmoxer import ProxmoxAPI

from tests.hosts.systemd_host import REPO, build_image
from tests.integration.provision import harness
from tests.integration.provision.conftest import ADMIN_TOKEN, Lab

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

NETWORK = "labvm-net"
SUBNET = ipaddress.ip_network("10.231.7.0/24")
ADMIN = "k3sadmin"
EXAMPLE_VARS = yaml.safe_load((REPO / "inventory/example/group_vars/all/main.yml").read_text())


@dataclass
class PodmanLab(Lab):
    backend: PodmanBackend
    key: Path
    hang_dir: Path

    def write(self, address: str, **group_vars: Any) -> Path:
        settings = {
            "gorkheavy_admin_user": ADMIN,
            "gorkheavy_ssh_public_keys": [self.key.with_suffix(".pub").read_text().strip()],
            "ansible_ssh_private_key_file": str(self.key),
            "gorkheavy_network_gateway": str(SUBNET[1]),
            "gorkheavy_network_prefix": SUBNET.prefixlen,
            "gorkheavy_network_nameservers": [str(SUBNET[1])],
            "gorkheavy_proxmox_wait_for": "ssh",
            "gorkheavy_proxmox_wait_timeout": 90,
            # exactly what inventory/example says: keys beside the inventory, checked by every later play
            "gorkheavy_ssh_known_hosts_file": EXAMPLE_VARS["gorkheavy_ssh_known_hosts_file"],
            "ansible_ssh_common_args": EXAMPLE_VARS["ansible_ssh_common_args"],
            "ansible_user": EXAMPLE_VARS["ansible_user"],
            **group_vars,
        }
        vms = {"k3s-server": {"node": "pve1", "vmid": 201, "address": address, "group": "k3s_server"}}
        return self.inventory(
            vms=vms,
            group_vars=settings,
            host_vars={"k3s-server": {"ansible_host": address, "ansible_port": 22}},
        )

    def play(self, playbook: str, inventory: Path, *args: str, **kwargs: Any) -> harness.Run:
        # A VM recreated at an address gets a new host: never reuse an SSH master connection across runs. The
        # directory is short and under /tmp, since a socket path is limited to 107 bytes and pytest's own
        # temporary paths grow with its run count and worker name.
        control = Path(tempfile.mkdtemp(prefix="gh-cp-", dir="/tmp"))
        env = {
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_LOG_PATH": str(self.tmp_path / "ansible.log"),
            # the VMs are containers on this machine: connection set-up at a high load takes longer than 10 s
            "ANSIBLE_TIMEOUT": "60",
        }
        try:
            return harness.run_playbook(playbook, inventory, *args, extra_env=env, **kwargs)
        finally:
            shutil.rmtree(control, ignore_errors=True)

    def admin(self) -> ProxmoxAPI:
        """As Lab.admin, with a longer timeout: the real hosts' podman calls are slow on a busy machine."""
        host, port = self.server.url.removeprefix("https://").rsplit(":", 1)
        user, token = ADMIN_TOKEN[0].split("!")
        return ProxmoxAPI(
            host, port=int(port), user=user, token_name=token, token_value=ADMIN_TOKEN[1],
            verify_ssl=self.server.ca_path, timeout=60,
        )  # fmt: skip

    def container(self, vmid: int) -> str:
        name = self.backend.container(vmid)
        assert name is not None, f"VM {vmid} has no container"
        return name

    def guest(self, vmid: int, script: str) -> str:
        done = subprocess.run(
            ["podman", "exec", self.container(vmid), "sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout


LOGIN_PLAY = """
- name: Log in to the VMs as the later stages do
  hosts: k3s_cluster
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - name: Who am I, and who with sudo
      ansible.builtin.command: id -un
      register: plain
      changed_when: false
    - name: With sudo
      ansible.builtin.command: id -un
      become: true
      register: root
      changed_when: false
    - name: Show both
      ansible.builtin.debug:
        msg: "login={{ plain.stdout }} sudo={{ root.stdout }}"
"""


@pytest.fixture
def podman_lab(tmp_path: Path) -> Iterator[PodmanLab]:
    build_image()
    created_network = False
    if subprocess.run(["podman", "network", "exists", NETWORK], check=False).returncode != 0:
        subprocess.run(["podman", "network", "create", "--subnet", str(SUBNET), NETWORK], check=True)
        created_network = True
    key = tmp_path / "id_ed25519"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", str(key)]
    subprocess.run(keygen, check=True)
    hang_dir = tmp_path / "boot-hangs"
    hang_dir.mkdir()
    backend = PodmanBackend(NETWORK, prefix=f"labvm-{secrets.token_hex(2)}-", hang_dir=hang_dir)
    standin = ProxmoxStandin(
        nodes=["pve1", "pve2", "pve3"],
        task_durations={"default": 0.02, "qmclone": 0.1, "download": 0.1},
        statd_period=1.0,
        backend=backend,
    )
    standin.add_token(harness.TOKEN_ID, harness.SECRET)
    standin.add_token(*ADMIN_TOKEN)
    standin.add_remote_file(harness.IMAGE_URL, harness.IMAGE_BYTES, virtual_size=3 * 2**30)
    try:
        with standin.serve_https(host="127.0.0.1", port=0) as server:
            yield PodmanLab(standin, server, tmp_path, backend, key, hang_dir)
    finally:
        backend.remove_all()
        if created_network:
            subprocess.run(["podman", "network", "rm", NETWORK], check=False, capture_output=True)
    assert standin.schema_violations == []
    assert standin.internal_errors == []


def _known(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _host_keys(lab: PodmanLab, vmid: int) -> set[str]:
    out = lab.guest(vmid, "cat /etc/ssh/ssh_host_*_key.pub")
    return {" ".join(line.split()[:2]) for line in out.splitlines() if line.strip()}


def test_vms_are_real_hosts_whose_host_keys_the_later_stages_check(podman_lab: PodmanLab) -> None:
    lab = podman_lab
    address = str(SUBNET[21])
    inventory = lab.write(address)
    known_hosts = inventory.with_name("inventory.known_hosts")

    first = lab.play("provision.yml", inventory)
    assert first.rc == 0, first.output[-4000:]
    name = lab.container(201)
    assert name == f"{lab.backend.prefix}k3s-server"
    # the guest is what the VM's config and cloud-init drive say
    config = lab.config("pve1", 201)
    guest = json.loads(lab.guest(201, "ip -json addr show dev eth0"))[0]
    assert guest["address"] == config["net0"].split(",")[0].split("=")[1].lower()
    assert [a["local"] for a in guest["addr_info"] if a["family"] == "inet"] == [address]
    facts = lab.guest(201, "hostname; id -nG k3sadmin; stat -c %a /etc/sudoers.d/90-cloud-init-users").split(
        "\n"
    )
    assert facts[0] == "k3s-server"
    assert set(facts[1].split()) == {"k3sadmin", "adm", "cdrom", "dip", "lxd", "sudo"}
    assert facts[2] == "440"
    authorized = lab.guest(201, "cat /home/k3sadmin/.ssh/authorized_keys")
    assert authorized.strip() == lab.key.with_suffix(".pub").read_text().strip()
    assert 'Please login as the user \\"k3sadmin\\"' in lab.guest(201, "cat /root/.ssh/authorized_keys")
    assert lab.admin().nodes("pve1").qemu(201).status.current.get()["status"] == "running"
    # the keys the play recorded are the guest's own, for its address only
    recorded = _known(known_hosts)
    assert {line[0] for line in recorded} == {address}
    assert {" ".join(line[1:3]) for line in recorded} == _host_keys(lab, 201)

    play = lab.tmp_path / "login.yml"
    play.write_text(LOGIN_PLAY)
    logged_in = lab.play(str(play), inventory)
    assert logged_in.rc == 0, logged_in.stdout[-3000:]
    assert "login=k3sadmin sudo=root" in logged_in.stdout

    again = lab.play("provision.yml", inventory)
    assert again.rc == 0, again.output[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert _known(known_hosts) == recorded

    # a guest that dies is a stopped VM; starting the VM boots the same host again
    subprocess.run(["podman", "kill", name], check=True, capture_output=True)
    for _ in range(60):  # the status follows podman's within a listing cycle
        if lab.admin().nodes("pve1").qemu(201).status.current.get()["status"] == "stopped":
            break
        time.sleep(0.5)
    assert lab.admin().nodes("pve1").qemu(201).status.current.get()["status"] == "stopped"
    assert lab.vms()[201]["status"] == "stopped"
    lab.wait(lab.admin().nodes("pve1").qemu(201).status.start.post())
    assert lab.container(201) == name

    # destroyed and created again at the same address: new host keys, recorded in place of the old ones
    old_keys = _host_keys(lab, 201)
    lab.wait(lab.admin().nodes("pve1").qemu(201).status.stop.post())
    lab.wait(lab.admin().nodes("pve1").qemu(201).delete())
    assert lab.backend.container(201) is None
    recreated = lab.play("provision.yml", inventory)
    assert recreated.rc == 0, recreated.output[-4000:]
    new_keys = _host_keys(lab, 201)
    assert not new_keys & old_keys
    assert {" ".join(line[1:3]) for line in _known(known_hosts)} == new_keys
    # what the later stages' ssh does with those settings: no prompt, no warning, the new host accepted
    ssh = subprocess.run(
        [
            "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-i", str(lab.key),
            f"{ADMIN}@{address}", "sudo -n id -un",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (ssh.returncode, ssh.stdout.strip(), ssh.stderr.strip()) == (0, "root", "")


def test_a_vm_whose_guest_hangs_at_boot_stops_the_play_naming_it(podman_lab: PodmanLab) -> None:
    lab = podman_lab
    address = str(SUBNET[22])
    (lab.hang_dir / "k3s-server").touch()
    inventory = lab.write(address, gorkheavy_proxmox_wait_timeout=8)
    run = lab.play("provision.yml", inventory)
    assert run.rc != 0
    assert "k3s-server" in run.stdout, run.stdout[-3000:]
    assert address in run.stdout, run.stdout[-3000:]
    assert "Timeout when waiting for search string SSH-" in run.stdout, run.stdout[-3000:]
    # the VM runs, its guest agent never answers
    assert lab.admin().nodes("pve1").qemu(201).status.current.get()["status"] == "running"
    assert lab.backend.addresses("pve1", 201, {"agent": "1"}) is None
    assert not inventory.with_name("inventory.known_hosts").exists()
    # the fix: the guest boots again normally once restarted
    (lab.hang_dir / "k3s-server").unlink()
    lab.wait(lab.admin().nodes("pve1").qemu(201).status.stop.post())
    rerun = lab.play("provision.yml", inventory, "-e", "gorkheavy_proxmox_wait_timeout=90")
    assert rerun.rc == 0, rerun.output[-3000:]
    assert {line[0] for line in _known(inventory.with_name("inventory.known_hosts"))} == {address}
