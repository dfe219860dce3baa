"""The Proxmox VE stand-in's seams: a pluggable VM backend, JSON clients, the command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from gorkheavy_lab.proxmox import GuestInterface, ProxmoxStandin, SimulatedBackend, VmBackend
from gorkheavy_lab.proxmox import api as api_module
from gorkheavy_lab.proxmox.testing import SSH_KEY, TOKEN_ID, TOKEN_SECRET, client, running_standin, wait_task
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

REPO = Path(__file__).resolve().parents[3]


class RecordingBackend:
    """A backend like a lab's: it records calls and reports a fixed address once asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.seeds: list[Mapping[str, str] | None] = []
        self.up: set[int] = set()
        self.refuse: str | None = None
        self.hang_shutdown = False

    def start(self, node: str, vmid: int, config: Mapping[str, str], seed: Mapping[str, str] | None) -> None:
        self.calls.append(("start", node, vmid))
        self.seeds.append(seed)
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.up.add(vmid)

    def stop(self, node: str, vmid: int) -> None:
        self.calls.append(("stop", node, vmid))
        self.up.discard(vmid)

    def shutdown(self, node: str, vmid: int, timeout: float) -> None:
        self.calls.append(("shutdown", node, vmid))
        if self.hang_shutdown:
            raise RuntimeError("guest did not power off")
        self.up.discard(vmid)

    def destroy(self, node: str, vmid: int) -> None:
        self.calls.append(("destroy", node, vmid))

    def status(self, node: str, vmid: int) -> str:
        return "running" if vmid in self.up else "stopped"

    def addresses(self, node: str, vmid: int, config: Mapping[str, str]) -> list[GuestInterface] | None:
        if vmid not in self.up:
            return None
        return [GuestInterface("eth0", "bc:24:11:00:00:99", (("ipv4", "10.88.0.7", 16),))]


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(SimulatedBackend(), VmBackend)
    assert isinstance(RecordingBackend(), VmBackend)


def test_a_pluggable_backend_drives_power_and_addresses() -> None:
    backend = RecordingBackend()
    with running_standin(nodes=["pve"], backend=backend) as (standin, server):
        api = client(server)
        wait_task(api, "pve", api.nodes("pve").qemu.post(vmid=200, agent="1", net0="virtio,bridge=vmbr0"))
        assert wait_task(api, "pve", api.nodes("pve").qemu(200).status.start.post())["exitstatus"] == "OK"
        result = api.nodes("pve").qemu(200).agent("network-get-interfaces").get()["result"]
        assert result[0]["ip-addresses"] == [
            {"ip-address-type": "ipv4", "ip-address": "10.88.0.7", "prefix": 16}
        ]
        assert wait_task(api, "pve", api.nodes("pve").qemu(200).status.shutdown.post())["exitstatus"] == "OK"
        backend.refuse = "start failed: container did not boot"
        failed = wait_task(api, "pve", api.nodes("pve").qemu(200).status.start.post())
        assert failed["exitstatus"] == "start failed: container did not boot"
        assert api.nodes("pve").qemu(200).status.current.get()["status"] == "stopped"
        assert backend.calls == [("start", "pve", 200), ("shutdown", "pve", 200), ("start", "pve", 200)]
        assert backend.seeds == [None, None], "no cloud-init drive, no NoCloud seed"
        assert standin.schema_violations == []


