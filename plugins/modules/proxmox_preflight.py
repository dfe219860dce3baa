#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Read-only checks of a Proxmox VE cluster before anything is changed."""

# ruff: noqa: E402 - Ansible modules carry their documentation before the imports.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: proxmox_preflight
short_description: Check a Proxmox VE cluster before provisioning, changing nothing
version_added: "0.1.0"
description:
  - Logs in with the token (or password) and checks, reading only, everything the provision stage needs, then
    fails with one message that lists every problem and how to fix it.
  - The API answers and the credentials work; the Proxmox VE release is at least O(min_version).
  - Every node in O(nodes) is part of the cluster and online.
  - Every storage in O(storages) exists on its node, is enabled and active, and allows the listed content
    types.
  - Every bridge in O(bridges) exists on its node (skipped with a warning when the token may not list
    networks).
  - Every VMID in O(guests) is either free or carries O(ownership_tag) (and then lives on the expected node
    and is of the expected kind); VMIDs are not used twice.
  - The token holds each privilege in O(privileges) on its own ACL path (from C(/access/permissions)).
  - Never changes anything, so it always reports C(changed=false); runs in check mode too.
extends_documentation_fragment:
  - gorkheavy.lite.proxmox_api
options:
  min_version:
    description: Oldest Proxmox VE release accepted.
    type: str
    default: "8.4"
  nodes:
    description: Nodes that must exist and be online.
    type: list
    elements: str
    default: []
  storages:
    description: Storages that must exist on a node with the given content types.
    type: list
    elements: dict
    default: []
    suboptions:
      node:
        description: Node name.
        type: str
        required: true
      storage:
        description: Storage id.
        type: str
        required: true
      content:
        description: Content types the storage must allow (for example V(images), V(import)).
        type: list
        elements: str
        default: []
      shared:
        description: The storage must be shared between the nodes (a template on it is cloned to other nodes).
        type: bool
        default: false
      reason:
        description: Why the storage is needed, added to the message when a check fails.
        type: str
  bridges:
    description: Bridges that must exist on a node.
    type: list
    elements: dict
    default: []
    suboptions:
      node:
        description: Node name.
        type: str
        required: true
      bridge:
        description: Bridge name.
        type: str
        required: true
  guests:
    description: VMIDs the run will create or manage.
    type: list
    elements: dict
    default: []
    suboptions:
      vmid:
        description: The VMID.
        type: int
        required: true
      node:
        description: Node it must live on if it already exists.
        type: str
      name:
        description: Name used in messages.
        type: str
      template:
        description: Whether the VMID is meant to be a template (V(true)) or a VM (V(false)).
        type: bool
        default: false
  ownership_tag:
    description: Tag that marks guests managed by this project.
    type: str
    default: gorkheavy-lite
  privileges:
    description:
      - Privileges the token must hold, each on the ACL path Proxmox checks it on (C(/vms/201),
        C(/storage/local-lvm), C(/sdn/zones/localnetwork/vmbr0), C(/nodes/pve1)); empty skips the check.
      - Read per path from C(/access/permissions?path=...), so a privilege held on another path never counts.
        Each one missing is named with its path and the C(pveum aclmod) command that grants it.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: ACL path.
        type: str
        required: true
      privileges:
        description: Privileges needed on O(privileges[].path).
        type: list
        elements: str
        required: true
      any:
        description: One of O(privileges[].privileges) is enough (for example C(VM.GuestAgent.Audit) or, on
          Proxmox VE 8, C(VM.Monitor)).
        type: bool
        default: false
      reason:
        description: What the privileges are needed for, shown when one is missing.
        type: str
requirements:
  - proxmoxer >= 2.1
  - requests
author:
  - gorkheavy-lite contributors
"""

EXAMPLES = r"""
- name: Check the cluster before provisioning
  gorkheavy.lite.proxmox_preflight:
    api_host: pve1.lan
    api_user: gorkheavy@pve
    api_token_id: ansible
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    nodes: [pve1, pve2, pve3]
    storages:
      - {node: pve1, storage: local, content: [import]}
      - {node: pve1, storage: local-lvm, content: [images]}
    bridges:
      - {node: pve1, bridge: vmbr0}
    guests:
      - {vmid: 201, node: pve1, name: k3s-server}
"""

RETURN = r"""
version:
  description: Proxmox VE release the API reports.
  returned: always
  type: str
  sample: "9.1"
managed:
  description: VMIDs from O(guests) that already exist and carry the ownership tag.
  returned: always
  type: list
  elements: int
free:
  description: VMIDs from O(guests) that do not exist yet.
  returned: always
  type: list
  elements: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gorkheavy.lite.plugins.module_utils.proxmox_api import (
    API_MUTUALLY_EXCLUSIVE,
    API_REQUIRED_TOGETHER,
    ProxmoxClient,
    ProxmoxError,
    api_argument_spec,
    split_list,
    split_tags,
    version_tuple,
)


