"""Proxmox VE 9.1 API stand-in: an HTTPS server that answers like a three-node Proxmox VE cluster.

Every request is routed, verified and answered following the official API schema
(``tests/fixtures/proxmox/pve-api-schema-9.1.json``): unknown parameters, wrong types, formats, enums,
patterns and ranges are refused with HTTP 400 and a per-parameter ``errors`` object, the way
``pve-api-daemon`` does. Responses are ``{"data": ...}`` and (in strict mode, the default) checked
against the method's ``returns`` schema; a mismatch raises ``StandinBug``.

Python API::

    from tests.standins.proxmox import ProxmoxStandin, StorageDef

    standin = ProxmoxStandin(nodes=["pve1", "pve2", "pve3"])        # loads the fixture schema
    standin.add_token("gorkheavy@pve!ansible", "SECRET", privsep=False)
    standin.add_token("ro@pve!audit", "S2", privsep=True, privileges={"/": ["Sys.Audit", "VM.Audit"]})
    standin.add_user("admin@pve", password="pw")                    # ticket login (POST /access/ticket)
    standin.add_storage(StorageDef("shared", "nfs", ["images"], shared=True))
    standin.add_remote_file("https://example.invalid/noble.img", b"...", virtual_size=3 * 2**30)
    standin.task_durations["qmclone"] = 0.3                         # seconds, per task type ("default")
    standin.faults.fail_next_task("qmclone", "clone failed: out of space")
    standin.faults.lock_timeout_once(9000)                          # next lock of VM 9000 times out
    standin.faults.agent_errors[101] = ["QEMU guest agent is not running"]
    standin.backend.agent_delay = 0.5                               # SimulatedBackend
    with standin.serve_https(host="127.0.0.1", port=0) as server:  # thread; trustme certificate
        server.url, server.port, server.ca_path                     # CA PEM for verify_ssl
        ...
    standin.requests            # [LoggedRequest(method, path, params, status)]
    standin.schema_violations   # requests refused by the schema (provision tests assert this is empty)
    standin.response_violations # responses that did not match "returns" (strict mode raises instead)

CLI::

    python -m tests.standins.proxmox --host 127.0.0.1 --port 8006 --nodes pve1,pve2,pve3 \\
        --token 'gorkheavy@pve!ansible=SECRET' --state /tmp/pve.json --ca-out /tmp/pve-ca.pem

Default state: nodes ``pve1``, ``pve2``, ``pve3``; on every node storage ``local`` (dir, content
``iso,vztmpl,backup,import,snippets``) and ``local-lvm`` (lvmthin, ``images,rootdir``); both local
(not shared); user ``root@pam`` (no password). VM power is delegated to a ``VmBackend``
(``SimulatedBackend`` by default) so a lab can back VMs with real hosts.
"""

from tests.standins.proxmox.api import Faults
from tests.standins.proxmox.backend import GuestInterface, SimulatedBackend, VmBackend
from tests.standins.proxmox.schema import SCHEMA_FILE, ApiSchema, Endpoint
from tests.standins.proxmox.standin import (
    DEFAULT_TASK_DURATIONS,
    LoggedRequest,
    ProxmoxStandin,
    RemoteFile,
    SchemaViolation,
    Server,
    StandinBug,
)
from tests.standins.proxmox.state import ApiError, StorageDef

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
