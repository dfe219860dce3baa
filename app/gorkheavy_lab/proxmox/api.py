"""The semantics of the endpoints the provision role uses, on top of the schema-driven request layer."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gorkheavy_lab.proxmox import validation
from gorkheavy_lab.proxmox.state import (
    GIB,
    ApiError,
    Cluster,
    Task,
    TaskFailed,
    VmState,
    Volume,
    config_digest,
    param_error,
)

if TYPE_CHECKING:
    from gorkheavy_lab.proxmox.standin import ProxmoxStandin

PVE_VERSION = "9.1.1"
PVE_RELEASE = "9.1"
PVE_REPOID = "42db4a6cf5a1b0c2"
KERNEL = "6.17.2-1-pve"

DRIVE_BUSES = ("ide", "sata", "scsi", "virtio", "efidisk", "tpmstate")
DRIVE_KEY_RE = re.compile(r"^(ide|sata|scsi|virtio)(\d+)$|^(efidisk0|tpmstate0)$")
NEW_DISK_RE = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")
CLOUDINIT_KEYS = {
    "ciuser",
    "cipassword",
    "citype",
    "ciupgrade",
    "cicustom",
    "nameserver",
    "searchdomain",
    "sshkeys",
}
# option groups of qemu-server's permission checks
CPU_OPTIONS = {"cores", "cpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus", "affinity"}
MEMORY_OPTIONS = {"memory", "balloon", "shares", "allow-ksm"}
HWTYPE_OPTIONS = {
    "acpi",
    "hotplug",
    "kvm",
    "machine",
    "scsihw",
    "smbios1",
    "tablet",
    "vga",
    "watchdog",
    "audio0",
    "rng0",
}
GENERAL_OPTIONS = {
    "agent",
    "autostart",
    "bios",
    "description",
    "keyboard",
    "localtime",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "ostype",
    "protection",
    "reboot",
    "startdate",
    "startup",
    "tdf",
    "template",
}
# options a running VM takes at once; everything else becomes pending until the next start
HOTPLUG_OPTIONS = {
    "name",
    "description",
    "onboot",
    "tags",
    "protection",
    "startup",
    "lock",
    "hookscript",
    "cpulimit",
}


@dataclass
class Faults:
    """Injected failures for tests. Each entry is consumed by the first matching operation."""

    fail_task: dict[str, list[str]] = field(default_factory=dict)  # task type -> messages
    lock_timeouts: dict[int, int] = field(default_factory=dict)  # vmid -> how many lock attempts fail
    # (vmid, task type) -> how many lock attempts of tasks of that type fail
    typed_lock_timeouts: dict[tuple[int, str], int] = field(default_factory=dict)
    agent_errors: dict[int, list[str]] = field(default_factory=dict)  # vmid -> messages
    requests: list[tuple[str, str, ApiError]] = field(default_factory=list)  # (method, schema path, error)

    def fail_next_request(
        self, method: str, path: str, status: int, message: str, errors: dict[str, str] | None = None
    ) -> None:
        """The next ``method`` on schema path ``path`` (e.g. ``/nodes/{node}/qemu/{vmid}/config``) fails."""
        self.requests.append((method, path, ApiError(status, message, errors)))

    def take_request_failure(self, method: str, path: str) -> ApiError | None:
        for index, (want_method, want_path, error) in enumerate(self.requests):
            if (want_method, want_path) == (method, path):
                del self.requests[index]
                return error
        return None

    def fail_next_task(self, task_type: str, message: str) -> None:
        self.fail_task.setdefault(task_type, []).append(message)

    def lock_timeout_once(self, vmid: int, times: int = 1, task_type: str | None = None) -> None:
        """The next lock of ``vmid`` (by a task of ``task_type`` only, when given) times out."""
        if task_type is not None:
            key = (vmid, task_type)
            self.typed_lock_timeouts[key] = self.typed_lock_timeouts.get(key, 0) + times
            return
        self.lock_timeouts[vmid] = self.lock_timeouts.get(vmid, 0) + times

    def take_task_failure(self, task_type: str) -> str | None:
        queue = self.fail_task.get(task_type)
        return queue.pop(0) if queue else None

    def take_lock_timeout(self, vmid: int, task_type: str | None = None) -> bool:
        typed = self.typed_lock_timeouts.get((vmid, task_type or ""), 0)
        if typed > 0:
            self.typed_lock_timeouts[(vmid, task_type or "")] = typed - 1
            return True
        remaining = self.lock_timeouts.get(vmid, 0)
        if remaining > 0:
            self.lock_timeouts[vmid] = remaining - 1
            return True
        return False


def _trunk_tags(trunks: str) -> list[int]:
    """The VLANs of a ``trunks`` value (``10;20-22``)."""
    tags: set[int] = set()
    for part in trunks.split(";"):
        low, _, high = part.partition("-")
        if low.strip().isdigit():
            tags.update(range(int(low), int(high or low) + 1))
    return sorted(tags)


def parse_volname(scfg: Any, volname: str) -> str:
    """The volume type a storage plugin reads from a volume name, or its parse error."""
    if scfg.file_based:
        for pattern, vtype in (
            (r"^(\d+)/(\S+)$", "images"),
            (r"^(\d+)/(\S+)/(\d+)/(\S+)$", "images"),
            (r"^iso/[^/]+$", "iso"),
            (r"^vztmpl/[^/]+$", "vztmpl"),
            (r"^import/[^/]+$", "import"),
            (r"^snippets/[^/]+$", "snippets"),
            (r"^backup/[^/]+$", "backup"),
        ):
            if re.match(pattern, volname):
                return vtype
        raise ApiError(500, f"unable to parse directory volume name '{volname}'")
    if re.match(r"^((base|vm)-\d+-\S+)$", volname) or re.match(r"^(base-\d+-\S+)/(vm-\d+-\S+)$", volname):
        return "images"
    raise ApiError(500, f"unable to parse lvm volume name '{volname}'")


def lock_message(vmid: int) -> str:
    return f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"


@dataclass
class WithAttributes:
    """A result with envelope attributes beside ``data`` (``total`` of paged lists)."""

    data: Any
    attributes: dict[str, Any]


@dataclass
class Request:
    method: str
    path: str  # schema path
    params: dict[str, str]
    authid: str  # user@realm or user@realm!token


Handler = Callable[["ProxmoxApi", Request], Any]
HANDLERS: dict[tuple[str, str], Handler] = {}


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        HANDLERS[(method, path)] = func
        return func

    return register


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value in ("1", "True", "true")


class ProxmoxApi:
    """Endpoint semantics. Every method runs with the cluster lock held."""

    def __init__(self, standin: ProxmoxStandin) -> None:
        self.standin = standin
        self.cluster: Cluster = standin.cluster

    # -- helpers ---------------------------------------------------------------------------------------

    def check(self, authid: str, path: str, privs: list[str], any_: bool = False) -> None:
        self.standin.auth.check(authid, path, privs, any_=any_)

    def vm(self, req: Request) -> VmState:
        vmid = int(req.params["vmid"])
        vm = self.cluster.vms.get(vmid)
        node = req.params["node"]
        if vm is None or vm.node != node:
            raise ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
        return vm

    def duration(self, task_type: str) -> float:
        return self.standin.task_durations.get(task_type, self.standin.task_durations.get("default", 0.05))

    def task(
        self,
        req: Request,
        task_type: str,
        task_id: str,
        work: Callable[[Task], None] | None,
        *,
        locks: tuple[int, ...] = (),
        shared_locks: tuple[int, ...] = (),
        lock_timeout_is_task_error: bool = True,
        on_failure: Callable[[Task], None] | None = None,
    ) -> str:
        """Start a task; ``locks`` are held exclusively while it runs, ``shared_locks`` only need to be free.

        A lock that cannot be had (held by a running task, or an injected timeout) makes the task fail
        with Proxmox's "can't lock file ... - got timeout" after ``lock_wait`` seconds.
        """
        node = req.params["node"]
        failure = self.standin.faults.take_task_failure(task_type)
        for vmid in (*shared_locks, *locks):
            if self._lock_busy(vmid, task_type):
                if not lock_timeout_is_task_error:
                    raise ApiError(500, lock_message(vmid))
                failure = lock_message(vmid)
                break
        task = self.cluster.start_task(
            node,
            task_type,
            task_id,
            req.authid,
            duration=self.duration(task_type) if failure is None else self.standin.lock_wait,
            work=work,
            locks=() if failure else locks,
            fail_now=failure,
        )
        task.on_failure = on_failure
        return task.upid

    def _lock_busy(self, vmid: int, task_type: str | None = None) -> bool:
        return (
            self.standin.faults.take_lock_timeout(vmid, task_type)
            or self.cluster.locked_by_task(vmid) is not None
        )

    def sync_lock(self, vmid: int) -> None:
        if self._lock_busy(vmid):
            raise ApiError(500, lock_message(vmid))

    @staticmethod
    def check_config_lock(vm: VmState, skiplock: bool = False) -> None:
        if not skiplock and vm.config.get("lock"):
            raise ApiError(500, f"VM is locked ({vm.config['lock']})")

    def vm_running(self, vm: VmState) -> bool:
        return self.standin.backend.status(vm.node, vm.vmid) == "running"

    def drive_fmt(self, key: str) -> Mapping[str, Any]:
        fmt = self.standin.schema.property_format(key)
        assert fmt is not None
        return fmt

    def parse_drive(self, key: str, value: str) -> dict[str, str]:
        return validation.parse_property_string(self.drive_fmt(key), value)

    def print_drive(self, key: str, drive: Mapping[str, str]) -> str:
        return validation.print_property_string(self.drive_fmt(key), drive)

    def storage_for(self, storage: str, node: str) -> Any:
        scfg = self.cluster.storage_on_node(storage, node)
        if scfg is None:
            raise ApiError(500, f"storage '{storage}' does not exist")
        if not scfg.enabled:
            raise ApiError(500, f"storage '{storage}' is disabled")
        return scfg

    def next_disk_name(self, storage: str, vmid: int, node: str, prefix: str = "vm") -> str:
        scfg = self.cluster.storages[storage]
        index = 0
        while True:
            name = f"{prefix}-{vmid}-disk-{index}"
            taken = any(
                volid.split(":", 1)[0] == storage
                and re.search(rf"(^|[:/]){prefix}-{vmid}-disk-{index}\b", volid)
                for (_n, volid) in self.cluster.volumes
            )
            if not taken:
                break
            index += 1
        if scfg.file_based:
            return f"{storage}:{vmid}/{name}.{scfg.default_format}"
        return f"{storage}:{name}"

    def volume_size(self, volid: str, node: str) -> int:
        volume = self.cluster.find_volume(volid, node)
        if volume is None:
            raise ApiError(500, f"volume '{volid}' does not exist")
        return volume.size

    # -- drives in create / config updates ------------------------------------------------------------

    def check_drives(self, req: Request, vmid: int, params: dict[str, str]) -> None:
        """The synchronous checks of drive options (create and config update)."""
        node = req.params["node"]
        errors: dict[str, str] = {}
        for key in sorted(params):
            if not DRIVE_KEY_RE.match(key):
                continue
            drive = self.parse_drive(key, params[key])
            file = drive.get("file", "")
            new_disk = NEW_DISK_RE.match(file)
            if drive.get("import-from"):
                if not new_disk or float(new_disk.group(3)) != 0:
                    errors[key] = (
                        "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"
                    )
                    continue
                source = drive["import-from"]
                if source.startswith("/"):
                    if req.authid != "root@pam":
                        raise ApiError(500, "Only root can pass arbitrary filesystem paths.")
                else:
                    src_storage, _src_name = validation.parse_volume_id(source)
                    self.storage_for(src_storage, node)
                    src_volume = self.cluster.find_volume(source, node)
                    if src_volume is None:
                        raise ApiError(500, f"volume '{source}' does not exist")
                    if src_volume.content not in ("images", "import"):
                        wrong = src_volume.content
                        errors[key] = f"{source} has wrong type '{wrong}' - needs to be 'images' or 'import'"
                        continue
                    self.check(req.authid, f"/storage/{src_storage}", ["Datastore.Audit"])
            if file in ("none", "cdrom", "cloudinit") or file.startswith("/"):
                continue
            storage, volname = validation.parse_volume_id(file) if ":" in file else ("", file)
            if volname == "cloudinit":
                self.storage_for(storage, node)
                self.check(req.authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
                continue
            if new_disk and drive.get("media") != "cdrom":
                self.check(req.authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
                scfg = self.storage_for(storage, node)
                if "images" not in scfg.content:
                    errors["storage"] = f"storage '{storage}' does not support vm images"
                continue
            scfg = self.storage_for(storage, node)
            parse_volname(scfg, volname)
            volume = self.cluster.find_volume(file, node)
            if volume is None:
                raise ApiError(500, f"volume '{file}' does not exist")
            if volume.content == "iso" and drive.get("media") != "cdrom":
                errors[key] = "explicit 'media=cdrom' is required for iso images"
        if errors:
            raise param_error(errors)

    def apply_drive(self, node: str, vmid: int, key: str, value: str, template: bool = False) -> str:
        """Allocate/import what a drive value asks for; return the drive string stored in the config."""
        drive = self.parse_drive(key, value)
        file = drive.get("file", "")
        storage, _, volname = file.partition(":")
        if volname == "cloudinit":
            vm = self.cluster.vms.get(vmid)
            for other, other_value in (vm.config | vm.pending).items() if vm else ():
                if other != key and DRIVE_KEY_RE.match(other) and "cloudinit" in other_value.split(",")[0]:
                    raise TaskFailed(f"{key} - cloud-init drive is already attached at '{other}'")
            volid = f"{storage}:vm-{vmid}-cloudinit"
            scfg = self.cluster.storages[storage]
            if scfg.file_based:
                volid = f"{storage}:{vmid}/vm-{vmid}-cloudinit.qcow2"
            if self.cluster.find_volume(volid, node) is None:
                self.cluster.add_volume(
                    Volume(volid, node, 4 * 1024 * 1024, scfg.default_format, "images", vmid=vmid)
                )
            drive["file"] = volid
            if "media" in self.drive_fmt(key):
                drive["media"] = "cdrom"
            return self.print_drive(key, drive)
        new_disk = NEW_DISK_RE.match(file)
        if new_disk and drive.get("media") != "cdrom":
            storage = new_disk.group(2)
            size = int(float(new_disk.group(3)) * GIB)
            source = drive.pop("import-from", None)
            if source is not None:
                size = self.volume_size(source, node) if not source.startswith("/") else 2 * GIB
                source_volume = self.cluster.find_volume(source, node)
                if source_volume is not None and source_volume.content == "import":
                    size = self.standin.imported_size(source_volume)
            volid = self.next_disk_name(storage, vmid, node, "base" if template else "vm")
            scfg = self.cluster.storages[storage]
            self.cluster.add_volume(
                Volume(volid, node, size, drive.get("format") or scfg.default_format, "images", vmid=vmid)
            )
            drive["file"] = volid
            drive.pop("format", None)
            drive["size"] = validation.format_size(size)
            return self.print_drive(key, drive)
        if file not in ("none", "cdrom") and not file.startswith("/") and ":" in file:
            volume = self.cluster.find_volume(file, node)
            if volume is not None and "size" not in drive and drive.get("media") != "cdrom":
                drive["size"] = validation.format_size(volume.size)
                return self.print_drive(key, drive)
        return value

    def check_modify_perms(
        self, authid: str, vmid: int, keys: list[str], values: Mapping[str, str], *, update: bool
    ) -> None:
        """The privilege each config option needs, following qemu-server's option groups."""
        if authid == "root@pam":
            return
        path = f"/vms/{vmid}"
        for key in keys:
            if DRIVE_KEY_RE.match(key) or key == "cdrom":
                if update:
                    value = values.get(key, "")
                    cdrom = key == "cdrom" or "media=cdrom" in value
                    self.check(authid, path, ["VM.Config.CDROM" if cdrom else "VM.Config.Disk"])
                continue
            if re.match(r"^serial\d+$", key):
                if key in values and values[key] != "socket":
                    raise ApiError(500, f"only root can set '{key}' config for real devices")
                self.check(authid, path, ["VM.Config.HWType"])
                continue
            if re.match(r"^(?:unused|usb|hostpci|virtiofs)\d+$", key):
                self.check(
                    authid, path, ["VM.Config.Disk" if key.startswith("unused") else "VM.Config.HWType"]
                )
                continue
            if key in CPU_OPTIONS or re.match(r"^numa\d+$", key):
                self.check(authid, path, ["VM.Config.CPU"])
            elif key in MEMORY_OPTIONS:
                self.check(authid, path, ["VM.Config.Memory"])
            elif key in HWTYPE_OPTIONS:
                self.check(authid, path, ["VM.Config.HWType"])
            elif key in GENERAL_OPTIONS or key == "tags":
                self.check(authid, path, ["VM.Config.Options"])
                if key == "startup":
                    self.check(authid, "/", ["Sys.Modify"])
            elif key == "freeze":
                self.check(authid, path, ["VM.PowerMgmt"])
            elif key in ("boot", "bootdisk", "vmstatestorage"):
                self.check(authid, path, ["VM.Config.Disk"])
            elif re.match(r"^net\d+$", key):
                self.check(authid, path, ["VM.Config.Network"])
            elif key in CLOUDINIT_KEYS or re.match(r"^ipconfig\d+$", key):
                self.check(authid, path, ["VM.Config.Cloudinit", "VM.Config.Network"], any_=True)
            else:
                raise ApiError(500, f"only root can set '{key}' config")

    def check_bridge_access(self, authid: str, config: Mapping[str, str]) -> None:
        """SDN.Use on the zone path of every bridge a NIC in ``config`` uses (qemu-server's
        check_bridge_access): ``/sdn/zones/localnetwork/<bridge>`` (a plain bridge is in the zone
        ``localnetwork``), ``.../<bridge>/<tag>`` for a VLAN tag and for each VLAN of ``trunks``."""
        if authid == "root@pam":
            return
        for key in sorted(config):
            if not re.match(r"^net\d+$", key):
                continue
            net = validation.parse_property_string(self.drive_fmt(key), config[key])
            bridge = net.get("bridge")
            if not bridge:
                continue
            path = f"/sdn/zones/localnetwork/{bridge}"
            if net.get("tag"):
                self.check(authid, f"{path}/{net['tag']}", ["SDN.Use"])
            for vlan in _trunk_tags(net.get("trunks", "")):
                self.check(authid, f"{path}/{vlan}", ["SDN.Use"])
            if not (net.get("tag") or net.get("trunks")):
                self.check(authid, path, ["SDN.Use"])

    def option_exists(self, key: str) -> bool:
        """Whether ``key`` is a VM config option (the schema's config properties, not request controls)."""
        if key in ("node", "vmid", "delete", "revert", "digest", "skiplock", "force", "background_delay"):
            return False
        props = self.standin.schema.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config").parameters[
            "properties"
        ]
        return validation.property_key_schema(props, key) is not None

    def validate_sshkeys(self, params: Mapping[str, str]) -> None:
        keys = params.get("sshkeys")
        if keys is None:
            return
        try:
            validation.validate_ssh_public_keys(urllib.parse.unquote(keys))
        except ValueError as exc:
            raise ApiError(500, str(exc)) from None

    def typed_config(self, config: Mapping[str, str]) -> dict[str, Any]:
        props = self.standin.schema.endpoint("GET", "/nodes/{node}/qemu/{vmid}/config").returns["properties"]
        typed: dict[str, Any] = {}
        for key, value in config.items():
            schema = props.get(key)
            kind = schema.get("type") if schema else None
            if kind in ("integer", "boolean"):
                typed[key] = int(value)
            elif kind == "number":
                typed[key] = float(value) if "." in value else int(value)
            else:
                typed[key] = value
        return typed

    def disk_size(self, vm: VmState) -> int:
        for key in ("scsi0", "virtio0", "sata0", "ide0"):
            if key in vm.config:
                drive = self.parse_drive(key, vm.config[key])
                return validation.parse_size(drive.get("size", "0")) or 0
        return 0

    def memory_bytes(self, vm: VmState) -> int:
        value = vm.config.get("memory", "512").split(",")[0].removeprefix("current=")
        return int(value) * 1024 * 1024

    def cpus(self, vm: VmState) -> int:
        return int(vm.config.get("cores", "1")) * int(vm.config.get("sockets", "1"))

    def statd_entry(self, vm: VmState) -> dict[str, Any]:
        """What the status daemon broadcasts of a guest: status, name, template flag and figures."""
        status = self.vm_status(vm)
        for key in ("pid", "tags", "lock", "vmid"):
            status.pop(key, None)
        status["maxcpu"] = status.pop("cpus")
        status["template"] = int(status.get("template", 0))
        return status

    def vm_status(self, vm: VmState) -> dict[str, Any]:
        running = self.vm_running(vm)
        data: dict[str, Any] = {
            "vmid": vm.vmid,
            "status": "running" if running else "stopped",
            "name": vm.config.get("name", f"VM {vm.vmid}"),
            "cpus": self.cpus(vm),
            "maxmem": self.memory_bytes(vm),
            "maxdisk": self.disk_size(vm),
            "mem": self.memory_bytes(vm) // 4 if running else 0,
            "cpu": 0.01 if running else 0,
            "disk": 0,
            "diskread": 0,
            "diskwrite": 0,
            "netin": 0,
            "netout": 0,
            "uptime": int(self.cluster.clock() - vm.started_at) if running and vm.started_at else 0,
        }
        if running and vm.pid:
            data["pid"] = vm.pid
        if vm.config.get("template") == "1":
            data["template"] = 1
        if "tags" in vm.config:
            data["tags"] = vm.config["tags"]
        if vm.config.get("lock"):
            data["lock"] = vm.config["lock"]
        return data


