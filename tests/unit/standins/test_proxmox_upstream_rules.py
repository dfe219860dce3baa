"""Behaviour of Proxmox VE 9.1 the stand-in models after the upstream sources, through proxmoxer.

- /cluster/resources: vmid, node, type, tags and lock come from the cluster's VM list and the guests'
  configs at once; status, name, template and the figures from pvestatd's last cycle (pve-manager
  PVE::API2::Cluster resources, PVE::API2Tools::extract_vm_stats; ``status`` is "unknown" before it).
- SDN.Use on /sdn/zones/localnetwork/<bridge> for every NIC on create, update and clone (qemu-server
  check_bridge_access, pve-guest-common check_vnet_access).
- download-url: Datastore.AllocateTemplate on the storage and Sys.AccessNetwork on the node (or Sys.Audit
  with Sys.Modify on /); the file name normalised; an existing file kept when its checksum matches
  (pve-storage normalize_content_filename, pve-common download_file_from_url).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gorkheavy_lab.proxmox import ProxmoxStandin, Server
from gorkheavy_lab.proxmox.testing import client, running_standin, wait_task
from proxmoxer.core import ResourceException

URL = "https://img.example/noble.img"
IMAGE = b"QFI\xfb image"
SHA256 = hashlib.sha256(IMAGE).hexdigest()
VM_ADMIN = [
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
]
STORE = ["Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit"]


@pytest.fixture
def lab() -> Iterator[tuple[ProxmoxStandin, Server, Any]]:
    with running_standin(nodes=["pve1"], statd_period=3600.0) as (standin, server):
        standin.add_remote_file(URL, IMAGE)
        yield standin, server, client(server)
        assert standin.schema_violations == []
        assert standin.response_violations == []


def listed(api: Any, vmid: int) -> dict[str, Any]:
    return next(r for r in api.cluster.resources.get(type="vm") if r["vmid"] == vmid)


def test_the_cluster_listing_shows_status_name_and_template_of_the_last_statd_cycle(lab: Any) -> None:
    standin, _server, api = lab
    upid = api.nodes("pve1").qemu.post(vmid=100, name="tpl", tags="ours", net0="virtio,bridge=vmbr0")
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    # not seen by a cycle yet: where it lives and its tags only
    assert listed(api, 100) == {
        "id": "qemu/100",
        "type": "qemu",
        "node": "pve1",
        "vmid": 100,
        "status": "unknown",
        "tags": "ours",
    }
    standin.statd_cycle()
    assert listed(api, 100)["name"] == "tpl"
    assert listed(api, 100)["template"] == 0
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(100).template.post())["exitstatus"] == "OK"
    api.nodes("pve1").qemu(100).config.put(tags="ours;template")
    # the config says template at once, the listing after the next cycle; tags are current
    assert api.nodes("pve1").qemu(100).config.get()["template"] == 1
    assert listed(api, 100)["template"] == 0
    assert listed(api, 100)["tags"] == "ours;template"
    standin.statd_cycle()
    assert listed(api, 100)["template"] == 1


def test_a_short_statd_period_catches_up_by_itself() -> None:
    with running_standin(nodes=["pve1"], statd_period=0.2) as (_standin, server):
        api = client(server)
        assert wait_task(api, "pve1", api.nodes("pve1").qemu.post(vmid=100, name="a"))["exitstatus"] == "OK"
        assert wait_task(api, "pve1", api.nodes("pve1").qemu(100).status.start.post())["exitstatus"] == "OK"
        assert api.nodes("pve1").qemu(100).status.current.get()["status"] == "running"
        deadline = time.monotonic() + 5
        while listed(api, 100)["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed(api, 100)["status"] == "running"
        assert listed(api, 100)["name"] == "a"


def test_nics_need_sdn_use_on_their_bridge_on_create_update_and_clone(lab: Any) -> None:
    standin, server, api = lab
    standin.add_token(
        "gorkheavy@pve!nosdn", "S1", privsep=True, privileges={"/vms": VM_ADMIN, "/storage": STORE}
    )
    standin.add_token(
        "gorkheavy@pve!sdn",
        "S2",
        privsep=True,
        privileges={"/vms": VM_ADMIN, "/storage": STORE, "/sdn/zones/localnetwork/vmbr0": ["SDN.Use"]},
    )
    standin.add_token(
        "gorkheavy@pve!vlan",
        "S3",
        privsep=True,
        privileges={"/vms": VM_ADMIN, "/sdn/zones/localnetwork/vmbr0/30": ["SDN.Use"]},
    )
    nosdn = client(server, "gorkheavy@pve!nosdn", "S1")
    sdn = client(server, "gorkheavy@pve!sdn", "S2")
    vlan = client(server, "gorkheavy@pve!vlan", "S3")

    with pytest.raises(ResourceException) as denied:
        nosdn.nodes("pve1").qemu.post(vmid=101, net0="virtio,bridge=vmbr0")
    assert denied.value.status_code == 403
    assert denied.value.content == "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)"
    nosdn.nodes("pve1").qemu.post(vmid=102)  # no NIC, no SDN check
    with pytest.raises(ResourceException, match=r"\(/sdn/zones/localnetwork/vmbr0, SDN.Use\)"):
        nosdn.nodes("pve1").qemu(102).config.post(net0="virtio,bridge=vmbr0")
    with pytest.raises(ResourceException, match=r"\(/sdn/zones/localnetwork/vmbr0/40, SDN.Use\)"):
        vlan.nodes("pve1").qemu.post(vmid=103, net0="virtio,bridge=vmbr0,tag=40")
    assert (
        wait_task(api, "pve1", vlan.nodes("pve1").qemu.post(vmid=103, net0="virtio,bridge=vmbr0,tag=30"))[
            "exitstatus"
        ]
        == "OK"
    )

    upid = sdn.nodes("pve1").qemu.post(vmid=104, net0="virtio,bridge=vmbr0")
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    # changing the NIC needs SDN.Use on the bridge it leaves, too
    with pytest.raises(ResourceException, match=r"\(/sdn/zones/localnetwork/vmbr0, SDN.Use\)"):
        vlan.nodes("pve1").qemu(104).config.post(net0="virtio,bridge=vmbr0,tag=30")
    # a clone keeps the source's NICs: SDN.Use on their bridges
    with pytest.raises(ResourceException, match=r"\(/sdn/zones/localnetwork/vmbr0, SDN.Use\)"):
        nosdn.nodes("pve1").qemu(104).clone.post(newid=105)
    assert wait_task(api, "pve1", sdn.nodes("pve1").qemu(104).clone.post(newid=105))["exitstatus"] == "OK"


def test_download_url_needs_sys_accessnetwork_on_the_node(lab: Any) -> None:
    standin, server, _api = lab
    standin.add_token("gorkheavy@pve!dl", "S1", privsep=True, privileges={"/storage": STORE})
    standin.add_token(
        "gorkheavy@pve!dl2",
        "S2",
        privsep=True,
        privileges={"/storage": STORE, "/nodes/pve1": ["Sys.AccessNetwork"]},
    )
    args = {"content": "import", "filename": "a.qcow2", "url": URL}
    with pytest.raises(ResourceException) as denied:
        client(server, "gorkheavy@pve!dl", "S1").nodes("pve1").storage("local")("download-url").post(**args)
    assert denied.value.status_code == 403
    assert denied.value.content == "Permission check failed"
    allowed = client(server, "gorkheavy@pve!dl2", "S2")
    upid = allowed.nodes("pve1").storage("local")("download-url").post(**args)
    assert wait_task(allowed, "pve1", upid)["exitstatus"] == "OK"


def test_download_url_normalises_the_file_name_and_keeps_a_file_whose_checksum_matches(lab: Any) -> None:
    _standin, _server, api = lab
    storage = api.nodes("pve1").storage("local")

    def download(filename: str, **extra: Any) -> dict[str, Any]:
        return wait_task(
            api, "pve1", storage("download-url").post(content="import", filename=filename, url=URL, **extra)
        )

    checked = {"checksum": SHA256, "checksum-algorithm": "sha256"}
    assert download("images/noble+build=1.qcow2", **checked)["exitstatus"] == "OK"
    assert [v["volid"] for v in storage.content.get(content="import")] == ["local:import/noble_build_1.qcow2"]
    # the same file again: fine with a matching checksum, refused without one or with another
    again = storage("download-url").post(content="import", filename="noble_build_1.qcow2", url=URL, **checked)
    assert wait_task(api, "pve1", again)["exitstatus"] == "OK"
    assert "OK, got correct file already, no need to download" in "\n".join(
        line["t"] for line in api.nodes("pve1").tasks(again).log.get()
    )
    assert download("noble_build_1.qcow2")["exitstatus"] == (
        "refusing to override existing file '/var/lib/vz/import/noble_build_1.qcow2'"
    )
    wrong = download("noble+build=1.qcow2", checksum="0" * 64, **{"checksum-algorithm": "sha256"})
    assert wrong["exitstatus"] == f"checksum mismatch: got '{SHA256}' != expect '{'0' * 64}', aborting"
    assert len(storage.content.get(content="import")) == 1


def test_a_lock_timeout_can_be_aimed_at_one_task_type(lab: Any) -> None:
    standin, _server, api = lab
    assert wait_task(api, "pve1", api.nodes("pve1").qemu.post(vmid=100))["exitstatus"] == "OK"
    standin.faults.lock_timeout_once(100, task_type="qmstart")
    config = wait_task(api, "pve1", api.nodes("pve1").qemu(100).config.post(description="x"))
    assert config["exitstatus"] == "OK"
    start = wait_task(api, "pve1", api.nodes("pve1").qemu(100).status.start.post())
    assert start["exitstatus"] == "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(100).status.start.post())["exitstatus"] == "OK"
