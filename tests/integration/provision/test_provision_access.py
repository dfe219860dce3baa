"""How the provision stage authenticates and verifies TLS, and what it says when that fails."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from tests.integration.provision import harness
from tests.integration.provision.conftest import Lab

pytestmark = pytest.mark.slow


def test_password_login_and_an_explicit_tls_opt_out_work_with_a_warning(lab: Lab) -> None:
    lab.standin.add_user("operator@pve", password="correct horse battery staple")
    inventory = lab.inventory(
        group_vars={
            "gorkheavy_proxmox_api_user": "operator@pve",
            "gorkheavy_proxmox_api_token_id": "",
            "gorkheavy_proxmox_api_token_secret": "",
            "gorkheavy_proxmox_api_password": "{{ lookup('ansible.builtin.env', 'PVE_PASSWORD') }}",
            "gorkheavy_proxmox_validate_certs": False,
            "gorkheavy_proxmox_ca_path": "",
        }
    )
    run = harness.run_playbook(
        "provision.yml", inventory, secret=None, extra_env={"PVE_PASSWORD": "correct horse battery staple"}
    )
    assert run.rc == 0, run.output
    assert "TLS certificate verification for 127.0.0.1" in run.output
    assert "correct horse battery staple" not in run.output
    assert sorted(v for v, g in lab.vms().items() if not g.get("template")) == [201, 202, 203]


def test_an_untrusted_certificate_is_refused_with_what_to_do(lab: Lab) -> None:
    run = lab.provision(lab.inventory(group_vars={"gorkheavy_proxmox_ca_path": ""}))
    assert run.rc != 0
    assert "TLS verification of https://127.0.0.1:" in run.output
    assert "gorkheavy_proxmox_ca_path" in run.output
    assert lab.standin.requests == []


def test_missing_privileges_are_named_before_any_change(lab: Lab) -> None:
    lab.standin.add_token(
        "auditor@pve!ansible",
        "auditor-secret",
        privsep=True,
        privileges={"/": ["Sys.Audit", "VM.Audit", "Datastore.Audit"]},
    )
    inventory = lab.inventory(group_vars={"gorkheavy_proxmox_api_user": "auditor@pve"})
    run = lab.provision(inventory, secret="auditor-secret")
    assert run.rc != 0
    output = " ".join(run.output.split())
    assert (
        "auditor@pve!ansible lacks VM.Allocate on /vms/201 (to create, configure and start VM k3s-server)"
        in (output)
    ), output
    assert "pveum aclmod /vms/201 -user auditor@pve -role PVEVMAdmin" in output
    assert "auditor-secret" not in run.output
    assert harness.mutating_requests(lab.standin) == []


def test_dhcp_vm_gets_its_address_from_the_guest_agent(lab: Lab) -> None:
    vms = {"k3s-server": {**harness.VMS["k3s-server"], "address": "dhcp"}}
    inventory = lab.inventory(
        vms=vms, group_vars={"gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}]}
    )
    run = lab.provision(inventory)
    assert run.rc == 0, run.output
    assert lab.config("pve1", 201)["ipconfig0"] == "ip=dhcp"
    assert "k3s-server -> 10.0.2.15" in run.stdout


def test_the_ssh_wait_needs_an_ssh_banner_on_the_address(lab: Lab) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            vms = {"k3s-server": {**harness.VMS["k3s-server"], "address": "127.0.0.1"}}
            inventory = lab.inventory(
                vms=vms,
                group_vars={
                    "gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}],
                    "gorkheavy_proxmox_wait_for": "ssh",
                    "gorkheavy_proxmox_ssh_port": port,
                    "gorkheavy_network_prefix": 8,
                },
            )
            run = lab.provision(inventory)
        finally:
            stop.set()
            thread.join(timeout=2)
    assert run.rc == 0, run.output
    assert "Wait until each VM answers on SSH" in run.stdout
    assert "k3s-server -> 127.0.0.1" in run.stdout


# The privileges of the built-in roles the quick start grants (pve-access-control's privilege groups).
BUILTIN_ROLES = {
    "PVEVMAdmin": [
        "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
        "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network",
        "VM.Config.Options", "VM.Console", "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead",
        "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted", "VM.Migrate",
        "VM.PowerMgmt", "VM.Replicate", "VM.Snapshot", "VM.Snapshot.Rollback",
    ],
    "PVEDatastoreAdmin": [
        "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
    ],
    "PVESDNUser": ["SDN.Audit", "SDN.Use"],
}  # fmt: skip


def quick_start_acls() -> dict[str, set[str]]:
    """The ACL paths and privileges the README's quick start gives gorkheavy@pve, from its pveum lines."""
    readme = (harness.ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start on real Proxmox") :]
    roles = {name: set(privs) for name, privs in BUILTIN_ROLES.items()}
    for name, privs in re.findall(r"^\s*pveum role add (\S+) -privs (\S+)", section, re.MULTILINE):
        roles[name] = set(privs.split(","))
    acls: dict[str, set[str]] = {}
    for path, role in re.findall(
        r"^\s*pveum aclmod (\S+) -user gorkheavy@pve -role (\S+)", section, re.MULTILINE
    ):
        acls.setdefault(path, set()).update(roles[role])
    assert acls, "no pveum aclmod lines in the README's quick start"
    return acls


def test_the_quick_start_grants_are_enough_for_the_whole_stage(lab: Lab) -> None:
    lab.standin.add_user("gorkheavy@pve", privileges=quick_start_acls())
    lab.standin.add_token("gorkheavy@pve!quickstart", "qs-secret", privsep=False)
    inventory = lab.inventory(group_vars={"gorkheavy_proxmox_api_token_id": "quickstart"})
    run = lab.provision(inventory, secret="qs-secret")
    assert run.rc == 0, run.output
    assert sorted(v for v, g in lab.vms().items() if not g.get("template")) == [201, 202, 203]


def test_privileges_are_checked_on_their_own_paths_and_each_missing_grant_is_named(lab: Lab) -> None:
    acls = quick_start_acls()
    # everything the stage needs, but on paths where Proxmox does not look for it: another VMID, another
    # bridge, another node; merged together these would pass
    lab.standin.add_user(
        "gorkheavy@pve",
        privileges={
            "/vms/999": acls["/"],
            "/storage": acls["/storage"],
            "/sdn/zones/localnetwork/vmbr9": acls["/sdn/zones/localnetwork"],
            "/nodes/pve9": acls["/nodes"],
        },
    )
    lab.standin.add_token("gorkheavy@pve!scoped", "scoped-secret", privsep=False)
    inventory = lab.inventory(group_vars={"gorkheavy_proxmox_api_token_id": "scoped"})
    run = lab.provision(inventory, secret="scoped-secret")
    assert run.rc != 0
    output = " ".join(run.output.split())
    for wanted in [
        "gorkheavy@pve!scoped lacks VM.Allocate on /vms/202 (to create, configure and start VM k3s-agent-1); "
        "add it with: pveum aclmod /vms/202 -user gorkheavy@pve -role PVEVMAdmin",
        "lacks SDN.Use on /sdn/zones/localnetwork/vmbr0 (to attach the network interface of each VM to "
        "bridge vmbr0); add it with: pveum aclmod /sdn/zones/localnetwork/vmbr0 -user gorkheavy@pve "
        "-role PVESDNUser",
        "lacks VM.Clone on /vms/9003 (to clone template 9003)",
        "lacks one of VM.GuestAgent.Audit, VM.GuestAgent.Unrestricted, VM.Monitor on /vms/203",
        "a token with privilege separation needs it as well: -token 'gorkheavy@pve!scoped'",
    ]:
        assert wanted in output, output
    assert harness.mutating_requests(lab.standin) == []


def test_a_missing_download_grant_is_found_before_any_change(lab: Lab) -> None:
    acls = quick_start_acls()
    del acls["/nodes"]
    lab.standin.add_user("gorkheavy@pve", privileges=acls)
    lab.standin.add_token("gorkheavy@pve!nodl", "nodl-secret", privsep=False)
    run = lab.provision(
        lab.inventory(group_vars={"gorkheavy_proxmox_api_token_id": "nodl"}), secret="nodl-secret"
    )
    assert run.rc != 0
    output = " ".join(run.output.split())
    assert (
        "lacks Sys.AccessNetwork on /nodes/pve2 (for pve2 to download the cloud image (download-url)); "
        "add it with: pveum role add GorkheavyDownload -privs Sys.AccessNetwork; pveum aclmod /nodes/pve2 "
        "-user gorkheavy@pve -role GorkheavyDownload" in output
    ), output
    assert harness.mutating_requests(lab.standin) == []
