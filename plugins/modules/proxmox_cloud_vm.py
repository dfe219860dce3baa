#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Ensure a cloud-init VM cloned from a template, in one idempotent step."""

# ruff: noqa: E402 - Ansible modules carry their documentation before the imports.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: proxmox_cloud_vm
short_description: Clone, configure, grow and start a cloud-init VM on Proxmox VE in one idempotent step
version_added: "0.1.0"
description:
  - Ensures a QEMU VM with a given VMID exists on a node as a full clone of a cloud-init template, with the
    requested name, cores, memory, boot disk size, bridge, cloud-init user, SSH keys, IPv4 settings, DNS and
    tags, and that it is running (or stopped, or absent).
  - A VMID that exists but does not carry the ownership tag is refused with an error naming it, before any
    change.
  - Compares the wanted settings with the VM's configuration as Proxmox returns it (SSH keys URL-decoded, tags
    sorted, C(ipconfig0) and C(net0) parsed, the NIC's MAC address kept) and reports a change only on real
    drift.
  - The boot disk is grown when the wanted size is larger; it is never shrunk (a smaller size gives a
    warning).
  - Every Proxmox task is polled to its end; a failed task is reported with the last lines of its log. Lock
    errors (C(can't lock file)) are retried with backoff.
  - Supports check mode and diff mode.
extends_documentation_fragment:
  - gorkheavy.lite.proxmox_api
options:
  vmid:
    description: VMID of the VM (100 to 999999999).
    type: int
    required: true
  name:
    description: VM name (a DNS name); also the guest's host name through cloud-init.
    type: str
    required: true
  node:
    description: Node the VM lives on.
    type: str
    required: true
  state:
    description:
      - V(started) creates or updates the VM and starts it; V(present) creates or updates it without starting
        it; V(stopped) also stops it; V(absent) stops and removes it (only when it carries O(ownership_tag)).
    type: str
    choices: [started, present, stopped, absent]
    default: started
  template_vmid:
    description: VMID of the template to clone when the VM does not exist. Required unless O(state=absent).
    type: int
  template_node:
    description:
      - Node holding the template. Defaults to O(node). When it differs, the clone is made with C(target) and
        the template's disk must be on shared storage.
    type: str
  storage:
    description: Storage for the full clone's disks (for example C(local-lvm)); defaults to the template's.
    type: str
  cores:
    description: CPU cores.
    type: int
    default: 4
  memory_mb:
    description: Memory in MiB.
    type: int
    default: 8192
  disk:
    description: Boot disk to grow.
    type: str
    default: scsi0
  disk_gb:
    description: Wanted size of the boot disk in GiB; grown when larger than the current size, never shrunk.
    type: int
    default: 32
  bridge:
    description: Bridge of the first network interface (C(net0)).
    type: str
    default: vmbr0
  firewall:
    description: Proxmox firewall flag of C(net0).
    type: bool
    default: false
  ci_user:
    description: User cloud-init creates.
    type: str
  ssh_public_keys:
    description: Public keys (OpenSSH format) cloud-init authorises for O(ci_user).
    type: list
    elements: str
  ipv4:
    description: V(dhcp) or an address with prefix length, for example V(192.168.1.201/24).
    type: str
  gateway:
    description: IPv4 gateway (static addresses only).
    type: str
  nameservers:
    description: DNS servers cloud-init configures.
    type: list
    elements: str
  search_domain:
    description: DNS search domain cloud-init configures.
    type: str
  ci_upgrade:
    description: Let cloud-init upgrade packages on first boot.
    type: bool
    default: false
  onboot:
    description: Start the VM when its node boots.
    type: bool
    default: true
  description:
    description: Notes of the VM shown in the Proxmox UI.
    type: str
    default: Managed by gorkheavy-lite (playbooks/provision.yml); changes made here may be overwritten.
  tags:
    description: Tags of the VM; O(ownership_tag) is always added.
    type: list
    elements: str
    default: []
  ownership_tag:
    description: Tag that marks VMs managed by this project.
    type: str
    default: gorkheavy-lite
  task_timeout:
    description: Seconds to wait for one Proxmox task (clone, resize, start, stop, destroy).
    type: int
    default: 1800
requirements:
  - proxmoxer >= 2.1
  - requests
author:
  - gorkheavy-lite contributors
"""

EXAMPLES = r"""
- name: Ensure the K3s server VM exists and runs
  gorkheavy.lite.proxmox_cloud_vm:
    api_host: pve1.lan
    api_user: gorkheavy@pve
    api_token_id: ansible
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    ca_path: files/pve-root-ca.pem
    vmid: 201
    name: k3s-server
    node: pve1
    template_vmid: 9001
    storage: local-lvm
    cores: 4
    memory_mb: 8192
    disk_gb: 32
    ci_user: k3sadmin
    ssh_public_keys:
      - ssh-ed25519 AAAAC3Nza... admin@laptop
    ipv4: 192.168.1.201/24
    gateway: 192.168.1.1
    nameservers: [192.168.1.1]
    search_domain: lan

- name: Remove the VM (only if it carries the gorkheavy-lite tag)
  gorkheavy.lite.proxmox_cloud_vm:
    api_host: pve1.lan
    api_user: gorkheavy@pve
    api_token_id: ansible
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    vmid: 201
    name: k3s-server
    node: pve1
    state: absent
"""

RETURN = r"""
vmid:
  description: VMID of the VM this task handled (never the template's).
  returned: always
  type: int
  sample: 201
node:
  description: Node of the VM.
  returned: always
  type: str
  sample: pve1
name:
  description: Name of the VM.
  returned: always
  type: str
  sample: k3s-server
created:
  description: Whether the VM was (or in check mode would be) cloned.
  returned: always
  type: bool
updated_keys:
  description: Configuration keys that were (or would be) changed.
  returned: always
  type: list
  elements: str
  sample: [cores, memory]
resized:
  description: Old and new size of the boot disk when it was grown.
  returned: when the disk was grown
  type: dict
  sample: {disk: scsi0, from: 3584M, to: 32G}
power:
  description: Power state after the task (V(running), V(stopped) or V(absent)).
  returned: always
  type: str
pending_reboot:
  description: Settings were changed on a running VM and take effect at its next boot.
  returned: always
  type: bool
"""

import ipaddress
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gorkheavy.lite.plugins.module_utils.proxmox_api import (
    API_MUTUALLY_EXCLUSIVE,
    API_REQUIRED_TOGETHER,
    ProxmoxClient,
    ProxmoxError,
    api_argument_spec,
    decode_sshkeys,
    disk_size_bytes,
    encode_sshkeys,
    format_ipconfig,
    format_net,
    join_tags,
    parse_ipconfig,
    parse_memory,
    parse_net,
    parse_property_string,
    require_ownership,
    split_list,
    split_tags,
)

DEFAULT_DESCRIPTION = (
    "Managed by gorkheavy-lite (playbooks/provision.yml); changes made here may be overwritten."
)
DNS_NAME = re.compile(
    r"^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$"
)
TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)


def validate(params):
    """Every problem with the parameters, as sentences; checked before any API call."""
    problems = []
    if not 100 <= params["vmid"] <= 999999999:
        problems.append(f"vmid {params['vmid']} is out of range: Proxmox VMIDs are 100 to 999999999")
    if not DNS_NAME.match(params["name"] or ""):
        problems.append(f"name {params['name']!r} is not a valid DNS name (letters, digits, hyphens)")
    if params["state"] != "absent":
        if params.get("template_vmid") is None:
            problems.append("template_vmid is required to create the VM")
        if params["cores"] < 1:
            problems.append(f"cores must be at least 1, not {params['cores']}")
        if params["memory_mb"] < 16:
            problems.append(f"memory_mb must be at least 16, not {params['memory_mb']}")
        if params["disk_gb"] < 1:
            problems.append(f"disk_gb must be at least 1, not {params['disk_gb']}")
        ipv4 = params.get("ipv4")
        if ipv4 and ipv4 != "dhcp":
            try:
                iface = ipaddress.IPv4Interface(ipv4)
                if "/" not in ipv4:
                    problems.append(f"ipv4 {ipv4!r} needs a prefix length, for example {iface.ip}/24")
            except ValueError:
                problems.append(
                    f"ipv4 {ipv4!r} is neither 'dhcp' nor an IPv4 address with prefix (10.0.0.5/24)"
                )
        for label, value in [("gateway", params.get("gateway"))] + [
            ("nameserver", ns) for ns in params.get("nameservers") or []
        ]:
            if value:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    problems.append(f"{label} {value!r} is not an IP address")
        for tag in params["tags"] + [params["ownership_tag"]]:
            if not TAG.match(tag):
                problems.append(f"tag {tag!r} is not a valid Proxmox tag (letters, digits, _ - + .)")
    return problems


def desired_config(params):
    """Wanted values in the normalised form used for comparison."""
    want = {
        "name": params["name"],
        "cores": params["cores"],
        "memory": params["memory_mb"],
        "tags": split_tags(params["tags"] + [params["ownership_tag"]]),
        "onboot": 1 if params["onboot"] else 0,
        "ciupgrade": 1 if params["ci_upgrade"] else 0,
        "agent": 1,
        "net0": {"bridge": params["bridge"], "firewall": "1" if params["firewall"] else "0"},
        "description": (params["description"] or "").strip(),
    }
    if params.get("ci_user"):
        want["ciuser"] = params["ci_user"]
    if params.get("ssh_public_keys") is not None:
        want["sshkeys"] = [k.strip() for k in params["ssh_public_keys"] if k and k.strip()]
    if params.get("ipv4"):
        want["ipconfig0"] = parse_ipconfig(format_ipconfig(params["ipv4"], params.get("gateway")))
    if params.get("nameservers") is not None:
        want["nameserver"] = list(params["nameservers"])
    if params.get("search_domain") is not None:
        want["searchdomain"] = params["search_domain"]
    return want


def current_view(config):
    """The VM's configuration in the same normalised form as ``desired_config``."""
    net = parse_net(config.get("net0"))
    agent = parse_property_string(config.get("agent"), default_key="enabled").get("enabled", "0")
    view = {
        "name": config.get("name"),
        "cores": int(config["cores"]) if config.get("cores") not in (None, "") else 1,
        "memory": parse_memory(config.get("memory")) or 512,
        "tags": split_tags(config.get("tags")),
        "onboot": int(config.get("onboot", 0) or 0),
        "ciupgrade": int(config["ciupgrade"]) if config.get("ciupgrade") not in (None, "") else 1,
        "agent": 1 if str(agent) in ("1", "true", "on", "yes") else 0,
        "net0": {"bridge": net.get("bridge"), "firewall": net.get("firewall", "0")},
        "ciuser": config.get("ciuser"),
        "sshkeys": decode_sshkeys(config.get("sshkeys")),
        "ipconfig0": parse_ipconfig(config.get("ipconfig0")),
        "nameserver": split_list(config.get("nameserver")),
        "searchdomain": config.get("searchdomain"),
        # Proxmox stores notes as comment lines; compare without surrounding whitespace.
        "description": (config.get("description") or "").strip(),
    }
    return view


def config_update(want, have, raw_config):
    """Keys that differ and the API payload that fixes them."""
    payload = {}
    changed = []
    delete = []
    for key, value in want.items():
        if have.get(key) == value:
            continue
        changed.append(key)
        if value in ([], "", {}) and key in ("sshkeys", "nameserver", "searchdomain", "description", "tags"):
            delete.append(key)  # Proxmox refuses empty values; unset settings are deleted
        elif key == "tags":
            payload["tags"] = join_tags(value)
        elif key == "sshkeys":
            payload["sshkeys"] = encode_sshkeys(value)
        elif key == "ipconfig0":
            payload["ipconfig0"] = ",".join(f"{k}={v}" for k, v in value.items())
        elif key == "nameserver":
            payload["nameserver"] = " ".join(value)
        elif key == "memory":
            payload["memory"] = str(value)
        elif key == "agent":
            payload["agent"] = "enabled=1"
        elif key == "net0":
            net = parse_net(raw_config.get("net0"))
            net.setdefault("model", "virtio")
            net["bridge"] = value["bridge"]
            net["firewall"] = value["firewall"]
            payload["net0"] = format_net(net)
        else:
            payload[key] = value
    if delete:
        payload["delete"] = ",".join(delete)
    return sorted(changed), payload


def printable(view):
    """Diff-friendly copy (lists and dicts as readable strings)."""
    out = {}
    for key, value in sorted(view.items()):
        if key == "sshkeys":
            out[key] = "\n".join(value)
        elif key in {"ipconfig0", "net0"}:
            out[key] = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            out[key] = " ".join(str(v) for v in value)
        else:
            out[key] = value
    return out


class CloudVm:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.result = {
            "changed": False,
            "vmid": self.params["vmid"],
            "node": self.params["node"],
            "name": self.params["name"],
            "created": False,
            "updated_keys": [],
            "pending_reboot": False,
            "power": "absent",
        }
        self.before = {}
        self.after = {}

    # ----------------------------------------------------------- helpers
    def locate(self):
        """The VM's cluster listing entry and its configuration, or (None, {}) when the VMID is free.

        The listing only tells where the VMID lives and its tags; whether it is a template is read from
        its configuration, since the listing's template flag lags behind.
        """
        guest = self.client.find_guest(self.params["vmid"])
        require_ownership(guest, self.params["ownership_tag"], client=self.client)
        if guest is None:
            return None, {}
        if guest.get("type") != "qemu":
            raise ProxmoxError(f"VMID {self.params['vmid']} is a container, not a VM")
        if guest.get("node") != self.params["node"]:
            raise ProxmoxError(
                f"VM {self.params['vmid']} is on node {guest.get('node')}, but "
                f"node {self.params['node']} was asked for; migrate it in Proxmox or change the node "
                "in the inventory (gorkheavy_vm_node)"
            )
        config = self.client.vm_config(self.params["node"], self.params["vmid"])
        if self.client.is_template(self.params["node"], self.params["vmid"], config):
            raise ProxmoxError(
                f"VMID {self.params['vmid']} is a template ({config.get('name')}); give the VM another VMID"
            )
        return guest, config

    def vm_path(self, suffix=""):
        return f"nodes/{self.params['node']}/qemu/{self.params['vmid']}{suffix}"

    # ----------------------------------------------------------- states
    def absent(self):
        guest, config = self.locate()
        if guest is None:
            return
        running = self.client.is_running(self.params["node"], self.params["vmid"])
        self.before = {
            "vmid": guest["vmid"],
            "name": config.get("name"),
            "status": "running" if running else "stopped",
        }
        self.after = {}
        self.result["changed"] = True
        self.result["power"] = "absent"
        if self.module.check_mode:
            return
        timeout = self.params["task_timeout"]
        if running:
            self.client.run_task(
                "POST", self.vm_path("/status/stop"), f"stopping VM {self.params['vmid']}", timeout=timeout
            )
        self.client.run_task(
            "DELETE",
            self.vm_path(),
            f"removing VM {self.params['vmid']}",
            timeout=timeout,
            purge=True,
            **{"destroy-unreferenced-disks": True},
        )

    def clone(self):
        params = self.params
        template_node = params.get("template_node") or params["node"]
        template = self.client.find_guest(params["template_vmid"])
        if template is not None and template.get("node") != template_node:
            raise ProxmoxError(
                f"template {params['template_vmid']} is on node {template.get('node')}, not {template_node}"
            )
        is_template = (
            template is not None
            and template.get("type") == "qemu"
            and self.client.is_template(template_node, params["template_vmid"])
        )
        if not is_template:
            if self.module.check_mode:
                # The template is created earlier in the same run; in check mode it may not exist yet.
                return {}
            what = "does not exist" if template is None else "is not a template"
            raise ProxmoxError(
                f"cannot create VM {params['vmid']}: template VMID {params['template_vmid']} {what}; "
                "run the proxmox_template role first or fix the template VMID"
            )
        if self.module.check_mode:
            return {}
        data = {"newid": params["vmid"], "name": params["name"], "full": True}
        if params.get("storage"):
            data["storage"] = params["storage"]
        if template_node != params["node"]:
            data["target"] = params["node"]
        self.client.run_task(
            "POST",
            f"nodes/{template_node}/qemu/{params['template_vmid']}/clone",
            f"cloning template {params['template_vmid']} to VM {params['vmid']}",
            timeout=params["task_timeout"],
            **data,
        )
        # In a cluster the new configuration can take a moment to show up on the target node.
        for attempt in range(10):
            try:
                return self.client.vm_config(params["node"], params["vmid"])
            except ProxmoxError as exc:
                if attempt == 9 or "does not exist" not in str(exc):
                    raise
                self.client.sleep(0.5)
        return {}  # pragma: no cover

    def present(self):
        params = self.params
        guest, raw = self.locate()
        running = guest is not None and self.client.is_running(params["node"], params["vmid"])
        if guest is None:
            self.result["created"] = True
            self.result["changed"] = True
            raw = self.clone()
            self.before = {}
        else:
            self.before = printable(current_view(raw))
        want = desired_config(params)
        have = current_view(raw) if raw else {}
        changed_keys, payload = config_update(want, have, raw)
        self.after = printable({**have, **want}) if have else printable(want)
        self.result["updated_keys"] = changed_keys
        if changed_keys:
            self.result["changed"] = True
            if not self.module.check_mode:
                self.client.run_task(
                    "POST",
                    self.vm_path("/config"),
                    f"configuring VM {params['vmid']}",
                    timeout=params["task_timeout"],
                    **payload,
                )
            if running:
                self.result["pending_reboot"] = True
                self.module.warn(
                    f"VM {params['vmid']} ({params['name']}) is running; the changed settings "
                    f"({', '.join(changed_keys)}) take effect at its next boot"
                )
        self.grow_disk(raw)
        self.power(running, exists=guest is not None)

    def grow_disk(self, raw):
        params = self.params
        wanted = params["disk_gb"] * 1024**3
        line = raw.get(params["disk"]) if raw else None
        if raw and not line:
            raise ProxmoxError(
                f"VM {params['vmid']} has no disk {params['disk']}; "
                "the template must have its boot disk there"
            )
        current = disk_size_bytes(line) if line else None
        self.before["disk_size"] = parse_property_string(line, "file").get("size") if line else None
        self.after["disk_size"] = f"{params['disk_gb']}G"
        if current is not None and current >= wanted:
            self.after["disk_size"] = self.before["disk_size"]
            if current > wanted:
                self.module.warn(
                    f"VM {params['vmid']}: disk {params['disk']} is {self.before['disk_size']}, "
                    f"larger than the wanted {params['disk_gb']}G; disks are never shrunk, so it is kept"
                )
            return
        self.result["changed"] = True
        self.result["resized"] = {
            "disk": params["disk"],
            "from": self.before["disk_size"],
            "to": f"{params['disk_gb']}G",
        }
        if self.module.check_mode:
            return
        # the resize task takes the VM's lock itself: a lock timeout fails the task and is retried
        self.client.run_task(
            "PUT",
            self.vm_path("/resize"),
            f"growing disk {params['disk']} of VM {params['vmid']}",
            timeout=params["task_timeout"],
            disk=params["disk"],
            size=f"{params['disk_gb']}G",
        )

    def power(self, running, exists):
        params = self.params
        state = params["state"]
        self.before["status"] = "running" if running else ("stopped" if exists else "absent")
        if state == "started":
            self.after["status"] = "running"
            self.result["power"] = "running"
            if running:
                return
            self.result["changed"] = True
            if not self.module.check_mode:
                self.client.run_task(
                    "POST",
                    self.vm_path("/status/start"),
                    f"starting VM {params['vmid']}",
                    timeout=params["task_timeout"],
                )
        elif state == "stopped":
            self.after["status"] = "stopped"
            self.result["power"] = "stopped"
            if not running:
                return
            self.result["changed"] = True
            if not self.module.check_mode:
                self.client.run_task(
                    "POST",
                    self.vm_path("/status/stop"),
                    f"stopping VM {params['vmid']}",
                    timeout=params["task_timeout"],
                )
        else:
            self.after["status"] = self.before["status"] if self.before["status"] != "absent" else "stopped"
            self.result["power"] = self.after["status"]


def build_argument_spec():
    """The module's options (the same as in DOCUMENTATION)."""
    argument_spec = api_argument_spec()
    argument_spec.update(
        vmid={"type": "int", "required": True},
        name={"type": "str", "required": True},
        node={"type": "str", "required": True},
        state={"type": "str", "default": "started", "choices": ["started", "present", "stopped", "absent"]},
        template_vmid={"type": "int"},
        template_node={"type": "str"},
        storage={"type": "str"},
        cores={"type": "int", "default": 4},
        memory_mb={"type": "int", "default": 8192},
        disk={"type": "str", "default": "scsi0"},
        disk_gb={"type": "int", "default": 32},
        bridge={"type": "str", "default": "vmbr0"},
        firewall={"type": "bool", "default": False},
        ci_user={"type": "str"},
        ssh_public_keys={"type": "list", "elements": "str", "no_log": False},
        ipv4={"type": "str"},
        gateway={"type": "str"},
        nameservers={"type": "list", "elements": "str"},
        search_domain={"type": "str"},
        ci_upgrade={"type": "bool", "default": False},
        onboot={"type": "bool", "default": True},
        tags={"type": "list", "elements": "str", "default": []},
        ownership_tag={"type": "str", "default": "gorkheavy-lite"},
        task_timeout={"type": "int", "default": 1800},
        description={"type": "str", "default": DEFAULT_DESCRIPTION},
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
    problems = validate(module.params)
    if problems:
        module.fail_json(msg=f"VM {module.params['name']}: " + "; ".join(problems), problems=problems)
    try:
        client = ProxmoxClient(module)
        vm = CloudVm(module, client)
        if module.params["state"] == "absent":
            vm.absent()
        else:
            vm.present()
    except ProxmoxError as exc:
        module.fail_json(msg=str(exc), vmid=module.params["vmid"])
    result = vm.result
    if module._diff:
        result["diff"] = {
            "before": vm.before,
            "after": vm.after,
            "before_header": f"VM {module.params['vmid']}",
            "after_header": f"VM {module.params['vmid']}",
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
