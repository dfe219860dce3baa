# Copyright: gorkheavy-lite contributors
# MIT License (see LICENSE)
"""Shared code of the gorkheavy.lite Proxmox VE modules.

One small client over proxmoxer that every module uses:

* connection options common to all modules (``api_argument_spec``), token or
  password authentication, TLS verification on unless turned off explicitly;
* errors turned into sentences that say what to fix (authentication, TLS,
  unreachable host, missing privileges);
* Proxmox's lock timeouts (``can't lock file '...' - got timeout``), of a call or of its task,
  retried with backoff, and nothing else;
* tasks (UPIDs) polled until they stop, failures reported with the last lines
  of the task log;
* helpers that parse Proxmox property strings and normalise values so that a
  configuration read back compares equal to the one that was written.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote, unquote

try:
    import requests
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import ResourceException

    HAS_PROXMOXER = True
    PROXMOXER_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_PROXMOXER = False
    PROXMOXER_IMPORT_ERROR = exc
    ResourceException = Exception

DEFAULT_OWNERSHIP_TAG = "gorkheavy-lite"

# How Proxmox words a lock it could not get in time (PVE::Tools::lock_file_full, as used for a guest's
# config lock: "can't lock file '/var/lock/qemu-server/lock-201.conf' - got timeout"). Nothing else is
# retried: a failure that merely mentions a timeout or a lock is reported at once.
LOCK_ERROR_RE = re.compile(r"can't lock file '[^']+' - got timeout")
AGENT_NOT_READY_PATTERNS = ("guest agent is not running", "not running", "no such", "timeout")


def api_argument_spec():
    """Options every module of this collection takes to reach the API."""
    return {
        "api_host": {"type": "str", "required": True},
        "api_port": {"type": "int", "default": 8006},
        "api_user": {"type": "str", "required": True},
        "api_token_id": {"type": "str"},
        "api_token_secret": {"type": "str", "no_log": True},
        "api_password": {"type": "str", "no_log": True},
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
        "api_timeout": {"type": "int", "default": 30},
    }


API_MUTUALLY_EXCLUSIVE = [("api_token_secret", "api_password")]
API_REQUIRED_TOGETHER = [("api_token_id", "api_token_secret")]


class ProxmoxError(Exception):
    """An error whose message is ready for the operator."""


class TaskFailed(ProxmoxError):
    """A Proxmox task stopped with an exit status other than OK."""

    def __init__(self, message, exitstatus):
        super().__init__(message)
        self.exitstatus = exitstatus


def _bool_to_int(value):
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def upid_node(upid):
    """The node a task runs on, read from its UPID (``UPID:node:...``)."""
    parts = str(upid).split(":")
    if len(parts) < 3 or parts[0] != "UPID":
        raise ProxmoxError(f"the API returned {upid!r} where a task id (UPID) was expected")
    return parts[1]


class ProxmoxClient:
    """A proxmoxer session with retries, task waiting and readable errors."""

    def __init__(self, module, lock_retries=8, lock_backoff=1.0, sleep=time.sleep):
        self.module = module
        self.sleep = sleep
        self.lock_retries = lock_retries
        self.lock_backoff = lock_backoff
        params = module.params
        self.host = params["api_host"]
        self.port = params["api_port"]
        self.user = params["api_user"]
        self.token_id = params.get("api_token_id")
        self.base_url = f"https://{self.host}:{self.port}/api2/json"
        if not HAS_PROXMOXER:
            raise ProxmoxError(
                f"the Python library proxmoxer is required on the controller ({PROXMOXER_IMPORT_ERROR}); "
                "install it with: pip install 'proxmoxer>=2.1' requests"
            )
        if not params.get("api_token_secret") and not params.get("api_password"):
            raise ProxmoxError(
                "no credentials for the Proxmox VE API: set the API token secret "
                "(gorkheavy_proxmox_api_token_secret, from the vault or the PROXMOX_TOKEN_SECRET "
                "environment variable) or a password"
            )
        if params.get("api_token_secret") and not self.token_id:
            raise ProxmoxError("api_token_secret is set but api_token_id (the token's name) is not")
        if "@" not in self.user:
            raise ProxmoxError(
                f"api_user {self.user!r} has no realm: write it as user@realm, for example gorkheavy@pve"
            )
        if params.get("ca_path"):
            verify = params["ca_path"]
        elif params["validate_certs"]:
            verify = True
        else:
            verify = False
            module.warn(
                f"TLS certificate verification for {self.host}:{self.port} is turned off "
                "(validate_certs: false); set ca_path to the cluster CA instead"
            )
            requests.packages.urllib3.disable_warnings()
        kwargs = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "verify_ssl": verify,
            "timeout": params["api_timeout"],
        }
        if params.get("api_token_secret"):
            kwargs.update(token_name=self.token_id, token_value=params["api_token_secret"])
        else:
            kwargs.update(password=params["api_password"])
        self.identity = f"{self.user}!{self.token_id}" if self.token_id else self.user
        try:
            self.api = ProxmoxAPI(**kwargs)
        except ResourceException as exc:
            raise ProxmoxError(self._explain(exc, "log in")) from exc
        except requests.exceptions.RequestException as exc:
            raise ProxmoxError(self._explain_transport(exc)) from exc

    # ------------------------------------------------------------------ errors
    def _explain_transport(self, exc):
        if isinstance(exc, requests.exceptions.SSLError):
            return (
                f"TLS verification of https://{self.host}:{self.port} failed ({exc}). Point ca_path "
                "(gorkheavy_proxmox_ca_path) at the CA that signed the API certificate "
                "(/etc/pve/pve-root-ca.pem on a node), or turn verification off with "
                "validate_certs: false (gorkheavy_proxmox_validate_certs) if you accept the risk"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return f"the Proxmox VE API at https://{self.host}:{self.port} did not answer in time ({exc})"
        return (
            f"cannot reach the Proxmox VE API at https://{self.host}:{self.port} ({exc}); "
            "check gorkheavy_proxmox_api_host and gorkheavy_proxmox_api_port"
        )

    def _explain(self, exc, action):
        status = getattr(exc, "status_code", None)
        text = str(exc)
        if status == 401:
            return (
                f"the Proxmox VE API at https://{self.host}:{self.port} refused the credentials of "
                f"{self.identity} ({text}). Check gorkheavy_proxmox_api_user, "
                "gorkheavy_proxmox_api_token_id and the token secret (vault or PROXMOX_TOKEN_SECRET)"
            )
        if status == 403:
            return (
                f"{self.identity} may not {action} ({text}). Grant the token the privileges listed in "
                "roles/proxmox_vm/README.md (or create it with --privsep 0 for a user that has them)"
            )
        return f"Proxmox VE API error while trying to {action}: {text}"

    @staticmethod
    def _is_lock_error(exc):
        return LOCK_ERROR_RE.search(str(exc)) is not None

    # ------------------------------------------------------------------ calls
    def call(self, method, path, action=None, **data):
        """Call ``method`` on ``path`` (``nodes/pve1/qemu``); retry lock errors with backoff."""
        action = action or f"{method} /{path}"
        payload = {key: _bool_to_int(value) for key, value in data.items() if value is not None}
        delay = self.lock_backoff
        for attempt in range(self.lock_retries + 1):
            try:
                resource = self.api(path)
                if method == "GET":
                    return resource.get(**payload)
                if method == "POST":
                    return resource.post(**payload)
                if method == "PUT":
                    return resource.put(**payload)
                if method == "DELETE":
                    return resource.delete(**payload)
                raise ProxmoxError(f"unsupported HTTP method {method}")
            except ResourceException as exc:
                if (
                    attempt < self.lock_retries
                    and getattr(exc, "status_code", 0) >= 500
                    and (self._is_lock_error(exc))
                ):
                    self.sleep(delay)
                    delay = min(delay * 2, 15)
                    continue
                raise ProxmoxError(self._explain(exc, action)) from exc
            except requests.exceptions.RequestException as exc:
                raise ProxmoxError(self._explain_transport(exc)) from exc
        raise ProxmoxError(f"gave up on {action}: the resource stayed locked")  # pragma: no cover

    def get(self, path, **params):
        return self.call("GET", path, **params)

    def raw_get(self, path, **params):
        """GET that lets ResourceException through (for polling loops that expect errors)."""
        try:
            return self.api(path).get(**params)
        except requests.exceptions.RequestException as exc:
            raise ProxmoxError(self._explain_transport(exc)) from exc

    def permissions_at(self, acl_path):
        """The privileges this identity holds on one ACL path (``/access/permissions?path=...``)."""
        try:
            perms = self.api("access/permissions").get(path=acl_path) or {}
        except ResourceException as exc:
            raise ProxmoxError(self._explain(exc, "read its own permissions")) from exc
        except requests.exceptions.RequestException as exc:
            raise ProxmoxError(self._explain_transport(exc)) from exc
        # privilege => propagate flag: a privilege listed with 0 is held on the path all the same
        return set(perms.get(acl_path) or {})

    # ------------------------------------------------------------------ tasks
    def task_log_tail(self, node, upid, lines=12):
        try:
            log = self.get(f"nodes/{node}/tasks/{quote(upid, safe='')}/log", start=0, limit=500) or []
        except ProxmoxError:
            return []
        text = [entry.get("t", "") for entry in log if isinstance(entry, dict)]
        return [line for line in text if line and line != "no content"][-lines:]

    def wait_task(self, upid, what, timeout=1800, poll=0.1, max_poll=2.0):
        """Poll a task until it stops; raise with the log's last lines when it failed.

        Polls quickly first (most tasks take a second or two) and then every ``max_poll`` seconds.
        """
        if not upid:
            return {"exitstatus": "OK", "warnings": []}
        node = upid_node(upid)
        quoted = quote(upid, safe="")
        deadline = time.monotonic() + timeout
        while True:
            status = self.get(f"nodes/{node}/tasks/{quoted}/status")
            if status.get("status") == "stopped":
                exitstatus = status.get("exitstatus", "")
                if exitstatus == "OK":
                    return {"exitstatus": exitstatus, "warnings": []}
                if exitstatus.startswith("WARNINGS"):
                    tail = self.task_log_tail(node, upid)
                    return {"exitstatus": exitstatus, "warnings": [t for t in tail if "WARN" in t.upper()]}
                tail = self.task_log_tail(node, upid)
                detail = "\n".join(tail) if tail else "(the task log is empty)"
                message = f"{what} failed on {node}: {exitstatus}\nlast lines of the task log:\n{detail}"
                raise TaskFailed(message, exitstatus)
            if time.monotonic() > deadline:
                tail = self.task_log_tail(node, upid)
                raise ProxmoxError(
                    f"{what} did not finish within {timeout} s (task {upid} still running); "
                    "raise the task timeout or look at the task in the Proxmox UI. Last lines of its log:\n"
                    + "\n".join(tail)
                )
            self.sleep(poll)
            poll = min(poll * 1.5, max_poll)

    def run_task(self, method, path, what, timeout=1800, **data):
        """Start a task and wait for it; a task that failed on a lock is started again with backoff."""
        delay = self.lock_backoff
        for attempt in range(self.lock_retries + 1):
            upid = self.call(method, path, action=what, **data)
            try:
                return self.wait_task(upid, what, timeout=timeout)
            except TaskFailed as exc:
                if attempt >= self.lock_retries or not self._is_lock_error(exc.exitstatus):
                    raise
                self.sleep(delay)
                delay = min(delay * 2, 15)
        raise ProxmoxError(f"gave up on {what}: the resource stayed locked")  # pragma: no cover

    # ------------------------------------------------------------------ lookups
    def version(self):
        return self.get("version")

    def cluster_vms(self):
        return [r for r in self.get("cluster/resources", type="vm") or [] if r.get("type") == "qemu"]

    def cluster_guests(self):
        """Every guest (VM or container) in the cluster, keyed by VMID.

        Only ``vmid``, ``node``, ``type``, ``tags`` and ``lock`` of these entries are current: Proxmox fills
        ``status``, ``name`` and ``template`` from the status daemon's last cycle (about every 10 seconds,
        ``status`` is ``unknown`` before the first one). Use ``is_template`` and ``vm_status`` for those.
        """
        guests = {}
        for res in self.get("cluster/resources", type="vm") or []:
            if "vmid" in res:
                guests[int(res["vmid"])] = res
        return guests

    def find_guest(self, vmid):
        return self.cluster_guests().get(int(vmid))

    def vm_config(self, node, vmid):
        return self.get(f"nodes/{node}/qemu/{vmid}/config") or {}

    def vm_status(self, node, vmid):
        return self.get(f"nodes/{node}/qemu/{vmid}/status/current") or {}

    def guest_name(self, guest):
        """A listed guest's name from its configuration (the listing's name lags behind)."""
        if guest.get("type") == "qemu":
            try:
                return self.vm_config(guest.get("node"), guest["vmid"]).get("name") or "(no name)"
            except ProxmoxError:
                pass
        return guest.get("name") or "(no name)"

    def is_running(self, node, vmid):
        """The VM's power state as QEMU reports it now (not the cluster listing's, which lags)."""
        return self.vm_status(node, vmid).get("status") == "running"

    def is_template(self, node, vmid, config=None):
        """Whether a VM is a template, from its configuration (not the cluster listing's, which lags)."""
        config = self.vm_config(node, vmid) if config is None else config
        return str(config.get("template") or 0) in ("1", "true")


# ---------------------------------------------------------------------- values
def split_tags(value):
    """PVE tag lists use ``;`` (also ``,`` or spaces); PVE sorts them. Return a sorted unique list."""
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else re.split(r"[;,\s]+", str(value))
    return sorted({item.strip() for item in items if item and item.strip()})


def join_tags(tags):
    return ";".join(split_tags(tags))


def require_ownership(guest, tag, what="VMID", client=None):
    """Raise unless an existing guest carries the ownership tag (the listing's tags are current)."""
    if guest is None:
        return
    tags = split_tags(guest.get("tags", ""))
    if tag not in tags:
        name = client.guest_name(guest) if client is not None else guest.get("name") or "(no name)"
        kind = "container" if guest.get("type") == "lxc" else "VM"
        raise ProxmoxError(
            f"{what} {guest['vmid']} already exists ({kind} '{name}' on node {guest.get('node')}) and is not "
            f"tagged '{tag}', so it is not managed by this project; refusing to touch it. Pick a free VMID "
            f"or remove that guest yourself"
        )


def parse_property_string(value, default_key=None):
    """Parse ``a=1,b=2`` (and a leading bare value for ``default_key``) into a dict."""
    result = {}
    if value is None:
        return result
    for index, part in enumerate(str(value).split(",")):
        if not part:
            continue
        if "=" in part:
            key, _, val = part.partition("=")
            result[key.strip()] = val.strip()
        elif index == 0 and default_key:
            result[default_key] = part.strip()
        else:
            result[part.strip()] = ""
    return result


NIC_MODELS = (
    "virtio",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
)


def parse_net(value):
    """``virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=0`` -> model, mac and the other keys."""
    parsed = {}
    for part in str(value or "").split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if key in NIC_MODELS:
            parsed["model"] = key
            if sep:
                parsed["macaddr"] = val
        else:
            parsed[key] = val
    return parsed


def format_net(parsed):
    model = parsed.get("model", "virtio")
    head = f"{model}={parsed['macaddr']}" if parsed.get("macaddr") else model
    rest = [f"{k}={v}" for k, v in parsed.items() if k not in ("model", "macaddr")]
    return ",".join([head, *rest])


def parse_memory(value):
    if value in (None, ""):
        return None
    parsed = parse_property_string(value, default_key="current")
    try:
        return int(parsed.get("current"))
    except (TypeError, ValueError):
        return None


def encode_sshkeys(keys):
    """PVE wants the key list URL-encoded, spaces as %20 (never +)."""
    text = "\n".join(k.strip() for k in keys if k and k.strip())
    return quote(text, safe="")


def decode_sshkeys(value):
    if not value:
        return []
    return [line.strip() for line in unquote(str(value)).splitlines() if line.strip()]


def parse_ipconfig(value):
    """``ip=192.168.1.201/24,gw=192.168.1.1`` -> dict; empty for unset."""
    return parse_property_string(value) if value else {}


def format_ipconfig(ipv4, gateway=None):
    if ipv4 == "dhcp":
        return "ip=dhcp"
    text = f"ip={ipv4}"
    if gateway:
        text += f",gw={gateway}"
    return text


def split_list(value):
    if not value:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if str(v)]
    return [item for item in re.split(r"[\s,;]+", str(value)) if item]


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_to_bytes(text):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ProxmoxError(f"cannot read the disk size {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def disk_size_bytes(disk_value):
    """Size of a disk from its config line (``local-lvm:vm-201-disk-0,size=3584M``)."""
    size = parse_property_string(disk_value, default_key="file").get("size")
    return size_to_bytes(size) if size else None


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3])