def test_start_hands_the_backend_the_cloud_init_drive_and_destroy_removes_the_guest() -> None:
    backend = RecordingBackend()
    with running_standin(nodes=["pve"], backend=backend) as (standin, server):
        api = client(server)
        vm = api.nodes("pve").qemu(230)
        created = api.nodes("pve").qemu.post(
            vmid=230, name="k3s-server", agent="1", net0="virtio=BC:24:11:00:00:30,bridge=vmbr0",
            ide2="local-lvm:cloudinit", ciuser="k3sadmin", sshkeys=urllib.parse.quote(SSH_KEY, safe=""),
            ipconfig0="ip=10.77.0.30/24,gw=10.77.0.1", nameserver="10.77.0.1", searchdomain="lab",
        )  # fmt: skip
        wait_task(api, "pve", created)
        assert wait_task(api, "pve", vm.status.start.post())["exitstatus"] == "OK"
        seed = backend.seeds[-1]
        assert seed is not None
        assert seed["user-data"] == vm.cloudinit.dump.get(type="user")
        assert seed["network-config"] == vm.cloudinit.dump.get(type="network")
        assert seed["meta-data"] == vm.cloudinit.dump.get(type="meta")
        assert f"  - {SSH_KEY}" in seed["user-data"].splitlines()
        assert "user: k3sadmin" in seed["user-data"].splitlines()
        assert "address: '10.77.0.30'" in seed["network-config"]
        backend.hang_shutdown = True
        failed = wait_task(api, "pve", vm.status.shutdown.post(timeout=5))
        assert failed["exitstatus"] == "VM quit/powerdown failed - got timeout"
        forced = wait_task(api, "pve", vm.status.shutdown.post(timeout=5, forceStop=1))
        assert forced["exitstatus"] == "OK"
        assert vm.status.current.get()["status"] == "stopped"
        assert wait_task(api, "pve", vm.delete())["exitstatus"] == "OK"
        assert backend.calls[-2:] == [("stop", "pve", 230), ("destroy", "pve", 230)]
        assert standin.schema_violations == []


def test_pending_changes_of_a_running_vm_apply_at_next_start() -> None:
    with running_standin(nodes=["pve"]) as (_standin, server):
        api = client(server)
        wait_task(api, "pve", api.nodes("pve").qemu.post(vmid=210, cores=1, net0="virtio,bridge=vmbr0"))
        wait_task(api, "pve", api.nodes("pve").qemu(210).status.start.post())
        api.nodes("pve").qemu(210).config.put(cores=4, name="renamed")
        pending = {p["key"]: p for p in api.nodes("pve").qemu(210).pending.get()}
        assert (
            pending["cores"] == {"key": "cores", "value": 1, "pending": 4}
            or pending["cores"]["pending"] == "4"
        )
        assert "pending" not in pending["name"]
        assert api.nodes("pve").qemu(210).config.get(current=1)["cores"] == 1
        assert api.nodes("pve").qemu(210).config.get()["cores"] == 4
        wait_task(api, "pve", api.nodes("pve").qemu(210).status.stop.post())
        wait_task(api, "pve", api.nodes("pve").qemu(210).status.start.post())
        assert all("pending" not in p for p in api.nodes("pve").qemu(210).pending.get())
        api.nodes("pve").qemu(210).config.put(net1="virtio,bridge=vmbr9")
        wait_task(api, "pve", api.nodes("pve").qemu(210).status.stop.post())
        failed = wait_task(api, "pve", api.nodes("pve").qemu(210).status.start.post())
        assert failed["exitstatus"] == "bridge 'vmbr9' does not exist"


def test_json_bodies_and_repeated_parameters() -> None:
    with running_standin(nodes=["pve"]) as (standin, server):
        headers = {"Authorization": f"PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"}
        url = f"{server.url}/api2/json/nodes/pve/qemu"
        created = requests.post(
            url,
            json={"vmid": 220, "cores": 2, "onboot": True, "description": None},
            headers=headers,
            verify=server.ca_path,
            timeout=10,
        )
        assert created.status_code == 200, created.text
        standin.wait_tasks()
        assert standin.vm_config(220)["onboot"] == "1"
        repeated = requests.post(
            url,
            data=[("vmid", "221"), ("name", "a"), ("name", "b")],
            headers=headers,
            verify=server.ca_path,
            timeout=10,
        )
        assert repeated.status_code == 400
        assert repeated.json()["errors"] == {"name": "type check ('string') failed - got ARRAY"}
        boolean_name = requests.post(
            url, json={"vmid": 222, "name": True}, headers=headers, verify=server.ca_path, timeout=10
        )
        assert boolean_name.json()["errors"] == {
            "name": "type check ('string') failed - got JSON::PP::Boolean"
        }
        clash = requests.post(
            f"{url}/220/config",
            data={"vmid": "221", "name": "x"},
            headers=headers,
            verify=server.ca_path,
            timeout=10,
        )
        assert clash.json()["errors"] == {"vmid": "duplicate parameter (already defined in URI)"}


