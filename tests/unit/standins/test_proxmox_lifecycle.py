"""The provision role's whole VM lifecycle against the Proxmox VE stand-in, through proxmoxer."""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from gorkheavy_lab.proxmox import ProxmoxStandin, Server, StorageDef
from gorkheavy_lab.proxmox.testing import SSH_KEY, client, running_standin, wait_task
from proxmoxer.core import ResourceException

IMAGE_URL = "https://cloud-images.example/noble-server-cloudimg-amd64.img"
IMAGE = b"QFI\xfb stand-in qcow2 image"
NODES = ["pve1", "pve2", "pve3"]


@pytest.fixture
def lab() -> Iterator[tuple[ProxmoxStandin, Server, Any]]:
    with running_standin(nodes=NODES) as (standin, server):
        standin.add_storage(StorageDef("shared", "nfs", ["images", "import"], shared=True))
        standin.add_remote_file(IMAGE_URL, IMAGE, virtual_size=3 * 2**30)
        standin.backend.agent_delay = 0.3  # type: ignore[attr-defined]
        yield standin, server, client(server)
        assert standin.schema_violations == []
        assert standin.response_violations == []


def test_full_lifecycle(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    assert api.version.get()["release"] == "9.1"
    assert [n["node"] for n in api.nodes.get()] == NODES
    storages = {s["storage"]: s for s in api.nodes("pve1").storage.get()}
    assert storages["local"]["content"] == "backup,import,iso,snippets,vztmpl"
    assert storages["local-lvm"]["content"] == "images,rootdir"
    assert [s["storage"] for s in api.nodes("pve1").storage.get(content="import", enabled=1)] == [
        "local",
        "shared",
    ]

    # 1. download the cloud image as an import volume (a task)
    upid = (
        api.nodes("pve1")
        .storage("local")("download-url")
        .post(
            content="import",
            filename="noble-server-cloudimg-amd64.qcow2",
            url=IMAGE_URL,
            checksum=hashlib.sha256(IMAGE).hexdigest(),
            **{"checksum-algorithm": "sha256"},
        )
    )
    assert upid.startswith("UPID:pve1:")
    assert ":download:" in upid
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    volumes = api.nodes("pve1").storage("local").content.get(content="import")
    assert [v["volid"] for v in volumes] == ["local:import/noble-server-cloudimg-amd64.qcow2"]

    # 2. the template: disk imported, cloud-init drive, serial console, agent
    vmid = int(api.cluster.nextid.get())
    assert vmid == 100
    upid = api.nodes("pve1").qemu.post(
        vmid=9000,
        name="noble-template",
        memory=2048,
        cores=2,
        net0="virtio,bridge=vmbr0",
        scsihw="virtio-scsi-pci",
        scsi0="shared:0,import-from=local:import/noble-server-cloudimg-amd64.qcow2,discard=on",
        ide2="shared:cloudinit",
        serial0="socket",
        vga="serial0",
        agent="enabled=1",
        boot="order=scsi0",
        ostype="l26",
    )
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    config = api.nodes("pve1").qemu(9000).config.get()
    assert config["scsi0"] == "shared:9000/vm-9000-disk-0.qcow2,discard=on,size=3G"
    assert config["ide2"] == "shared:9000/vm-9000-cloudinit.qcow2,media=cdrom"
    assert config["net0"].startswith("virtio=BC:24:11:")
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(9000).template.post())["exitstatus"] == "OK"
    config = api.nodes("pve1").qemu(9000).config.get()
    assert config["template"] == 1
    assert config["scsi0"].startswith("shared:9000/base-9000-disk-0.qcow2,")

    # 3. one clone per node (linked clones from shared storage may go to any node)
    for index, node in enumerate(NODES, start=1):
        upid = api.nodes("pve1").qemu(9000).clone.post(newid=100 + index, name=f"k3s-{index}", target=node)
        status = wait_task(api, "pve1", upid)
        assert status["exitstatus"] == "OK", status
        clone = api.nodes(node).qemu(100 + index).config.get()
        assert clone["name"] == f"k3s-{index}"
        assert clone["net0"] != config["net0"]  # a fresh MAC address

    # 4. cloud-init settings and sshkeys, URL-encoded with %20 and returned the same way
    encoded = urllib.parse.quote(SSH_KEY, safe="")
    for index, node in enumerate(NODES, start=1):
        api.nodes(node).qemu(100 + index).config.put(
            ciuser="ubuntu",
            sshkeys=encoded,
            ipconfig0=f"ip=10.10.0.{10 + index}/24,gw=10.10.0.1",
            nameserver="10.10.0.1",
            tags="server;k3s",
            cores=4,
            memory=8192,
        )
    config = api.nodes("pve2").qemu(102).config.get()
    assert config["sshkeys"] == encoded
    assert urllib.parse.unquote(config["sshkeys"]) == SSH_KEY
    assert config["tags"] == "k3s;server"
    assert config["cores"] == 4

    # 5. resize (relative and absolute), shrink refused inside the task
    assert (
        wait_task(api, "pve2", api.nodes("pve2").qemu(102).resize.put(disk="scsi0", size="+29G"))[
            "exitstatus"
        ]
        == "OK"
    )
    assert "size=32G" in api.nodes("pve2").qemu(102).config.get()["scsi0"]
    assert (
        wait_task(api, "pve2", api.nodes("pve2").qemu(102).resize.put(disk="scsi0", size="40G"))["exitstatus"]
        == "OK"
    )
    shrink = wait_task(api, "pve2", api.nodes("pve2").qemu(102).resize.put(disk="scsi0", size="10G"))
    assert shrink["exitstatus"] == "shrinking disks is not supported"

    # 6. start, agent address, stop, delete
    assert wait_task(api, "pve2", api.nodes("pve2").qemu(102).status.start.post())["exitstatus"] == "OK"
    assert api.nodes("pve2").qemu(102).status.current.get()["status"] == "running"
    with pytest.raises(ResourceException) as agent_down:
        api.nodes("pve2").qemu(102).agent("network-get-interfaces").get()
    assert agent_down.value.status_code == 500
    assert "QEMU guest agent is not running" in str(agent_down.value)
    deadline = time.monotonic() + 5
    addresses: list[str] = []
    while not addresses and time.monotonic() < deadline:
        try:
            result = api.nodes("pve2").qemu(102).agent("network-get-interfaces").get()["result"]
        except ResourceException:
            time.sleep(0.05)
            continue
        names = [iface["name"] for iface in result]
        assert "lo" in names
        assert any("ip-addresses" not in iface for iface in result)  # an interface without address yet
        addresses = [
            a["ip-address"]
            for iface in result
            if iface["name"] != "lo"
            for a in iface.get("ip-addresses", [])
            if a["ip-address-type"] == "ipv4"
        ]
    assert addresses == ["10.10.0.12"]
    with pytest.raises(ResourceException, match="is running - destroy failed"):
        api.nodes("pve2").qemu(102).delete()
    assert wait_task(api, "pve2", api.nodes("pve2").qemu(102).status.stop.post())["exitstatus"] == "OK"
    destroy = api.nodes("pve2").qemu(102).delete(purge=1, **{"destroy-unreferenced-disks": 1})
    assert wait_task(api, "pve2", destroy)["exitstatus"] == "OK"
    assert 102 not in [vm["vmid"] for vm in api.nodes("pve2").qemu.get()]
    _standin.statd_cycle()  # the listing's template flag is the status daemon's
    resources = api.cluster.resources.get(type="vm")
    assert sorted(r["vmid"] for r in resources) == [101, 103, 9000]
    assert [r["template"] for r in resources if r["vmid"] == 9000] == [1]
    log = api.nodes("pve2").tasks(destroy).log.get()
    assert log[-1]["t"] == "TASK OK"