# ---------------------------------------------------------------------------------------------------------
# version, nodes, cluster


@route("GET", "/version")
def get_version(api: ProxmoxApi, req: Request) -> Any:
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID, "console": "html5"}


@route("GET", "/nodes")
def list_nodes(api: ProxmoxApi, req: Request) -> Any:
    result = []
    for node in api.cluster.nodes:
        online = api.cluster.node_online[node]
        entry: dict[str, Any] = {
            "node": node,
            "status": "online" if online else "offline",
            "id": f"node/{node}",
            "type": "node",
        }
        if online:
            entry.update(
                {
                    "cpu": 0.02,
                    "maxcpu": api.standin.node_cpus,
                    "mem": 4 * GIB,
                    "maxmem": api.standin.node_memory,
                    "disk": 8 * GIB,
                    "maxdisk": 100 * GIB,
                    "uptime": int(api.cluster.clock()) - api.cluster.boot_time,
                    "level": "",
                    "ssl_fingerprint": api.standin.ssl_fingerprint,
                }
            )
        result.append(entry)
    return result


@route("GET", "/nodes/{node}/status")
def node_status(api: ProxmoxApi, req: Request) -> Any:
    mem = api.standin.node_memory
    return {
        "boot-info": {"mode": "efi", "secureboot": 0},
        "cpu": 0.02,
        "cpuinfo": {
            "cores": api.standin.node_cpus,
            "cpus": api.standin.node_cpus,
            "model": "QEMU Virtual CPU",
            "sockets": 1,
            "mhz": "2400.000",
            "hvm": "1",
            "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep",
        },
        "current-kernel": {
            "machine": "x86_64",
            "release": KERNEL,
            "sysname": "Linux",
            "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
        },
        "kversion": f"Linux {KERNEL} #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
        "loadavg": ["0.10", "0.08", "0.05"],
        "memory": {"total": mem, "used": 4 * GIB, "free": mem - 4 * GIB, "available": mem - 4 * GIB},
        "swap": {"total": 0, "used": 0, "free": 0},
        "pveversion": f"pve-manager/{PVE_VERSION}/{PVE_REPOID}",
        "rootfs": {"total": 100 * GIB, "used": 8 * GIB, "free": 92 * GIB, "avail": 92 * GIB},
        "uptime": int(api.cluster.clock()) - api.cluster.boot_time,
        "idle": 0,
        "wait": 0.0,
    }


