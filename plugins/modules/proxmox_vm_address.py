#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Wait until the QEMU guest agent of a VM reports a usable IPv4 address."""

# ruff: noqa: E402 - Ansible modules carry their documentation before the imports.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: proxmox_vm_address
short_description: Wait for a Proxmox VE VM's guest agent to report a usable IPv4 address
version_added: "0.1.0"
description:
  - Polls C(agent/network-get-interfaces) of a VM until an interface other than loopback reports an IPv4
    address (or, with O(expected), that exact address), tolerating the errors Proxmox gives while the VM boots
    (C(QEMU guest agent is not running)) and interfaces that have no address yet.
  - The guest must run C(qemu-guest-agent) (Ubuntu and Debian cloud images do not ship it; install it in the
    image or wait on SSH instead).
  - Reads only; never reports a change.
extends_documentation_fragment:
  - gorkheavy.lite.proxmox_api
options:
  node:
    description: Node of the VM.
    type: str
    required: true
  vmid:
    description: VMID of the VM.
    type: int
    required: true
  expected:
    description: Wait for this address in particular (a static address set through cloud-init).
    type: str
  timeout:
    description: Seconds to wait in total.
    type: int
    default: 600
  interval:
    description: Longest pause in seconds between two polls (the first polls come faster).
    type: int
    default: 2
requirements:
  - proxmoxer >= 2.1
  - requests
author:
  - gorkheavy-lite contributors
"""

EXAMPLES = r"""
- name: Wait for the address of VM 201
  gorkheavy.lite.proxmox_vm_address:
    api_host: pve1.lan
    api_user: gorkheavy@pve
    api_token_id: ansible
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    node: pve1
    vmid: 201
  register: vm_address
"""

RETURN = r"""
address:
  description: The IPv4 address found.
  returned: success
  type: str
  sample: 192.168.1.201
interface:
  description: Name of the interface that carries it.
  returned: success
  type: str
  sample: eth0
waited:
  description: Seconds spent waiting.
  returned: success
  type: float
"""

import ipaddress
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gorkheavy.lite.plugins.module_utils.proxmox_api import (
    API_MUTUALLY_EXCLUSIVE,
    API_REQUIRED_TOGETHER,
    ProxmoxClient,
    ProxmoxError,
    ResourceException,
    api_argument_spec,
)


def usable_addresses(payload):
    """(interface, address) pairs of global IPv4 addresses in an agent answer."""
    result = payload.get("result", payload) if isinstance(payload, dict) else payload
    found = []
    for iface in result or []:
        name = iface.get("name", "")
        if name == "lo":
            continue
        for addr in iface.get("ip-addresses") or []:
            if addr.get("ip-address-type") != "ipv4":
                continue
            try:
                ip = ipaddress.IPv4Address(addr.get("ip-address", ""))
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local:
                continue
            found.append((name, str(ip)))
    return found


def build_argument_spec():
    """The module's options (the same as in DOCUMENTATION)."""
    argument_spec = api_argument_spec()
    argument_spec.update(
        node={"type": "str", "required": True},
        vmid={"type": "int", "required": True},
        expected={"type": "str"},
        timeout={"type": "int", "default": 600},
        interval={"type": "int", "default": 2},
    )
    return argument_spec


def main():
    argument_spec = build_argument_spec()
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=API_MUTUALLY_EXCLUSIVE,
        required_together=API_REQUIRED_TOGETHER,
    )
    params = module.params
    path = f"nodes/{params['node']}/qemu/{params['vmid']}/agent/network-get-interfaces"
    start = time.monotonic()
    last = "no answer yet"
    # Poll quickly at first (the agent often answers within a second of the first try), then every interval.
    pause = min(0.25, params["interval"])
    try:
        client = ProxmoxClient(module)
        while True:
            try:
                found = usable_addresses(client.raw_get(path))
                if params.get("expected"):
                    matches = [pair for pair in found if pair[1] == params["expected"]]
                    last = f"the agent reports {[a for _, a in found] or 'no IPv4 address'}"
                else:
                    matches = found
                    last = "the agent reports no IPv4 address yet"
                if matches:
                    name, address = matches[0]
                    module.exit_json(
                        changed=False,
                        address=address,
                        interface=name,
                        waited=round(time.monotonic() - start, 1),
                    )
            except ResourceException as exc:
                if getattr(exc, "status_code", 0) in (401, 403):
                    raise ProxmoxError(client._explain(exc, "read the guest agent")) from exc
                last = str(exc)
            if time.monotonic() - start > params["timeout"]:
                module.fail_json(
                    msg=f"VM {params['vmid']} on {params['node']} reported no usable address within "
                    f"{params['timeout']} s (last answer: {last}). "
                    "Is qemu-guest-agent installed in the image and "
                    "did the VM boot? Look at its serial console: qm terminal " + str(params["vmid"]),
                )
            time.sleep(pause)
            pause = min(pause * 2, params["interval"])
    except ProxmoxError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
