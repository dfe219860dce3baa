# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Documentation of the Proxmox VE API connection options shared by this collection's modules."""

from __future__ import annotations


class ModuleDocFragment:
    """The connection options of plugins/module_utils/proxmox_api.py."""

    DOCUMENTATION = r"""
---
options:
  api_host:
    description: Host name or address of a Proxmox VE node serving the API.
    type: str
    required: true
  api_port:
    description: TCP port of the API.
    type: int
    default: 8006
  api_user:
    description: User the token belongs to (or logs in with a password), as C(user@realm).
    type: str
    required: true
  api_token_id:
    description: Name of the API token (the part after C(!)).
    type: str
  api_token_secret:
    description: Secret of the API token. Never logged.
    type: str
  api_password:
    description: Password of O(api_user), when no token is used. Never logged.
    type: str
  validate_certs:
    description: Verify the API's TLS certificate. Turning it off gives a warning.
    type: bool
    default: true
  ca_path:
    description: CA bundle (PEM) to verify the API certificate with, such as C(/etc/pve/pve-root-ca.pem).
    type: path
  api_timeout:
    description: Seconds to wait for one HTTP answer.
    type: int
    default: 30
"""
