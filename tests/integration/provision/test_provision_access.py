"""How the provision stage authenticates and verifies TLS, and what it says when that fails."""

from __future__ import annotations

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
    assert "auditor@pve!ansible lacks the privileges VM.Allocate, VM.Clone" in run.output
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
