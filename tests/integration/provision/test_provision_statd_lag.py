"""The provision stage when /cluster/resources lags behind, as it does on Proxmox (pvestatd's cycle).

On Proxmox a guest's ``status``, ``name`` and ``template`` in the cluster listing come from the status
daemon's last cycle: a template converted a moment ago is not listed as one yet, a VM just started is not
listed as running. Here the stand-in's status daemon is stopped for the whole test, so the listing never
catches up: the roles must take those facts from the guest's configuration and ``status/current``.
"""

from __future__ import annotations

import pytest
from gorkheavy_lab.proxmox import StorageDef

from tests.integration.provision import harness
from tests.integration.provision.conftest import Lab

pytestmark = pytest.mark.slow

ONE_NODE = {
    "vms": {name: {**vm, "node": "pve1"} for name, vm in harness.VMS.items()},
    "group_vars": {"gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}]},
}
SHARED = {
    "vms": harness.VMS,
    "group_vars": {
        "gorkheavy_proxmox_templates": [{"node": "pve1", "vmid": 9001}],
        "gorkheavy_proxmox_image_storage": "nfs-vms",
        "gorkheavy_proxmox_vm_storage": "nfs-vms",
    },
}


@pytest.mark.parametrize("layout", [ONE_NODE, SHARED], ids=["one-node", "shared-storage"])
def test_first_run_and_an_immediate_rerun_work_while_the_listing_lags(lab: Lab, layout: dict) -> None:
    lab.standin.add_storage(
        StorageDef("nfs-vms", "nfs", ["images", "import"], shared=True, total=500 * 2**30)
    )
    lab.freeze_statd()
    inventory = lab.inventory(vms=layout["vms"], group_vars=layout["group_vars"])

    first = lab.provision(inventory)
    assert first.rc == 0, first.output
    listed = {r["vmid"]: r for r in lab.admin().cluster.resources.get(type="vm")}
    # the listing has not caught up: no status, no name, no template flag for the new guests yet
    assert {r["status"] for r in listed.values()} == {"unknown"}
    assert not any("template" in r for r in listed.values())

    since = len(lab.standin.requests)
    again = lab.provision(inventory)
    assert again.rc == 0, again.output
    assert again.changed == 0, again.output
    assert harness.mutating_requests(lab.standin, since) == []

    guests = lab.vms()  # now one cycle runs: the listing shows what the roles built
    assert sorted(v for v, g in guests.items() if g["template"]) == [9001]
    assert {g["status"] for v, g in guests.items() if not g["template"]} == {"running"}
