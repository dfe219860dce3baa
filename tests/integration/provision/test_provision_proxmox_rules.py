"""Rules of Proxmox VE 9.1 the provision and reset stages must follow, against the stand-in that models them.

Each test here failed before the roles followed the rule: download-url's file-name normalisation, retrying
only Proxmox's lock timeouts (resize included), and a reset that checks the template VMIDs before it
removes any VM.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.integration.provision import harness
from tests.integration.provision.conftest import Lab

pytestmark = pytest.mark.slow

ONE_TEMPLATE = {"gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}]}
ONE_VM = {"k3s-server": harness.VMS["k3s-server"]}


def test_an_image_url_with_plus_and_equals_is_imported_under_the_name_proxmox_stores(lab: Lab) -> None:
    url = "https://cloud-images.example.invalid/noble/noble+build=20250704-server-cloudimg-amd64.img"
    lab.standin.add_remote_file(url, harness.IMAGE_BYTES, virtual_size=3 * 2**30)
    inventory = lab.inventory(vms=ONE_VM, group_vars={**ONE_TEMPLATE, "gorkheavy_proxmox_image_url": url})
    stored = f"noble_build_20250704-server-cloudimg-amd64-{harness.IMAGE_SHA256[:12]}.qcow2"

    first = lab.provision(inventory)
    assert first.rc == 0, first.output
    downloads = [r for r in lab.standin.requests if r.path.endswith("/download-url")]
    assert [r.params["filename"] for r in downloads] == [stored]
    volumes = [v["volid"] for v in lab.admin().nodes("pve1").storage("local").content.get(content="import")]
    assert volumes == [f"local:import/{stored}"]
    assert f"image: {stored}" in lab.config("pve1", 9001)["description"]

    again = lab.provision(inventory)
    assert again.rc == 0, again.output
    assert again.changed == 0, again.output


def test_a_lock_timeout_on_resize_is_retried(lab: Lab) -> None:
    lab.standin.faults.lock_timeout_once(201, task_type="resize")
    run = lab.provision(lab.inventory(vms=ONE_VM, group_vars=ONE_TEMPLATE))
    assert run.rc == 0, run.output
    resizes = [r for r in lab.standin.requests if r.path.endswith("/resize")]
    assert len(resizes) == 2  # the first one's task failed on the lock, the second grew the disk
    assert "size=32G" in lab.config("pve1", 201)["scsi0"]


def test_a_failure_that_is_not_a_lock_timeout_is_not_retried(lab: Lab) -> None:
    # a failed task whose text mentions a timeout and "lock-" but is not Proxmox's lock message
    message = "clone failed: command '/sbin/lvcreate -n vm-201-disk-0 --lock-type none' failed: got timeout"
    lab.standin.faults.fail_next_task("qmclone", message)
    run = lab.provision(lab.inventory(vms=ONE_VM, group_vars=ONE_TEMPLATE))
    assert run.rc != 0
    assert message in run.output
    clones = [r for r in lab.standin.requests if r.method == "POST" and r.path.endswith("/clone")]
    assert len(clones) == 1


TWO_TEMPLATES = {
    "gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}, {"node": "pve2", "vmid": 9002}]
}


@pytest.mark.parametrize(
    ("guest", "message"),
    [
        # a VM of ours that is not a template (say, cloned there by hand)
        (("gorkheavy-lite", False), "VMID 9002 (template on pve2) is a VM, not a template"),
        # someone else's template
        (("prod", True), "VMID 9002 (wanted for template on pve2) already exists as 'not-ours'"),
    ],
    ids=["our-vm-not-a-template", "foreign-template"],
)
def test_reset_with_templates_checks_every_template_vmid_before_removing_any_vm(
    lab: Lab, guest: tuple[str, bool], message: str
) -> None:
    tags, template = guest
    inventory = lab.inventory(vms=ONE_VM, group_vars=TWO_TEMPLATES)
    assert lab.provision(inventory).rc == 0
    lab.wait(lab.admin().nodes("pve2").qemu(9002).delete())
    lab.create_foreign_vm("pve2", 9002, "not-ours", tags=tags)
    if template:
        lab.wait(lab.admin().nodes("pve2").qemu(9002).template.post())

    since = len(lab.standin.requests)
    run = lab.reset(inventory, "-e", "gorkheavy_reset_confirm=yes", "-e", "gorkheavy_reset_templates=yes")
    assert run.rc != 0
    assert message in run.output, run.output
    assert harness.mutating_requests(lab.standin, since) == []
    assert sorted(lab.vms()) == [201, 9001, 9002]


def test_the_stored_image_is_reused_when_its_checksum_matches(lab: Lab) -> None:
    inventory = lab.inventory(vms=ONE_VM, group_vars=ONE_TEMPLATE)
    stored = f"noble-server-cloudimg-amd64-{harness.IMAGE_SHA256[:12]}.qcow2"
    # the file is there already (an earlier build whose template was removed)
    lab.wait(
        lab.admin()
        .nodes("pve1")
        .storage("local")("download-url")
        .post(
            content="import",
            filename=stored,
            url=harness.IMAGE_URL,
            checksum=hashlib.sha256(harness.IMAGE_BYTES).hexdigest(),
            **{"checksum-algorithm": "sha256"},
        )
    )
    since = len(lab.standin.requests)
    run = lab.provision(inventory)
    assert run.rc == 0, run.output
    assert [r for r in lab.standin.requests[since:] if r.path.endswith("/download-url")] == []