@route("GET", "/cluster/resources")
def cluster_resources(api: ProxmoxApi, req: Request) -> Any:
    """Guests need VM.Audit and storages Datastore.Audit to be listed; nodes are always listed."""
    kind = req.params.get("type")
    auth = api.standin.auth
    result: list[dict[str, Any]] = []
    if kind in (None, "node"):
        for node_entry in list_nodes(api, req):
            row = dict(node_entry)
            row.pop("ssl_fingerprint", None)
            if not auth.allowed_any(req.authid, f"/nodes/{row['node']}", ["Sys.Audit"]):
                row = {k: row[k] for k in ("id", "type", "node", "status")}
            result.append(row)
    if kind in (None, "vm"):
        for vm in sorted(api.cluster.vms.values(), key=lambda v: v.vmid):
            if not auth.allowed_any(req.authid, f"/vms/{vm.vmid}", ["VM.Audit"]):
                continue
            # vmid, node and type come from the cluster's VM list, lock and tags from the guest's config,
            # both at once; status, name, template and the figures from the status daemon's last cycle
            # ("unknown" and nothing else for a guest it has not seen yet)
            entry: dict[str, Any] = {
                "id": f"qemu/{vm.vmid}",
                "type": "qemu",
                "node": vm.node,
                "vmid": vm.vmid,
            }
            stats = api.statd_entry(vm) if api.standin.statd_period <= 0 else api.standin.statd.get(vm.vmid)
            entry.update(stats if stats is not None else {"status": "unknown"})
            for prop in ("lock", "tags"):
                if vm.config.get(prop):
                    entry[prop] = vm.config[prop]
            result.append(entry)
    if kind in (None, "storage"):
        for scfg in api.cluster.storages.values():
            if not auth.allowed_any(req.authid, f"/storage/{scfg.storage}", ["Datastore.Audit"]):
                continue
            for node in api.cluster.nodes:
                if not scfg.enabled or (scfg.nodes is not None and node not in scfg.nodes):
                    continue
                used = api.cluster.storage_used(scfg.storage, node)
                result.append(
                    {
                        "id": f"storage/{node}/{scfg.storage}",
                        "type": "storage",
                        "storage": scfg.storage,
                        "node": node,
                        "status": "available" if scfg.active else "unknown",
                        "plugintype": scfg.type,
                        "content": ",".join(sorted(scfg.content)),
                        "shared": 1 if scfg.shared else 0,
                        "disk": used,
                        "maxdisk": scfg.total,
                    }
                )
    return result


@route("GET", "/cluster/nextid")
def next_id(api: ProxmoxApi, req: Request) -> Any:
    wanted = req.params.get("vmid")
    if wanted is not None:
        if int(wanted) in api.cluster.vms:
            raise param_error({"vmid": f"VM {int(wanted)} already exists"})
        return str(int(wanted))
    vmid = 100
    while vmid in api.cluster.vms:
        vmid += 1
    return str(vmid)


@route("GET", "/cluster/status")
def cluster_status(api: ProxmoxApi, req: Request) -> Any:
    result: list[dict[str, Any]] = []
    if len(api.cluster.nodes) > 1:
        result.append(
            {
                "id": "cluster",
                "name": "gorkheavy",
                "type": "cluster",
                "nodes": len(api.cluster.nodes),
                "quorate": 1,
                "version": len(api.cluster.nodes),
            }
        )
    for index, node in enumerate(api.cluster.nodes, start=1):
        result.append(
            {
                "id": f"node/{node}",
                "name": node,
                "type": "node",
                "nodeid": index,
                "online": 1 if api.cluster.node_online[node] else 0,
                "local": 1 if index == 1 else 0,
                "ip": f"127.0.0.{index}",
                "level": "",
            }
        )
    return result


# ---------------------------------------------------------------------------------------------------------
# storage


STORAGE_LIST_PRIVS = ["Datastore.Audit", "Datastore.AllocateSpace"]


def _storage_entry(api: ProxmoxApi, scfg: Any, node: str) -> dict[str, Any]:
    """A storage as a node sees it: not enabled there when disabled or restricted to other nodes."""
    enabled = scfg.enabled and (scfg.nodes is None or node in scfg.nodes)
    active = enabled and scfg.active
    used = api.cluster.storage_used(scfg.storage, node) if active else 0
    entry: dict[str, Any] = {
        "storage": scfg.storage,
        "type": scfg.type,
        "content": ",".join(sorted(scfg.content)),
        "shared": 1 if scfg.shared else 0,
        "enabled": 1 if enabled else 0,
        "active": 1 if active else 0,
        "total": scfg.total if active else 0,
        "used": used,
        "avail": scfg.total - used if active else 0,
    }
    if active:
        entry["used_fraction"] = used / scfg.total
    return entry


@route("GET", "/storage")
def storage_index(api: ProxmoxApi, req: Request) -> Any:
    kind = req.params.get("type")
    result = []
    for scfg in api.cluster.storages.values():
        if kind and scfg.type != kind:
            continue
        entry: dict[str, Any] = {
            "storage": scfg.storage,
            "type": scfg.type,
            "content": ",".join(sorted(scfg.content)),
            "digest": "0" * 40,
        }
        if scfg.shared:
            entry["shared"] = 1
        if scfg.nodes is not None:
            entry["nodes"] = ",".join(scfg.nodes)
        if scfg.type == "dir":
            entry["path"] = "/var/lib/vz"
        if scfg.type == "lvmthin":
            entry.update({"thinpool": "data", "vgname": "pve"})
        result.append(entry)
    return result


@route("GET", "/nodes/{node}/storage")
def node_storage(api: ProxmoxApi, req: Request) -> Any:
    node = req.params["node"]
    content = req.params.get("content")
    wanted = validation.split_list(content or "")
    only_enabled = _bool(req.params.get("enabled"))
    target = req.params.get("target")
    if target in (node, "localhost"):
        target = None
    storage = req.params.get("storage")
    result = []
    for scfg in sorted(api.cluster.storages.values(), key=lambda s: s.storage):
        entry = _storage_entry(api, scfg, node)
        if content is not None and (not any(c in scfg.content for c in wanted) or not entry["enabled"]):
            continue
        if not api.standin.auth.allowed_any(req.authid, f"/storage/{scfg.storage}", STORAGE_LIST_PRIVS):
            continue
        if storage and scfg.storage != storage:
            continue
        if only_enabled and not scfg.enabled:
            continue
        if target and (
            not scfg.shared or not entry["enabled"] or (scfg.nodes is not None and target not in scfg.nodes)
        ):
            continue
        if _bool(req.params.get("format")) and entry["enabled"]:
            supported = ["qcow2", "raw", "vmdk"] if scfg.file_based else ["raw"]
            entry["formats"] = {"supported": supported, "default": scfg.default_format}
        result.append(entry)
    if storage and storage not in api.cluster.storages:
        raise param_error({"storage": "No such storage."})
    return result


@route("GET", "/nodes/{node}/storage/{storage}/status")
def storage_status(api: ProxmoxApi, req: Request) -> Any:
    scfg = api.cluster.storage_on_node(req.params["storage"], req.params["node"])
    if scfg is None:
        raise ApiError(500, f"storage '{req.params['storage']}' does not exist")
    return _storage_entry(api, scfg, req.params["node"])


def _volume_entry(volume: Volume) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "volid": volume.volid,
        "format": volume.format,
        "size": volume.size,
        "content": volume.content,
        "ctime": volume.ctime,
    }
    if volume.vmid is not None:
        entry["vmid"] = volume.vmid
    if volume.content == "images":
        entry["used"] = volume.size // 10
    if volume.parent:
        entry["parent"] = volume.parent
    if volume.notes:
        entry["notes"] = volume.notes
    return entry