def check_version(client, params, problems):
    version = client.version()
    release = str(version.get("release") or version.get("version") or "")
    if version_tuple(release) < version_tuple(params["min_version"]):
        problems.append(
            f"Proxmox VE {release} is older than {params['min_version']}, the oldest release this collection "
            "supports (it needs 'import' storage content and import-from disks); upgrade the cluster"
        )
    return release


def check_nodes(client, params, problems):
    nodes = {n.get("node"): n for n in client.get("nodes") or []}
    wanted = sorted(
        set(params["nodes"])
        | {s["node"] for s in params["storages"]}
        | {b["node"] for b in params["bridges"]}
    )
    for node in wanted:
        if node not in nodes:
            problems.append(
                f"node {node!r} is not part of the cluster "
                f"(its nodes are: {', '.join(sorted(nodes)) or 'none'}); "
                "fix gorkheavy_vm_node / the template node list in the inventory"
            )
        elif nodes[node].get("status") not in (None, "online"):
            problems.append(f"node {node!r} is {nodes[node].get('status')}; bring it online first")
    return {n for n in wanted if n in nodes and nodes[n].get("status") in (None, "online")}


def check_storages(client, params, problems, usable_nodes):
    cache = {}
    for item in params["storages"]:
        node, storage = item["node"], item["storage"]
        if node not in usable_nodes:
            continue
        if node not in cache:
            cache[node] = {s.get("storage"): s for s in client.get(f"nodes/{node}/storage") or []}
        found = cache[node].get(storage)
        if found is None:
            problems.append(
                f"storage {storage!r} does not exist on node {node} (available: "
                f"{', '.join(sorted(cache[node])) or 'none'}); fix the storage variable or add the storage"
            )
            continue
        if item["shared"] and not int(found.get("shared", 0)):
            problems.append(
                f"storage {storage!r} on node {node} is not shared between the nodes"
                + (f", but {item['reason']}" if item.get("reason") else "")
                + "; add a template on each node to the template list or put the disks on shared storage"
            )
        if not int(found.get("enabled", 1)) or not int(found.get("active", 1)):
            problems.append(f"storage {storage!r} on node {node} is disabled or inactive")
        allowed = set(split_list(found.get("content")))
        missing = [c for c in item["content"] if c not in allowed]
        if missing:
            problems.append(
                f"storage {storage!r} on node {node} does not allow content {', '.join(missing)} (it allows "
                f"{', '.join(sorted(allowed)) or 'nothing'}); "
                f"add it in Datacenter > Storage > {storage} > Content "
                f"or: pvesm set {storage} --content {','.join(sorted(allowed | set(missing)))}"
            )


def check_bridges(client, module, params, problems, usable_nodes):
    cache = {}
    for item in params["bridges"]:
        node, bridge = item["node"], item["bridge"]
        if node not in usable_nodes:
            continue
        if node not in cache:
            try:
                cache[node] = {i.get("iface") for i in client.get(f"nodes/{node}/network") or []}
            except ProxmoxError as exc:
                module.warn(
                    f"could not list the networks of node {node}, bridge {bridge} is not checked: {exc}"
                )
                cache[node] = None
        if cache[node] is not None and bridge not in cache[node]:
            problems.append(
                f"bridge {bridge!r} does not exist on node {node} (interfaces: "
                f"{', '.join(sorted(i for i in cache[node] if i)) or 'none'}); fix the bridge variable"
            )


def check_guests(client, params, problems):
    guests = client.cluster_guests()
    seen = {}
    managed, free = [], []
    for item in params["guests"]:
        vmid = item["vmid"]
        label = item.get("name") or str(vmid)
        if not 100 <= vmid <= 999999999:
            problems.append(f"VMID {vmid} ({label}) is out of range: Proxmox VMIDs are 100 to 999999999")
            continue
        if vmid in seen:
            problems.append(f"VMID {vmid} is used twice ({seen[vmid]} and {label}); give each guest its own")
            continue
        seen[vmid] = label
        guest = guests.get(vmid)
        if guest is None:
            free.append(vmid)
            continue
        if params["ownership_tag"] not in split_tags(guest.get("tags")):
            name = client.guest_name(guest)
            problems.append(
                f"VMID {vmid} (wanted for {label}) already exists as '{name}' on node {guest.get('node')} "
                f"and is not tagged '{params['ownership_tag']}'; refusing to touch it: "
                "pick a free VMID in the inventory"
            )
            continue
        if item.get("node") and guest.get("node") != item["node"]:
            problems.append(
                f"VMID {vmid} ({label}) exists on node {guest.get('node')}, not on {item['node']}; "
                "migrate it or "
                "fix the node in the inventory"
            )
        if guest.get("type") != "qemu":
            problems.append(
                f"VMID {vmid} ({label}) is a container, not a "
                f"{'template' if item['template'] else 'VM'}; pick another VMID in the inventory"
            )
            continue
        # the listing's template flag lags behind (status daemon); the configuration does not
        is_template = client.is_template(guest.get("node"), vmid)
        if is_template != item["template"]:
            if is_template:
                problems.append(f"VMID {vmid} ({label}) is a template; give the VM another VMID")
            else:
                problems.append(
                    f"VMID {vmid} ({label}) is a VM, not a template. If it is a template build that was "
                    f"interrupted, remove it (qm destroy {vmid} on {guest.get('node')}) and run again; "
                    "otherwise give the template another VMID"
                )
        managed.append(vmid)
    return managed, free