def test_linked_clone_of_local_template_stays_on_its_node(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    standin.add_volume("pve1", "local:import/base.qcow2", 1000, "qcow2", "import")
    upid = api.nodes("pve1").qemu.post(
        vmid=9001, scsi0="local-lvm:0,import-from=local:import/base.qcow2", ide2="local-lvm:cloudinit"
    )
    wait_task(api, "pve1", upid)
    wait_task(api, "pve1", api.nodes("pve1").qemu(9001).template.post())
    with pytest.raises(ResourceException) as refused:
        api.nodes("pve1").qemu(9001).clone.post(newid=150, target="pve2")
    assert refused.value.status_code == 500
    assert refused.value.content == "can't clone VM to node 'pve2' (VM uses local storage)"
    with pytest.raises(ResourceException, match="parameter 'storage' not allowed for linked clones"):
        api.nodes("pve1").qemu(9001).clone.post(newid=150, storage="local-lvm")
    status = wait_task(
        api, "pve1", api.nodes("pve1").qemu(9001).clone.post(newid=150, full=1, storage="local-lvm")
    )
    assert status["exitstatus"] == "OK"
    assert api.nodes("pve1").qemu(150).config.get()["scsi0"].startswith("local-lvm:vm-150-disk-0,")
    linked_of_plain = wait_task(api, "pve1", api.nodes("pve1").qemu(150).clone.post(newid=151, full=0))
    assert linked_of_plain["exitstatus"] == "clone failed: clone_image only works on base images"
    assert api.nodes("pve1").storage("local-lvm").content.get(vmid=151) == []
    with pytest.raises(ResourceException) as duplicate:
        api.nodes("pve1").qemu(9001).clone.post(newid=150)
    assert duplicate.value.content == "unable to create VM 150: config file already exists"


def test_clone_is_a_task_that_takes_its_time(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    standin.task_durations["qmclone"] = 0.3
    standin.add_volume("pve1", "local:import/base.qcow2", 1000, "qcow2", "import")
    wait_task(
        api,
        "pve1",
        api.nodes("pve1").qemu.post(vmid=9002, scsi0="local-lvm:0,import-from=local:import/base.qcow2"),
    )
    wait_task(api, "pve1", api.nodes("pve1").qemu(9002).template.post())
    upid = api.nodes("pve1").qemu(9002).clone.post(newid=160, name="slow")
    first = api.nodes("pve1").tasks(upid).status.get()
    assert first["status"] == "running"
    assert "exitstatus" not in first
    assert api.nodes("pve1").qemu(160).status.current.get()["lock"] == "clone"
    with pytest.raises(ResourceException, match=r"VM is locked \(clone\)"):
        api.nodes("pve1").qemu(160).config.put(name="other")
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    assert "lock" not in api.nodes("pve1").qemu(160).config.get()
