#!/usr/bin/python
# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Ensure a cloud-init VM template built from a cloud image that Proxmox downloads itself."""

# ruff: noqa: E402 - Ansible modules carry their documentation before the imports.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: proxmox_cloud_template
short_description: Build a cloud-init VM template on Proxmox VE from a cloud image downloaded by Proxmox
version_added: "0.1.0"
description:
  - Makes Proxmox download a cloud image (C(download-url)) into a storage with the C(import) content type,
    verified by checksum, unless the file is already there.
  - Creates a VM that imports the image as its boot disk (C(import-from)), with a cloud-init drive on C(ide2),
    a serial console (C(serial0) socket, C(vga) serial0), the QEMU guest agent enabled, C(virtio-scsi-single),
    the ownership tag, then converts it to a template.
  - An existing VMID without the ownership tag is refused with an error naming it. An existing template of
    ours is left alone; when its description names another image a warning says how to rebuild it.
  - With O(state=absent) removes the template (only when it carries the ownership tag). The image file stays.
  - Supports check mode and diff mode.
extends_documentation_fragment:
  - gorkheavy.lite.proxmox_api
options:
  node:
    description: Node the template is created on.
    type: str
    required: true
  vmid:
    description: VMID of the template.
    type: int
    required: true
  name:
    description: Name of the template.
    type: str
    default: gorkheavy-cloud-template
  state:
    description: V(present) builds the template, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  image_url:
    description: HTTP(S) URL of the cloud image (qcow2 content; Ubuntu's C(.img) files are qcow2).
    type: str
  image_checksum:
    description: Checksum of the image. Empty skips verification (with a warning).
    type: str
    default: ""
  image_checksum_algorithm:
    description: Algorithm of O(image_checksum).
    type: str
    choices: [md5, sha1, sha224, sha256, sha384, sha512]
    default: sha256
  image_filename:
    description:
      - File name in the image storage. Must end in C(.qcow2) (Proxmox only imports known extensions).
      - Defaults to the URL's file name with C(.img) replaced by C(.qcow2) and, when O(image_checksum) is set,
        its first 12 digits added, so that a new image behind the same URL is downloaded rather than reused.
      - Proxmox stores the file under a normalised name (a directory part dropped, every character other than
        C(A-Za-z0-9_.-) turned into C(_)); the module sends, looks for and imports exactly that name.
    type: str
  image_storage:
    description: Storage (with content type C(import)) the image is downloaded to.
    type: str
    default: local
  storage:
    description: Storage (with content type C(images)) for the template's disk and cloud-init drive.
    type: str
    default: local-lvm
  bridge:
    description: Bridge of the template's network interface.
    type: str
    default: vmbr0
  tags:
    description: Tags of the template; O(ownership_tag) is always added.
    type: list
    elements: str
    default: []
  ownership_tag:
    description: Tag that marks guests managed by this project.
    type: str
    default: gorkheavy-lite
  task_timeout:
    description: Seconds to wait for one Proxmox task (the download may take a while).
    type: int
    default: 1800
requirements:
  - proxmoxer >= 2.1
  - requests
author:
  - gorkheavy-lite contributors
"""

EXAMPLES = r"""
- name: Ensure the Ubuntu 24.04 template on pve1
  gorkheavy.lite.proxmox_cloud_template:
    api_host: pve1.lan
    api_user: gorkheavy@pve
    api_token_id: ansible
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    ca_path: files/pve-root-ca.pem
    node: pve1
    vmid: 9001
    image_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    image_checksum: "<sha256 from SHA256SUMS next to the image>"
"""

RETURN = r"""
vmid:
  description: VMID of the template.
  returned: always
  type: int
image_volid:
  description: Volume id of the downloaded image.
  returned: when O(state=present)
  type: str
  sample: local:import/noble-server-cloudimg-amd64.qcow2
downloaded:
  description: Whether the image was (or in check mode would be) downloaded.
  returned: always
  type: bool
created:
  description: Whether the template was (or in check mode would be) created.
  returned: always
  type: bool
"""

import posixpath
import re
from urllib.parse import unquote, urlparse

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gorkheavy.lite.plugins.module_utils.proxmox_api import (
    API_MUTUALLY_EXCLUSIVE,
    API_REQUIRED_TOGETHER,
    ProxmoxClient,
    ProxmoxError,
    api_argument_spec,
    join_tags,
    require_ownership,
)

DESCRIPTION_PREFIX = "gorkheavy-lite cloud template; image: "


def stored_name(filename):
    """The name Proxmox stores a downloaded file under: download-url drops any directory part and turns
    every character other than ``A-Za-z0-9_.-`` into ``_`` (PVE::Storage::normalize_content_filename)."""
    name = re.sub(r"^.*[/\\]", "", str(filename).removesuffix("\n"))
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name)


def image_filename(params):
    """The image's file name in the storage, exactly as Proxmox will store it.

    Derived from the URL (``.img`` stored as ``.qcow2``); with a checksum its first 12 digits go into the
    name, so that a new image behind the same URL (``current/``, ``latest/``) is downloaded instead of reused.
    """
    if params.get("image_filename"):
        return stored_name(params["image_filename"])
    base = posixpath.basename(unquote(urlparse(params["image_url"]).path)) or "cloud-image.qcow2"
    stem = re.sub(r"\.(img|raw|qcow2)$", "", base)
    checksum = (params.get("image_checksum") or "").lower()
    if checksum:
        stem = f"{stem}-{checksum[:12]}"
    return stored_name(f"{stem}.qcow2")


def validate(params):
    problems = []
    if not 100 <= params["vmid"] <= 999999999:
        problems.append(f"vmid {params['vmid']} is out of range: Proxmox VMIDs are 100 to 999999999")
    if params["state"] == "present":
        url = params.get("image_url") or ""
        if not re.match(r"^https?://.+", url):
            problems.append(f"image_url {url!r} must be an http:// or https:// URL")
        else:
            name = image_filename(params)
            if not name.endswith(".qcow2"):
                problems.append(f"image_filename {name!r} must end in .qcow2 so that Proxmox can import it")
        checksum = params.get("image_checksum") or ""
        lengths = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}
        if checksum and not re.fullmatch(
            rf"[0-9a-fA-F]{{{lengths[params['image_checksum_algorithm']]}}}", checksum
        ):
            problems.append(
                f"image_checksum is not a {params['image_checksum_algorithm']} hex digest "
                f"({lengths[params['image_checksum_algorithm']]} hex digits)"
            )
    return problems


def build_argument_spec():
    """The module's options (the same as in DOCUMENTATION)."""
    argument_spec = api_argument_spec()
    argument_spec.update(
        node={"type": "str", "required": True},
        vmid={"type": "int", "required": True},
        name={"type": "str", "default": "gorkheavy-cloud-template"},
        state={"type": "str", "default": "present", "choices": ["present", "absent"]},
        image_url={"type": "str"},
        image_checksum={"type": "str", "default": ""},
        image_checksum_algorithm={
            "type": "str",
            "default": "sha256",
            "choices": ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"],
        },
        image_filename={"type": "str"},
        image_storage={"type": "str", "default": "local"},
        storage={"type": "str", "default": "local-lvm"},
        bridge={"type": "str", "default": "vmbr0"},
        tags={"type": "list", "elements": "str", "default": []},
        ownership_tag={"type": "str", "default": "gorkheavy-lite"},
        task_timeout={"type": "int", "default": 1800},
    )
    return argument_spec


def main():
    argument_spec = build_argument_spec()
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=API_MUTUALLY_EXCLUSIVE,
        required_together=API_REQUIRED_TOGETHER,
        required_if=[("state", "present", ("image_url",))],
    )
    params = module.params
    problems = validate(params)
    if problems:
        module.fail_json(msg=f"template {params['vmid']}: " + "; ".join(problems), problems=problems)
    result = {
        "changed": False,
        "vmid": params["vmid"],
        "node": params["node"],
        "downloaded": False,
        "created": False,
    }
    before, after = {}, {}
    try:
        client = ProxmoxClient(module)
        guest = client.find_guest(params["vmid"])
        require_ownership(guest, params["ownership_tag"], client=client)
        node = params["node"]
        timeout = params["task_timeout"]
        if params["state"] == "absent":
            if guest is not None:
                if guest.get("type") != "qemu" or not client.is_template(guest["node"], params["vmid"]):
                    kind = "a container" if guest.get("type") != "qemu" else "a VM"
                    raise ProxmoxError(
                        f"VMID {params['vmid']} on {guest.get('node')} is {kind}, not a template; "
                        "refusing to remove it as a template. Fix the template list in the inventory"
                    )
                before = {"vmid": guest["vmid"], "name": guest.get("name"), "node": guest.get("node")}
                result["changed"] = True
                if not module.check_mode:
                    client.run_task(
                        "DELETE",
                        f"nodes/{guest['node']}/qemu/{params['vmid']}",
                        f"removing template {params['vmid']}",
                        timeout=timeout,
                        purge=True,
                        **{"destroy-unreferenced-disks": True},
                    )
        else:
            filename = image_filename(params)
            volid = f"{params['image_storage']}:import/{filename}"
            result["image_volid"] = volid
            description = (
                DESCRIPTION_PREFIX
                + filename
                + (
                    f" {params['image_checksum_algorithm']}:{params['image_checksum']}"
                    if params["image_checksum"]
                    else ""
                )
            )
            if guest is not None:
                if guest.get("node") != node:
                    raise ProxmoxError(
                        f"template {params['vmid']} is on node {guest.get('node')}, not {node}; "
                        "fix the template list (node and VMID) in the inventory"
                    )
                config = client.vm_config(node, params["vmid"])
                before = after = {
                    "vmid": params["vmid"],
                    "name": config.get("name"),
                    "template": int(config.get("template") or 0),
                    "description": config.get("description", ""),
                }
                if config.get("description") and config.get("description") != description:
                    module.warn(
                        f"template {params['vmid']} on {node} was built as '{config.get('description')}', "
                        f"not '{description}'; it is kept. Remove it (playbooks/reset.yml with "
                        "gorkheavy_reset_templates=true) to rebuild it from the new image"
                    )
                if not int(config.get("template") or 0):
                    if not str(config.get("description") or "").startswith(DESCRIPTION_PREFIX):
                        raise ProxmoxError(
                            f"VMID {params['vmid']} on {node} is a VM tagged '{params['ownership_tag']}' "
                            "but not a template built by this module; refusing to turn it into a template. "
                            "Give the template another VMID"
                        )
                    # Left over from an interrupted run: the VM exists, the conversion did not happen.
                    after = {**after, "template": 1}
                    result["changed"] = True
                    if not module.check_mode:
                        client.run_task(
                            "POST",
                            f"nodes/{node}/qemu/{params['vmid']}/template",
                            f"converting VM {params['vmid']} to a template",
                            timeout=timeout,
                        )
            else:
                if not params["image_checksum"]:
                    module.warn(
                        f"the image {params['image_url']} is downloaded without checksum verification; set "
                        "the checksum variable to the value published next to the image (SHA256SUMS)"
                    )
                content = (
                    client.get(f"nodes/{node}/storage/{params['image_storage']}/content", content="import")
                    or []
                )
                present = any(item.get("volid") == volid for item in content)
                before = {}
                after = {
                    "vmid": params["vmid"],
                    "name": params["name"],
                    "template": 1,
                    "description": description,
                    "image": volid,
                }
                result["created"] = True
                result["changed"] = True
                if not present:
                    result["downloaded"] = True
                    if not module.check_mode:
                        data = {"url": params["image_url"], "content": "import", "filename": filename}
                        if params["image_checksum"]:
                            data["checksum"] = params["image_checksum"].lower()
                            data["checksum-algorithm"] = params["image_checksum_algorithm"]
                        client.run_task(
                            "POST",
                            f"nodes/{node}/storage/{params['image_storage']}/download-url",
                            f"downloading {params['image_url']} to {volid} on {node}",
                            timeout=timeout,
                            **data,
                        )
                if not module.check_mode:
                    storage = params["storage"]
                    client.run_task(
                        "POST",
                        f"nodes/{node}/qemu",
                        f"creating template VM {params['vmid']} on {node}",
                        timeout=timeout,
                        vmid=params["vmid"],
                        name=params["name"],
                        description=description,
                        ostype="l26",
                        cores=1,
                        memory="1024",
                        scsihw="virtio-scsi-single",
                        scsi0=f"{storage}:0,import-from={volid},iothread=1,discard=on",
                        ide2=f"{storage}:cloudinit",
                        boot="order=scsi0",
                        serial0="socket",
                        vga="serial0",
                        agent="enabled=1",
                        net0=f"virtio,bridge={params['bridge']}",
                        tags=join_tags([*params["tags"], params["ownership_tag"]]),
                    )
                    client.run_task(
                        "POST",
                        f"nodes/{node}/qemu/{params['vmid']}/template",
                        f"converting VM {params['vmid']} to a template",
                        timeout=timeout,
                    )
    except ProxmoxError as exc:
        module.fail_json(msg=str(exc), vmid=params["vmid"])
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