# The built-in role that carries a privilege (PVE::AccessControl's privilege groups); Sys.AccessNetwork is
# in none but Administrator, so the grant suggests a role of its own, as the README's quick start does.
GRANT_ROLES = {
    "VM": "PVEVMAdmin",
    "Datastore": "PVEDatastoreAdmin",
    "SDN": "PVESDNUser",
    "Sys.Audit": "PVEAuditor",
}
OWN_ROLES = {"Sys.AccessNetwork": "GorkheavyDownload"}


def grant_command(identity, path, priv):
    """The pveum command that gives ``identity`` (user or token) ``priv`` on ``path``."""
    user, _, token = identity.partition("!")
    role = OWN_ROLES.get(priv) or GRANT_ROLES.get(priv) or GRANT_ROLES.get(priv.split(".")[0], "PVEAdmin")
    command = f"pveum aclmod {path} -user {user} -role {role}"
    if priv in OWN_ROLES:
        command = f"pveum role add {role} -privs {priv}; {command}"
    if token:
        command += f" (a token with privilege separation needs it as well: -token '{identity}')"
    return command


def check_privileges(client, module, params, problems):
    """Each privilege on the path Proxmox checks it on, read with /access/permissions?path=...

    Privileges are never merged across paths: SDN.Use on another bridge, or VM.Allocate on another VMID,
    does not count.
    """
    if not params["privileges"]:
        return
    held_at = {}
    for check in params["privileges"]:
        path = check["path"]
        if path in held_at:
            continue
        try:
            held_at[path] = client.permissions_at(path)
        except ProxmoxError as exc:
            module.warn(f"could not read the token's permissions, privileges are not checked: {exc}")
            return
    for check in params["privileges"]:
        path, wanted = check["path"], check["privileges"]
        held = held_at[path]
        why = f" ({check['reason']})" if check.get("reason") else ""
        if check["any"]:
            if not held.intersection(wanted):
                problems.append(
                    f"{client.identity} lacks one of {', '.join(wanted)} on {path}{why}; add it with: "
                    + grant_command(client.identity, path, wanted[0])
                )
            continue
        for priv in wanted:
            if priv not in held:
                problems.append(
                    f"{client.identity} lacks {priv} on {path}{why}; add it with: "
                    + grant_command(client.identity, path, priv)
                )


def build_argument_spec():
    """The module's options (the same as in DOCUMENTATION)."""
    argument_spec = api_argument_spec()
    argument_spec.update(
        min_version={"type": "str", "default": "8.4"},
        nodes={"type": "list", "elements": "str", "default": []},
        storages={
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "node": {"type": "str", "required": True},
                "storage": {"type": "str", "required": True},
                "content": {"type": "list", "elements": "str", "default": []},
                "shared": {"type": "bool", "default": False},
                "reason": {"type": "str"},
            },
        },
        bridges={
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "node": {"type": "str", "required": True},
                "bridge": {"type": "str", "required": True},
            },
        },
        guests={
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "vmid": {"type": "int", "required": True},
                "node": {"type": "str"},
                "name": {"type": "str"},
                "template": {"type": "bool", "default": False},
            },
        },
        ownership_tag={"type": "str", "default": "gorkheavy-lite"},
        privileges={
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "path": {"type": "str", "required": True},
                "privileges": {"type": "list", "elements": "str", "required": True},
                "any": {"type": "bool", "default": False},
                "reason": {"type": "str"},
            },
        },
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
    problems = []
    try:
        client = ProxmoxClient(module)
        release = check_version(client, params, problems)
        usable = check_nodes(client, params, problems)
        check_storages(client, params, problems, usable)
        check_bridges(client, module, params, problems, usable)
        managed, free = check_guests(client, params, problems)
        check_privileges(client, module, params, problems)
    except ProxmoxError as exc:
        module.fail_json(msg=str(exc))
    if problems:
        module.fail_json(
            msg="Proxmox preflight found problems, nothing was changed:\n- " + "\n- ".join(problems),
            problems=problems,
        )
    module.exit_json(changed=False, version=release, managed=managed, free=free)


if __name__ == "__main__":
    main()
