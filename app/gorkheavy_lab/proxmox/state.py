"""The cluster the stand-in keeps: nodes, storages, volumes, VMs, tasks, users and tokens."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3


class ApiError(Exception):
    """An error the API answers with: HTTP status, the message (reason line) and optional per-param errors."""

    def __init__(
        self, status: int, message: str, errors: dict[str, str] | None = None, *, bare: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message if message.endswith("\n") else message + "\n"
        self.errors = errors
        self.bare = bare  # sent without a body, like the HTTP server's own authentication errors


def param_error(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def perm_error(what: str = "") -> ApiError:
    return ApiError(403, f"Permission check failed ({what})" if what else "Permission check failed")


class TaskFailed(Exception):
    """Raised inside a task's work: the task ends with this text as its ``exitstatus``."""


@dataclass
class StorageDef:
    storage: str
    type: str
    content: list[str]
    shared: bool = False
    enabled: bool = True
    active: bool = True
    total: int = 100 * GIB
    nodes: list[str] | None = None  # None: every node

    @property
    def file_based(self) -> bool:
        return self.type in ("dir", "nfs", "cifs", "cephfs", "btrfs")

    @property
    def default_format(self) -> str:
        return "qcow2" if self.file_based else "raw"


@dataclass
class Volume:
    volid: str
    node: str  # "" for volumes on shared storage
    size: int
    format: str
    content: str
    vmid: int | None = None
    ctime: int = 0
    parent: str | None = None
    notes: str | None = None
    # hex digests of the file's bytes by algorithm, for download-url's check of an existing file
    digests: dict[str, str] | None = None


@dataclass
class VmState:
    vmid: int
    node: str
    config: dict[str, str]
    pending: dict[str, str] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)
    cloudinit: dict[str, str] = field(default_factory=dict)  # values the cloud-init drive still has
    status: str = "stopped"
    started_at: float | None = None
    pid: int | None = None


@dataclass
class Task:
    upid: str
    node: str
    type: str
    id: str
    user: str
    starttime: int
    pid: int
    pstart: int
    finish_at: float
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)
    locks: list[int] = field(default_factory=list)
    work: Callable[[Task], None] | None = None
    on_failure: Callable[[Task], None] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("work")
        data.pop("on_failure")
        return data


@dataclass
class User:
    userid: str
    password: str | None
    privileges: dict[str, set[str]] | None  # None: every privilege on every path (like root@pam)


@dataclass
class Token:
    tokenid: str  # user@realm!name
    secret: str
    privsep: bool
    privileges: dict[str, set[str]]


# The privileges of Proxmox VE 9 (PVE::AccessControl's privilege groups, plus Permissions.Modify).
ALL_PRIVILEGES = frozenset(
    {
        "Datastore.Allocate",
        "Datastore.AllocateSpace",
        "Datastore.AllocateTemplate",
        "Datastore.Audit",
        "Group.Allocate",
        "Mapping.Audit",
        "Mapping.Modify",
        "Mapping.Use",
        "Permissions.Modify",
        "Pool.Allocate",
        "Pool.Audit",
        "Realm.Allocate",
        "Realm.AllocateUser",
        "SDN.Allocate",
        "SDN.Audit",
        "SDN.Use",
        "Sys.AccessNetwork",
        "Sys.Audit",
        "Sys.Console",
        "Sys.Incoming",
        "Sys.Modify",
        "Sys.PowerMgmt",
        "Sys.Syslog",
        "User.Modify",
        "VM.Allocate",
        "VM.Audit",
        "VM.Backup",
        "VM.Clone",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Cloudinit",
        "VM.Config.Disk",
        "VM.Config.HWType",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.Options",
        "VM.Console",
        "VM.GuestAgent.Audit",
        "VM.GuestAgent.FileRead",
        "VM.GuestAgent.FileSystemMgmt",
        "VM.GuestAgent.FileWrite",
        "VM.GuestAgent.Unrestricted",
        "VM.Migrate",
        "VM.PowerMgmt",
        "VM.Replicate",
        "VM.Snapshot",
        "VM.Snapshot.Rollback",
    }
)


def default_storages() -> list[StorageDef]:
    return [
        StorageDef("local", "dir", ["iso", "vztmpl", "backup", "import", "snippets"]),
        StorageDef("local-lvm", "lvmthin", ["images", "rootdir"]),
    ]


def config_digest(config: dict[str, str]) -> str:
    """SHA1 over the config file text the way Proxmox hashes the file it read."""
    text = "".join(f"{key}: {value}\n" for key, value in config.items())
    return hashlib.sha1(text.encode()).hexdigest()


