"""Errors the way Proxmox VE sends them: parameter verification, auth, permissions, conflicts, tasks."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gorkheavy_lab.proxmox import ProxmoxStandin, Server, StorageDef
from gorkheavy_lab.proxmox.testing import SSH_KEY, TOKEN_ID, TOKEN_SECRET, client, running_standin, wait_task
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

AUTH = {"Authorization": f"PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"}
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
OSTYPES = "other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris"
CACHES = "none, writethrough, writeback, unsafe, directsync"
FORMAT_ERROR = "invalid format - format error\n"


@pytest.fixture
def lab() -> Iterator[tuple[ProxmoxStandin, Server, Any]]:
    with running_standin(nodes=["pve1", "pve2"]) as (standin, server):
        standin.add_volume("pve1", "local:import/base.qcow2", 10_000, "qcow2", "import")
        yield standin, server, client(server)
        assert standin.response_violations == []


def raw(server: Server, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return requests.request(
        method,
        f"{server.url}/api2/json{path}",
        headers=AUTH if headers is None else headers,
        verify=server.ca_path,
        timeout=10,
        **kwargs,
    )


def make_vm(api: Any, vmid: int, node: str = "pve1", **extra: Any) -> None:
    upid = api.nodes(node).qemu.post(
        vmid=vmid, scsi0="local-lvm:0,import-from=local:import/base.qcow2", **extra
    )
    assert wait_task(api, node, upid)["exitstatus"] == "OK"


# -- parameter verification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        (
            {"vmid": "100", "bogus": "1"},
            {"bogus": UNKNOWN},
        ),
        ({"vmid": "abc"}, {"vmid": "type check ('integer') failed - got 'abc'"}),
        ({"vmid": "99"}, {"vmid": "invalid format - value does not look like a valid VM ID\n"}),
        ({"vmid": "100", "cores": "0"}, {"cores": "value must have a minimum value of 1"}),
        ({"vmid": "100", "onboot": "yes"}, {"onboot": "type check ('boolean') failed - got 'yes'"}),
        (
            {"vmid": "100", "ostype": "linux"},
            {"ostype": f"value 'linux' does not have a value in the enumeration '{OSTYPES}'"},
        ),
        ({"vmid": "100", "serial0": "tty0"}, {"serial0": "value does not match the regex pattern"}),
        (
            {"vmid": "100", "name": "bad_name!"},
            {"name": "invalid format - value does not look like a valid DNS name\n"},
        ),
        (
            {"vmid": "100", "net0": "virtio,bridge=vmbr0,speed=10"},
            {"net0": "invalid format - invalid key in comma-separated list property: speed\n"},
        ),
        (
            {"vmid": "100", "net0": "virtio,tag=5000"},
            {"net0": "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n"},
        ),
        (
            {"vmid": "100", "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0"},
            {
                "ipconfig0": FORMAT_ERROR
                + "ipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n"
            },
        ),
        (
            {"vmid": "100", "ipconfig0": "gw=10.0.0.1"},
            {"ipconfig0": FORMAT_ERROR + "ipconfig0.ip: missing property required by 'ipconfig0.gw'\n"},
        ),
        (
            {"vmid": "100", "agent": "enabled=maybe"},
            {"agent": FORMAT_ERROR + "agent.enabled: type check ('boolean') failed - got 'maybe'\n"},
        ),
        (
            {"vmid": "100", "net32": "virtio"},
            {"net32": UNKNOWN},
        ),
        ({"vmid": "100", "tags": "a;b c;-d"}, {"tags": "invalid format - invalid characters in tag\n"}),
        (
            {"vmid": "100", "scsi0": "local-lvm:32,cache=fast"},
            {
                "scsi0": FORMAT_ERROR
                + f"scsi0.cache: value 'fast' does not have a value in the enumeration '{CACHES}'\n"
            },
        ),
    ],
)
def test_parameter_verification(
    lab: tuple[ProxmoxStandin, Server, Any], params: dict[str, str], errors: dict[str, str]
) -> None:
    standin, server, _api = lab
    response = raw(server, "POST", "/nodes/pve1/qemu", data=params)
    assert response.status_code == 400
    assert response.reason == "Parameter verification failed."
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.json() == {"data": None, "errors": errors, "message": "Parameter verification failed.\n"}
    assert standin.schema_violations[-1].errors == errors
    assert 100 not in standin.cluster.vms


def test_missing_and_query_parameters(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, server, _api = lab
    response = raw(server, "POST", "/nodes/pve1/qemu/100/clone", data={})
    assert response.json()["errors"] == {"newid": "property is missing and it is not optional"}
    response = raw(server, "GET", "/cluster/resources", params={"type": "qemu"})
    assert response.json()["errors"] == {
        "type": "value 'qemu' does not have a value in the enumeration 'vm, storage, node, sdn'"
    }
    response = raw(
        server,
        "GET",
        "/nodes/pve1/qemu",
        data="full=1",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 501
    assert response.reason == "Unexpected content for method 'GET'"


def test_sshkeys_must_be_url_encoded_with_percent_20(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    make_vm(api, 100)
    with pytest.raises(ResourceException) as plus:
        api.nodes("pve1").qemu(100).config.put(sshkeys=urllib.parse.quote_plus(SSH_KEY))
    assert plus.value.status_code == 400
    assert plus.value.errors["sshkeys"].startswith(
        "invalid format - invalid urlencoded string: ssh-ed25519+AAAA"
    )
    with pytest.raises(ResourceException) as unencoded:
        api.nodes("pve1").qemu(100).config.put(sshkeys=SSH_KEY + "\n" + SSH_KEY)
    assert unencoded.value.status_code == 400
    with pytest.raises(ResourceException) as broken:
        api.nodes("pve1").qemu(100).config.put(sshkeys=urllib.parse.quote("ssh-ed25519 notbase64 x", safe=""))
    assert broken.value.status_code == 500
    assert broken.value.content == "SSH public key validation error"
    two = urllib.parse.quote(f"{SSH_KEY}\n{SSH_KEY}", safe="")
    api.nodes("pve1").qemu(100).config.put(sshkeys=two)
    assert api.nodes("pve1").qemu(100).config.get()["sshkeys"] == two
    assert "%0A" in two
    assert len(standin.schema_violations) == 2


# -- responses and paths -------------------------------------------------------------------------------------


def test_unknown_and_unmodelled_paths(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, server, _api = lab
    response = raw(server, "GET", "/foo")
    assert response.status_code == 501
    assert response.json()["message"] == "Method 'GET /foo' not implemented\n"
    response = raw(server, "PUT", "/version")
    assert response.status_code == 501
    assert response.reason == "Method 'PUT /version' not implemented"
    response = raw(server, "PATCH", "/version")
    assert (response.status_code, response.reason) == (501, "method 'PATCH' not available")
    response = raw(server, "GET", "/nodes/pve1/lxc")
    assert response.status_code == 501
    assert "/nodes/{node}/lxc" in response.json()["message"]
    response = raw(server, "GET", "/nodes/pve9/qemu")
    assert response.status_code == 500
    assert response.reason.startswith("hostname lookup 'pve9' failed")


def test_every_response_is_data_of_the_documented_shape(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, server, api = lab
    make_vm(api, 100, agent="1", net0="virtio,bridge=vmbr0", ipconfig0="ip=10.1.1.5/24,gw=10.1.1.1")
    paths = [
        "/version",
        "/nodes",
        "/nodes/pve1/status",
        "/cluster/resources",
        "/cluster/nextid",
        "/cluster/status",
        "/storage",
        "/nodes/pve1/storage",
        "/nodes/pve1/storage/local/content",
        "/nodes/pve1/storage/local-lvm/status",
        "/nodes/pve1/qemu",
        "/nodes/pve1/qemu/100/config",
        "/nodes/pve1/qemu/100/pending",
        "/nodes/pve1/qemu/100/status/current",
        "/nodes/pve1/tasks",
        "/access/permissions",
        "/cluster/tasks",
        "/pools",
        "/nodes/pve1/version",
        "/nodes/pve1/network",
        "/storage/local",
        "/nodes/pve1/qemu/100",
        "/nodes/pve1/qemu/100/status",
        "/nodes/pve1/qemu/100/agent",
        "/nodes/pve1/qemu/100/cloudinit",
        "/nodes/pve1/storage/local/content/local:import/base.qcow2",
    ]
    upid = raw(server, "GET", "/nodes/pve1/tasks").json()["data"][0]["upid"]
    paths += [
        f"/nodes/pve1/tasks/{upid}",
        f"/nodes/pve1/tasks/{upid}/status",
        f"/nodes/pve1/tasks/{upid}/log",
    ]
    for path in paths:
        response = raw(server, "GET", path)
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        # paged lists also carry "total" beside "data", like the real server's task lists and logs
        assert list(body) == (["data", "total"] if path.endswith(("pve1/tasks", "/log")) else ["data"]), path
    assert isinstance(raw(server, "GET", "/cluster/nextid").json()["data"], str)  # like the real server
    assert raw(server, "PUT", "/nodes/pve1/qemu/100/config", data={"name": "web"}).json() == {"data": None}
    assert standin.response_violations == []


# -- authentication and permissions -----------------------------------------------------------------------


def test_token_authentication(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, server, _api = lab
    assert raw(server, "GET", "/version").status_code == 200
    spaced = {"Authorization": f"PVEAPIToken {TOKEN_ID}={TOKEN_SECRET}"}
    assert raw(server, "GET", "/version", headers=spaced).status_code == 200
    encoded = {"Authorization": f"PVEAPIToken={urllib.parse.quote(f'{TOKEN_ID}={TOKEN_SECRET}')}"}
    assert raw(server, "GET", "/version", headers=encoded).status_code == 200  # the value is URI-unescaped
    colon = {"Authorization": f"PVEAPIToken={TOKEN_ID}:{TOKEN_SECRET}"}  # not a separator the server knows
    assert raw(server, "GET", "/version", headers=colon).status_code == 401
    bad = raw(server, "GET", "/version", headers={"Authorization": f"PVEAPIToken={TOKEN_ID}=wrong"})
    assert (bad.status_code, bad.reason, bad.content) == (401, "Authentication failed!", b"")
    unknown = raw(
        server, "GET", "/version", headers={"Authorization": f"PVEAPIToken=nobody@pve!x={TOKEN_SECRET}"}
    )
    assert unknown.status_code == 401
    none = raw(server, "GET", "/version", headers={})
    assert (none.status_code, none.reason) == (401, "No ticket")


def test_ticket_login_and_csrf(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, server, _api = lab
    standin.add_user("admin@pve", password="s3cret")
    failed = raw(
        server, "POST", "/access/ticket", headers={}, data={"username": "admin@pve", "password": "nope"}
    )
    assert (failed.status_code, failed.reason) == (401, "authentication failure")
    assert failed.json() == {"data": None, "message": "authentication failure\n"}
    login = raw(
        server,
        "POST",
        "/access/ticket",
        headers={},
        data={"username": "admin", "realm": "pve", "password": "s3cret"},
    )
    assert login.status_code == 200
    data = login.json()["data"]
    assert data["username"] == "admin@pve"
    cookie = {"Cookie": f"PVEAuthCookie={urllib.parse.quote(data['ticket'], safe='')}"}
    assert raw(server, "GET", "/nodes", headers=cookie).status_code == 200
    no_csrf = raw(server, "PUT", "/nodes/pve1/qemu/100/config", headers=cookie, data={"name": "x"})
    assert (no_csrf.status_code, no_csrf.reason) == (401, "Permission denied - invalid csrf token")
    with_csrf = raw(
        server,
        "POST",
        "/nodes/pve1/qemu",
        headers={**cookie, "CSRFPreventionToken": data["CSRFPreventionToken"]},
        data={"vmid": "120"},
    )
    assert with_csrf.status_code == 200
    api = ProxmoxAPI(
        server.host, port=server.port, user="admin@pve", password="s3cret", verify_ssl=server.ca_path
    )
    assert wait_task(api, "pve1", with_csrf.json()["data"])["user"] == "admin@pve"
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(120).status.start.post())["exitstatus"] == "OK"


def test_privilege_separated_token(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, server, api = lab
    make_vm(api, 100)
    standin.add_token(
        "gorkheavy@pve!audit", "AUDIT", privsep=True, privileges={"/": ["Sys.Audit", "VM.Audit"]}
    )
    standin.add_token(
        "gorkheavy@pve!power",
        "POWER",
        privsep=True,
        privileges={"/vms/100": ["VM.PowerMgmt", "VM.Config.Options"], "/storage": ["Datastore.Audit"]},
    )
    audit = client(server, "gorkheavy@pve!audit", "AUDIT")
    assert audit.nodes("pve1").status.get()["pveversion"].startswith("pve-manager/9.1")
    with pytest.raises(ResourceException) as denied:
        audit.nodes("pve1").qemu.post(vmid=130)
    assert denied.value.status_code == 403
    assert denied.value.content == "Permission check failed (/vms/130, VM.Allocate)"
    with pytest.raises(ResourceException, match=r"Permission check failed \(/vms/100, VM.Clone\)"):
        audit.nodes("pve1").qemu(100).clone.post(newid=131)
    with pytest.raises(ResourceException, match=r"Permission check failed \(/vms/100, VM.PowerMgmt\)"):
        audit.nodes("pve1").qemu(100).status.start.post()
    power = client(server, "gorkheavy@pve!power", "POWER")
    with pytest.raises(ResourceException, match=r"Permission check failed \(/nodes/pve1, Sys.Audit\)"):
        power.nodes("pve1").status.get()
    power.nodes("pve1").qemu(100).config.put(name="renamed")
    with pytest.raises(
        ResourceException,
        match=r"Permission check failed \(/vms/100, VM.Config.Cloudinit\|VM.Config.Network\)",
    ):
        power.nodes("pve1").qemu(100).config.put(ciuser="ubuntu")
    with pytest.raises(ResourceException, match=r"Permission check failed \(/vms/100, VM.Config.Disk\)"):
        power.nodes("pve1").qemu(100).resize.put(disk="scsi0", size="+1G")
    assert [r["vmid"] for r in audit.cluster.resources.get(type="vm")] == [100]
    assert power.cluster.resources.get(type="vm") == []  # no VM.Audit
    assert {r["storage"] for r in power.cluster.resources.get(type="storage")} == {"local", "local-lvm"}
    assert audit.cluster.resources.get(type="storage") == []  # no Datastore.Audit
    assert "maxmem" not in power.cluster.resources.get(type="node")[0]  # no Sys.Audit
    assert [s["storage"] for s in power.nodes("pve1").storage.get()] == ["local", "local-lvm"]
    assert audit.nodes("pve1").storage.get() == []
    permissions = power.access.permissions.get()
    assert permissions["/vms/100"] == {"VM.Config.Options": 1, "VM.PowerMgmt": 1}
    assert wait_task(power, "pve1", power.nodes("pve1").qemu(100).status.start.post())["exitstatus"] == "OK"


# -- conflicts, locks and task failures ---------------------------------------------------------------------


def test_duplicate_vmid(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    make_vm(api, 100)
    with pytest.raises(ResourceException) as duplicate:
        api.nodes("pve2").qemu.post(vmid=100)
    assert duplicate.value.status_code == 500
    assert duplicate.value.content == "unable to create VM 100 - VM 100 already exists on node 'pve1'"
    assert api.cluster.nextid.get() == "101"
    with pytest.raises(ResourceException) as taken:
        api.cluster.nextid.get(vmid=100)
    assert taken.value.errors == {"vmid": "VM 100 already exists"}


def test_digest_and_delete(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    make_vm(api, 100, description="first", tags="b;a")
    config = api.nodes("pve1").qemu(100).config.get()
    assert config["tags"] == "a;b"
    api.nodes("pve1").qemu(100).config.put(delete="description", digest=config["digest"])
    assert "description" not in api.nodes("pve1").qemu(100).config.get()
    with pytest.raises(ResourceException, match=r"checksum mismatch \(file change by other user\?\)"):
        api.nodes("pve1").qemu(100).config.put(name="late", digest=config["digest"])
    upid = api.nodes("pve1").qemu(100).config.post(cores=2, memory=4096)
    assert wait_task(api, "pve1", upid)["type"] == "qmconfig"
    assert api.nodes("pve1").qemu(100).config.get()["cores"] == 2


def test_lock_timeouts_and_injected_failures(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    make_vm(api, 9000)
    wait_task(api, "pve1", api.nodes("pve1").qemu(9000).template.post())
    standin.faults.lock_timeout_once(9000)
    failed = wait_task(api, "pve1", api.nodes("pve1").qemu(9000).clone.post(newid=101))
    assert failed["exitstatus"] == "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    log = api.nodes("pve1").tasks(failed["upid"]).log.get()
    assert log[-1]["t"] == "TASK ERROR: can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    with pytest.raises(ResourceException):
        api.nodes("pve1").qemu(101).config.get()  # a failed clone leaves nothing behind
    standin.faults.fail_next_task("qmclone", "clone failed: no space left on device")
    failed = wait_task(api, "pve1", api.nodes("pve1").qemu(9000).clone.post(newid=101))
    assert failed["exitstatus"] == "clone failed: no space left on device"
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(9000).clone.post(newid=101))["exitstatus"] == "OK"
    # a VM busy with a running task: a synchronous update fails at once
    standin.task_durations["qmstart"] = 0.5
    upid = api.nodes("pve1").qemu(101).status.start.post()
    with pytest.raises(ResourceException) as busy:
        api.nodes("pve1").qemu(101).config.put(name="busy")
    assert busy.value.content == "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    wait_task(api, "pve1", upid)
    with pytest.raises(ResourceException, match="you can't start a vm if it's a template"):
        api.nodes("pve1").qemu(9000).status.start.post()
    with pytest.raises(ResourceException, match="you can't convert a template to a template"):
        api.nodes("pve1").qemu(9000).template.post()
    again = wait_task(api, "pve1", api.nodes("pve1").qemu(101).status.start.post())
    assert again["exitstatus"] == "VM 101 already running"


def test_task_status_shape_and_upid(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    standin.task_durations["qmcreate"] = 0.3
    upid = api.nodes("pve1").qemu.post(vmid=100)
    fields = upid.split(":")
    assert fields[0] == "UPID"
    assert fields[1] == "pve1"
    assert all(len(f) == 8 and int(f, 16) >= 0 for f in fields[2:5])
    assert fields[5:] == ["qmcreate", "100", TOKEN_ID, ""]
    running = api.nodes("pve1").tasks(upid).status.get()
    assert running["status"] == "running"
    assert running["pid"] == int(fields[2], 16)
    assert running["starttime"] == int(fields[4], 16)
    stopped = wait_task(api, "pve1", upid)
    assert stopped["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as garbage:
        api.nodes("pve1").tasks("UPID:garbage").status.get()
    assert garbage.value.errors == {"upid": "unable to parse worker upid"}
    with pytest.raises(ResourceException) as elsewhere:
        api.nodes("pve2").tasks(upid).status.get()
    assert elsewhere.value.errors == {"upid": "no such task"}
    assert [t["upid"] for t in api.nodes("pve1").tasks.get(vmid=100)] == [upid]


def test_download_url_checks(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    standin.add_remote_file("https://img.example/a.img", b"image-bytes")
    storage = api.nodes("pve1").storage
    with pytest.raises(
        ResourceException, match="can't upload to storage type 'lvmthin', not a file based storage!"
    ):
        storage("local-lvm")("download-url").post(
            content="import", filename="a.qcow2", url="https://img.example/a.img"
        )
    standin.add_storage(StorageDef("isos", "dir", ["iso"]))
    with pytest.raises(ResourceException, match="storage 'isos' is not configured for content-type 'import'"):
        storage("isos")("download-url").post(
            content="import", filename="a.qcow2", url="https://img.example/a.img"
        )
    with pytest.raises(ResourceException) as name:
        storage("local")("download-url").post(
            content="import", filename="a.img", url="https://img.example/a.img"
        )
    assert name.value.errors == {"filename": "invalid filename or wrong extension"}
    with pytest.raises(ResourceException) as requires:
        storage("local")("download-url").post(
            content="import", filename="a.qcow2", url="https://img.example/a.img", checksum="00"
        )
    assert requires.value.errors == {"checksum-algorithm": "missing property required by 'checksum'"}
    mismatch = wait_task(
        api,
        "pve1",
        storage("local")("download-url").post(
            content="import",
            filename="a.qcow2",
            url="https://img.example/a.img",
            checksum="00",
            **{"checksum-algorithm": "sha256"},
        ),
    )
    assert mismatch["exitstatus"].startswith("checksum mismatch: got '")
    ok = wait_task(
        api,
        "pve1",
        storage("local")("download-url").post(
            content="import", filename="a.qcow2", url="https://img.example/a.img"
        ),
    )
    assert ok["exitstatus"] == "OK"
    again = wait_task(
        api,
        "pve1",
        storage("local")("download-url").post(
            content="import", filename="a.qcow2", url="https://img.example/a.img"
        ),
    )
    assert again["exitstatus"] == "refusing to override existing file '/var/lib/vz/import/a.qcow2'"


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "pve.json"
    with running_standin(nodes=["pve1"], state_file=state) as (standin, server):
        standin.add_volume("pve1", "local:import/base.qcow2", 10_000, "qcow2", "import")
        api = client(server)
        make_vm(
            api,
            100,
            name="keeper",
            tags="x",
            agent="1",
            net0="virtio,bridge=vmbr0",
            ipconfig0="ip=10.2.0.5/24",
        )
        wait_task(api, "pve1", api.nodes("pve1").qemu(100).status.start.post())
        before = api.nodes("pve1").tasks.get()
    assert json.loads(state.read_text())["nodes"] == ["pve1"]
    with running_standin(nodes=["pve9"], state_file=state) as (_standin, server):
        api = client(server)
        assert [n["node"] for n in api.nodes.get()] == ["pve1"]  # the state file wins
        config = api.nodes("pve1").qemu(100).config.get()
        assert config["name"] == "keeper"
        assert config["scsi0"].startswith("local-lvm:vm-100-disk-0,")
        assert [v["volid"] for v in api.nodes("pve1").storage("local-lvm").content.get()] == [
            "local-lvm:vm-100-disk-0"
        ]
        assert api.nodes("pve1").qemu(100).status.current.get()["status"] == "running"
        result = api.nodes("pve1").qemu(100).agent("network-get-interfaces").get()["result"]
        assert any(a["ip-address"] == "10.2.0.5" for i in result for a in i.get("ip-addresses", []))
        assert api.nodes("pve1").tasks.get() == before
        upid = api.nodes("pve1").qemu.post(vmid=101)
        assert int(upid.split(":")[2], 16) > max(int(t["upid"].split(":")[2], 16) for t in before)


def test_template_with_linked_clones_cannot_be_destroyed(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    make_vm(api, 9000)
    wait_task(api, "pve1", api.nodes("pve1").qemu(9000).template.post())
    wait_task(api, "pve1", api.nodes("pve1").qemu(9000).clone.post(newid=101))
    assert (
        api.nodes("pve1")
        .qemu(101)
        .config.get()["scsi0"]
        .startswith("local-lvm:base-9000-disk-0/vm-101-disk-0,")
    )
    failed = wait_task(api, "pve1", api.nodes("pve1").qemu(9000).delete())
    assert failed["exitstatus"] == "base volume 'local-lvm:base-9000-disk-0' is still in use by linked cloned"
    wait_task(api, "pve1", api.nodes("pve1").qemu(101).delete())
    assert wait_task(api, "pve1", api.nodes("pve1").qemu(9000).delete())["exitstatus"] == "OK"
    assert api.nodes("pve1").storage("local-lvm").content.get() == []


def test_new_disks_need_a_storage(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    with pytest.raises(ResourceException) as bare:
        api.nodes("pve1").qemu.post(vmid=100, scsi0="8", storage="local-lvm")
    assert bare.value.errors == {
        "scsi0": FORMAT_ERROR + "scsi0.file: invalid format - unable to parse volume ID '8'\n\n"
    }
    wait_task(api, "pve1", api.nodes("pve1").qemu.post(vmid=100, scsi0="local-lvm:8,discard=on"))
    config = api.nodes("pve1").qemu(100).config.get()
    assert config["scsi0"] == "local-lvm:vm-100-disk-0,discard=on,size=8G"
    status = api.nodes("pve1").qemu(100).status.current.get()
    assert status["maxdisk"] == 8 * 2**30
    assert status["maxmem"] == 512 * 2**20
    with pytest.raises(ResourceException) as no_images:
        api.nodes("pve1").qemu.post(vmid=101, scsi0="local:8")
    assert no_images.value.errors == {"storage": "storage 'local' does not support vm images"}


def test_deleted_disks_become_unused_and_unused_disks_are_destroyed(
    lab: tuple[ProxmoxStandin, Server, Any],
) -> None:
    _standin, _server, api = lab
    make_vm(api, 100, scsi1="local-lvm:4", ide2="local-lvm:cloudinit")
    volumes = {v["volid"] for v in api.nodes("pve1").storage("local-lvm").content.get()}
    assert volumes == {"local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-1", "local-lvm:vm-100-cloudinit"}
    api.nodes("pve1").qemu(100).config.put(delete="scsi1,ide2")
    config = api.nodes("pve1").qemu(100).config.get()
    assert config["unused0"] == "local-lvm:vm-100-disk-1"
    assert "scsi1" not in config
    volumes = {v["volid"] for v in api.nodes("pve1").storage("local-lvm").content.get()}
    assert volumes == {"local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-1"}
    api.nodes("pve1").qemu(100).config.put(delete="unused0")
    volumes = {v["volid"] for v in api.nodes("pve1").storage("local-lvm").content.get()}
    assert volumes == {"local-lvm:vm-100-disk-0"}
    with pytest.raises(ResourceException) as skiplock:
        api.nodes("pve1").qemu(100).config.put(name="x", skiplock=1)
    assert skiplock.value.errors == {"skiplock": "Only root may use this option."}
    with pytest.raises(ResourceException) as unknown:
        api.nodes("pve1").qemu(100).config.put(delete="bogus")
    assert unknown.value.errors == {"delete": "unknown option 'bogus'"}
    with pytest.raises(ResourceException) as both:
        api.nodes("pve1").qemu(100).config.put(delete="name", name="x")
    assert both.value.errors == {"delete": "you can't use '-name' and -delete name' at the same time"}
    with pytest.raises(ResourceException, match="no options specified"):
        api.nodes("pve1").qemu(100).config.put()


def test_clone_permissions(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, server, api = lab
    make_vm(api, 9000)
    wait_task(api, "pve1", api.nodes("pve1").qemu(9000).template.post())
    standin.add_token("gorkheavy@pve!clone", "C", privsep=True, privileges={"/vms": ["VM.Clone", "VM.Audit"]})
    standin.add_token(
        "gorkheavy@pve!nospace", "N", privsep=True, privileges={"/vms": ["VM.Clone", "VM.Allocate"]}
    )
    cloner = client(server, "gorkheavy@pve!clone", "C")
    with pytest.raises(ResourceException) as no_allocate:
        cloner.nodes("pve1").qemu(9000).clone.post(newid=101)
    assert (no_allocate.value.status_code, no_allocate.value.content) == (403, "Permission check failed")
    nospace = client(server, "gorkheavy@pve!nospace", "N")
    with pytest.raises(ResourceException) as no_space:
        nospace.nodes("pve1").qemu(9000).clone.post(newid=101)
    assert no_space.value.content == "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)"
    standin.add_token(
        "gorkheavy@pve!full",
        "F",
        privsep=True,
        privileges={"/vms": ["VM.Clone", "VM.Allocate"], "/storage/local-lvm": ["Datastore.AllocateSpace"]},
    )
    full = client(server, "gorkheavy@pve!full", "F")
    assert wait_task(full, "pve1", full.nodes("pve1").qemu(9000).clone.post(newid=101))["exitstatus"] == "OK"


def test_cloud_init_password_is_stored_hashed_and_shown_as_stars(
    lab: tuple[ProxmoxStandin, Server, Any],
) -> None:
    standin, _server, api = lab
    make_vm(api, 100, cipassword="hunter22")
    assert api.nodes("pve1").qemu(100).config.get()["cipassword"] == "**********"
    stored = standin.vm_config(100)["cipassword"]
    assert stored.startswith("$5$")
    assert "hunter22" not in stored
    api.nodes("pve1").qemu(100).config.put(cipassword="$6$salt$alreadyhashed")
    assert standin.vm_config(100)["cipassword"] == "$6$salt$alreadyhashed"
    pending = {p["key"]: p for p in api.nodes("pve1").qemu(100).pending.get()}
    assert pending["cipassword"]["value"] == "**********"


def test_offline_migration(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    _standin, _server, api = lab
    make_vm(api, 9000, ide2="local-lvm:cloudinit")
    wait_task(api, "pve1", api.nodes("pve1").qemu(9000).template.post())
    with pytest.raises(ResourceException) as local:
        api.nodes("pve1").qemu(9000).migrate.post(target="pve1")
    assert local.value.errors == {"target": "target is local node."}
    upid = api.nodes("pve1").qemu(9000).migrate.post(target="pve2")
    assert upid.split(":")[5] == "qmigrate"
    assert wait_task(api, "pve1", upid)["exitstatus"] == "OK"
    config = api.nodes("pve2").qemu(9000).config.get()
    assert config["scsi0"].startswith("local-lvm:base-9000-disk-0,")
    assert [v["volid"] for v in api.nodes("pve2").storage("local-lvm").content.get()] == [
        "local-lvm:base-9000-disk-0",
        "local-lvm:vm-9000-cloudinit",
    ]
    assert api.nodes("pve1").storage("local-lvm").content.get() == []
    wait_task(api, "pve2", api.nodes("pve2").qemu(9000).clone.post(newid=101, name="on-pve2"))
    wait_task(api, "pve2", api.nodes("pve2").qemu(101).status.start.post())
    with pytest.raises(ResourceException, match="can't migrate running VM without --online"):
        api.nodes("pve2").qemu(101).migrate.post(target="pve1")


def test_injected_request_failures(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    make_vm(api, 100)
    standin.faults.fail_next_request("GET", "/nodes/{node}/qemu/{vmid}/config", 595, "Connection timed out")
    with pytest.raises(ResourceException) as transient:
        api.nodes("pve1").qemu(100).config.get()
    assert (transient.value.status_code, transient.value.content) == (595, "Connection timed out")
    assert api.nodes("pve1").qemu(100).config.get()["scsi0"].startswith("local-lvm:")


def test_an_offline_node(lab: tuple[ProxmoxStandin, Server, Any]) -> None:
    standin, _server, api = lab
    standin.set_node_online("pve2", False)
    assert {n["node"]: n["status"] for n in api.nodes.get()} == {"pve1": "online", "pve2": "offline"}
    with pytest.raises(ResourceException) as refused:
        api.nodes("pve2").qemu.get()
    assert refused.value.status_code == 595
    standin.set_node_online("pve2", True)
    assert api.nodes("pve2").qemu.get() == []