@route("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(api: ProxmoxApi, req: Request) -> Any:
    node, storage = req.params["node"], req.params["storage"]
    scfg = api.storage_for(storage, node)
    content = req.params.get("content")
    vmid = req.params.get("vmid")
    owner = "" if scfg.shared else node
    result = []
    for (vnode, volid), volume in sorted(api.cluster.volumes.items()):
        if vnode != owner or not volid.startswith(storage + ":"):
            continue
        if content and volume.content != content:
            continue
        if vmid is not None and volume.vmid != int(vmid):
            continue
        result.append(_volume_entry(volume))
    return result


_DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
_IMPORT_NAME_RE = re.compile(r"^[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)$")
_ISO_NAME_RE = re.compile(r"^[^/]+\.(?:iso|img)$", re.IGNORECASE)
_VZTMPL_NAME_RE = re.compile(r"^[^/]+\.(?:tar|tar\.(?:gz|xz|zst|bz2))$", re.IGNORECASE)


@route("POST", "/nodes/{node}/storage/{storage}/download-url")
def download_url(api: ProxmoxApi, req: Request) -> Any:
    node, storage = req.params["node"], req.params["storage"]
    scfg = api.storage_for(storage, node)
    if not scfg.file_based:
        raise ApiError(500, f"can't upload to storage type '{scfg.type}', not a file based storage!")
    content, url = req.params["content"], req.params["url"]
    filename = normalize_content_filename(req.params["filename"])
    if content not in scfg.content:
        raise ApiError(500, f"storage '{storage}' is not configured for content-type '{content}'")
    if content == "iso" and not _ISO_NAME_RE.match(filename):
        raise param_error({"filename": "wrong file extension"})
    if content == "vztmpl" and not _VZTMPL_NAME_RE.match(filename):
        raise param_error({"filename": "wrong file extension"})
    fmt = "raw"
    if content == "import":
        match = _IMPORT_NAME_RE.match(filename)
        if not match:
            raise param_error({"filename": "invalid filename or wrong extension"})
        fmt = match.group(1)
    if content == "iso":
        fmt = "iso"
    if content == "vztmpl":
        fmt = "tgz"
    subdir = {"iso": "template/iso", "vztmpl": "template/cache", "import": "import"}[content]
    volid = f"{storage}:{subdir.split('/')[-1] if content != 'vztmpl' else 'vztmpl'}/{filename}"
    path = f"/var/lib/vz/{subdir}/{filename}"
    checksum = req.params.get("checksum")
    algorithm = req.params.get("checksum-algorithm")
    if req.params.get("compression") and content != "iso":
        raise ApiError(500, f"decompression not supported for {content}")

    def work(task: Task) -> None:
        remote = api.standin.remote_files.get(url)
        task.log.append(f"downloading {url} to {path}")
        if remote is None and api.standin.strict_remote_files:
            raise TaskFailed("download failed: 404 Not Found")
        payload = remote.content if remote is not None else f"image behind {url}".encode()
        existing = api.cluster.find_volume(volid, node)
        if existing is not None:
            # an existing file is kept when its checksum matches, refused otherwise (never overwritten)
            if not (checksum and algorithm):
                raise TaskFailed(f"refusing to override existing file '{path}'")
            got = (existing.digests or {}).get(algorithm, hashlib.new(algorithm, b"").hexdigest())
            if got.lower() != checksum.lower():
                raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{checksum}', aborting")
            task.log.append(
                "calculating checksum of existing file...OK, got correct file already, no need to download"
            )
            return
        if checksum and algorithm:
            got = hashlib.new(algorithm, payload).hexdigest()
            task.log.append(f"calculating checksum of '{path}.tmp.{task.pid}'...")
            if got.lower() != checksum.lower():
                raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{checksum}'")
            task.log.append("checksum verified")
        task.log.append(f"download of '{url}' to '{path}' finished")
        size = remote.size if remote is not None else len(payload)
        virtual = remote.virtual_size if remote is not None else 2 * GIB
        digests = {name: hashlib.new(name, payload).hexdigest() for name in _DIGESTS}
        api.cluster.add_volume(Volume(volid, node, size, fmt, content, notes=None, digests=digests))
        api.standin.virtual_sizes[(node if not scfg.shared else "", volid)] = virtual

    return api.task(req, "download", _encode_worker_id(filename), work)


def normalize_content_filename(filename: str) -> str:
    """The name download-url stores a file under (PVE::Storage::normalize_content_filename): a trailing
    newline and any directory part dropped, every character but ``A-Za-z0-9_.-`` turned into ``_``."""
    name = filename.removesuffix("\n")
    name = re.sub(r"^.*[/\\]", "", name)
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name)


def _encode_worker_id(text: str) -> str:
    """Worker IDs escape control and high-bit characters, ':' and '%' like URI escapes."""
    return "".join(
        c
        if (0x20 <= ord(c) <= 0x24 or 0x26 <= ord(c) <= 0x39 or 0x3B <= ord(c) <= 0x7E)
        else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    )


# ---------------------------------------------------------------------------------------------------------
# qemu


@route("GET", "/nodes/{node}/qemu")
def list_vms(api: ProxmoxApi, req: Request) -> Any:
    node = req.params["node"]
    return [
        api.vm_status(vm) for vm in sorted(api.cluster.vms.values(), key=lambda v: v.vmid) if vm.node == node
    ]


@route("POST", "/nodes/{node}/qemu")
def create_vm(api: ProxmoxApi, req: Request) -> Any:
    node = req.params["node"]
    vmid = int(req.params["vmid"])
    params = {k: v for k, v in req.params.items() if k not in ("node", "vmid")}
    for key in ("archive", "live-restore"):
        if key in params:
            raise ApiError(501, f"restoring backups ('{key}') is not modelled by this stand-in")
    start = _bool(params.pop("start", None))
    params.pop("storage", None)  # only used by restores
    pool = params.pop("pool", None)
    for key in ("bwlimit", "unique", "ha-managed", "import-working-storage", "force"):
        params.pop(key, None)
    if pool is not None:
        raise ApiError(500, f"pool '{pool}' does not exist")
    api.check(req.authid, f"/vms/{vmid}", ["VM.Allocate"])
    api.validate_sshkeys(params)
    api.check_modify_perms(req.authid, vmid, list(params), params, update=False)
    api.check_drives(req, vmid, params)
    api.check_bridge_access(req.authid, params)
    existing = api.cluster.vms.get(vmid)
    if existing is not None:
        raise ApiError(
            500, f"unable to create VM {vmid} - VM {vmid} already exists on node '{existing.node}'"
        )
    if "tags" in params:
        params["tags"] = _normalize_tags(params["tags"])
    _encrypt_password(api, params, params.get("ostype"))
    config = {"lock": "create"}
    vm = VmState(vmid=vmid, node=node, config=config)
    api.cluster.vms[vmid] = vm

    def work(task: Task) -> None:
        final: dict[str, str] = {}
        ci_keys = [k for k in _drive_order(params) if params[k].split(",")[0].endswith("cloudinit")]
        if len(ci_keys) > 1:
            raise TaskFailed(f"{ci_keys[1]} - cloud-init drive is already attached at '{ci_keys[0]}'")
        for key, value in params.items():
            if DRIVE_KEY_RE.match(key):
                task.log.append(f"{key}: successfully created disk for '{value}'")
                final[key] = api.apply_drive(node, vmid, key, value)
            else:
                final[key] = value
        final = _add_defaults(api, final)
        vm.config = final
        if start:
            _do_start(api, vm, task)

    def cleanup(task: Task) -> None:
        if api.cluster.vms.get(vmid) is vm:
            del api.cluster.vms[vmid]
            _remove_owned_volumes(api, vmid)

    return api.task(req, "qmcreate", str(vmid), work, locks=(vmid,), on_failure=cleanup)


def _drive_order(keys: Mapping[str, str]) -> list[str]:
    """Drive keys in the order qemu-server walks them: ide, sata, scsi, virtio, efidisk, tpmstate."""
    buses = ("ide", "sata", "scsi", "virtio", "efidisk", "tpmstate")
    found = [k for k in keys if DRIVE_KEY_RE.match(k)]
    return sorted(found, key=lambda k: (buses.index(re.sub(r"\d+$", "", k)), int(re.sub(r"^\D+", "", k))))


def _remove_owned_volumes(api: ProxmoxApi, vmid: int) -> None:
    """A failed create or clone removes the volumes it allocated."""
    for key, volume in list(api.cluster.volumes.items()):
        if volume.vmid == vmid and volume.content == "images":
            del api.cluster.volumes[key]


def _add_defaults(api: ProxmoxApi, config: dict[str, str]) -> dict[str, str]:
    result = dict(config)
    for key, value in list(result.items()):
        if key.startswith("net") and key[3:].isdigit():
            result[key] = _add_mac(api, key, value)
    result.setdefault("smbios1", f"uuid={_uuid(api)}")
    result.setdefault("vmgenid", _uuid(api))
    result.setdefault("meta", f"creation-qemu=10.1.2,ctime={int(api.cluster.clock())}")
    return dict(sorted(result.items()))