class Cluster:
    """All state, guarded by one re-entrant lock. Tasks finish lazily (``advance``) when time has come."""

    def __init__(
        self,
        nodes: Iterable[str] = ("pve1", "pve2", "pve3"),
        storages: Iterable[StorageDef] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.nodes: list[str] = list(nodes)
        self.node_online: dict[str, bool] = dict.fromkeys(self.nodes, True)
        self.storages: dict[str, StorageDef] = {s.storage: s for s in (storages or default_storages())}
        self.volumes: dict[tuple[str, str], Volume] = {}
        self.vms: dict[int, VmState] = {}
        self.tasks: dict[str, Task] = {}
        self.users: dict[str, User] = {"root@pam": User("root@pam", None, None)}
        self.tokens: dict[str, Token] = {}
        self.boot_time = int(self.clock()) - 3600
        self.internal_errors: list[str] = []
        self._pid = 100000

    # -- nodes and storages ---------------------------------------------------------------------------

    def storage_on_node(self, storage: str, node: str) -> StorageDef | None:
        scfg = self.storages.get(storage)
        if scfg is None or (scfg.nodes is not None and node not in scfg.nodes):
            return None
        return scfg

    def volume_key(self, volid: str, node: str) -> tuple[str, str]:
        storage = volid.split(":", 1)[0]
        scfg = self.storages.get(storage)
        return ("" if scfg is not None and scfg.shared else node, volid)

    def find_volume(self, volid: str, node: str) -> Volume | None:
        return self.volumes.get(self.volume_key(volid, node))

    def add_volume(self, volume: Volume) -> Volume:
        key = self.volume_key(volume.volid, volume.node)
        volume.node = key[0]
        if not volume.ctime:
            volume.ctime = int(self.clock())
        self.volumes[key] = volume
        return volume

    def remove_volume(self, volid: str, node: str) -> None:
        self.volumes.pop(self.volume_key(volid, node), None)

    def storage_used(self, storage: str, node: str) -> int:
        scfg = self.storages[storage]
        owner = "" if scfg.shared else node
        return sum(
            v.size for (n, volid), v in self.volumes.items() if n == owner and volid.startswith(storage + ":")
        )

    # -- tasks ------------------------------------------------------------------------------------------

    def new_upid(self, node: str, task_type: str, task_id: str, user: str) -> tuple[str, int, int, int]:
        self._pid += 1
        pid = self._pid
        pstart = int((self.clock() - self.boot_time) * 100)
        starttime = int(self.clock())
        upid = f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{task_id}:{user}:"
        return upid, pid, pstart, starttime

    def start_task(
        self,
        node: str,
        task_type: str,
        task_id: str,
        user: str,
        *,
        duration: float,
        work: Callable[[Task], None] | None,
        locks: Iterable[int] = (),
        fail_now: str | None = None,
    ) -> Task:
        upid, pid, pstart, starttime = self.new_upid(node, task_type, task_id, user)
        task = Task(
            upid=upid,
            node=node,
            type=task_type,
            id=task_id,
            user=user,
            starttime=starttime,
            pid=pid,
            pstart=pstart,
            finish_at=self.clock() + max(duration, 0.0),
            locks=list(locks),
            work=work,
        )
        if fail_now is not None:
            task.work = None
            task.log.append(fail_now)
            task.exitstatus = fail_now
        self.tasks[upid] = task
        return task

    def locked_by_task(self, vmid: int) -> Task | None:
        for task in self.tasks.values():
            if task.status == "running" and vmid in task.locks:
                return task
        return None

    def advance(self) -> int:
        """Finish every running task whose time has come (in start order); return how many finished."""
        finished = 0
        with self.lock:
            now = self.clock()
            for task in sorted(self.tasks.values(), key=lambda t: (t.finish_at, t.pid)):
                if task.status != "running" or task.finish_at > now:
                    continue
                self._finish(task)
                finished += 1
        return finished

    def _finish(self, task: Task) -> None:
        if task.exitstatus is None:
            try:
                if task.work is not None:
                    task.work(task)
                task.exitstatus = "OK"
                task.log.append("TASK OK")
            except TaskFailed as exc:
                message = str(exc).rstrip("\n")
                task.log.append(message)
                task.exitstatus = message
                task.log.append(f"TASK ERROR: {message}")
            except Exception as exc:  # a defect of the stand-in: the task fails visibly
                self.internal_errors.append(f"task {task.upid}: {traceback.format_exc()}")
                task.exitstatus = f"stand-in bug: {type(exc).__name__}: {exc}"
                task.log.append(f"TASK ERROR: {task.exitstatus}")
        else:
            task.log.append(f"TASK ERROR: {task.exitstatus}")
        task.status = "stopped"
        task.endtime = int(self.clock())
        if task.exitstatus != "OK" and task.on_failure is not None:
            task.on_failure(task)
        task.work = None
        task.on_failure = None

    # -- persistence ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "nodes": self.nodes,
                "storages": [asdict(s) for s in self.storages.values()],
                "volumes": [asdict(v) for v in self.volumes.values()],
                "vms": [asdict(vm) for vm in self.vms.values()],
                "tasks": [t.to_json() for t in self.tasks.values() if t.status == "stopped"],
                "pid": self._pid,
            }

    def load_json(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.nodes = list(data["nodes"])
            self.node_online = dict.fromkeys(self.nodes, True)
            self.storages = {s["storage"]: StorageDef(**s) for s in data["storages"]}
            self.volumes = {}
            for raw in data["volumes"]:
                volume = Volume(**raw)
                self.volumes[(volume.node, volume.volid)] = volume
            self.vms = {vm["vmid"]: VmState(**vm) for vm in data["vms"]}
            self.tasks = {}
            for raw in data.get("tasks", []):
                task = Task(**raw)
                self.tasks[task.upid] = task
            self._pid = max(self._pid, int(data.get("pid", 0)))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, path)
