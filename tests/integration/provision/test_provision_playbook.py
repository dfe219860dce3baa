"""playbooks/provision.yml and playbooks/reset.yml run by ansible-playbook against the Proxmox VE stand-in."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from gorkheavy_lab.proxmox import StorageDef

from tests.integration.provision import harness
from tests.integration.provision.conftest import Lab

pytestmark = pytest.mark.slow


def assert_clean(run: harness.Run) -> None:
    assert harness.SECRET not in run.output, "the token secret leaked into the output"


def test_first_run_creates_three_vms_second_changes_nothing_and_disks_only_grow(lab: Lab) -> None:
    inventory = lab.inventory()
    first = lab.provision(inventory)
    assert first.rc == 0, first.output
    assert_clean(first)
    assert first.changed > 0

    guests = lab.vms()
    vms = {vmid: g for vmid, g in guests.items() if not g.get("template")}
    templates = {vmid: g for vmid, g in guests.items() if g.get("template")}
    assert sorted(vms) == [201, 202, 203]
    assert {vmid: t["node"] for vmid, t in templates.items()} == {9001: "pve1", 9002: "pve2", 9003: "pve3"}
    for name, want in harness.VMS.items():
        vm = vms[want["vmid"]]
        assert vm["name"] == name
        assert vm["node"] == want["node"]
        assert vm["status"] == "running"
        assert "gorkheavy-lite" in vm["tags"].split(";")
        config = lab.config(want["node"], want["vmid"])
        assert config["cores"] == 4
        assert int(str(config["memory"])) == 8192
        assert "size=32G" in config["scsi0"]
        assert config["ciuser"] == "k3sadmin"
        assert unquote(config["sshkeys"]).strip() == harness.SSH_KEY
        assert "%20" in config["sshkeys"]
        assert "+" not in config["sshkeys"]
        assert config["ipconfig0"] == f"ip={want['address']}/24,gw=192.168.1.1"
        assert config["nameserver"] == "192.168.1.1 1.1.1.1"
        assert config["searchdomain"] == "lan"
        assert "bridge=vmbr0" in config["net0"]
        assert str(config["agent"]).startswith(("1", "enabled=1"))
        assert config["serial0"] == "socket"
        assert config["vga"] == "serial0"
        assert config["scsihw"] == "virtio-scsi-single"
        assert "cloudinit" in config["ide2"]

    template = lab.config("pve1", 9001)
    # The image was imported into the template's own disk, not referenced.
    assert "local:import/" not in template["scsi0"]
    downloads = [r for r in lab.standin.requests if r.path.endswith("/download-url")]
    assert len(downloads) == 3
    assert all(r.params["checksum"] == harness.IMAGE_SHA256 for r in downloads)
    image = f"noble-server-cloudimg-amd64-{harness.IMAGE_SHA256[:12]}.qcow2"
    assert all(r.params["filename"] == image for r in downloads)

    since = len(lab.standin.requests)
    second = lab.provision(inventory)
    assert second.rc == 0, second.output
    assert second.changed == 0, second.output
    assert harness.mutating_requests(lab.standin, since) == []
    assert_clean(second)

    # A size change in the inventory: check mode shows it, a run applies it, a smaller disk is never shrunk.
    no_dns = {"gorkheavy_network_nameservers": []}  # an emptied setting is deleted, not sent empty
    bigger = lab.inventory(
        host_vars={"k3s-server": {"gorkheavy_vm_disk_gb": 40, "gorkheavy_vm_cores": 6}}, group_vars=no_dns
    )
    since = len(lab.standin.requests)
    preview = lab.provision(bigger, "--check", "--diff")
    assert preview.rc == 0, preview.output
    assert preview.changed == 1
    assert "-    disk_size: 32G" in preview.stdout
    assert "+    disk_size: 40G" in preview.stdout
    assert "+    cores: 6" in preview.stdout
    assert harness.mutating_requests(lab.standin, since) == []
    grown = lab.provision(bigger)
    assert grown.rc == 0, grown.output
    assert grown.changed == 1
    config = lab.config("pve1", 201)
    assert "size=40G" in config["scsi0"]
    assert config["cores"] == 6
    assert "take effect at its next boot" in grown.output
    assert lab.config("pve2", 202)["cores"] == 4
    assert "nameserver" not in lab.config("pve2", 202)

    smaller = lab.inventory(
        host_vars={"k3s-server": {"gorkheavy_vm_disk_gb": 20, "gorkheavy_vm_cores": 6}}, group_vars=no_dns
    )
    since = len(lab.standin.requests)
    shrink = lab.provision(smaller)
    assert shrink.rc == 0, shrink.output
    assert shrink.changed == 0
    assert "never shrunk" in shrink.output
    assert "size=40G" in lab.config("pve1", 201)["scsi0"]
    assert harness.mutating_requests(lab.standin, since) == []


def test_check_mode_creates_nothing_and_shows_what_would_change(lab: Lab) -> None:
    run = lab.provision(lab.inventory(), "--check", "--diff")
    assert run.rc == 0, run.output
    assert run.changed > 0
    assert harness.mutating_requests(lab.standin) == []
    assert lab.vms() == {}
    assert "+++ after: VM 201" in run.stdout
    assert "+    cores: 4" in run.stdout
    assert "+    ipconfig0: ip=192.168.1.201/24,gw=192.168.1.1" in run.stdout
    assert_clean(run)


def test_foreign_vmid_is_refused_by_its_id_before_any_change(lab: Lab) -> None:
    lab.create_foreign_vm("pve2", 202, "someone-elses-db", tags="prod")
    since = len(lab.standin.requests)
    # Verbose output shows the module arguments: the secret must stay masked there too.
    run = lab.provision(lab.inventory(), "-vvv")
    assert run.rc != 0
    assert "VMID 202" in run.output
    assert "someone-elses-db" in run.output
    assert "not tagged 'gorkheavy-lite'" in run.output
    assert harness.mutating_requests(lab.standin, since) == []
    assert lab.config("pve2", 202)["name"] == "someone-elses-db"
    assert_clean(run)


def test_bad_token_fails_early_with_a_clear_message(lab: Lab) -> None:
    run = lab.provision(lab.inventory(), secret="not-the-secret")
    assert run.rc != 0
    assert "refused the credentials of gorkheavy@pve!ansible" in run.output
    assert "not-the-secret" not in run.output
    assert harness.mutating_requests(lab.standin) == []


def test_missing_token_fails_before_any_request(lab: Lab) -> None:
    run = lab.provision(lab.inventory(), secret=None)
    assert run.rc != 0
    assert "no Proxmox API credentials" in run.output
    assert "PROXMOX_TOKEN_SECRET" in run.output
    assert lab.standin.requests == []


@pytest.mark.parametrize(
    ("host_vars", "group_vars", "message"),
    [
        ({"k3s-agent-1": {"gorkheavy_vm_id": 42}}, {}, 'VMID "42" is not a number from 100 to 999999999'),
        (
            {"k3s-agent-1": {"gorkheavy_vm_id": "two-oh-two"}},
            {},
            "'two-oh-two'\" cannot be converted to an int",
        ),
        ({"k3s-agent-2": {"gorkheavy_vm_id": 201}}, {}, "vmid 201 is given to more than one VM"),
        ({"k3s-agent-2": {"gorkheavy_vm_address": "10.0.0.300"}}, {}, "is neither dhcp nor an IPv4 address"),
        (
            {"k3s-agent-2": {"gorkheavy_vm_address": "dhcp"}},
            {"gorkheavy_proxmox_wait_for": "ssh"},
            "k3s-agent-2: a DHCP address can only be learned from the QEMU guest agent",
        ),
        (
            {"k3s-agent-2": {"gorkheavy_vm_address": "192.168.1.202"}},
            {},
            "address 192.168.1.202 is given to more",
        ),
        ({"k3s-agent-2": {"gorkheavy_vm_node": "pve9"}}, {}, "node 'pve9' is not part of the cluster"),
        ({}, {"gorkheavy_proxmox_vm_storage": "ceph"}, "storage 'ceph' does not exist on node pve1"),
        ({}, {"gorkheavy_proxmox_image_storage": "local-lvm"}, "does not allow content import"),
        ({}, {"gorkheavy_ssh_public_keys": []}, "no SSH public key"),
        (
            {},
            {"gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}, {"node": "pve2", "vmid": 9002}]},
            "storage 'local-lvm' on node pve1 is not shared between the nodes, but VM k3s-agent-2 on pve3",
        ),
    ],
    ids=[
        "vmid-range",
        "vmid-text",
        "vmid-twice",
        "address",
        "dhcp-without-agent",
        "address-twice",
        "unknown-node",
        "missing-storage",
        "no-import",
        "no-keys",
        "no-template-for-node",
    ],
)
def test_bad_variables_fail_before_any_change(
    lab: Lab, host_vars: dict[str, dict[str, object]], group_vars: dict[str, object], message: str
) -> None:
    run = lab.provision(lab.inventory(host_vars=host_vars, group_vars=group_vars))
    assert run.rc != 0
    assert message in run.output, run.output
    assert harness.mutating_requests(lab.standin) == []
    assert lab.vms() == {}


def test_failed_task_is_reported_with_its_log_and_lock_errors_are_retried(lab: Lab) -> None:
    lab.standin.faults.lock_timeout_once(9002)
    lab.standin.faults.fail_next_task("qmclone", "clone failed: out of space on local-lvm")
    run = lab.provision(lab.inventory())
    assert run.rc != 0
    assert "cloning template 9001 to VM 201 failed" in run.output
    assert "out of space on local-lvm" in run.output
    templates = [vmid for vmid, g in lab.vms().items() if g.get("template")]
    assert sorted(templates) == [9001, 9002, 9003]  # 9002 was locked once and still built

    again = lab.provision(lab.inventory())
    assert again.rc == 0, again.output
    assert sorted(v for v, g in lab.vms().items() if not g.get("template")) == [201, 202, 203]


def test_one_node_lab(lab: Lab) -> None:
    vms = {name: {**vm, "node": "pve1"} for name, vm in harness.VMS.items()}
    run = lab.provision(
        lab.inventory(vms=vms, group_vars={"gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}]})
    )
    assert run.rc == 0, run.output
    assert {g["node"] for g in lab.vms().values()} == {"pve1"}
    assert len(lab.vms()) == 4


def test_reset_removes_only_our_vms(lab: Lab) -> None:
    inventory = lab.inventory()
    assert lab.provision(inventory).rc == 0
    lab.create_foreign_vm("pve1", 300, "not-ours")

    refused = lab.reset(inventory)
    assert refused.rc != 0
    assert "gorkheavy_reset_confirm=yes" in refused.output
    assert len(lab.vms()) == 7

    since = len(lab.standin.requests)
    preview = lab.reset(inventory, "-e", "gorkheavy_reset_confirm=yes", "--check")
    assert preview.rc == 0, preview.output
    assert preview.changed == 1
    assert harness.mutating_requests(lab.standin, since) == []
    assert len(lab.vms()) == 7

    done = lab.reset(inventory, "-e", "gorkheavy_reset_confirm=yes")
    assert done.rc == 0, done.output
    assert sorted(lab.vms()) == [300, 9001, 9002, 9003]
    assert_clean(done)

    again = lab.reset(inventory, "-e", "gorkheavy_reset_confirm=yes", "-e", "gorkheavy_reset_templates=yes")
    assert again.rc == 0, again.output
    assert sorted(lab.vms()) == [300]


def test_reset_refuses_when_an_inventory_vmid_is_foreign(lab: Lab) -> None:
    lab.create_foreign_vm("pve2", 202, "someone-elses-db")
    since = len(lab.standin.requests)
    run = lab.reset(lab.inventory(), "-e", "gorkheavy_reset_confirm=yes")
    assert run.rc != 0
    assert "VMID 202" in run.output
    assert harness.mutating_requests(lab.standin, since) == []
    assert 202 in lab.vms()


def test_one_template_on_shared_storage_serves_every_node(lab: Lab) -> None:
    lab.standin.add_storage(
        StorageDef("nfs-vms", "nfs", ["images", "import"], shared=True, total=500 * 2**30)
    )
    inventory = lab.inventory(
        group_vars={
            "gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}],
            "gorkheavy_proxmox_image_storage": "nfs-vms",
            "gorkheavy_proxmox_vm_storage": "nfs-vms",
        }
    )
    run = lab.provision(inventory)
    assert run.rc == 0, run.output
    guests = lab.vms()
    assert {vmid: g["node"] for vmid, g in guests.items()} == {
        9001: "pve1",
        201: "pve1",
        202: "pve2",
        203: "pve3",
    }
    clones = [r for r in lab.standin.requests if r.method == "POST" and r.path.endswith("/clone")]
    assert sorted(r.params.get("target", "pve1") for r in clones) == ["pve1", "pve2", "pve3"]
    assert lab.config("pve3", 203)["scsi0"].startswith("nfs-vms:")
    again = lab.provision(inventory)
    assert again.changed == 0, again.output


def test_a_vm_of_ours_at_a_template_vmid_is_refused_with_what_to_do(lab: Lab) -> None:
    lab.create_foreign_vm("pve2", 9002, "half-built", tags="gorkheavy-lite")
    since = len(lab.standin.requests)
    run = lab.provision(lab.inventory())
    assert run.rc != 0
    assert "VMID 9002 (template on pve2) is a VM, not a template" in run.output
    assert "qm destroy 9002 on pve2" in run.output
    assert harness.mutating_requests(lab.standin, since) == []