def _uuid(api: ProxmoxApi) -> str:
    api.standin.counter += 1
    digest = hashlib.sha1(f"{api.standin.counter}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def _add_mac(api: ProxmoxApi, key: str, value: str) -> str:
    fmt = api.drive_fmt(key)
    net = validation.parse_property_string(fmt, value)
    if "macaddr" not in net:
        api.standin.counter += 1
        n = api.standin.counter
        net["macaddr"] = f"BC:24:11:{(n >> 16) & 0xFF:02X}:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"
    model = net.get("model", "virtio")
    rest = {k: v for k, v in net.items() if k not in ("model", "macaddr")}
    parts = [f"{model}={net['macaddr']}"] + [f"{k}={v}" for k, v in sorted(rest.items())]
    return ",".join(parts)


def _encrypt_password(api: ProxmoxApi, params: dict[str, str], ostype: str | None) -> None:
    """cloud-init passwords are stored crypt()-hashed (not for Windows guests); GET shows stars."""
    password = params.get("cipassword")
    if password is None or re.match(r"^\$(?:[156]|2[ay])(\$.+){2}", password):
        return
    if ostype and re.match(r"^(wxp|w2k|w2k3|w2k8|wvista|win7|win8|win10|win11)$", ostype):
        return
    api.standin.counter += 1
    salt = hashlib.sha256(f"salt{api.standin.counter}".encode()).hexdigest()[:16]
    digest = hashlib.sha256(f"{salt}{password}".encode()).hexdigest()
    params["cipassword"] = f"$5${salt}${digest}"


def _normalize_tags(value: str) -> str:
    tags = sorted({t for t in re.split(r"[;, ]+", value) if t})
    return ";".join(tags)


@route("GET", "/nodes/{node}/qemu/{vmid}")
def vm_index(api: ProxmoxApi, req: Request) -> Any:
    api.vm(req)
    subdirs = [
        "config",
        "pending",
        "status",
        "unlink",
        "vncproxy",
        "termproxy",
        "migrate",
        "resize",
        "move",
        "rrd",
        "rrddata",
        "monitor",
        "agent",
        "snapshot",
        "spiceproxy",
        "sendkey",
        "firewall",
        "mtunnel",
        "remote_migrate",
    ]
    return [{"subdir": s} for s in subdirs]


@route("GET", "/nodes/{node}/qemu/{vmid}/config")
def get_config(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    if req.params.get("snapshot"):
        raise ApiError(500, f"snapshot '{req.params['snapshot']}' does not exist")
    config = dict(vm.config)
    if not _bool(req.params.get("current")):
        config.update(vm.pending)
        for key in vm.pending_delete:
            config.pop(key, None)
    if "cipassword" in config:
        config["cipassword"] = "**********"
    data = api.typed_config(config)
    data["digest"] = config_digest(vm.config)
    return data


@route("GET", "/nodes/{node}/qemu/{vmid}/pending")
def get_pending(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    result: list[dict[str, Any]] = []
    keys = sorted(set(vm.config) | set(vm.pending) | set(vm.pending_delete))
    for key in keys:
        if key in ("digest",):
            continue
        entry: dict[str, Any] = {"key": key}
        if key in vm.config:
            entry["value"] = "**********" if key == "cipassword" else vm.config[key]
        if key in vm.pending:
            entry["pending"] = "********** " if key == "cipassword" else vm.pending[key]
        if key in vm.pending_delete:
            entry["delete"] = 1
        result.append(entry)
    return result


def _config_update(api: ProxmoxApi, req: Request, sync: bool) -> Any:
    vm = api.vm(req)
    vmid = vm.vmid
    node = vm.node
    params = {k: v for k, v in req.params.items() if k not in ("node", "vmid")}
    digest = params.pop("digest", None)
    delete = validation.split_list(params.pop("delete", ""))
    revert = validation.split_list(params.pop("revert", ""))
    skiplock = _bool(params.pop("skiplock", None))
    force = _bool(params.pop("force", None))
    params.pop("background_delay", None)
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    api.validate_sshkeys(params)
    if not delete and not revert and not params:
        raise ApiError(500, "no options specified")
    for key in revert:
        if not api.option_exists(key):
            raise param_error({"revert": f"unknown option '{key}'"})
        if key in params:
            raise param_error({"delete": f"you can't use '-{key}' and -revert {key}' at the same time"})
    delete = ["ide2" if key == "cdrom" else key for key in delete]
    for key in delete:
        if key in params:
            raise param_error({"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})
        if key in revert:
            raise param_error(
                {"revert": f"you can't use '-delete {key}' and -revert {key}' at the same time"}
            )
        if not api.option_exists(key):
            raise param_error({"delete": f"unknown option '{key}'"})
    api.check_modify_perms(req.authid, vmid, list(params) + delete, {**vm.config, **params}, update=True)
    api.check_drives(req, vmid, params)
    # the new NICs' bridges, and the bridge of every NIC that is changed or removed
    api.check_bridge_access(req.authid, params)
    api.check_bridge_access(
        req.authid, {k: vm.config[k] for k in [*params, *delete] if k.startswith("net") and k in vm.config}
    )
    if "tags" in params:
        params["tags"] = _normalize_tags(params["tags"])
    _encrypt_password(api, params, params.get("ostype", vm.config.get("ostype")))
    if digest and digest != config_digest(vm.config):
        raise ApiError(500, "checksum mismatch (file change by other user?)")
    api.check_config_lock(vm, skiplock)

    def update(task: Task | None) -> None:
        if digest and digest != config_digest(vm.config):
            raise TaskFailed("checksum mismatch (file change by other user?)")
        running = api.vm_running(vm)
        for key in delete:
            if key not in vm.config and key not in vm.pending:
                continue
            value = vm.config.get(key, "")
            if running and not _applies_live(key):
                if key not in vm.pending_delete:
                    vm.pending_delete.append(key)
                continue
            if DRIVE_KEY_RE.match(key) and value:
                drive = api.parse_drive(key, value)
                volid = drive.get("file", "")
                if volid.endswith("-cloudinit") or "-cloudinit." in volid:
                    api.cluster.remove_volume(volid, node)
                    vm.cloudinit.clear()
                elif force and ":" in volid and drive.get("media") != "cdrom":
                    api.cluster.remove_volume(volid, node)
                elif ":" in volid and drive.get("media") != "cdrom":
                    _add_unused(vm, volid)
            if key.startswith("unused") and value:
                # deleting an unused disk destroys its volume
                api.cluster.remove_volume(value, node)
            if running:
                _record_cloudinit_change(vm, key, vm.config.get(key), None)
            vm.config.pop(key, None)
            vm.pending.pop(key, None)
        for key in revert:
            vm.pending.pop(key, None)
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        for key, requested in params.items():
            value = requested
            if key.startswith("net") and key[3:].isdigit():
                value = _keep_mac(api, vm, key, value)
            if DRIVE_KEY_RE.match(key):
                old = vm.config.get(key)
                # a template's new disks become base volumes at once
                value = api.apply_drive(node, vmid, key, value, template=vm.config.get("template") == "1")
                if old and old != value:
                    old_drive = api.parse_drive(key, old)
                    new_drive = api.parse_drive(key, value)
                    if old_drive.get("file") != new_drive.get("file") and old_drive.get("media") != "cdrom":
                        _add_unused(vm, old_drive.get("file", ""))
            if running and not _applies_live(key):
                vm.pending[key] = value
                continue
            if running:
                _record_cloudinit_change(vm, key, vm.config.get(key), value)
            vm.config[key] = value
            vm.pending.pop(key, None)
        vm.config = dict(sorted(vm.config.items()))

    if sync:
        api.sync_lock(vmid)
        try:
            update(None)
        except TaskFailed as exc:
            raise ApiError(500, str(exc)) from None
        return None
    return api.task(req, "qmconfig", str(vmid), update, locks=(vmid,))


def _applies_live(key: str) -> bool:
    """Whether a running VM takes an option at once (hotplug "network,disk,usb" and plain options)."""
    return (
        key in HOTPLUG_OPTIONS
        or key in CLOUDINIT_KEYS
        or bool(re.match(r"^(?:ipconfig|net|usb|unused)\d+$", key))
        or bool(DRIVE_KEY_RE.match(key))
    )


def _cloudinit_property(key: str) -> bool:
    return key in CLOUDINIT_KEYS or key == "name" or bool(re.match(r"^(?:ipconfig|net)\d+$", key))


def _record_cloudinit_change(vm: VmState, key: str, old: str | None, new: str | None) -> None:
    """Remember what the cloud-init drive still holds while options change under a running VM."""
    if not _cloudinit_property(key):
        return
    ci = vm.cloudinit
    recorded = ci.get(key)
    added = set(validation.split_list(ci.pop("added", "")))
    if new is not None:
        if old is not None:
            if recorded is not None:
                if new == recorded:  # back in sync with the drive
                    del ci[key]
                    added.discard(key)
            elif key not in added and old != new:
                ci[key] = old
        elif recorded is not None:
            if new == recorded:
                del ci[key]
                added.discard(key)
        else:
            added.add(key)
    elif old is not None and recorded is None:
        if key in added:
            added.discard(key)
        else:
            ci[key] = old
    if added:
        ci["added"] = ",".join(sorted(added))


def _add_unused(vm: VmState, volid: str) -> None:
    if not volid or volid in vm.config.values():
        return
    index = 0
    while f"unused{index}" in vm.config:
        index += 1
    vm.config[f"unused{index}"] = volid


def _keep_mac(api: ProxmoxApi, vm: VmState, key: str, value: str) -> str:
    """Proxmox keeps the existing MAC when a NIC is re-set without one."""
    fmt = api.drive_fmt(key)
    new = validation.parse_property_string(fmt, value)
    if "macaddr" in new or key not in vm.config:
        return _add_mac(api, key, value)
    old = validation.parse_property_string(fmt, vm.config[key])
    if "macaddr" in old:
        new["macaddr"] = old["macaddr"]
        model = new.get("model", "virtio")
        rest = {k: v for k, v in new.items() if k not in ("model", "macaddr")}
        return ",".join([f"{model}={new['macaddr']}"] + [f"{k}={v}" for k, v in sorted(rest.items())])
    return _add_mac(api, key, value)


@route("POST", "/nodes/{node}/qemu/{vmid}/config")
def post_config(api: ProxmoxApi, req: Request) -> Any:
    return _config_update(api, req, sync=False)


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
def put_config(api: ProxmoxApi, req: Request) -> Any:
    return _config_update(api, req, sync=True)


@route("POST", "/nodes/{node}/qemu/{vmid}/template")
def make_template(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    api.check_config_lock(vm)
    if vm.config.get("template") == "1" and not req.params.get("disk"):
        raise ApiError(500, "you can't convert a template to a template")
    if api.vm_running(vm):
        raise ApiError(500, "you can't convert a VM to template if VM is running")
    only = req.params.get("disk")

    def work(task: Task) -> None:
        for key in sorted(vm.config):
            if not DRIVE_KEY_RE.match(key) or (only and key != only):
                continue
            drive = api.parse_drive(key, vm.config[key])
            volid = drive.get("file", "")
            if (
                drive.get("media") == "cdrom"
                or "cloudinit" in volid
                or "/base-" in volid
                or ":base-" in volid
            ):
                continue
            volume = api.cluster.find_volume(volid, vm.node)
            if volume is None:
                continue
            new_volid = volid.replace(f"vm-{vm.vmid}-disk-", f"base-{vm.vmid}-disk-")
            api.cluster.remove_volume(volid, vm.node)
            volume.volid = new_volid
            api.cluster.add_volume(volume)
            drive["file"] = new_volid
            vm.config[key] = api.print_drive(key, drive)
            task.log.append(f'  Renamed "{volid.split(":", 1)[1]}" to "{new_volid.split(":", 1)[1]}"')
        vm.config["template"] = "1"
        vm.config = dict(sorted(vm.config.items()))

    return api.task(req, "qmtemplate", str(vm.vmid), work, locks=(vm.vmid,))


@route("POST", "/nodes/{node}/qemu/{vmid}/clone")
def clone_vm(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    node = req.params["node"]
    newid = int(req.params["newid"])
    target = req.params.get("target")
    if target in (node, "localhost"):
        target = None
    storage = req.params.get("storage")
    fmt = req.params.get("format")
    snapname = req.params.get("snapname")
    pool = req.params.get("pool")
    if pool is not None:
        raise ApiError(500, f"pool '{pool}' does not exist")
    if target is not None and target not in api.cluster.nodes:
        raise ApiError(500, f"no such cluster node '{target}'")
    if storage:
        scfg = api.storage_for(storage, node)
        if "images" not in scfg.content:
            raise param_error({"storage": f"storage '{storage}' does not support vm images"})
        if target:
            api.storage_for(storage, target)
            if not scfg.shared:
                raise ApiError(500, f"can't clone to non-shared storage '{storage}'")
    api.check_config_lock(vm)
    if snapname:
        raise ApiError(500, f"snapshot '{snapname}' does not exist")
    is_template = vm.config.get("template") == "1"
    full = _bool(req.params.get("full"), default=not is_template)
    if storage and not full:
        raise ApiError(500, "parameter 'storage' not allowed for linked clones")
    if fmt and not full:
        raise ApiError(500, "parameter 'format' not allowed for linked clones")
    disks = {k: api.parse_drive(k, v) for k, v in vm.config.items() if DRIVE_KEY_RE.match(k)}
    shared = True
    for drive in disks.values():
        file = drive.get("file", "")
        if file in ("none", ""):
            continue
        if drive.get("media") == "cdrom" and file == "cdrom":
            api.check(req.authid, "/", ["Sys.Console"])
            continue
        if file.startswith("/"):
            continue
        store = file.split(":", 1)[0]
        scfg = api.cluster.storages.get(store)
        if scfg is not None and not scfg.shared:
            shared = False
        if drive.get("media") != "cdrom":
            api.check(req.authid, f"/storage/{storage or store}", ["Datastore.AllocateSpace"])
    api.check_bridge_access(req.authid, vm.config)
    if target and not shared:
        raise ApiError(500, f"can't clone VM to node '{target}' (VM uses local storage)")
    if newid in api.cluster.vms:
        raise ApiError(500, f"unable to create VM {newid}: config file already exists")
    name = req.params.get("name") or f"Copy-of-VM-{vm.config.get('name', vm.vmid)}"
    dest_node = target or node
    placeholder = VmState(vmid=newid, node=node, config={"lock": "clone"})
    api.cluster.vms[newid] = placeholder

    def work(task: Task) -> None:
        task.log.append(f"create {'full' if full else 'linked'} clone of drive(s)")
        config: dict[str, str] = {}
        for key, value in vm.config.items():
            if key in ("template", "lock", "vmgenid", "smbios1", "meta") or key.startswith("unused"):
                continue
            config[key] = value
        for key, source_drive in disks.items():
            drive = dict(source_drive)
            file = drive.get("file", "")
            store, _, volname = file.partition(":")
            if "cloudinit" in volname:
                drive["file"] = f"{store}:cloudinit"
                config[key] = api.apply_drive(dest_node, newid, key, api.print_drive(key, drive))
                continue
            if drive.get("media") == "cdrom" or not store or ":" not in file:
                continue
            source = api.cluster.find_volume(file, vm.node)
            if source is None:
                raise TaskFailed(f"clone failed: volume '{file}' does not exist")
            if not full and not re.match(r"^(\d+/)?base-\d+-[^/]+$", volname):
                raise TaskFailed("clone failed: clone_image only works on base images")
            dest_store = storage or store
            if full:
                dest_scfg = api.cluster.storages[dest_store]
                new_volid = api.next_disk_name(dest_store, newid, dest_node)
                api.cluster.add_volume(
                    Volume(
                        new_volid,
                        dest_node,
                        source.size,
                        fmt or dest_scfg.default_format,
                        "images",
                        vmid=newid,
                    )
                )
                shown = validation.format_size(source.size)
                task.log.append(f"drive {key}: transferred {shown} of {shown} (100.00%)")
            else:
                base_name = volname
                disk_name = api.next_disk_name(store, newid, dest_node).split(":", 1)[1]
                new_volid = f"{store}:{base_name}/{disk_name}"
                api.cluster.add_volume(
                    Volume(
                        new_volid,
                        dest_node,
                        source.size,
                        source.format,
                        "images",
                        vmid=newid,
                        parent=base_name,
                    )
                )
            drive["file"] = new_volid
            config[key] = api.print_drive(key, drive)
        config["name"] = name
        if req.params.get("description"):
            config["description"] = req.params["description"]
        config = _add_defaults(
            api,
            {k: v for k, v in config.items() if not (k.startswith("net") and k[3:].isdigit())}
            | {
                k: _strip_mac(api, k, v) for k, v in config.items() if k.startswith("net") and k[3:].isdigit()
            },
        )
        placeholder.config = config
        placeholder.node = dest_node

    def cleanup(task: Task) -> None:
        if api.cluster.vms.get(newid) is placeholder:
            del api.cluster.vms[newid]
            _remove_owned_volumes(api, newid)

    # a running or plain VM is locked exclusively while it is cloned, a template only shared
    source_locks = (vm.vmid,) if not is_template or api.vm_running(vm) else ()
    return api.task(
        req,
        "qmclone",
        str(vm.vmid),
        work,
        locks=(newid, *source_locks),
        shared_locks=() if source_locks else (vm.vmid,),
        on_failure=cleanup,
    )


def _strip_mac(api: ProxmoxApi, key: str, value: str) -> str:
    """A clone gets a new MAC address on every NIC (Proxmox generates fresh ones)."""
    net = validation.parse_property_string(api.drive_fmt(key), value)
    net.pop("macaddr", None)
    model = net.pop("model", "virtio")
    return ",".join([model] + [f"{k}={v}" for k, v in sorted(net.items())])


@route("PUT", "/nodes/{node}/qemu/{vmid}/resize")
def resize_vm(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    disk = req.params["disk"]
    size_text = req.params["size"]
    digest = req.params.get("digest")
    skiplock = _bool(req.params.get("skiplock"))
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    api.check(req.authid, f"/vms/{vm.vmid}", ["VM.Config.Disk"])

    def work(task: Task) -> None:
        if digest and digest != config_digest(vm.config):
            raise TaskFailed("checksum mismatch (file change by other user?)")
        if not skiplock and vm.config.get("lock"):
            raise TaskFailed(f"VM is locked ({vm.config['lock']})")
        if disk not in vm.config:
            raise TaskFailed(f"disk '{disk}' does not exist")
        drive = api.parse_drive(disk, vm.config[disk])
        volid = drive.get("file", "")
        if not volid:
            raise TaskFailed(f"disk '{disk}' has no associated volume")
        if drive.get("media") == "cdrom" or volid == "cdrom":
            raise TaskFailed("you can't resize a cdrom")
        store = volid.split(":", 1)[0]
        api.check(req.authid, f"/storage/{store}", ["Datastore.AllocateSpace"])
        volume = api.cluster.find_volume(volid, vm.node)
        if volume is None:
            raise TaskFailed(f"Could not determine current size of volume '{volid}'")
        match = re.match(r"^(\+)?(\d+(\.\d+)?)([KMGT])?$", size_text)
        if not match:
            raise TaskFailed("internal error")
        factor = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(4) or ""]
        new_size = float(match.group(2)) * factor
        if match.group(1):
            new_size += volume.size
        new_size = int(new_size)
        if new_size < volume.size:
            raise TaskFailed("shrinking disks is not supported")
        if new_size == volume.size:
            return
        old_shown, new_shown = validation.format_size(volume.size), validation.format_size(new_size)
        task.log.append(f"  Size of logical volume changed from {old_shown} to {new_shown}.")
        volume.size = new_size
        drive["size"] = validation.format_size(new_size)
        vm.config[disk] = api.print_drive(disk, drive)

    return api.task(req, "resize", str(vm.vmid), work, locks=(vm.vmid,))


@route("GET", "/nodes/{node}/qemu/{vmid}/status")
def vm_status_index(api: ProxmoxApi, req: Request) -> Any:
    api.vm(req)
    return [{"subdir": s} for s in ("current", "start", "stop", "reset", "shutdown", "suspend", "reboot")]


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
def vm_status_current(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    data = api.vm_status(vm)
    data["ha"] = {"managed": 0}
    data["qmpstatus"] = data["status"]
    agent = vm.config.get("agent", "0").split(",")[0].removeprefix("enabled=")
    if agent in ("1",):
        data["agent"] = 1
    if data["status"] == "running":
        data["running-machine"] = "pc-i440fx-10.1+pve0"
        data["running-qemu"] = "10.1.2"
    if any(k.startswith("serial") for k in vm.config):
        data["serial"] = 1
    return data


def _do_start(api: ProxmoxApi, vm: VmState, task: Task) -> None:
    if api.vm_running(vm):
        raise TaskFailed(f"VM {vm.vmid} already running")
    for key in sorted(vm.config | vm.pending):
        if key.startswith("net") and key[3:].isdigit():
            net = validation.parse_property_string(api.drive_fmt(key), (vm.config | vm.pending)[key])
            bridge = net.get("bridge")
            if bridge and bridge not in api.standin.bridges:
                raise TaskFailed(f"bridge '{bridge}' does not exist")
    for key in vm.pending_delete:
        vm.config.pop(key, None)
    vm.config.update(vm.pending)
    vm.pending.clear()
    vm.pending_delete.clear()
    vm.config = dict(sorted(vm.config.items()))
    seed = None
    if _cloudinit_drive(api, vm) is not None:
        # qemu-server regenerates the cloud-init drive from the config at every start
        task.log.append("generating cloud-init ISO")
        seed = nocloud_seed(api, vm)
    try:
        api.standin.backend.start(vm.node, vm.vmid, dict(vm.config), seed)
    except RuntimeError as exc:
        raise TaskFailed(str(exc)) from None
    api.standin.counter += 1
    vm.pid = 20000 + api.standin.counter
    vm.started_at = api.cluster.clock()
    if seed is not None:
        vm.cloudinit.clear()


@route("POST", "/nodes/{node}/qemu/{vmid}/status/start")
def vm_start(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    skiplock = _bool(req.params.get("skiplock"))
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    if vm.config.get("template") == "1":
        raise ApiError(500, "you can't start a vm if it's a template")
    api.check_config_lock(vm, skiplock)
    return api.task(req, "qmstart", str(vm.vmid), lambda task: _do_start(api, vm, task), locks=(vm.vmid,))


def _do_stop(api: ProxmoxApi, vm: VmState) -> None:
    api.standin.backend.stop(vm.node, vm.vmid)
    vm.pid = None
    vm.started_at = None


@route("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
def vm_stop(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    skiplock = _bool(req.params.get("skiplock"))
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    api.check_config_lock(vm, skiplock)
    return api.task(req, "qmstop", str(vm.vmid), lambda task: _do_stop(api, vm), locks=(vm.vmid,))


@route("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown")
def vm_shutdown(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    skiplock = _bool(req.params.get("skiplock"))
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    api.check_config_lock(vm, skiplock)

    timeout = int(req.params.get("timeout", "600"))
    force = _bool(req.params.get("forceStop"))

    def work(task: Task) -> None:
        if not api.vm_running(vm):
            raise TaskFailed(f"VM {vm.vmid} not running")
        try:
            api.standin.backend.shutdown(vm.node, vm.vmid, timeout)
        except RuntimeError:
            if not force:
                raise TaskFailed("VM quit/powerdown failed - got timeout") from None
            task.log.append("VM still running - terminating now with SIGTERM")
            api.standin.backend.stop(vm.node, vm.vmid)
        vm.pid = None
        vm.started_at = None

    return api.task(req, "qmshutdown", str(vm.vmid), work, locks=(vm.vmid,))


@route("DELETE", "/nodes/{node}/qemu/{vmid}")
def destroy_vm(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    skiplock = _bool(req.params.get("skiplock"))
    if skiplock and req.authid != "root@pam":
        raise param_error({"skiplock": "Only root may use this option."})
    api.check_config_lock(vm, skiplock)
    if vm.config.get("protection") == "1":
        raise ApiError(500, f"can't remove VM {vm.vmid} - protection mode enabled")
    if api.vm_running(vm):
        raise ApiError(500, f"VM {vm.vmid} is running - destroy failed")
    destroy_unreferenced = _bool(req.params.get("destroy-unreferenced-disks"))

    def work(task: Task) -> None:
        if vm.config.get("template") == "1":
            # qemu-server refuses to remove a base image linked clones still use
            for key, value in vm.config.items():
                if not DRIVE_KEY_RE.match(key):
                    continue
                drive = api.parse_drive(key, value)
                volid = drive.get("file", "")
                if drive.get("media") == "cdrom" or not volid or volid.startswith("/"):
                    continue
                base = volid.split(":", 1)[1]
                if any(
                    v.parent == base and v.volid.startswith(volid.split(":")[0] + ":")
                    for v in api.cluster.volumes.values()
                ):
                    raise TaskFailed(f"base volume '{volid}' is still in use by linked cloned")
        referenced = set()
        for key, value in vm.config.items():
            if DRIVE_KEY_RE.match(key) or key.startswith("unused"):
                file = api.parse_drive(key, value).get("file", "") if DRIVE_KEY_RE.match(key) else value
                if file and ":" in file:
                    referenced.add(file)
        for (vnode, volid), volume in list(api.cluster.volumes.items()):
            owned = volume.vmid == vm.vmid and volume.content == "images"
            if (volid in referenced or (destroy_unreferenced and owned)) and vnode in ("", vm.node):
                del api.cluster.volumes[(vnode, volid)]
                task.log.append(f'  Logical volume "{volid.split(":", 1)[1]}" successfully removed.')
        api.standin.backend.destroy(vm.node, vm.vmid)
        api.cluster.vms.pop(vm.vmid, None)

    return api.task(req, "qmdestroy", str(vm.vmid), work, locks=(vm.vmid,))


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces")
def agent_interfaces(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    if "agent" not in vm.config:
        raise ApiError(500, "No QEMU guest agent configured")
    if not api.vm_running(vm):
        raise ApiError(500, f"VM {vm.vmid} is not running")
    queued = api.standin.faults.agent_errors.get(vm.vmid)
    if queued:
        raise ApiError(500, queued.pop(0))
    interfaces = api.standin.backend.addresses(vm.node, vm.vmid, dict(vm.config))
    if interfaces is None:
        raise ApiError(500, "QEMU guest agent is not running")
    return {"result": [iface.to_agent() for iface in interfaces]}


@route("GET", "/nodes/{node}/qemu/{vmid}/agent")
def agent_index(api: ProxmoxApi, req: Request) -> Any:
    api.vm(req)
    return [{"network-get-interfaces": {}}, {"ping": {}}, {"info": {}}]


@route("POST", "/nodes/{node}/qemu/{vmid}/agent/ping")
def agent_ping(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    if not api.vm_running(vm):
        raise ApiError(500, f"VM {vm.vmid} is not running")
    if api.standin.backend.addresses(vm.node, vm.vmid, dict(vm.config)) is None:
        raise ApiError(500, "QEMU guest agent is not running")
    return {"result": {}}


# ---------------------------------------------------------------------------------------------------------
# tasks


UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):"
    r"([^:\s]+):([^:\s]*):([^:\s]+):$"
)


def _task_visible(api: ProxmoxApi, task: Task, authid: str) -> bool:
    """A token sees its own tasks, a user those of the user and of its tokens; others need Sys.Audit."""
    if authid in (task.user, task.user.split("!")[0]):
        return True
    try:
        api.check(authid, f"/nodes/{task.node}", ["Sys.Audit"])
    except ApiError:
        return False
    return True


def _task(api: ProxmoxApi, req: Request) -> Task:
    upid = req.params["upid"]
    match = UPID_RE.match(upid)
    if not match:
        raise param_error({"upid": "unable to parse worker upid"})
    task = api.cluster.tasks.get(upid)
    if task is None or match.group(1) != req.params["node"]:
        raise param_error({"upid": "no such task"})
    if not _task_visible(api, task, req.authid):
        api.check(req.authid, f"/nodes/{task.node}", ["Sys.Audit"])
    return task


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(api: ProxmoxApi, req: Request) -> Any:
    task = _task(api, req)
    data: dict[str, Any] = {
        "upid": task.upid,
        "node": task.node,
        "pid": task.pid,
        "pstart": task.pstart,
        "starttime": task.starttime,
        "type": task.type,
        "id": task.id,
        "user": task.user.split("!")[0],
        "status": task.status,
    }
    if "!" in task.user:
        data["tokenid"] = task.user.split("!", 1)[1]
    if task.status == "stopped":
        data["exitstatus"] = task.exitstatus
    return data


@route("GET", "/nodes/{node}/tasks/{upid}")
def task_index(api: ProxmoxApi, req: Request) -> Any:
    _task(api, req)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/log")
def task_log(api: ProxmoxApi, req: Request) -> Any:
    task = _task(api, req)
    start = int(req.params.get("start", "0"))
    limit = int(req.params.get("limit", "50"))
    lines = task.log or ["no content"] if task.status == "stopped" else task.log
    selected = lines[start : start + limit] if limit else lines[start:]
    data = [{"n": start + index + 1, "t": text} for index, text in enumerate(selected)]
    return WithAttributes(data, {"total": len(lines)})


def _task_entry(task: Task) -> dict[str, Any]:
    """A task as the task listings show it; a stopped task carries its end time and exit status."""
    entry: dict[str, Any] = {
        "upid": task.upid,
        "node": task.node,
        "pid": task.pid,
        "pstart": task.pstart,
        "starttime": task.starttime,
        "type": task.type,
        "id": task.id,
        "user": task.user.split("!")[0],
    }
    if task.status == "stopped":
        entry["endtime"] = task.endtime or task.starttime
        entry["status"] = task.exitstatus
    return entry


@route("GET", "/nodes/{node}/tasks")
def task_list(api: ProxmoxApi, req: Request) -> Any:
    node = req.params["node"]
    vmid = req.params.get("vmid")
    typefilter = req.params.get("typefilter")
    errors_only = _bool(req.params.get("errors"))
    source = req.params.get("source", "archive")
    start = int(req.params.get("start", "0"))
    limit = int(req.params.get("limit", "50"))
    result = []
    for task in sorted(api.cluster.tasks.values(), key=lambda t: (t.starttime, t.pid), reverse=True):
        if task.node != node or not _task_visible(api, task, req.authid):
            continue
        if vmid is not None and task.id != vmid:
            continue
        if typefilter and task.type != typefilter:
            continue
        if source == "archive" and task.status == "running":
            continue
        if source == "active" and task.status != "running":
            continue
        if errors_only and task.exitstatus in (None, "OK"):
            continue
        entry = _task_entry(task)
        if task.status != "stopped":
            entry["status"] = "RUNNING"
        result.append(entry)
    return WithAttributes(result[start : start + limit], {"total": len(result)})


# ---------------------------------------------------------------------------------------------------------
# access


@route("GET", "/access/permissions")
def access_permissions(api: ProxmoxApi, req: Request) -> Any:
    userid = req.params.get("userid") or req.authid
    if userid != req.authid and not userid.startswith(req.authid + "!"):
        api.check(req.authid, "/access", ["Sys.Audit"])
    privileges = api.standin.auth.effective_privileges(userid)
    path = req.params.get("path")
    result: dict[str, dict[str, int]] = {}
    for acl_path, privs in privileges.items():
        if path and not (path == acl_path or path.startswith(acl_path.rstrip("/") + "/") or acl_path == "/"):
            continue
        result[path or acl_path] = {**result.get(path or acl_path, {}), **dict.fromkeys(sorted(privs), 1)}
    return result


# ---------------------------------------------------------------------------------------------------------
# smaller read-only endpoints a preflight uses, and volume removal


@route("GET", "/nodes/{node}/version")
def node_version(api: ProxmoxApi, req: Request) -> Any:
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID}


@route("GET", "/nodes/{node}/network")
def node_network(api: ProxmoxApi, req: Request) -> Any:
    node = req.params["node"]
    kind = req.params.get("type")
    index = api.cluster.nodes.index(node) + 1
    interfaces: list[dict[str, Any]] = [
        {
            "iface": "eno1",
            "type": "eth",
            "active": 1,
            "exists": 1,
            "method": "manual",
            "method6": "manual",
            "families": ["inet"],
            "priority": 1,
        },
    ]
    for position, bridge in enumerate(api.standin.bridges):
        entry: dict[str, Any] = {
            "iface": bridge,
            "type": "bridge",
            "active": 1,
            "autostart": 1,
            "method": "manual",
            "method6": "manual",
            "families": ["inet"],
            "bridge_ports": "eno1" if position == 0 else "",
            "bridge_stp": "off",
            "bridge_fd": "0",
            "priority": 2 + position,
        }
        if position == 0:
            entry.update(
                {
                    "method": "static",
                    "cidr": f"192.168.77.{10 + index}/24",
                    "address": f"192.168.77.{10 + index}",
                    "netmask": "255.255.255.0",
                    "gateway": "192.168.77.1",
                }
            )
        interfaces.append(entry)
    if kind in ("bridge", "any_bridge", "any_local_bridge"):
        return [i for i in interfaces if i["type"] == "bridge"]
    if kind:
        return [i for i in interfaces if i["type"] == kind]
    return interfaces


@route("GET", "/cluster/tasks")
def cluster_tasks(api: ProxmoxApi, req: Request) -> Any:
    result = []
    for task in sorted(api.cluster.tasks.values(), key=lambda t: (t.starttime, t.pid), reverse=True):
        if not _task_visible(api, task, req.authid):
            continue
        result.append(_task_entry(task))
    return result


@route("GET", "/pools")
def list_pools(api: ProxmoxApi, req: Request) -> Any:
    return []


@route("GET", "/storage/{storage}")
def storage_config(api: ProxmoxApi, req: Request) -> Any:
    scfg = api.cluster.storages.get(req.params["storage"])
    if scfg is None:
        raise ApiError(500, f"storage '{req.params['storage']}' does not exist")
    for entry in storage_index(api, Request("GET", "/storage", {}, req.authid)):
        if entry["storage"] == scfg.storage:
            return entry
    raise ApiError(500, f"storage '{scfg.storage}' does not exist")


def _content_volume(api: ProxmoxApi, req: Request) -> tuple[str, Volume]:
    node = req.params["node"]
    volume_param = req.params["volume"]
    storage = req.params.get("storage")
    volid = volume_param if ":" in volume_param or storage is None else f"{storage}:{volume_param}"
    try:
        store, _ = validation.parse_volume_id(volid)
    except validation.FormatError as exc:
        raise ApiError(500, str(exc)) from None
    if storage is not None and store != storage:
        raise ApiError(500, f"got volume from wrong storage ({store} != {storage})")
    api.storage_for(store, node)
    volume = api.cluster.find_volume(volid, node)
    if volume is None:
        raise ApiError(500, f"volume '{volid}' does not exist")
    return store, volume


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_attributes(api: ProxmoxApi, req: Request) -> Any:
    store, volume = _content_volume(api, req)
    api.check(req.authid, f"/storage/{store}", ["Datastore.Audit", "Datastore.AllocateSpace"], any_=True)
    scfg = api.cluster.storages[store]
    name = volume.volid.split(":", 1)[1]
    if scfg.file_based:
        sub = {
            "iso": "template/iso/" + name.removeprefix("iso/"),
            "import": name,
            "vztmpl": "template/cache/" + name.removeprefix("vztmpl/"),
        }.get(volume.content, f"images/{name}")
        path = f"/var/lib/vz/{sub}"
    else:
        path = f"/dev/pve/{name.split('/')[-1]}"
    data: dict[str, Any] = {
        "path": path,
        "size": volume.size,
        "used": volume.size // 10,
        "format": volume.format,
    }
    if volume.notes:
        data["notes"] = volume.notes
    return data


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_delete(api: ProxmoxApi, req: Request) -> Any:
    store, volume = _content_volume(api, req)
    api.check(req.authid, f"/storage/{store}", ["Datastore.Allocate"])
    node = req.params["node"]

    def work(task: Task) -> None:
        api.cluster.remove_volume(volume.volid, node)
        task.log.append(f"Removed volume '{volume.volid}'")

    worker_id = f"{volume.vmid}@{store}" if volume.vmid is not None else store
    upid = api.task(req, "imgdel", worker_id, work)
    delay = req.params.get("delay")
    if delay is not None and api.duration("imgdel") <= int(delay):
        task = api.cluster.tasks[upid]
        task.finish_at = api.cluster.clock()
        api.cluster.advance()
        if task.exitstatus == "OK":
            return None
        raise ApiError(500, task.exitstatus or "unknown error")
    return upid


@route("POST", "/nodes/{node}/qemu/{vmid}/status/reboot")
def vm_reboot(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    api.check_config_lock(vm)
    if not api.vm_running(vm):
        raise ApiError(500, f"VM {vm.vmid} not running")

    def work(task: Task) -> None:
        _do_stop(api, vm)
        _do_start(api, vm, task)

    return api.task(req, "qmreboot", str(vm.vmid), work, locks=(vm.vmid,))


# ---------------------------------------------------------------------------------------------------------
# cloud-init


CLOUDINIT_OPTION_ORDER = (
    "cicustom",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "nameserver",
    "searchdomain",
    "sshkeys",
)


def _cloudinit_drive(api: ProxmoxApi, vm: VmState) -> str | None:
    for key, value in vm.config.items():
        if DRIVE_KEY_RE.match(key) and f"vm-{vm.vmid}-cloudinit" in api.parse_drive(key, value).get(
            "file", ""
        ):
            return key
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_pending(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    conf = dict(vm.config)
    ci = dict(vm.cloudinit)
    if "cipassword" in conf:
        conf["cipassword"] = "**********"
    if "cipassword" in ci:
        ci["cipassword"] = "**********"
    result: list[dict[str, Any]] = []
    added = ci.pop("added", "")
    for key in validation.split_list(added):
        entry: dict[str, Any] = {"key": key}
        if key in conf:
            entry["pending"] = conf[key]
        result.append(entry)
    for key in CLOUDINIT_OPTION_ORDER:
        if not conf.get(key) or key in added:
            continue
        if ci.get(key):
            result.append({"key": key, "value": ci[key], "pending": conf[key]})
        else:
            result.append({"key": key, "value": conf[key]})
    for key in sorted(ci):
        if not conf.get(key):
            result.append({"key": key, "delete": 1})
    return result


@route("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_regenerate(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    api.check_config_lock(vm)
    api.sync_lock(vm.vmid)
    if _cloudinit_drive(api, vm) is not None:
        vm.cloudinit.clear()
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump")
def cloudinit_dump(api: ProxmoxApi, req: Request) -> Any:
    vm = api.vm(req)
    conf = vm.config
    citype = conf.get("citype") or (
        "configdrive2"
        if re.match(r"^(wxp|w2k|w2k3|w2k8|wvista|win7|win8|win10|win11)$", conf.get("ostype", ""))
        else "nocloud"
    )
    kind = req.params["type"]
    if kind == "user":
        return cloudinit_userdata(api, vm, mask_password=True)
    if citype != "nocloud":
        raise ApiError(501, f"cloud-init format '{citype}' is not modelled by this stand-in")
    network = cloudinit_network(api, vm)
    if kind == "network":
        return network
    user = cloudinit_userdata(api, vm, mask_password=False)
    return _nocloud_metadata(user, network)


def _nocloud_metadata(user: str, network: str) -> str:
    return f"instance-id: {hashlib.sha1((user + network).encode()).hexdigest()}\n"


def nocloud_seed(api: ProxmoxApi, vm: VmState) -> dict[str, str]:
    """The files of the NoCloud drive (volume label ``cidata``) qemu-server writes at a VM's start."""
    user = cloudinit_userdata(api, vm, mask_password=False)
    network = cloudinit_network(api, vm)
    return {
        "user-data": user,
        "network-config": network,
        "meta-data": _nocloud_metadata(user, network),
        "vendor-data": "",
    }


def _hostname_fqdn(vm: VmState) -> tuple[str, str]:
    hostname = vm.config.get("name", f"VM{vm.vmid}")
    if "." in hostname:
        return hostname.split(".", 1)[0], hostname
    search = vm.config.get("searchdomain")
    return hostname, f"{hostname}.{search}" if search else hostname


def cloudinit_userdata(api: ProxmoxApi, vm: VmState, *, mask_password: bool) -> str:
    """The nocloud ``user-data`` Proxmox generates from the VM's cloud-init options."""
    conf = vm.config
    hostname, fqdn = _hostname_fqdn(vm)
    lines = ["#cloud-config", f"hostname: {hostname}", "manage_etc_hosts: true", f"fqdn: {fqdn}"]
    user = conf.get("ciuser")
    if user is not None:
        lines.append(f"user: {user}")
        if user == "root":
            lines.append("disable_root: False")
    if "cipassword" in conf:
        lines.append("password: **********" if mask_password else f"password: {conf['cipassword']}")
    if "sshkeys" in conf:
        keys = [k.rstrip("\n") for k in urllib.parse.unquote(conf["sshkeys"]).split("\n")]
        lines.append("ssh_authorized_keys:")
        lines.extend(f"  - {k}" for k in keys if k.strip())
    lines += ["chpasswd:", "  expire: False"]
    if user != "root":
        lines += ["users:", "  - default"]
    if conf.get("ciupgrade", "1") != "0":
        lines.append("package_upgrade: true")
    return "\n".join(lines) + "\n"


def cloudinit_network(api: ProxmoxApi, vm: VmState) -> str:
    """The nocloud ``network-config`` (version 1) for the VM's ``netN``/``ipconfigN`` pairs."""
    conf = vm.config
    lines = ["version: 1", "config:"]
    for key in sorted(k for k in conf if re.match(r"^net\d+$", k)):
        index = key[3:]
        ipconfig = conf.get(f"ipconfig{index}")
        if not ipconfig:
            continue
        net = validation.parse_property_string(api.drive_fmt(key), conf[key])
        ip = validation.parse_property_string(validation.NAMED_PROPERTY_FORMATS["pve-qm-ipconfig"], ipconfig)
        lines += [
            "    - type: physical",
            f"      name: eth{index}",
            f"      mac_address: '{net.get('macaddr', '').lower()}'",
            "      subnets:",
        ]
        if "ip" in ip:
            if ip["ip"] == "dhcp":
                lines.append("      - type: dhcp4")
            else:
                iface = ipaddress.IPv4Interface(ip["ip"])
                lines += [
                    "      - type: static",
                    f"        address: '{iface.ip}'",
                    f"        netmask: '{iface.netmask}'",
                ]
                if "gw" in ip:
                    lines.append(f"        gateway: '{ip['gw']}'")
        if "ip6" in ip:
            if ip["ip6"] == "dhcp":
                lines.append("      - type: dhcp6")
            elif ip["ip6"] == "auto":
                lines.append("      - type: ipv6_slaac")
            else:
                lines += ["      - type: static6", f"        address: '{ip['ip6']}'"]
                if "gw6" in ip:
                    lines.append(f"        gateway: '{ip['gw6']}'")
    nameservers = (conf.get("nameserver") or " ".join(api.standin.host_dns)).split()
    search = (conf.get("searchdomain") or api.standin.host_search).split()
    lines.append("    - type: nameserver")
    if nameservers:
        lines.append("      address:")
        lines.extend(f"      - '{n}'" for n in nameservers)
    if search:
        lines.append("      search:")
        lines.extend(f"      - '{d}'" for d in search)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# migration (offline)


@route("POST", "/nodes/{node}/qemu/{vmid}/migrate")
def migrate_vm(api: ProxmoxApi, req: Request) -> Any:
    node, target = req.params["node"], req.params["target"]
    if target == node:
        raise param_error({"target": "target is local node."})
    if target not in api.cluster.nodes:
        raise ApiError(500, f"no such cluster node '{target}'")
    for option in ("force", "migration_type", "migration_network"):
        if req.params.get(option) and req.authid != "root@pam":
            raise param_error({option: "Only root may use this option."})
    vm = api.vm(req)
    api.check_config_lock(vm)
    if api.vm_running(vm):
        if not _bool(req.params.get("online")):
            raise ApiError(500, "can't migrate running VM without --online")
        raise ApiError(501, "live migration is not modelled by this stand-in")
    mapping = req.params.get("targetstorage")
    target_index = api.cluster.nodes.index(target) + 1

    def target_storage(store: str) -> str:
        if not mapping:
            return store
        pairs: dict[str, str] = {}
        for pair in validation.split_list(mapping):
            source, sep, dest = pair.partition(":")
            pairs[source if sep else ""] = dest if sep else source
        return pairs.get(store) or pairs.get("", store)

    vm.config["lock"] = "migrate"

    def work(task: Task) -> None:
        vm.config.pop("lock", None)
        task.log.append(
            f"starting migration of VM {vm.vmid} to node '{target}' (192.168.77.{10 + target_index})"
        )
        moves: list[tuple[str, Volume, str]] = []
        for key, value in vm.config.items():
            if not (DRIVE_KEY_RE.match(key) or key.startswith("unused")):
                continue
            volid = api.parse_drive(key, value).get("file", "") if DRIVE_KEY_RE.match(key) else value
            if not volid or ":" not in volid or volid.startswith("/"):
                continue
            store = volid.split(":", 1)[0]
            scfg = api.cluster.storages.get(store)
            if scfg is None or scfg.shared:
                continue
            dest = target_storage(store)
            if api.cluster.storage_on_node(dest, target) is None:
                raise TaskFailed(f"storage '{dest}' is not available on node '{target}'")
            volume = api.cluster.find_volume(volid, node)
            if volume is None:
                raise TaskFailed(f"volume '{volid}' does not exist")
            if volume.parent:
                raise TaskFailed(f"can't migrate '{volid}' - linked clone of a base image")
            moves.append((key, volume, dest))
        for key, volume, dest in moves:
            old_volid = volume.volid
            api.cluster.remove_volume(old_volid, node)
            new_volid = f"{dest}:{old_volid.split(':', 1)[1]}"
            api.cluster.add_volume(replace(volume, volid=new_volid, node=target))
            task.log.append(f"found local disk '{old_volid}' ({key})")
            if DRIVE_KEY_RE.match(key):
                drive = api.parse_drive(key, vm.config[key])
                drive["file"] = new_volid
                vm.config[key] = api.print_drive(key, drive)
            else:
                vm.config[key] = new_volid
        vm.node = target
        task.log.append("migration finished successfully (duration 00:00:01)")

    def unlock(task: Task) -> None:
        vm.config.pop("lock", None)

    return api.task(req, "qmigrate", str(vm.vmid), work, locks=(vm.vmid,), on_failure=unlock)
