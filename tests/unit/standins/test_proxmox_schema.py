"""The schema-driven layer of the Proxmox VE stand-in: routes, parameter and response verification."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from gorkheavy_lab.proxmox import SCHEMA_FILE, ApiSchema, ProxmoxStandin
from gorkheavy_lab.proxmox import validation as v
from gorkheavy_lab.proxmox.api import HANDLERS
from hypothesis import given, settings
from hypothesis import strategies as st

SCHEMA = ApiSchema.load()
CONFIG = SCHEMA.endpoint("POST", "/nodes/{node}/qemu/{vmid}/config").parameters


def errors_for(
    values: dict[str, Any], method: str = "POST", path: str = "/nodes/{node}/qemu"
) -> dict[str, str]:
    return v.verify_parameters(
        SCHEMA.endpoint(method, path).parameters, {"node": "pve1", "vmid": "100", **values}
    )


def test_the_fixture_is_the_published_schema() -> None:
    tree = json.loads(SCHEMA_FILE.read_text())
    assert [node["path"] for node in tree] == [
        "/cluster",
        "/nodes",
        "/storage",
        "/access",
        "/pools",
        "/version",
    ]
    assert len(SCHEMA.endpoints) > 600
    assert (SCHEMA_FILE.parent / "NOTE.md").read_text().count("apidata.js") == 1


def test_every_schema_path_routes_to_itself() -> None:
    for _method, path in SCHEMA.endpoints:
        concrete = re.sub(r"\{([^}]+)\}", lambda m: f"x{m.group(1)}1", path)
        resolved, methods, params = SCHEMA.resolve(concrete)
        assert resolved == path, (path, resolved)
        assert set(params) == set(re.findall(r"\{([^}]+)\}", path))
        assert methods


def test_literal_segments_win_over_parameters() -> None:
    assert (
        SCHEMA.resolve("/nodes/pve1/qemu/100/status/current")[0] == "/nodes/{node}/qemu/{vmid}/status/current"
    )
    assert (
        SCHEMA.resolve("/nodes/pve1/tasks/UPID:pve1:1:2:3:x:y:z:/status")[0]
        == "/nodes/{node}/tasks/{upid}/status"
    )
    assert SCHEMA.resolve("/nodes/pve1/nothing-here")[0] is None


def test_every_modelled_endpoint_is_in_the_schema() -> None:
    for key in HANDLERS:
        assert key in SCHEMA.endpoints, key


def test_every_pattern_in_the_schema_compiles() -> None:
    patterns: set[str] = set()

    def scan(props: Any) -> None:
        for prop in (props or {}).values():
            if not isinstance(prop, dict):
                continue
            if "pattern" in prop:
                patterns.add(prop["pattern"])
            if isinstance(prop.get("format"), dict):
                scan(prop["format"])
            scan(prop.get("properties"))
            if isinstance(prop.get("items"), dict):
                scan({"items": prop["items"]})

    for endpoint in SCHEMA.endpoints.values():
        scan(endpoint.parameters.get("properties"))
        scan({"returns": endpoint.returns})
    assert len(patterns) > 50
    for pattern in patterns:
        v.perl_regex(f"^(?:{pattern})$")
    assert v.full_match(r"(?^:^(?^:[^\s:/]+)\@(?^:[A-Za-z][A-Za-z0-9\.\-_]+)$)", "root@pam")


def test_indexed_properties_follow_their_ranges() -> None:
    props = CONFIG["properties"]
    assert v.property_key_schema(props, "net31") is not None
    assert v.property_key_schema(props, "net32") is None
    assert v.property_key_schema(props, "scsi30") is not None
    assert v.property_key_schema(props, "scsi31") is None
    assert v.property_key_schema(props, "virtio16") is None
    assert v.property_key_schema(props, "ide3") is not None
    assert v.property_key_schema(props, "ide4") is None
    assert v.property_key_schema(props, "net01") is None
    assert v.property_key_schema(props, "unused255") is not None


def test_property_strings_with_default_keys_and_aliases() -> None:
    net = SCHEMA.property_format("net0")
    assert net is not None
    assert v.parse_property_string(net, "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1") == {
        "model": "virtio",
        "macaddr": "BC:24:11:AA:BB:CC",
        "bridge": "vmbr0",
        "firewall": "1",
    }
    assert v.parse_property_string(net, "e1000,bridge=vmbr1") == {"model": "e1000", "bridge": "vmbr1"}
    agent = SCHEMA.property_format("agent")
    assert agent is not None
    assert v.parse_property_string(agent, "1,fstrim_cloned_disks=on") == {
        "enabled": "1",
        "fstrim_cloned_disks": "1",
    }
    with pytest.raises(v.FormatError, match="duplicate key in comma-separated list property: bridge"):
        v.parse_property_string(net, "virtio,bridge=a,bridge=b")
    with pytest.raises(v.FormatError, match="duplicate key in comma-separated list property: model"):
        v.parse_property_string(net, "virtio,e1000")
    assert errors_for({"net0": "virtio=BC:24:11:AA:BB:CC,virtio=BC:24:11:AA:BB:CD"}) == {
        "net0": "invalid format - key alias 'model' is already defined\n"
    }
    assert errors_for({"net0": "virtio=01:00:00:00:00:00"}) == {
        "net0": "invalid format - format error\nnet0.macaddr: invalid format - "
        "value does not look like a valid unicast MAC address\n\n"
    }


def test_drives_with_import_from_and_cloudinit() -> None:
    assert errors_for({"scsi0": "local-lvm:0,import-from=local:import/noble.qcow2,discard=on,ssd=1"}) == {}
    assert errors_for({"ide2": "local-lvm:cloudinit"}) == {}
    assert errors_for({"ide2": "none,media=cdrom"}) == {}
    assert errors_for({"virtio0": "local-lvm:32,iothread=1"}) == {}
    assert errors_for({"scsi0": "local-lvm:0,import-from=no volume"}) == {
        "scsi0": "invalid format - format error\nscsi0.import-from: invalid format - "
        "unable to parse volume ID 'no volume'\n\n"
    }
    assert errors_for({"scsi0": "local-lvm:0,size=12Q"}) == {
        "scsi0": "invalid format - format error\nscsi0.size: invalid format - "
        "value does not look like a valid disk size: 12Q\n\n"
    }


def test_named_formats_and_lists() -> None:
    assert errors_for({"delete": "net1,description"}, "PUT", "/nodes/{node}/qemu/{vmid}/config") == {}
    assert errors_for({"delete": "net1,1bad"}, "PUT", "/nodes/{node}/qemu/{vmid}/config") == {
        "delete": "invalid format - invalid configuration ID '1bad'\n"
    }
    assert errors_for({"tags": "k3s;server,gpu"}) == {}
    assert errors_for({"nameserver": "10.0.0.1 1.1.1.1"}) == {}
    assert errors_for({"searchdomain": "lab.example"}) == {}
    assert errors_for({"boot": "order=scsi0;ide2;net0"}) == {}
    assert errors_for({"boot": "order=floppy0"}) == {
        "boot": "invalid format - format error\nboot.order: value does not match the regex pattern\n"
    }
    assert errors_for({"cpu": "host,flags=+aes"}) == {}
    assert errors_for({"cicustom": "user=local:snippets/user.yaml"}) == {}
    assert errors_for({"smbios1": "uuid=da4b9237-bacc-4df1-8c07-60cab7aec4a8"}) == {}
    assert errors_for({"smbios1": "uuid=nope"}) == {
        "smbios1": "invalid format - format error\nsmbios1.uuid: value does not match the regex pattern\n"
    }
    assert errors_for({"hotplug": "network,disk,usb"}) == {}
    assert errors_for({"hotplug": "gpu"}) == {"hotplug": "invalid format - unable to parse hotplug option\n"}
    assert errors_for({"watchdog": "i6300esb,action=reset"}) == {}
    assert errors_for({"memory": "8192"}) == {}
    assert errors_for({"memory": "8"}) == {
        "memory": "invalid format - format error\nmemory.current: value must have a minimum value of 16\n"
    }
    storage_errors = v.verify_parameters(
        SCHEMA.endpoint("GET", "/nodes/{node}/storage").parameters,
        {"node": "pve1", "content": "images,bogus"},
    )
    assert storage_errors == {"content": "invalid format - invalid content type 'bogus'\n"}
    assert errors_for({"storage": "x"}, "POST", "/nodes/{node}/qemu/{vmid}/clone") == {
        "newid": "property is missing and it is not optional",
        "storage": "invalid format - storage ID 'x' cannot be shorter than 2 characters\n",
    }


def test_sshkeys_format_is_urlencoded() -> None:
    assert errors_for({"sshkeys": "ssh-ed25519%20AAAA%20me%40host%0A"}) == {}
    assert errors_for({"sshkeys": "ssh-ed25519 AAAA me@host"}) == {
        "sshkeys": "invalid format - invalid urlencoded string: ssh-ed25519 AAAA me@host\n"
    }


def test_booleans_are_only_zero_and_one() -> None:
    assert errors_for({"onboot": "1", "template": "0"}) == {}
    assert errors_for({"onboot": "True"}) == {"onboot": "type check ('boolean') failed - got 'True'"}


def test_responses_are_checked_against_returns() -> None:
    version = SCHEMA.endpoint("GET", "/version").returns
    assert v.verify_returns(version, {"version": "9.1.1", "release": "9.1", "repoid": "abcdef12"}) == {}
    assert v.verify_returns(version, {"version": "9.1.1", "repoid": "abcdef12"}) == {
        "release": "property is missing and it is not optional"
    }
    assert v.verify_returns(version, {"version": "9", "release": "9.1", "repoid": "xyz"}) == {
        "repoid": "value does not match the regex pattern"
    }
    status = SCHEMA.endpoint("GET", "/nodes/{node}/tasks/{upid}/status").returns
    bad = {
        "upid": "u",
        "node": "n",
        "pid": 1,
        "pstart": 1,
        "starttime": 1,
        "type": "t",
        "id": "",
        "user": "u",
        "status": "done",
    }
    assert v.verify_returns(status, bad) == {
        "status": "value 'done' does not have a value in the enumeration 'running, stopped'"
    }
    nodes = SCHEMA.endpoint("GET", "/nodes").returns
    assert v.verify_returns(nodes, [{"node": "pve1", "status": "online", "maxcpu": "many"}]) == {
        "[0].maxcpu": "type check ('integer') failed - got 'many'"
    }


@settings(max_examples=60, deadline=None)
@given(st.ip_addresses(v=4), st.integers(min_value=1, max_value=32), st.ip_addresses(v=4))
def test_any_ipv4_ipconfig_is_accepted(address: Any, prefix: int, gateway: Any) -> None:
    assert errors_for({"ipconfig0": f"ip={address}/{prefix},gw={gateway}"}) == {}


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_vmid_path_values_follow_the_pve_vmid_rules(text: str) -> None:
    errors = errors_for({"vmid": text})
    # Perl's "$" (like Python's) also matches before a final newline
    valid = bool(re.match(r"^[1-9][0-9]{2,8}$", text))
    assert (errors == {}) == valid


KEYS = [
    "name",
    "cores",
    "memory",
    "net0",
    "ipconfig0",
    "scsi0",
    "ide2",
    "tags",
    "agent",
    "serial0",
    "boot",
    "sshkeys",
    "ciuser",
    "onboot",
    "description",
    "cpu",
    "virtio1",
    "sata0",
    "efidisk0",
    "delete",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "virtio,bridge=vmbr0",
            "local-lvm:4",
            "local-lvm:cloudinit",
            "local-lvm:0,import-from=local:import/x.qcow2",
            "ip=10.0.0.2/24,gw=10.0.0.1",
            "ip=dhcp",
            "socket",
            "order=scsi0",
            "a;b",
            "host",
            "2048",
            "none,media=cdrom",
            "local:iso/x.iso,media=cdrom",
            "local-lvm:vm-100-disk-0",
            "ssh-ed25519%20AAAA",
            "",
            "-1",
            "local-lvm:0",
        ]
    ),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), st.sampled_from(["create", "put", "post"]))
def test_random_requests_never_break_the_standin(params: dict[str, str], how: str) -> None:
    standin = ProxmoxStandin(nodes=["pve"])
    standin.task_durations = {"default": 0.0}
    standin.add_volume("pve", "local:import/x.qcow2", 1000, "qcow2", "import")
    standin.add_volume("pve", "local:iso/x.iso", 1000, "iso", "iso")
    auth = {"Authorization": "PVEAPIToken=root@pam!tt=s"}
    standin.add_token("root@pam!tt", "s")
    if how != "create":
        standin.handle("POST", "/nodes/pve/qemu", {"vmid": "100", "scsi0": "local-lvm:1"}, auth)
        standin.wait_tasks()
        method = "PUT" if how == "put" else "POST"
        status, _reason, body, _ = standin.handle(method, "/nodes/pve/qemu/100/config", dict(params), auth)
    else:
        status, _reason, body, _ = standin.handle("POST", "/nodes/pve/qemu", {"vmid": "100", **params}, auth)
    standin.wait_tasks()
    assert standin.internal_errors == []
    assert standin.response_violations == []
    assert status in (200, 400, 403, 500, 501), body
    if status == 500:
        assert body is not None
        assert not body["message"].startswith("stand-in bug"), body
