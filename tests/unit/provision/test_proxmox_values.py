"""The value handling that makes the provision modules report a change only on real drift."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.gorkheavy.lite.plugins.module_utils import proxmox_api as api
from ansible_collections.gorkheavy.lite.plugins.modules import proxmox_cloud_template as tpl
from ansible_collections.gorkheavy.lite.plugins.modules import proxmox_cloud_vm as vm_module

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvUu0p0a7QxH1mJp9t4W2zYxFQk3L8nRr6sD5eG7hKq op@laptop"
KEY_B = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 second key+with/plus"


def params(**overrides: Any) -> dict[str, Any]:
    base = {
        "vmid": 201,
        "name": "k3s-server",
        "node": "pve1",
        "state": "started",
        "template_vmid": 9001,
        "cores": 4,
        "memory_mb": 8192,
        "disk_gb": 32,
        "bridge": "vmbr0",
        "firewall": False,
        "ci_user": "k3sadmin",
        "ssh_public_keys": [KEY_A, KEY_B],
        "ipv4": "192.168.1.201/24",
        "gateway": "192.168.1.1",
        "nameservers": ["192.168.1.1", "1.1.1.1"],
        "search_domain": "lan",
        "ci_upgrade": False,
        "onboot": True,
        "tags": ["k3s"],
        "ownership_tag": "gorkheavy-lite",
        "description": vm_module.DEFAULT_DESCRIPTION,
    }
    base.update(overrides)
    return base


def test_sshkeys_are_encoded_with_percent_20_and_decode_back() -> None:
    encoded = api.encode_sshkeys([KEY_A, KEY_B])
    assert " " not in encoded
    assert "+" not in encoded
    assert "%20" in encoded
    assert "%2B" in encoded  # a literal plus in a key comment survives
    assert api.decode_sshkeys(encoded) == [KEY_A, KEY_B]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("b;a", ["a", "b"]), ("a,b b", ["a", "b"]), ("", []), (None, []), (["z", "a", "z"], ["a", "z"])],
)
def test_tags_are_compared_sorted_and_unique(value: Any, expected: list[str]) -> None:
    assert api.split_tags(value) == expected


def test_net0_keeps_model_and_mac_when_the_bridge_changes() -> None:
    parsed = api.parse_net("virtio=BC:24:11:00:00:0A,bridge=vmbr0,firewall=1")
    assert parsed == {"model": "virtio", "macaddr": "BC:24:11:00:00:0A", "bridge": "vmbr0", "firewall": "1"}
    parsed["bridge"] = "vmbr1"
    assert api.format_net(parsed) == "virtio=BC:24:11:00:00:0A,bridge=vmbr1,firewall=1"


@pytest.mark.parametrize(
    ("text", "size"),
    [("3584M", 3584 * 2**20), ("32G", 32 * 2**30), ("1T", 2**40), ("2.5G", int(2.5 * 2**30))],
)
def test_disk_sizes(text: str, size: int) -> None:
    assert api.size_to_bytes(text) == size
    assert api.disk_size_bytes(f"local-lvm:vm-201-disk-0,iothread=1,size={text}") == size


def test_upid_node() -> None:
    assert api.upid_node("UPID:pve2:0000ABCD:00000001:6745A1B2:qmclone:201:gorkheavy@pve!ansible:") == "pve2"
    with pytest.raises(api.ProxmoxError):
        api.upid_node("not-a-upid")


def config_as_proxmox_returns_it(payload: dict[str, Any]) -> dict[str, Any]:
    """What GET .../config gives back after the payload was written (Proxmox sorts tags, keeps encoding)."""
    config = {key: str(value) for key, value in payload.items()}
    config["tags"] = ";".join(sorted(config["tags"].split(";")))
    config["scsi0"] = "local-lvm:vm-201-disk-0,size=32G"
    return config


def test_a_written_configuration_reads_back_as_no_drift() -> None:
    want = vm_module.desired_config(params())
    changed, payload = vm_module.config_update(want, {}, {"net0": "virtio=BC:24:11:00:00:0A,bridge=vmbr1"})
    assert "sshkeys" in changed
    assert payload["net0"] == "virtio=BC:24:11:00:00:0A,bridge=vmbr0,firewall=0"
    assert payload["ipconfig0"] == "ip=192.168.1.201/24,gw=192.168.1.1"
    assert payload["tags"] == "gorkheavy-lite;k3s"
    config = config_as_proxmox_returns_it(payload)
    have = vm_module.current_view(config)
    assert vm_module.config_update(want, have, config) == ([], {})


def test_only_real_drift_is_reported() -> None:
    want = vm_module.desired_config(params())
    config = config_as_proxmox_returns_it(
        vm_module.config_update(want, {}, {"net0": "virtio=AA:BB:CC:DD:EE:FF"})[1]
    )
    config["tags"] = "k3s;gorkheavy-lite"  # another order is not drift
    config["memory"] = "current=8192"  # the long form of the same value is not drift
    config["cores"] = "2"  # this is drift
    have = vm_module.current_view(config)
    changed, payload = vm_module.config_update(vm_module.desired_config(params()), have, config)
    assert changed == ["cores"]
    assert payload == {"cores": 4}


def test_dhcp_and_static_addresses() -> None:
    assert api.format_ipconfig("dhcp") == "ip=dhcp"
    assert api.parse_ipconfig("gw=192.168.1.1,ip=192.168.1.201/24") == api.parse_ipconfig(
        api.format_ipconfig("192.168.1.201/24", "192.168.1.1")
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"vmid": 99}, "vmid 99 is out of range"),
        ({"name": "bad_name!"}, "not a valid DNS name"),
        ({"ipv4": "192.168.1.201"}, "needs a prefix length"),
        ({"ipv4": "300.1.1.1/24"}, "neither 'dhcp' nor an IPv4 address"),
        ({"gateway": "gw.lan"}, "gateway 'gw.lan' is not an IP address"),
        ({"tags": ["has space"]}, "is not a valid Proxmox tag"),
        ({"template_vmid": None}, "template_vmid is required"),
    ],
)
def test_parameters_are_checked_before_any_call(overrides: dict[str, Any], fragment: str) -> None:
    problems = vm_module.validate(params(**overrides))
    assert any(fragment in p for p in problems), problems


def test_valid_parameters_have_no_problems() -> None:
    assert vm_module.validate(params()) == []
    assert vm_module.validate(params(ipv4="dhcp", gateway=None)) == []


def test_image_file_names_carry_the_checksum_so_a_new_image_is_downloaded() -> None:
    url = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
    assert tpl.image_filename({"image_url": url, "image_checksum": ""}) == "noble-server-cloudimg-amd64.qcow2"
    named = tpl.image_filename({"image_url": url, "image_checksum": "ABCDEF0123456789" * 4})
    assert named == "noble-server-cloudimg-amd64-abcdef012345.qcow2"
    debian = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    assert (
        tpl.image_filename({"image_url": debian, "image_checksum": ""})
        == "debian-12-genericcloud-amd64.qcow2"
    )
    assert tpl.image_filename({"image_url": url, "image_filename": "mine.qcow2"}) == "mine.qcow2"


def test_emptied_settings_are_deleted_not_sent_empty() -> None:
    want = vm_module.desired_config(params(nameservers=[], ssh_public_keys=[KEY_A]))
    config = {
        "nameserver": "192.168.1.1",
        "sshkeys": api.encode_sshkeys([KEY_A]),
        "net0": "virtio,bridge=vmbr0",
    }
    changed, payload = vm_module.config_update(want, vm_module.current_view(config), config)
    assert "nameserver" in changed
    assert payload["delete"] == "nameserver"
    assert "nameserver" not in payload
    assert "sshkeys" not in changed


@pytest.mark.parametrize(
    ("params", "stored"),
    [
        ({"image_url": "https://x.example/a/noble+1=2.img", "image_checksum": ""}, "noble_1_2.qcow2"),
        ({"image_url": "https://x.example/a/b%2Bc d.img", "image_checksum": ""}, "b_c_d.qcow2"),
        ({"image_url": "https://x.example/x.img", "image_filename": "dir/my+image.qcow2"}, "my_image.qcow2"),
    ],
    ids=["plus-equals", "escaped", "own-name-with-directory"],
)
def test_the_image_name_is_the_one_proxmox_stores(params: dict[str, str], stored: str) -> None:
    assert tpl.image_filename(params) == stored


@pytest.mark.parametrize(
    ("text", "retried"),
    [
        ("can't lock file '/var/lock/qemu-server/lock-201.conf' - got timeout", True),
        (
            "500 Internal Server Error: can't lock file '/var/lock/qemu-server/lock-9001.conf' - got timeout",
            True,
        ),
        ("clone failed: command 'lvcreate --lock-type none' failed: got timeout", False),
        ("unable to lock the guest agent channel", False),
        ("VM is locked (clone)", False),
    ],
)
def test_only_proxmox_lock_timeouts_count_as_lock_errors(text: str, retried: bool) -> None:
    assert api.ProxmoxClient._is_lock_error(text) is retried