def test_volume_endpoints_and_preflight_reads() -> None:
    with running_standin(nodes=["pve1", "pve2"]) as (standin, server):
        api = client(server)
        standin.add_volume("pve1", "local:import/img.qcow2", 4096, "qcow2", "import")
        info = api.nodes("pve1").storage("local").content("local:import/img.qcow2").get()
        assert info == {"path": "/var/lib/vz/import/img.qcow2", "size": 4096, "used": 409, "format": "qcow2"}
        assert api.nodes("pve1").version.get()["release"] == "9.1"
        assert [i["iface"] for i in api.nodes("pve1").network.get(type="bridge")] == ["vmbr0"]
        assert api.storage("local-lvm").get()["type"] == "lvmthin"
        upid = api.nodes("pve1").storage("local").content("local:import/img.qcow2").delete()
        assert upid.split(":")[5:7] == ["imgdel", "local"]
        wait_task(api, "pve1", upid)
        with pytest.raises(ResourceException, match=r"volume 'local:import/img\.qcow2' does not exist"):
            api.nodes("pve1").storage("local").content("local:import/img.qcow2").get()
        assert api.nodes("pve2").storage("local").content.get() == []
        assert standin.schema_violations == []


def test_command_line_server(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    state = tmp_path / "state.json"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the lab's token\n\n{TOKEN_ID}={TOKEN_SECRET}\n")
    tokens.chmod(0o600)
    port = _free_port()
    process = subprocess.Popen(
        [
            # as a shell's background job starts it, SIGINT ignored: the server still stops on it
            "env",
            "--ignore-signal=INT",
            sys.executable,
            "-m",
            "gorkheavy_lab.proxmox",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--nodes",
            "pve1,pve2",
            "--token-file",
            str(tokens),
            "--state",
            str(state),
            "--ca-out",
            str(ca),
            "--storage",
            "nfs=nfs:images,import:shared",
            "--task-duration",
            "qmcreate=0.01",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "app")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        api: Any = None
        while time.monotonic() < deadline:
            if ca.exists():
                try:
                    api = _cli_client(port, ca)
                    api.version.get()
                    break
                except (requests.ConnectionError, OSError):
                    pass
            time.sleep(0.1)
        assert api is not None
        assert [n["node"] for n in api.nodes.get()] == ["pve1", "pve2"]
        nfs = [s for s in api.nodes("pve2").storage.get() if s["storage"] == "nfs"]
        assert nfs[0]["shared"] == 1
        wait_task(api, "pve2", api.nodes("pve2").qemu.post(vmid=300, name="persisted"))
        assert state.exists()
        # what `ps` shows every local user: the token file's name, not the secret
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert str(tokens).encode() in cmdline
        assert TOKEN_SECRET.encode() not in cmdline
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert '"persisted"' in state.read_text()


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o644, f"{TOKEN_ID}={TOKEN_SECRET}\n", "its mode is 0644; the secrets need 0600 (chmod 600 "),
        (0o600, "gorkheavy@pve=no-token-name\n", "line 1: expected 'user@realm!name=SECRET'"),
        (0o600, "# nothing\n", "it names no token"),
    ],
)
def test_a_token_file_others_can_read_or_that_names_no_token_is_refused(
    tmp_path: Path, mode: int, text: str, message: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(text)
    tokens.chmod(mode)
    result = subprocess.run(
        [sys.executable, "-m", "gorkheavy_lab.proxmox", "serve", "--port", "0", "--token-file", str(tokens)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "app")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"--token-file {tokens}: {message}" in result.stderr
    assert TOKEN_SECRET not in result.stderr


def _cli_client(port: int, ca: Path) -> Any:
    user, _, name = TOKEN_ID.partition("!")
    return ProxmoxAPI(
        "127.0.0.1",
        port=port,
        user=user,
        token_name=name,
        token_value=TOKEN_SECRET,
        verify_ssl=str(ca),
        timeout=5,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_standin_type_is_exported() -> None:
    assert ProxmoxStandin.__doc__


def test_strict_mode_turns_a_wrong_response_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_module.HANDLERS, ("GET", "/version"), lambda _api, _req: {"version": "9.1.1"})
    with running_standin(nodes=["pve"]) as (standin, server):
        api = client(server)
        with pytest.raises(ResourceException) as bug:
            api.version.get()
        assert bug.value.status_code == 500
        assert standin.response_violations[0].errors == {
            "release": "property is missing and it is not optional",
            "repoid": "property is missing and it is not optional",
        }
    lenient = ProxmoxStandin(nodes=["pve"], strict=False)
    lenient.add_token(TOKEN_ID, TOKEN_SECRET)
    status, _reason, body, _headers = lenient.handle(
        "GET", "/version", {}, {"Authorization": f"PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"}
    )
    assert (status, body) == (200, {"data": {"version": "9.1.1"}})
    assert len(lenient.response_violations) == 1


def test_cloud_init_changes_of_a_running_vm_and_the_generated_data() -> None:
    with running_standin(nodes=["pve"]) as (standin, server):
        api = client(server)
        key = urllib.parse.quote(SSH_KEY, safe="")
        wait_task(
            api,
            "pve",
            api.nodes("pve").qemu.post(
                vmid=230,
                name="k3s-1",
                net0="virtio=BC:24:11:AA:BB:01,bridge=vmbr0",
                ide2="local-lvm:cloudinit",
                ciuser="ubuntu",
                sshkeys=key,
                ipconfig0="ip=10.3.0.11/24,gw=10.3.0.1",
                searchdomain="lab.example",
            ),
        )
        user = api.nodes("pve").qemu(230).cloudinit.dump.get(type="user")
        assert user == (
            "#cloud-config\nhostname: k3s-1\nmanage_etc_hosts: true\nfqdn: k3s-1.lab.example\nuser: ubuntu\n"
            f"ssh_authorized_keys:\n  - {SSH_KEY}\nchpasswd:\n  expire: False\nusers:\n  - default\n"
            "package_upgrade: true\n"
        )
        network = api.nodes("pve").qemu(230).cloudinit.dump.get(type="network")
        assert "mac_address: 'bc:24:11:aa:bb:01'" in network
        subnet = ["      - type: static", "        address: '10.3.0.11'", "        netmask: '255.255.255.0'"]
        assert "\n".join([*subnet, "        gateway: '10.3.0.1'"]) in network
        assert "search:\n      - 'lab.example'" in network
        assert api.nodes("pve").qemu(230).cloudinit.dump.get(type="meta").startswith("instance-id: ")
        wait_task(api, "pve", api.nodes("pve").qemu(230).status.start.post())
        assert {i["key"]: i for i in api.nodes("pve").qemu(230).cloudinit.get()}["ciuser"] == {
            "key": "ciuser",
            "value": "ubuntu",
        }
        api.nodes("pve").qemu(230).config.put(ciuser="admin", ipconfig0="ip=10.3.0.12/24,gw=10.3.0.1")
        assert api.nodes("pve").qemu(230).config.get()["ciuser"] == "admin"  # applied, not pending
        pending = {i["key"]: i for i in api.nodes("pve").qemu(230).cloudinit.get()}
        assert pending["ciuser"] == {"key": "ciuser", "value": "ubuntu", "pending": "admin"}
        api.nodes("pve").qemu(230).cloudinit.put()
        assert all("pending" not in i for i in api.nodes("pve").qemu(230).cloudinit.get())
        assert standin.schema_violations == []


def test_a_defect_of_the_standin_is_a_500_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_api: Any, _req: Any) -> Any:
        raise KeyError("nope")

    monkeypatch.setitem(api_module.HANDLERS, ("GET", "/nodes/{node}/qemu"), broken)
    standin = ProxmoxStandin(nodes=["pve"])
    standin.add_token(TOKEN_ID, TOKEN_SECRET)
    status, reason, body, _headers = standin.handle(
        "GET", "/nodes/pve/qemu", {}, {"Authorization": f"PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"}
    )
    assert (status, reason) == (500, "stand-in bug")
    assert body == {"data": None, "message": "stand-in bug: KeyError: 'nope'\n"}
    assert len(standin.internal_errors) == 1
    assert "KeyError" in standin.internal_errors[0]


def test_a_silent_client_does_not_block_others() -> None:
    with running_standin(nodes=["pve"]) as (_standin, server):
        silent = socket.create_connection((server.host, server.port))  # connects, never speaks TLS
        try:
            started = time.monotonic()
            assert client(server).version.get()["release"] == "9.1"
            assert time.monotonic() - started < 5
        finally:
            silent.close()
