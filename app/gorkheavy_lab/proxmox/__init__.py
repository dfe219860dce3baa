"""Proxmox VE 9.1 API stand-in: an HTTPS server that answers like a Proxmox VE cluster.

Every request is routed, verified and answered following the official API schema
(``data/pve-api-schema-9.1.json``, see ``NOTE.md`` there): unknown parameters, wrong
types, formats (named ones and property strings), enums, patterns and ranges are refused with HTTP 400
and a per-parameter ``errors`` object worded like ``pve-api-daemon``'s. Responses are ``{"data": ...}``;
in strict mode (the default) each one is checked against the method's ``returns`` schema and a mismatch
becomes HTTP 500 "stand-in bug" plus an entry in ``response_violations``. Schema paths the stand-in does
not model answer 501 naming the path; paths outside the schema answer 501 "Method 'GET /x' not implemented".
Long operations are tasks: a UPID, then ``/nodes/{node}/tasks/{upid}/status`` running -> stopped with an
``exitstatus`` ("OK" or the error text) and ``.../log`` ending in "TASK OK" / "TASK ERROR: ...".

Python API::

    from gorkheavy_lab.proxmox import ProxmoxStandin, StorageDef

    standin = ProxmoxStandin(nodes=["pve1", "pve2", "pve3"])       # loads the packaged schema
    standin.add_token("gorkheavy@pve!ansible", "SECRET", privsep=False)
    standin.add_token("ro@pve!audit", "S2", privsep=True, privileges={"/": ["Sys.Audit", "VM.Audit"]})
    standin.add_user("admin@pve", password="pw")                   # ticket login; privileges=None: all
    standin.add_storage(StorageDef("shared", "nfs", ["images", "import"], shared=True))
    standin.add_volume("pve1", "local:import/base.qcow2", 2**20, "qcow2", "import")
    standin.add_remote_file(url, b"image bytes", virtual_size=3 * 2**30)   # what download-url finds
    standin.task_durations["qmclone"] = 0.3                        # seconds per task type; "default"
    standin.faults.fail_next_task("qmclone", "clone failed: out of space")
    standin.faults.lock_timeout_once(9000)                         # next lock of VM 9000 times out
    standin.faults.lock_timeout_once(201, task_type="resize")      # ... only for a resize task
    standin = ProxmoxStandin(statd_period=1.0); standin.statd_cycle()  # /cluster/resources lag
    standin.faults.agent_errors[101] = ["QEMU guest agent is not running"]
    standin.faults.fail_next_request("GET", "/nodes/{node}/qemu/{vmid}/config", 595, "Connection timed out")
    standin.backend.agent_delay = 0.5                              # SimulatedBackend (the default)
    standin.backend.start_failures[101] = "start failed: ..."      # next start of 101 fails
    standin.bridges = ["vmbr0"]                                    # bridges a start may use
    standin.set_node_online("pve2", False)                         # listed offline, requests get 595
    with standin.serve_https(host="127.0.0.1", port=0) as server:  # thread; trustme certificate
        server.url, server.host, server.port, server.ca_path       # CA PEM for verify_ssl
    standin.requests            # [LoggedRequest(method, path, params, status)]
    standin.schema_violations   # requests refused by the schema (the provision tests assert it is empty)
    standin.response_violations # responses that did not match "returns"
    standin.internal_errors     # defects of the stand-in itself (answered with 500 "stand-in bug")
    standin.wait_tasks(); standin.vm_config(100)                   # direct looks at the state
    standin.handle("GET", "/version", {}, headers)                 # one request without HTTP

``gorkheavy_lab.proxmox.testing`` has ``running_standin()``, ``client(server)`` (proxmoxer) and
``wait_task()`` for tests.

CLI (``serve`` is the default sub-command; ``serve --help`` lists every option)::

    python -m gorkheavy_lab.proxmox serve --host 127.0.0.1 --port 8006 --nodes pve1,pve2,pve3 \\
        --token 'gorkheavy@pve!ansible=SECRET' --user 'admin@pve=PASSWORD' --state /tmp/pve.json \\
        --ca-out /tmp/pve-ca.pem --task-duration qmclone=0.3 --agent-delay 0.5 \\
        --storage 'nfs=nfs:images,import:shared' --unauthorized-delay 3 --statd-period 10

Default state: nodes ``pve1``, ``pve2``, ``pve3`` (any list, one node is fine); on every node storage
``local`` (dir, content ``backup,import,iso,snippets,vztmpl``) and ``local-lvm`` (lvmthin,
``images,rootdir``), neither shared; bridge ``vmbr0``; user ``root@pam``. With ``state_file`` the state
(nodes, storages, volumes, VMs, finished tasks) is saved after every change and loaded at start; the
file's nodes win over the ``nodes`` argument.

VM power goes through a ``VmBackend`` (``start``/``stop``/``status``/``addresses``); the default
``SimulatedBackend`` makes the guest agent answer ``agent_delay`` seconds after start with ``lo``, one
interface per ``netN`` carrying the ``ipconfigN`` address, and one interface without an address.
``gorkheavy_lab.proxmox.podman.PodmanBackend`` backs VMs with real systemd test hosts (README.md).

Modelled endpoints (everything else in the schema answers 501): ``/version``, ``/nodes``,
``/nodes/{node}/status|version|network``, ``/cluster/resources|nextid|status|tasks``, ``/storage``,
``/storage/{storage}``, ``/pools``, ``/access/ticket``, ``/access/permissions``, node storage index, status,
content (list, volume GET/DELETE) and ``download-url``; qemu list/create, ``config`` (GET, POST async,
PUT sync), ``pending``, ``cloudinit`` (GET/PUT, ``dump``), ``template``, ``clone``, ``resize``,
``migrate`` (offline), ``status/current|start|stop|shutdown|reboot``, DELETE, ``agent/ping`` and
``agent/network-get-interfaces``; task list, status and log.

``/cluster/resources`` lags like pvestatd's (``statd_period``, 10 s; ``statd_cycle()`` runs a cycle now);
SDN.Use is checked on ``/sdn/zones/localnetwork/<bridge>`` for NICs; ``download-url`` normalises file
names and keeps an existing file whose checksum matches. README.md beside this file has the details.

Not modelled: real downloads (the bytes come from ``add_remote_file`` or a placeholder), snapshots,
backups and restores, HA, pools (none exist), SDN zones and VNets, firewall, LXC, live migration,
replication, CPU and memory hotplug (such changes stay pending on a running VM), storage space running
out, roles (privileges are given per ACL path directly, propagating), two-factor login, configdrive2
cloud-init data. The config ``digest`` is a SHA1 over the stand-in's own rendering of the config, and SSH
keys are checked by structure rather than by ``ssh-keygen``.
"""

from gorkheavy_lab.proxmox.api import Faults
from gorkheavy_lab.proxmox.backend import GuestInterface, SimulatedBackend, VmBackend
from gorkheavy_lab.proxmox.schema import SCHEMA_FILE, ApiSchema, Endpoint
from gorkheavy_lab.proxmox.standin import (
    DEFAULT_TASK_DURATIONS,
    LoggedRequest,
    ProxmoxStandin,
    RemoteFile,
    SchemaViolation,
    Server,
    StandinBug,
)
from gorkheavy_lab.proxmox.state import ApiError, StorageDef

__all__ = [
    "DEFAULT_TASK_DURATIONS",
    "SCHEMA_FILE",
    "ApiError",
    "ApiSchema",
    "Endpoint",
    "Faults",
    "GuestInterface",
    "LoggedRequest",
    "ProxmoxStandin",
    "RemoteFile",
    "SchemaViolation",
    "Server",
    "SimulatedBackend",
    "StandinBug",
    "StorageDef",
    "VmBackend",
]
